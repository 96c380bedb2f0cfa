"""SAC (Haarnoja et al. 2018) on a task mixture: continuous, and discrete (Christodoulou 2019).

Reads top to bottom like CleanRL's sac_continuous_action.py / sac_atari.py, plus:
- twin Q networks with Polyak-averaged targets, automatic temperature, optionally one
  temperature per task (tasks differ in action dims and reward scale);
- continuous: a tanh-squashed Gaussian over the union dims; log-probs count a task's active
  dims only, inactive dims are zeroed before they reach the critics, and each task's target
  entropy is minus its number of active dims;
- discrete: masked logits over the union action set; a task's target entropy is
  `target_entropy_scale * log(#valid actions)`;
- truncation (time limits, task switches) bootstraps; only termination cuts the return.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mtmoe.agents.common import StatMeans, task_interference, to_device
from mtmoe.agents.registry import register_algo
from mtmoe.agents.replay import ReplayBuffer
from mtmoe.metrics.flops import forward_flops, train_flops
from mtmoe.nets.moe.collect import collect_moe


@dataclass
class SACConfig:
    buffer_size: int = 1_000_000
    """Replay capacity in transitions."""
    learning_starts: int = 100
    """Env steps of uniform random actions before learning starts."""
    batch_size: int = 256
    """Minibatch size."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target critics."""
    policy_lr: float = 3e-4
    """Actor learning rate."""
    q_lr: float = 3e-4
    """Critic learning rate."""
    alpha_lr: float = 3e-4
    """Temperature learning rate."""
    train_freq: int = 1
    """Vector env steps between gradient phases."""
    gradient_steps: int = 1
    """Gradient steps per phase."""
    policy_frequency: int = 1
    """Actor/temperature update every this many critic updates."""
    autotune: bool = True
    """Learn the temperature."""
    alpha: float = 1.0
    """Initial temperature (SB3's 'auto' starts at 1.0)."""
    per_task_alpha: bool = False
    """One temperature per task instead of one for all."""
    target_entropy_scale: float = 1.0
    """Continuous: target = -scale * active dims; discrete: scale * log(#valid actions)."""
    aux_coef: float = 1.0
    """Weight of MoE auxiliary (load-balancing) losses."""
    adam_eps: float = 1e-8
    """Adam epsilon."""


def frames_per_stack(env) -> int:
    """k when every task of the mixture is an ALE task stacking k frames (the buffer then keeps
    one frame per step), else 0 (observations stored whole)."""
    stacks = {t.options.stack if t.backend == "ale" else 0 for t in getattr(env, "tasks", ())}
    return stacks.pop() if len(stacks) == 1 else 0


