"""A replay buffer for vectorized envs that stores each observation once.

Transitions are kept per time step and slot: ``obs[t, i]``. The next observation of
``(t, i)`` is ``obs[t + 1, i]`` unless the episode ended at ``t``; then it is the final
observation, kept in a small side table (episodes end rarely, so this costs little). Pixels
stay uint8. Compared with storing (obs, next_obs) pairs this halves the memory.
"""

from __future__ import annotations

import numpy as np
import torch


class ReplayBuffer:
    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple, obs_dtype, action_shape: tuple,
                 action_dtype, mask_shape: tuple | None, device: torch.device, seed: int = 0):
        self.t_cap = max(2, capacity // num_envs)
        self.n = num_envs
        T, N = self.t_cap, num_envs
        self.obs = np.zeros((T, N, *obs_shape), obs_dtype)
        self.actions = np.zeros((T, N, *action_shape), action_dtype)
        self.rewards = np.zeros((T, N), np.float32)
        self.terminated = np.zeros((T, N), np.float32)
        self.ended = np.zeros((T, N), bool)
        self.task = np.zeros((T, N), np.int64)
        self.mask = np.zeros((T, N, *mask_shape), bool) if mask_shape else None
        self.final: dict[tuple[int, int], np.ndarray] = {}
        self.pos, self.full = 0, False
        self.device = device
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return (self.t_cap if self.full else self.pos) * self.n

    def add(self, obs, action, reward, terminated, ended, task, mask, final_obs) -> None:
        t = self.pos
        for key in [k for k in self.final if k[0] == t]:  # the slot row is being overwritten
            del self.final[key]
        self.obs[t], self.actions[t], self.rewards[t] = obs, action, reward
        self.terminated[t], self.ended[t], self.task[t] = terminated, ended, task
        if self.mask is not None:
            self.mask[t] = mask
        for i in np.flatnonzero(ended):
            self.final[(t, int(i))] = final_obs[i].copy()
        self.pos = (t + 1) % self.t_cap
        self.full = self.full or self.pos == 0

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        # the newest row has no next observation yet (unless ended): never sample it
        newest = (self.pos - 1) % self.t_cap
        stored = self.t_cap if self.full else self.pos
        t = self.rng.integers(0, stored - 1, batch_size)
        t = np.where(t >= newest, t + 1, t) % self.t_cap if self.full else t
        i = self.rng.integers(0, self.n, batch_size)
        nxt = self.obs[(t + 1) % self.t_cap, i]
        for b in np.flatnonzero(self.ended[t, i]):
            nxt[b] = self.final[(int(t[b]), int(i[b]))]
        out = {"obs": self.obs[t, i], "next_obs": nxt, "actions": self.actions[t, i], "rewards": self.rewards[t, i],
               "terminated": self.terminated[t, i], "task": self.task[t, i]}
        if self.mask is not None:
            out["mask"] = self.mask[t, i]
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device, non_blocking=True) for k, v in out.items()}
