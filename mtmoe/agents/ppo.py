"""PPO (Schulman et al. 2017) on a task mixture, discrete or continuous, CPU or CUDA.

Reads top to bottom like CleanRL's ppo.py, with what mixtures need on top:
- discrete: logits over the union action set, masked per slot (invalid actions get -inf);
- continuous: a Gaussian over the union dims; log-probs and entropies count active dims only;
- truncated episodes (time limits, task switches) bootstrap from V(final_obs);
- optional per-task reward scaling (tasks' reward scales differ by orders of magnitude);
- MoE auxiliary losses (load balancing) are added to the objective.

The rollout buffer lives on the agent's device; statistics stay tensors until one transfer
per update, so the CUDA path has no per-step host sync beyond handing actions to the envs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from mtmoe.agents.common import RunningMeanStd, task_interference, to_device
from mtmoe.agents.registry import register_algo
from mtmoe.errors import ConfigError
from mtmoe.metrics.flops import forward_flops, train_flops
from mtmoe.nets.moe.collect import collect_moe


@dataclass
class PPOConfig:
    num_steps: int = 128
    """Env steps per slot per rollout."""
    learning_rate: float = 2.5e-4
    """Adam learning rate."""
    anneal_lr: bool = True
    """Linearly decay the learning rate to 0 over the run."""
    anneal_per_phase: bool = False
    """With anneal_lr in a continual suite: decay to 0 within each phase, restarting at each task
    switch (otherwise the last phases train at an almost annealed rate)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    num_minibatches: int = 4
    """Minibatches per epoch."""
    update_epochs: int = 4
    """Passes over each rollout."""
    norm_adv: bool = True
    """Normalize advantages per minibatch."""
    clip_coef: float = 0.1
    """Policy ratio clip."""
    clip_vloss: bool = True
    """Clip the value loss as in CleanRL/PPO2."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient norm clip."""
    target_kl: float | None = None
    """Stop the epochs of an update early when the approx. KL exceeds this."""
    aux_coef: float = 1.0
    """Weight of the networks' auxiliary (MoE load-balancing) losses."""
    per_task_reward_norm: bool = False
    """Scale each task's rewards by the running std of its discounted return."""
    adam_eps: float = 1e-5
    """Adam epsilon."""