class SAC:
    def __init__(self, env, actor: nn.Module, q1: nn.Module, q2: nn.Module, cfg: SACConfig,
                 device: torch.device | str = "cpu", seed: int = 0):
        self.env, self.cfg, self.seed = env, cfg, seed
        self.device = torch.device(device)
        self.discrete = hasattr(env.single_action_space, "n")
        self.actor, self.q1, self.q2 = actor, q1, q2
        self.q1_target, self.q2_target = copy.deepcopy(q1).requires_grad_(False), copy.deepcopy(q2).requires_grad_(False)
        self.q_opt = torch.optim.Adam(list(q1.parameters()) + list(q2.parameters()), lr=cfg.q_lr, eps=cfg.adam_eps,
                                      fused=True)
        self.actor_opt = torch.optim.Adam(actor.parameters(), lr=cfg.policy_lr, eps=cfg.adam_eps, fused=True)
        self._online = list(q1.parameters()) + list(q2.parameters())
        self._target = list(self.q1_target.parameters()) + list(self.q2_target.parameters())
        num_tasks = getattr(env, "num_tasks", 1)
        self.log_alpha = torch.full((num_tasks if cfg.per_task_alpha else 1,), math.log(cfg.alpha), device=self.device,
                                    requires_grad=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr, eps=cfg.adam_eps)
        masks = torch.as_tensor(env.spaces.action_masks, device=self.device)
        valid = masks.sum(-1).float()
        self.target_entropy = (cfg.target_entropy_scale * torch.log(valid)) if self.discrete else -cfg.target_entropy_scale * valid
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        act_space = env.single_action_space
        self.buffer = ReplayBuffer(cfg.buffer_size, env.num_envs, env.single_observation_space.shape,
                                   env.single_observation_space.dtype, () if self.discrete else act_space.shape,
                                   np.int64 if self.discrete else np.float32, env.action_mask.shape[1:], self.device, seed,
                                   frame_stack=frames_per_stack(env))
        self.rng = np.random.default_rng(seed)
        self.global_step, self.num_updates = 0, 0
        self.next_obs = None

    # ------------------------------------------------------------------ policy

    def alpha(self, task: torch.Tensor) -> torch.Tensor:
        return self.log_alpha.exp()[task if self.cfg.per_task_alpha else torch.zeros_like(task)]

    def policy(self, obs, task, mask):
        """Continuous: (action, log_prob); discrete: (probs, log_probs) over all actions."""
        if self.discrete:
            logits = self.actor(obs, task).masked_fill(~mask, torch.finfo(torch.float32).min)
            log_p = torch.log_softmax(logits, -1)
            return log_p.exp(), log_p
        mean, log_std = self.actor(obs, task)
        std = log_std.exp()
        u = mean + std * torch.randn(mean.shape, generator=self.generator, device=mean.device)
        action = torch.tanh(u)
        log_p = -((u - mean) ** 2) / (2 * std**2) - log_std - 0.5 * math.log(2 * math.pi)
        log_p = log_p - torch.log(1 - action.pow(2) + 1e-6)
        return action * mask, (log_p * mask).sum(-1)

    def act(self, obs_np, info, deterministic: bool = False) -> np.ndarray:
        """Training actions (uniform before `learning_starts`), or evaluation actions when
        `deterministic` (the mean action / the most likely action)."""
        if deterministic:
            obs, task = to_device(obs_np, self.device), to_device(info["task_id"], self.device)
            mask = to_device(info["action_mask"], self.device)
            with torch.no_grad():
                if self.discrete:
                    return self.policy(obs, task, mask)[0].argmax(-1).cpu().numpy()
                mean, _ = self.actor(obs, task)
                return (torch.tanh(mean) * mask.float()).cpu().numpy()
        if self.global_step < self.cfg.learning_starts:
            if self.discrete:  # uniform over each slot's valid actions
                logits = self.rng.random(info["action_mask"].shape) + info["action_mask"]
                return np.argmax(logits, -1)
            return self.rng.uniform(-1, 1, (self.env.num_envs, *self.env.single_action_space.shape)).astype(np.float32)
        obs, task = to_device(obs_np, self.device), to_device(info["task_id"], self.device)
        mask = to_device(info["action_mask"], self.device)
        with torch.no_grad():
            if self.discrete:
                probs, _ = self.policy(obs, task, mask)
                return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1).cpu().numpy()
            action, _ = self.policy(obs, task, mask.float())
        return action.cpu().numpy()

    def task_gradient_cosines(self, batch_size: int = 1024) -> dict:
        """Gradient interference between tasks on a replay batch: mean pairwise cosine of the
        per-task gradients of the actor loss (actor) and of q1's TD loss (critic), plus each pair.
        Nothing is written to .grad; the replay sampler's own generator is left alone."""
        if len(self.buffer) <= self.env.num_envs:
            return {}
        b = self.buffer.sample(batch_size, rng=np.random.default_rng(self.global_step))
        obs, task = b["obs"], b["task"]
        mask = b["mask"] if self.discrete else b["mask"].float()
        with torch.no_grad():
            alpha = self.alpha(task)
        gen = self.generator.get_state()
        pol, log_p = self.policy(obs, task, mask)
        self.generator.set_state(gen)
        if self.discrete:
            q1_all = self.q1(obs, task_id=task)
            q1 = q1_all.gather(-1, b["actions"][:, None]).squeeze(-1)
            actor_terms = (pol * (alpha[:, None] * log_p - q1_all.detach())).sum(-1)
        else:
            q1 = self.q1(obs, b["actions"] * mask, task_id=task)
            actor_terms = alpha * log_p - self.q1(obs, pol, task_id=task)
        with torch.no_grad():  # a one-step target without the next-state term: interference only
            target = b["rewards"] + self.cfg.gamma * (1.0 - b["terminated"]) * q1.detach()
        return task_interference({"actor": (self.actor, lambda m: actor_terms[m].mean()),
                                  "critic": (self.q1, lambda m: ((q1[m] - target[m]) ** 2).mean())},
                                 task, getattr(self.env, "task_names", None))

    # ------------------------------------------------------------------ checkpoints

    # ------------------------------------------------------------------ what the runner reads

    def networks(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "q1": self.q1, "q2": self.q2}

    def probe_networks(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "q1": self.q1}  # q2 is q1's twin

    def restart_episodes(self, obs, info) -> None:
        self.next_obs, self.next_info = obs, info

    def flops_per_env_step(self, obs: torch.Tensor, task: torch.Tensor) -> dict[str, float]:
        """One actor forward per env step (acting) + gradient_steps/train_freq updates per vector
        step, each over a batch: actor forward on s and s', two target-Q forwards on s', two Q
        forward+backward passes (critic loss) and, every policy_frequency updates, the actor
        loss's Q forwards+backwards and the actor backward."""
        cfg, n = self.cfg, obs.shape[0]
        qa = () if self.discrete else (torch.zeros(n, *self.env.single_action_space.shape, device=obs.device),)
        act_fwd = forward_flops(self.actor, obs, task) / n
        q_fwd = forward_flops(self.q1, obs, *qa, task_id=task) / n
        q_trn = train_flops(self.q1, obs, *qa, task_id=task) / n
        a_trn = train_flops(self.actor, obs, task) / n
        critic = 2 * act_fwd + 2 * q_fwd + 2 * q_trn  # actor on s' (shared with s), 2 target Qs, 2 online Qs
        policy = a_trn + 2 * q_trn  # actor loss: backward through both Qs to the actions, then the actor
        per_update = (critic + policy / max(1, cfg.policy_frequency)) * cfg.batch_size
        updates_per_env_step = cfg.gradient_steps / (cfg.train_freq * self.env.num_envs)
        return {"forward_per_obs": act_fwd, "per_update": per_update,
                "per_env_step": act_fwd + updates_per_env_step * per_update}

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly, replay buffer included."""
        nets = {k: getattr(self, k).state_dict() for k in ("actor", "q1", "q2", "q1_target", "q2_target")}
        opts = {k: getattr(self, k).state_dict() for k in ("q_opt", "actor_opt", "alpha_opt")}
        return {**nets, **opts, "log_alpha": self.log_alpha.detach().clone(), "generator": self.generator.get_state(),
                "rng": self.rng, "buffer": self.buffer, "global_step": self.global_step,
                "num_updates": self.num_updates, "next_obs": self.next_obs,
                "next_info": getattr(self, "next_info", None)}

    def load_state_dict(self, state: dict) -> None:
        for k in ("actor", "q1", "q2", "q1_target", "q2_target", "q_opt", "actor_opt", "alpha_opt"):
            getattr(self, k).load_state_dict(state[k])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.generator.set_state(state["generator"])
        self.rng, self.buffer = state["rng"], state["buffer"]
        self.global_step, self.num_updates = state["global_step"], state["num_updates"]
        self.next_obs, self.next_info = state["next_obs"], state["next_info"]

    # ------------------------------------------------------------------ learning

    def update(self) -> dict:
        cfg = self.cfg
        b = self.buffer.sample(cfg.batch_size)
        obs, nxt, task = b["obs"], b["next_obs"], b["task"]
        mask = b["mask"] if self.discrete else b["mask"].float()
        not_done = 1.0 - b["terminated"]
        n = obs.shape[0]
        # one actor forward for s and s' (its parameters do not change before the actor step):
        # the s' half feeds the critic target, the s half the actor loss
        with collect_moe(device=self.device) as actor_moe:
            pol, log_pol = self.policy(torch.cat([obs, nxt]), torch.cat([task, task]), torch.cat([mask, mask]))
        with torch.no_grad():
            if self.discrete:
                p, log_p = pol[n:], log_pol[n:]
                q_next = torch.min(self.q1_target(nxt, task_id=task), self.q2_target(nxt, task_id=task))
                v_next = (p * (q_next - self.alpha(task)[:, None] * log_p)).sum(-1)
            else:
                a_next, log_p = pol[n:], log_pol[n:]
                q_next = torch.min(self.q1_target(nxt, a_next, task_id=task), self.q2_target(nxt, a_next, task_id=task))
                v_next = q_next - self.alpha(task) * log_p
            target = b["rewards"] + cfg.gamma * not_done * v_next
        a = None if self.discrete else b["actions"] * mask

        def q_replayed(net):  # Q(s, a) of the replayed actions
            if self.discrete:
                return net(obs, task_id=task).gather(-1, b["actions"][:, None]).squeeze(-1)
            return net(obs, a, task_id=task)

        with collect_moe(device=self.device) as q1_moe:  # one collector per Q: each sums its own layers
            q1 = q_replayed(self.q1)
        with collect_moe(device=self.device) as q2_moe:
            q2 = q_replayed(self.q2)
        aux = q1_moe.aux_loss() + q2_moe.aux_loss()
        q_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target) + cfg.aux_coef * aux
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()
        stats = {"q_loss": q_loss.detach(), "q_mean": q1.detach().mean()}

        if self.num_updates % cfg.policy_frequency == 0:
            alpha = self.alpha(task).detach()
            aux = cfg.aux_coef * actor_moe.aux_loss()  # from the actor forward on s and s' above
            if self.discrete:
                p, log_p = pol[:n], log_pol[:n]
                with torch.no_grad():
                    q = torch.min(self.q1(obs, task_id=task), self.q2(obs, task_id=task))
                actor_loss = (p * (alpha[:, None] * log_p - q)).sum(-1).mean()
                entropy = -(p * torch.where(p > 0, log_p, torch.zeros_like(log_p))).sum(-1)
            else:
                a, log_p = pol[:n], log_pol[:n]
                for param in self._online:  # the actor loss needs dQ/da, not the critics' weight grads
                    param.requires_grad_(False)
                q = torch.min(self.q1(obs, a, task_id=task), self.q2(obs, a, task_id=task))
                for param in self._online:
                    param.requires_grad_(True)
                actor_loss = (alpha * log_p - q).mean()
                entropy = -log_p
            actor_loss = actor_loss + aux
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            if cfg.autotune:
                gap = (entropy.detach() - self.target_entropy[task])  # > 0: too random, lower alpha
                alpha_loss = (self.log_alpha.exp()[task if cfg.per_task_alpha else torch.zeros_like(task)] * gap).mean()
                self.alpha_opt.zero_grad(set_to_none=True)
                alpha_loss.backward()
                self.alpha_opt.step()
            stats.update(actor_loss=actor_loss.detach(), entropy=entropy.detach().mean())
        with torch.no_grad():  # Polyak averaging, one fused op over all target parameters
            torch._foreach_lerp_(self._target, self._online, cfg.tau)
        self.num_updates += 1
        return stats

    def steps_per_iteration(self) -> int:
        """Env steps of one vector step (all slots)."""
        return self.env.num_envs

    def planned_steps(self, total_steps: int) -> int:
        """The env steps `iterate(total_steps)` runs: whole vector steps."""
        return -(-total_steps // self.env.num_envs) * self.env.num_envs

    def iterate(self, total_steps: int, log_every: int = 1000) -> Iterator[dict]:
        """Step the envs and learn until `total_steps` env steps; yields stats every
        `log_every` env steps (rounded to whole vector steps)."""
        cfg, env = self.cfg, self.env
        if self.next_obs is None:
            self.next_obs, self.next_info = env.reset(seed=self.seed)
        episodes, switches, acc, since = [], [], StatMeans(), 0
        while self.global_step < total_steps:
            obs, info = self.next_obs, self.next_info
            action = self.act(obs, info)
            next_obs, reward, term, trunc, new_info = env.step(action)
            ended = term | trunc
            self.buffer.add(obs, action, reward, term, ended, info["task_id"], info["action_mask"],
                            new_info.get("final_obs"))
            self.next_obs, self.next_info = next_obs, new_info
            self.global_step += env.num_envs
            since += env.num_envs
            episodes += new_info.get("episodes", [])
            if "switch" in new_info:
                switches.append(new_info["switch"])
            if (self.global_step >= cfg.learning_starts and (self.global_step // env.num_envs) % cfg.train_freq == 0
                    and self.buffer.can_sample_nstep(1)):  # a first vector step has no next obs to learn from
                for _ in range(cfg.gradient_steps):
                    acc.add(self.update())
            if since >= log_every or self.global_step >= total_steps:
                stats = acc.means()
                stats["alpha"] = self.log_alpha.exp().mean().item()
                yield {"global_step": self.global_step, **stats, "episodes": episodes, "switches": switches}
                episodes, switches, acc, since = [], [], StatMeans(), 0


def sac_networks(obs_space, action_space, net_cfg) -> dict[str, nn.Module]:
    from mtmoe.nets import build_sac

    actor, q = build_sac(obs_space, action_space, net_cfg)
    return {"actor": actor, "q1": q}


def build_sac_agent(run_cfg, env, device: torch.device) -> SAC:
    from mtmoe.nets import build_q_network

    obs_space, act_space = env.single_observation_space, env.single_action_space
    nets = sac_networks(obs_space, act_space, run_cfg.net)
    q2 = build_q_network(obs_space, act_space, run_cfg.net)
    return SAC(env, nets["actor"].to(device), nets["q1"].to(device), q2.to(device), run_cfg.sac, device, run_cfg.seed)


register_algo("sac", SACConfig, build_sac_agent, sac_networks, critic="q1",
              describe="SAC (continuous tanh-Gaussian and discrete), twin Q networks, automatic temperature")
