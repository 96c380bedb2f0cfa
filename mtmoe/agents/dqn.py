"""DQN (Mnih et al. 2015) on a task mixture, the value-based setting of Obando-Ceron et al. (2024).

Reads top to bottom like CleanRL's dqn.py / dqn_atari.py, plus:
- double DQN (van Hasselt et al. 2016): the online network picks the next action, the target
  network values it (`double_dqn: false` gives the max over the target network, Nature DQN);
- n-step returns (`n_step`), read from the replay ring at sample time: the window stops at an
  episode end; a termination cuts the return, a truncation (time limit, task switch)
  bootstraps from the state it cut off;
- an optional dueling head (Wang et al. 2016): the Q tower's output layer gives V(s) and
  A(s, .), Q = V + A - mean of A over the task's valid actions (the two streams share the
  tower's hidden layers, so an MoE placement stays inside one network);
- masked argmax over each task's valid actions of the union action set, in acting and in the
  target; epsilon-greedy explores uniformly among the valid actions;
- replay through mtmoe's ReplayBuffer (observations stored once, ALE frame stacks one frame per
  step); the target network is copied every `target_update_every` env steps (tau = 1) or
  moved towards the online one by Polyak averaging (tau < 1).

The Q network is the critic tower (mtmoe.nets.QNetwork, the builder of SAC's Q networks):
`--placement critic` puts the MoE layers in it, `none` keeps it dense; `actor` and `both` are
refused (there is no actor).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mtmoe.agents.common import StatMeans, task_interference, to_device
from mtmoe.agents.registry import register_algo
from mtmoe.agents.replay import ReplayBuffer
from mtmoe.agents.sac import frames_per_stack
from mtmoe.errors import ConfigError
from mtmoe.metrics.flops import forward_flops, train_flops
from mtmoe.nets.moe.collect import collect_moe


@dataclass
class DQNConfig:
    buffer_size: int = 100_000
    """Replay capacity in transitions."""
    learning_starts: int = 5_000
    """Env steps of uniform random actions before learning (and the decay of epsilon) starts."""
    batch_size: int = 32
    """Minibatch size."""
    gamma: float = 0.99
    """Discount factor."""
    n_step: int = 1
    """Steps of the n-step return (1: one-step TD targets)."""
    double_dqn: bool = True
    """The online network picks the next action, the target network values it."""
    dueling: bool = False
    """Dueling head: Q = V + A - mean of A over the valid actions."""
    loss: str = "huber"
    """TD loss: huber (smooth L1, delta 1) | mse."""
    optimizer: str = "adam"
    """adam | rmsprop."""
    learning_rate: float = 2.5e-4
    """Step size of the optimizer."""
    eps: float = 1.5e-4
    """Epsilon of the optimizer."""
    rmsprop_alpha: float = 0.95
    """RMSprop: smoothing constant of the squared gradients."""
    rmsprop_momentum: float = 0.0
    """RMSprop: momentum."""
    rmsprop_centered: bool = True
    """RMSprop: centered (divide by the gradients' variance)."""
    max_grad_norm: float = 0.0
    """Clip the gradient's global norm to this (0: no clipping)."""
    train_freq: int = 1
    """Env steps (summed over slots) per gradient step."""
    target_update_every: int = 1_000
    """Env steps between target network updates."""
    tau: float = 1.0
    """Target update: target <- tau * online + (1 - tau) * target (1: a hard copy)."""
    epsilon_start: float = 1.0
    """Exploration rate when learning starts."""
    epsilon_end: float = 0.01
    """Exploration rate after the decay."""
    epsilon_decay_steps: int = 250_000
    """Env steps after learning_starts over which epsilon decays linearly."""
    aux_coef: float = 1.0
    """Weight of MoE auxiliary (load-balancing) losses."""


def masked_argmax(q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The best valid action of each row (invalid actions of the union action set never win)."""
    return q.masked_fill(~mask, float("-inf")).argmax(-1)


def td_target(rewards, discount, terminated, q_next_target, q_next_online, mask, double: bool) -> torch.Tensor:
    """r + discount * (1 - terminated) * Q_target(s', a'), with a' = the masked argmax of the
    online network (double DQN) or of the target network (Nature DQN)."""
    a_next = masked_argmax(q_next_online if double else q_next_target, mask)
    v_next = q_next_target.gather(1, a_next[:, None]).squeeze(1)
    return rewards + discount * (1.0 - terminated) * v_next


class DQN:
    def __init__(self, env, q: nn.Module, cfg: DQNConfig, device: torch.device | str = "cpu", seed: int = 0):
        self.env, self.cfg, self.seed = env, cfg, seed
        self.device = torch.device(device)
        outputs = env.single_action_space.n + (1 if cfg.dueling else 0)
        if q.action_dim != outputs:
            raise ValueError(f"the Q network has {q.action_dim} outputs; this env and dueling={cfg.dueling} need "
                             f"{outputs} (build it with q_network)")
        self.q = q
        self.q_target = copy.deepcopy(q).requires_grad_(False)
        if cfg.optimizer == "rmsprop":
            self.opt = torch.optim.RMSprop(q.parameters(), lr=cfg.learning_rate, alpha=cfg.rmsprop_alpha,
                                           eps=cfg.eps, momentum=cfg.rmsprop_momentum, centered=cfg.rmsprop_centered,
                                           foreach=True)
        else:
            self.opt = torch.optim.Adam(q.parameters(), lr=cfg.learning_rate, eps=cfg.eps, fused=True)
        self.buffer = ReplayBuffer(cfg.buffer_size, env.num_envs, env.single_observation_space.shape,
                                   env.single_observation_space.dtype, (), np.int64, env.action_mask.shape[1:],
                                   self.device, seed, frame_stack=frames_per_stack(env))
        self.rng = np.random.default_rng(seed)
        self.global_step, self.num_updates = 0, 0
        self.next_obs = self.next_info = None

    # ------------------------------------------------------------------ acting

    def q_values(self, net: nn.Module, obs, task, mask) -> torch.Tensor:
        """Q(s, .) over the union action set (the dueling aggregation averages A over valid actions)."""
        out = net(obs, task_id=task)
        if not self.cfg.dueling:
            return out
        value, adv = out[:, :1], out[:, 1:]
        m = mask.float()
        return value + adv - (adv * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True)

    def epsilon(self) -> float:
        """Linear decay from epsilon_start at learning_starts to epsilon_end over epsilon_decay_steps."""
        cfg = self.cfg
        frac = min(1.0, max(0.0, self.global_step - cfg.learning_starts) / max(1, cfg.epsilon_decay_steps))
        return cfg.epsilon_start + frac * (cfg.epsilon_end - cfg.epsilon_start)

    def _random_valid(self, mask: np.ndarray) -> np.ndarray:
        return np.argmax(self.rng.random(mask.shape) + mask, -1)  # uniform over each slot's valid actions

    def act(self, obs_np, info, deterministic: bool = False) -> np.ndarray:
        """Epsilon-greedy training actions (uniform before learning_starts), or the greedy action
        when `deterministic` (evaluation; the agent's random stream is left alone)."""
        mask_np = np.asarray(info["action_mask"])
        if not deterministic and self.global_step < self.cfg.learning_starts:
            return self._random_valid(mask_np)
        obs, task = to_device(obs_np, self.device), to_device(info["task_id"], self.device)
        mask = to_device(mask_np, self.device)
        with torch.no_grad():
            greedy = masked_argmax(self.q_values(self.q, obs, task, mask), mask).cpu().numpy()
        if deterministic:
            return greedy
        explore = self.rng.random(len(greedy)) < self.epsilon()
        return np.where(explore, self._random_valid(mask_np), greedy)

    # ------------------------------------------------------------------ learning

    def td_loss(self, q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.smooth_l1_loss(q, target) if self.cfg.loss == "huber" else F.mse_loss(q, target)

    def _targets(self, b: dict) -> torch.Tensor:
        with torch.no_grad():
            nxt, task, mask = b["next_obs"], b["task"], b["mask"]
            q_next_target = self.q_values(self.q_target, nxt, task, mask)
            q_next_online = self.q_values(self.q, nxt, task, mask) if self.cfg.double_dqn else None
            return td_target(b["rewards"], b["discount"], b["terminated"], q_next_target, q_next_online, mask,
                             self.cfg.double_dqn)

    def update(self) -> dict:
        cfg = self.cfg
        b = self.buffer.sample_nstep(cfg.batch_size, cfg.n_step, cfg.gamma)
        target = self._targets(b)
        with collect_moe(device=self.device) as moe:  # the online forward on s only, not the targets'
            q = self.q_values(self.q, b["obs"], b["task"], b["mask"]).gather(1, b["actions"][:, None]).squeeze(1)
        loss = self.td_loss(q, target) + cfg.aux_coef * moe.aux_loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.q.parameters(), cfg.max_grad_norm)
        self.opt.step()
        self.num_updates += 1
        return {"q_loss": loss.detach(), "q_mean": q.detach().mean()}

    def update_target(self) -> None:
        if self.cfg.tau >= 1.0:
            self.q_target.load_state_dict(self.q.state_dict())
        else:
            with torch.no_grad():
                torch._foreach_lerp_(list(self.q_target.parameters()), list(self.q.parameters()), self.cfg.tau)

    def _learn(self, prev_step: int, acc: StatMeans) -> None:
        """The gradient steps due after this vector step (one per train_freq env steps past
        learning_starts), then the target update when an update boundary was crossed."""
        cfg = self.cfg
        if self.global_step < cfg.learning_starts:
            return
        due = (self.global_step - cfg.learning_starts) // cfg.train_freq
        while self.num_updates < due and self.buffer.can_sample_nstep(cfg.n_step):
            acc.add(self.update())
        if self.global_step // cfg.target_update_every > prev_step // cfg.target_update_every:
            self.update_target()

    def steps_per_iteration(self) -> int:
        """Env steps of one vector step (all slots)."""
        return self.env.num_envs

    def planned_steps(self, total_steps: int) -> int:
        """The env steps `iterate(total_steps)` runs: whole vector steps."""
        return -(-total_steps // self.env.num_envs) * self.env.num_envs

    def iterate(self, total_steps: int, log_every: int = 1000) -> Iterator[dict]:
        """Step the envs and learn until `total_steps` env steps; yields stats every
        `log_every` env steps (rounded to whole vector steps)."""
        env = self.env
        if self.next_obs is None:
            self.next_obs, self.next_info = env.reset(seed=self.seed)
        episodes, switches, acc, since = [], [], StatMeans(), 0
        while self.global_step < total_steps:
            obs, info = self.next_obs, self.next_info
            action = self.act(obs, info)
            next_obs, reward, term, trunc, new_info = env.step(action)
            self.buffer.add(obs, action, reward, term, term | trunc, info["task_id"], info["action_mask"],
                            new_info.get("final_obs"))
            self.next_obs, self.next_info = next_obs, new_info
            prev, self.global_step = self.global_step, self.global_step + env.num_envs
            since += env.num_envs
            episodes += new_info.get("episodes", [])
            if "switch" in new_info:
                switches.append(new_info["switch"])
            self._learn(prev, acc)
            if since >= log_every or self.global_step >= total_steps:
                yield {"global_step": self.global_step, **acc.means(), "epsilon": self.epsilon(),
                       "episodes": episodes, "switches": switches}
                episodes, switches, acc, since = [], [], StatMeans(), 0

    # ------------------------------------------------------------------ what the runner reads

    def networks(self) -> dict[str, nn.Module]:
        return {"q": self.q}

    def probe_networks(self) -> dict[str, nn.Module]:
        return {"q": self.q}  # the target network is a lagged copy

    def restart_episodes(self, obs, info) -> None:
        self.next_obs, self.next_info = obs, info

    def flops_per_env_step(self, obs: torch.Tensor, task: torch.Tensor) -> dict[str, float]:
        """One Q forward per env step (acting) + 1/train_freq updates per env step, each over a
        batch: a target-network forward on s' (and an online one for double DQN) and a
        forward+backward of the online network on s."""
        cfg, n = self.cfg, obs.shape[0]
        fwd = forward_flops(self.q, obs, task_id=task) / n
        trn = train_flops(self.q, obs, task_id=task) / n
        per_update = (trn + fwd * (2 if cfg.double_dqn else 1)) * cfg.batch_size
        return {"forward_per_obs": fwd, "per_update": per_update, "per_env_step": fwd + per_update / cfg.train_freq}

    def task_gradient_cosines(self, batch_size: int = 1024) -> dict:
        """Gradient interference between tasks on a replay batch: cosines of the per-task
        gradients of the TD loss (critic). Nothing is written to .grad; the replay sampler's
        own generator is left alone."""
        if not self.buffer.can_sample_nstep(self.cfg.n_step):
            return {}
        b = self.buffer.sample_nstep(batch_size, self.cfg.n_step, self.cfg.gamma,
                                     rng=np.random.default_rng(self.global_step))
        target = self._targets(b)
        q = self.q_values(self.q, b["obs"], b["task"], b["mask"]).gather(1, b["actions"][:, None]).squeeze(1)
        return task_interference({"critic": (self.q, lambda m: self.td_loss(q[m], target[m]))},
                                 b["task"], getattr(self.env, "task_names", None))

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly, replay buffer included."""
        return {"q": self.q.state_dict(), "q_target": self.q_target.state_dict(), "opt": self.opt.state_dict(),
                "rng": self.rng, "buffer": self.buffer, "global_step": self.global_step,
                "num_updates": self.num_updates, "next_obs": self.next_obs, "next_info": self.next_info}

    def load_state_dict(self, state: dict) -> None:
        for k in ("q", "q_target", "opt"):
            getattr(self, k).load_state_dict(state[k])
        self.rng, self.buffer = state["rng"], state["buffer"]
        self.global_step, self.num_updates = state["global_step"], state["num_updates"]
        self.next_obs, self.next_info = state["next_obs"], state["next_info"]


def dqn_networks(obs_space, action_space, net_cfg) -> dict[str, nn.Module]:
    """The Q network as `mtmoe nets show` and size sweeps count it (a dueling head adds one
    output unit, V(s), which the agent's own network has)."""
    return {"q": q_network(obs_space, action_space, net_cfg)}


def check_config(run_cfg, env) -> None:
    """One-line errors for what DQN cannot run."""
    placement, cfg = run_cfg.net.placement, run_cfg.dqn
    if placement not in ("none", "critic"):
        raise ConfigError("--placement", "placement", f"dqn has one network, the Q network (the critic tower): "
                                                      f"use critic or none, not {placement!r}")
    if not isinstance(env.single_action_space, gym.spaces.Discrete):
        raise ConfigError("--algo", "algo", f"dqn needs discrete actions; {run_cfg.suite} has continuous ones")
    whole = "a whole number >= 1"
    checks = {  # key: (holds, what was expected)
        "loss": (cfg.loss in ("huber", "mse"), "huber or mse"),
        "optimizer": (cfg.optimizer in ("adam", "rmsprop"), "adam or rmsprop"),
        "n_step": (cfg.n_step >= 1, whole), "tau": (0.0 < cfg.tau <= 1.0, "a number in (0, 1]"),
        "train_freq": (cfg.train_freq >= 1, whole), "target_update_every": (cfg.target_update_every >= 1, whole),
        "batch_size": (cfg.batch_size >= 1, whole)}
    for key, (ok, expected) in checks.items():
        if not ok:
            raise ConfigError("--set", f"dqn.{key}", f"expected {expected}, got {getattr(cfg, key)!r}")


def q_network(obs_space, action_space, net_cfg, dueling: bool = False) -> nn.Module:
    """The Q network (SAC's Q-network builder: the critic tower); a dueling head has one more
    output, V(s), in front of A(s, .)."""
    from mtmoe.nets import build_q_network

    out_space = gym.spaces.Discrete(int(action_space.n) + 1) if dueling else action_space
    return build_q_network(obs_space, out_space, net_cfg)


def build_dqn_agent(run_cfg, env, device: torch.device) -> DQN:
    check_config(run_cfg, env)
    q = q_network(env.single_observation_space, env.single_action_space, run_cfg.net, run_cfg.dqn.dueling)
    return DQN(env, q.to(device), run_cfg.dqn, device, run_cfg.seed)


register_algo("dqn", DQNConfig, build_dqn_agent, dqn_networks, critic="q",
              describe="DQN: double, n-step, optional dueling head; the Q network is the critic tower")