class PPO:
    """`for stats in PPO(...).iterate(total_steps): ...` runs one rollout + update per item."""

    def __init__(self, env, net: nn.Module, cfg: PPOConfig, device: torch.device | str = "cpu", seed: int = 0):
        self.env, self.net, self.cfg = env, net, cfg
        batch = env.num_envs * cfg.num_steps
        if cfg.num_minibatches < 1 or batch // cfg.num_minibatches < 2:  # advantages are normalized per minibatch
            raise ConfigError("--set", "ppo.num_minibatches",
                              f"{cfg.num_minibatches} minibatches of a {batch}-sample rollout ({env.num_envs} envs x "
                              f"{cfg.num_steps} steps) leave fewer than 2 samples each; use fewer minibatches or "
                              "more envs or steps")
        self.device = torch.device(device)
        self.discrete = hasattr(env.single_action_space, "n")
        # fused: one kernel for all parameters (CPU and CUDA); ~10-15% of a small net's update here
        self.optimizer = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps, fused=True)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.seed = seed
        n, t = env.num_envs, cfg.num_steps
        obs_space = env.single_observation_space
        buf = lambda *shape, dtype=torch.float32: torch.zeros(shape, dtype=dtype, device=self.device)  # noqa: E731
        self.obs = buf(t, n, *obs_space.shape, dtype=torch.from_numpy(np.zeros(0, obs_space.dtype)).dtype)
        self.task = buf(t, n, dtype=torch.long)
        self.mask = buf(t, n, *env.action_mask.shape[1:], dtype=torch.bool) if hasattr(env, "action_mask") else None
        act_shape = () if self.discrete else env.single_action_space.shape
        self.actions = buf(t, n, *act_shape, dtype=torch.long if self.discrete else torch.float32)
        self.logprobs, self.rewards, self.dones, self.values = buf(t, n), buf(t, n), buf(t, n), buf(t, n)
        self.on_device = getattr(env, "on_device", False)  # a DeviceMixture: tensors in, tensors out
        if self.on_device:
            if cfg.per_task_reward_norm:
                raise ConfigError("--set", "ppo.per_task_reward_norm", "is not available with tensor envs "
                                  "(set env_device=host)")
            self.final_obs = buf(t, n, *obs_space.shape, dtype=torch.uint8)
            self.truncs, self.ended = buf(t, n, dtype=torch.bool), buf(t, n, dtype=torch.bool)
            self.ep_return, self.ep_length = buf(t, n, dtype=torch.float64), buf(t, n, dtype=torch.long)
        self.reward_rms = RunningMeanStd(getattr(env, "num_tasks", 1))
        self._disc_return = np.zeros(n, np.float64)
        self.global_step = 0
        self.next_obs = None

    # ------------------------------------------------------------------ policy

    def _masked_logits(self, logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return logits if mask is None else logits.masked_fill(~mask, torch.finfo(logits.dtype).min)

    def _dist_stats(self, actor_out, mask, action=None, with_entropy: bool = True):
        """(action, log_prob, entropy) from the actor's output; samples when `action` is None.
        The rollout passes with_entropy=False (entropy is None then): it only needs samples."""
        if self.discrete:
            logits = self._masked_logits(actor_out, mask)
            logp_all = torch.log_softmax(logits, -1)
            if action is None:  # Gumbel-max sampling: one kernel, no Categorical object
                u = torch.rand(logits.shape, generator=self.generator, device=logits.device)
                action = torch.argmax(logits - torch.log(-torch.log(u.clamp_min(1e-20))), -1)
            logp = logp_all.gather(-1, action.unsqueeze(-1)).squeeze(-1)
            if not with_entropy:
                return action, logp, None
            p = logp_all.exp()
            entropy = -(p * torch.where(p > 0, logp_all, torch.zeros_like(logp_all))).sum(-1)
            return action, logp, entropy
        mean, log_std = actor_out
        log_std = log_std.expand_as(mean)
        std = log_std.exp()
        if action is None:
            action = mean + std * torch.randn(mean.shape, generator=self.generator, device=mean.device)
        active = mask.float() if mask is not None else torch.ones_like(mean)
        logp = -((action - mean) ** 2) / (2 * std**2) - log_std - 0.5 * math.log(2 * math.pi)
        entropy = log_std + 0.5 * (1.0 + math.log(2 * math.pi))
        return action, (logp * active).sum(-1), (entropy * active).sum(-1)

    @torch.no_grad()
    def act(self, obs_np: np.ndarray, info: dict, deterministic: bool = False) -> np.ndarray:
        """Actions for evaluation: the policy's mode (deterministic) or a sample."""
        obs, task = to_device(obs_np, self.device), to_device(info["task_id"], self.device)
        mask = to_device(info["action_mask"], self.device) if self.mask is not None else None
        actor_out = self.net.actor(obs, task)
        if not deterministic:
            return self._dist_stats(actor_out, mask)[0].cpu().numpy()
        if self.discrete:
            return self._masked_logits(actor_out, mask).argmax(-1).cpu().numpy()
        return actor_out[0].cpu().numpy()

    def task_gradient_cosines(self, max_samples: int = 2048) -> dict:
        """Gradient interference between tasks on the last rollout: mean pairwise cosine of the
        per-task gradients of the policy-gradient loss (actor tower) and of the value loss
        (critic tower), plus each pair. Nothing is written to .grad."""
        if getattr(self, "_last_returns", None) is None:
            return {}
        flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
        n = flat(self.task).shape[0]
        probe_rng = torch.Generator(device=self.device).manual_seed(self.global_step)  # leaves training's alone
        idx = torch.randperm(n, generator=probe_rng, device=self.device)[:max_samples]
        obs, task, act = flat(self.obs)[idx], flat(self.task)[idx], flat(self.actions)[idx]
        mask = flat(self.mask)[idx] if self.mask is not None else None
        adv, ret = flat(self._last_advantages)[idx], flat(self._last_returns)[idx]
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        actor_out, value = self.net(obs, task)
        _, logp, _ = self._dist_stats(actor_out, mask, act)
        return task_interference({"actor": (self.net.actor_tower, lambda m: -(adv[m] * logp[m]).mean()),
                                  "critic": (self.net.critic_tower, lambda m: 0.5 * ((value[m] - ret[m]) ** 2).mean())},
                                 task, getattr(self.env, "task_names", None))

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly (the envs are saved apart)."""
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "global_step": self.global_step,
                "next_obs": self.next_obs, "next_info": self.next_info, "next_done": self.next_done,
                "reward_rms": self.reward_rms, "disc_return": self._disc_return}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.global_step, self.next_obs, self.next_info = state["global_step"], state["next_obs"], state["next_info"]
        self.next_done, self.reward_rms, self._disc_return = state["next_done"], state["reward_rms"], state["disc_return"]

    # ------------------------------------------------------------------ loop

    def reset(self):
        self.restart_episodes(*self.env.reset(seed=self.seed))

    def restart_episodes(self, obs, info) -> None:
        self.next_obs, self.next_info = obs, info
        self.next_done = torch.zeros(self.env.num_envs, device=self.device)

    # ------------------------------------------------------------------ what the runner reads

    def networks(self) -> dict[str, nn.Module]:
        return {"actor_critic": self.net}

    def probe_networks(self) -> dict[str, nn.Module]:
        return {"actor_critic": self.net}

    def flops_per_env_step(self, obs: torch.Tensor, task: torch.Tensor) -> dict[str, float]:
        return ppo_flops(self.net, obs, task, self.cfg.update_epochs)

    def rollout(self) -> dict:
        if self.on_device:
            return self._rollout_on_device()
        cfg, env = self.cfg, self.env
        episodes, switches = [], []
        for step in range(cfg.num_steps):
            obs = to_device(self.next_obs, self.device)
            task = to_device(self.next_info["task_id"], self.device)
            mask = to_device(self.next_info["action_mask"], self.device) if self.mask is not None else None
            self.obs[step], self.task[step], self.dones[step] = obs, task, self.next_done
            if mask is not None:
                self.mask[step] = mask
            with torch.no_grad():
                actor_out, self.values[step] = self.net(obs, task)  # a shared encoder runs once
                action, logp, _ = self._dist_stats(actor_out, mask, with_entropy=False)
            self.actions[step], self.logprobs[step] = action, logp
            next_obs, reward, term, trunc, info = env.step(action.cpu().numpy())
            reward = self._scale_rewards(reward, term | trunc, self.next_info["task_id"])
            if trunc.any():  # bootstrap time limits / task switches from the value of the last obs
                reward = reward + cfg.gamma * self._final_values(info["final_obs"], trunc & ~term)
            self.rewards[step] = to_device(reward.astype(np.float32), self.device)
            self.next_done = to_device((term | trunc).astype(np.float32), self.device)
            self.next_obs, self.next_info = next_obs, info
            episodes += info.get("episodes", [])
            if "switch" in info:
                switches.append(info["switch"])
        self.global_step += cfg.num_steps * env.num_envs
        return {"episodes": episodes, "switches": switches}

    def _rollout_on_device(self) -> dict:
        """The rollout over a DeviceMixture: no host transfer or sync inside the loop. Time-limit
        bootstrapping waits for the end of the rollout (the network does not change within it),
        when one batched critic pass covers every truncated step; episodes are read once (a few
        device reads per iteration in all, none per step)."""
        cfg, env = self.cfg, self.env
        switches = []
        for step in range(cfg.num_steps):
            obs, task, mask = self.next_obs, self.next_info["task_id"], self.next_info["action_mask"]
            self.obs[step], self.task[step], self.dones[step], self.mask[step] = obs, task, self.next_done, mask
            with torch.no_grad():
                actor_out, self.values[step] = self.net(obs, task)
                action, logp, _ = self._dist_stats(actor_out, mask, with_entropy=False)
            self.actions[step], self.logprobs[step] = action, logp
            next_obs, reward, term, trunc, info = env.step(action)
            self.rewards[step] = reward
            self.truncs[step], self.final_obs[step] = trunc & ~term, info["final_obs"]
            self.ended[step], self.ep_return[step] = info["episode_end"], info["episode_return"]
            self.ep_length[step] = info["episode_length"]
            self.next_done = (term | trunc).float()
            self.next_obs, self.next_info = next_obs, info
            if "switch" in info:
                switches.append(info["switch"])
        t_idx, slot = torch.nonzero(self.truncs, as_tuple=True)  # syncs once per rollout, as episodes() does
        if t_idx.numel():
            with torch.no_grad():
                values = self.net.critic(self.final_obs[t_idx, slot], self.task[t_idx, slot])
            self.rewards[t_idx, slot] += cfg.gamma * values
        self.global_step += cfg.num_steps * env.num_envs
        return {"episodes": env.episodes(self.ended, self.ep_return, self.ep_length, self.task), "switches": switches}

    def _scale_rewards(self, reward: np.ndarray, done: np.ndarray, task_id: np.ndarray) -> np.ndarray:
        if not self.cfg.per_task_reward_norm:
            return reward
        self._disc_return = self._disc_return * self.cfg.gamma + reward
        self.reward_rms.update_per_task(self._disc_return, task_id)
        self._disc_return[done] = 0.0
        return (reward / np.sqrt(self.reward_rms.var[task_id] + 1e-8)).astype(np.float32)

    def _final_values(self, final_obs: np.ndarray, which: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(which)
        out = np.zeros(len(which), np.float32)
        with torch.no_grad():
            obs = to_device(final_obs[idx], self.device)
            task = to_device(self.next_info["task_id"][idx], self.device)
            out[idx] = self.net.critic(obs, task).float().cpu().numpy()
        return out

    def advantages(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        with torch.no_grad():
            next_value = self.net.critic(to_device(self.next_obs, self.device), to_device(self.next_info["task_id"], self.device))
            adv = torch.zeros_like(self.rewards)
            last = torch.zeros_like(next_value)
            for t in reversed(range(cfg.num_steps)):
                not_done = 1.0 - (self.next_done if t == cfg.num_steps - 1 else self.dones[t + 1])
                nv = next_value if t == cfg.num_steps - 1 else self.values[t + 1]
                delta = self.rewards[t] + cfg.gamma * nv * not_done - self.values[t]
                last = delta + cfg.gamma * cfg.gae_lambda * not_done * last
                adv[t] = last
        return adv, adv + self.values

    def update(self, advantages: torch.Tensor, returns: torch.Tensor) -> dict:
        cfg = self.cfg
        flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
        b_obs, b_task, b_act, b_logp = flat(self.obs), flat(self.task), flat(self.actions), flat(self.logprobs)
        b_mask = flat(self.mask) if self.mask is not None else None
        b_adv, b_ret, b_val = flat(advantages), flat(returns), flat(self.values)
        batch = b_obs.shape[0]
        mb = batch // cfg.num_minibatches
        stats = torch.zeros(7, device=self.device)  # pg, v, ent, aux, kl, clipfrac, count
        for _ in range(cfg.update_epochs):
            perm = torch.randperm(batch, generator=self.generator, device=self.device)
            for start in range(0, mb * cfg.num_minibatches, mb):  # whole minibatches: a remainder is left out
                idx = perm[start:start + mb]
                m = b_mask[idx] if b_mask is not None else None
                with collect_moe(device=self.device) as moe:  # the MoE layers of both towers
                    actor_out, value = self.net(b_obs[idx], b_task[idx])
                _, logp, entropy = self._dist_stats(actor_out, m, b_act[idx])
                aux = moe.aux_loss()  # load-balancing losses of the forward above (0 without MoE)
                log_ratio = logp - b_logp[idx]
                ratio = log_ratio.exp()
                adv = b_adv[idx]
                if cfg.norm_adv:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                if cfg.clip_vloss:
                    v_clipped = b_val[idx] + (value - b_val[idx]).clamp(-cfg.clip_coef, cfg.clip_coef)
                    v_loss = 0.5 * torch.max((value - b_ret[idx]) ** 2, (v_clipped - b_ret[idx]) ** 2).mean()
                else:
                    v_loss = 0.5 * ((value - b_ret[idx]) ** 2).mean()
                ent = entropy.mean()
                loss = pg_loss - cfg.ent_coef * ent + cfg.vf_coef * v_loss + cfg.aux_coef * aux
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clipfrac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()
                    stats += torch.stack([pg_loss.detach(), v_loss.detach(), ent.detach(), aux.detach().float(),
                                          approx_kl, clipfrac, torch.ones((), device=self.device)])
            if cfg.target_kl is not None and float(approx_kl) > cfg.target_kl:
                break
        s = (stats[:6] / stats[6]).tolist()
        y_var = b_ret.var()
        explained = float(1 - (b_ret - b_val).var() / y_var) if float(y_var) > 0 else float("nan")
        return dict(zip(["policy_loss", "value_loss", "entropy", "aux_loss", "approx_kl", "clipfrac"], s),
                    explained_variance=explained, learning_rate=self.optimizer.param_groups[0]["lr"])

    def _lr_left(self, it: int, num_iters: int, per_iter: int) -> float:
        """Share of the learning rate left at iteration `it`: linear decay over the run, or over
        the current phase of a continual suite with anneal_per_phase."""
        phases = getattr(self.env, "schedule", None)
        if not (self.cfg.anneal_per_phase and phases):
            return 1.0 - it / num_iters
        step = it * per_iter
        phase = next(p for p in reversed(phases) if p.start <= step)
        end = num_iters * per_iter if phase.end is None else phase.end
        return max(0.0, 1.0 - (step - phase.start) / max(end - phase.start, 1))

    def steps_per_iteration(self) -> int:
        """Env steps of one rollout (all slots)."""
        return self.cfg.num_steps * self.env.num_envs

    def planned_steps(self, total_steps: int) -> int:
        """The env steps `iterate(total_steps)` runs: whole rollouts, at least one."""
        per_iter = self.steps_per_iteration()
        return max(1, total_steps // per_iter) * per_iter

    def iterate(self, total_steps: int, log_every: int = 0) -> Iterator[dict]:
        """Rollout + update until `total_steps` env steps; yields per-iteration stats (every
        iteration: `log_every` is for the protocol, an iteration is PPO's smallest unit)."""
        if self.next_obs is None:
            self.reset()
        per_iter, planned = self.steps_per_iteration(), self.planned_steps(total_steps)
        num_iters = planned // per_iter
        while self.global_step < planned:
            it = self.global_step // per_iter
            if self.cfg.anneal_lr:
                self.optimizer.param_groups[0]["lr"] = self.cfg.learning_rate * self._lr_left(it, num_iters, per_iter)
            data = self.rollout()
            adv, ret = self.advantages()
            self._last_advantages, self._last_returns = adv, ret  # for task_gradient_cosines()
            stats = self.update(adv, ret)
            yield {"global_step": self.global_step, **stats, **data}


def ppo_flops(net: nn.Module, obs: torch.Tensor, task: torch.Tensor, update_epochs: int) -> dict[str, float]:
    """Counted FLOPs per env step of PPO with this network: one forward per collected observation
    (the rollout) + update_epochs forward+backward passes per sample (each epoch visits each once)."""
    n = obs.shape[0]
    fwd, trn = forward_flops(net, obs, task) / n, train_flops(net, obs, task) / n
    return {"forward_per_obs": fwd, "train_per_sample": trn, "per_env_step": fwd + update_epochs * trn}


def build_ppo(run_cfg, env, device: torch.device) -> PPO:
    from mtmoe.nets import build_actor_critic

    net = build_actor_critic(env.single_observation_space, env.single_action_space, run_cfg.net).to(device)
    return PPO(env, net, run_cfg.ppo, device, run_cfg.seed)


def ppo_networks(obs_space, action_space, net_cfg) -> dict[str, nn.Module]:
    from mtmoe.nets import build_actor_critic

    return {"actor_critic": build_actor_critic(obs_space, action_space, net_cfg)}


register_algo("ppo", PPOConfig, build_ppo, ppo_networks, critic="actor_critic", tensor_envs=True,
              describe="PPO (discrete and continuous), actor-critic with an optional shared encoder")
