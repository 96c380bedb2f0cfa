"""A replay buffer for vectorized envs that stores each observation once.

Transitions are kept per time step and slot: ``obs[t, i]``. The next observation of
``(t, i)`` is ``obs[t + 1, i]`` unless the episode ended at ``t``; then it is the final
observation, kept in a small side table (episodes end rarely, so this costs little). Pixels
stay uint8. Compared with storing (obs, next_obs) pairs this halves the memory.

Frame stacks (``frame_stack = k > 1``, pixel observations of ``C = k * c`` channels, oldest
frame first, newest last, as ALE gives them): only the newest frame (``c`` channels) of each
observation is stored, ``frames[t, i]``, about 1/k of the memory. An observation is rebuilt
at sample time by one fancy-indexed gather: frame ``j`` of ``obs[t, i]`` is
``frames[t - (k - 1 - j), i]`` when that time lies within the episode, else frame
``j + d`` of the episode's *first* observation, ``d`` steps back (``d = ep_off[t, i]``).
Each episode's first observation is kept whole (its ``k - 1`` older frames in a pool with a
free list, its newest in ``frames``), so nothing is assumed about what a backend puts in the
older channels at a reset. A row starts an episode when it is the first one added, when the
slot's previous transition ended, or when its older frames are not the previous
observation's frames shifted by one (a backend that does not stack, a padded mixture): the
rebuilt stacks are always exactly what the env returned, whatever the backend.

Ring wrap-around: a pool entry lives as long as the row that started its episode. Once the
ring is full, the oldest ``k - 1`` rows are never sampled (their history may have been
overwritten); every other row only reads rows at most ``k - 1`` steps older, still stored,
or its episode's first observation, still in the pool. So a stack never mixes in frames of
an overwritten episode. Final observations stay whole in the side table.
"""

from __future__ import annotations

import numpy as np
import torch


class ReplayBuffer:
    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple, obs_dtype, action_shape: tuple,
                 action_dtype, mask_shape: tuple | None, device: torch.device, seed: int = 0,
                 frame_stack: int = 0):
        self.k = k = frame_stack if frame_stack > 1 else 0
        self.t_cap = max(2, k + 1, capacity // num_envs)  # a stacked ring keeps >= 1 sampleable row
        self.n = num_envs
        T, N = self.t_cap, num_envs
        if k:
            if len(obs_shape) != 3 or obs_shape[0] % k or k > 255:
                raise ValueError(f"frame_stack={k} needs pixel observations (k*c, H, W), got {obs_shape}")
            self.c = obs_shape[0] // k
            frame = (self.c, *obs_shape[1:])
            self.obs = None
            self.frames = np.zeros((T, N, *frame), obs_dtype)       # newest frame of each observation
            self.ep_off = np.zeros((T, N), np.uint8)                # steps since episode start, capped at k-1
            self.start_ref = np.zeros((T, N), np.int32)             # pool entry of the episode's first obs
            self.pool = np.zeros((max(8, 2 * N), k - 1, *frame), obs_dtype)  # older frames of first obs
            self.free = list(range(len(self.pool) - 1, -1, -1))
            self._prev: np.ndarray | None = None                    # last added obs, (N, k, c, H, W)
            self._prev_ended = np.ones(N, bool)
            self._cur_ref = np.zeros(N, np.int32)
            self._cur_off = np.zeros(N, np.uint8)
        else:
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

    @property
    def obs_nbytes(self) -> int:
        """Bytes held for observations: the ring (frames and first-obs pool when stacking) and final obs."""
        ring = self.frames.nbytes + self.pool.nbytes if self.k else self.obs.nbytes
        return ring + sum(v.nbytes for v in self.final.values())

    def add(self, obs, action, reward, terminated, ended, task, mask, final_obs) -> None:
        t = self.pos
        if self.full:  # the slot row is being overwritten: release what it held
            for i in np.flatnonzero(self.ended[t]):
                self.final.pop((t, int(i)), None)
            if self.k:
                self.free.extend(self.start_ref[t, self.ep_off[t] == 0].tolist())
        if self.k:
            self._add_frames(t, np.asarray(obs), ended)
        else:
            self.obs[t] = obs
        self.actions[t], self.rewards[t] = action, reward
        self.terminated[t], self.ended[t], self.task[t] = terminated, ended, task
        if self.mask is not None:
            self.mask[t] = mask
        for i in np.flatnonzero(ended):
            self.final[(t, int(i))] = final_obs[i].copy()
        self.pos = (t + 1) % self.t_cap
        self.full = self.full or self.pos == 0

    def _add_frames(self, t: int, obs: np.ndarray, ended) -> None:
        k, N = self.k, self.n
        x = obs.reshape(N, k, self.c, *obs.shape[2:])
        start = self._prev_ended.copy()
        if self._prev is not None:  # a stack that is not the previous one moved on by a frame starts afresh
            start |= (x[:, :-1] != self._prev[:, 1:]).reshape(N, -1).any(1)
        self.frames[t] = x[:, -1]
        for i in np.flatnonzero(start):
            if not self.free:
                self._grow_pool()
            r = self.free.pop()
            self.pool[r] = x[i, :-1]
            self._cur_ref[i] = r
        self._cur_off = np.where(start, 0, np.minimum(self._cur_off + 1, k - 1)).astype(np.uint8)
        self.ep_off[t], self.start_ref[t] = self._cur_off, self._cur_ref
        self._prev = x.copy()
        self._prev_ended = np.asarray(ended, bool).copy()

    def _grow_pool(self) -> None:
        old = len(self.pool)
        new = max(old + self.n, old * 3 // 2)
        pool = np.zeros((new, *self.pool.shape[1:]), self.pool.dtype)
        pool[:old] = self.pool
        self.pool = pool
        self.free.extend(range(new - 1, old - 1, -1))

    def _stacks(self, t: np.ndarray, i: np.ndarray) -> np.ndarray:
        """Rebuild the observations of rows (t, i): (B, k*c, H, W)."""
        k = self.k
        lags = np.arange(k - 1, -1, -1)
        out = self.frames[(t[:, None] - lags) % self.t_cap, i[:, None]]  # (B, k, c, H, W)
        d = self.ep_off[t, i].astype(np.int64)
        bb, jj = np.nonzero(lags > d[:, None])  # frames from before the episode start
        if bb.size:
            out[bb, jj] = self.pool[self.start_ref[t[bb], i[bb]], jj + d[bb]]
        return out.reshape(len(t), -1, *out.shape[3:])

    def _batch(self, out: dict, t: np.ndarray, i: np.ndarray) -> dict[str, torch.Tensor]:
        """The sampled arrays (plus row t's action mask) as tensors on the device."""
        if self.mask is not None:
            out["mask"] = self.mask[t, i]
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device, non_blocking=True) for k, v in out.items()}

    def sample(self, batch_size: int, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        """A uniform batch of one-step transitions; `rng` draws it instead of the buffer's own
        generator (a probe's batch that must not move training's stream)."""
        rng = rng or self.rng
        # the newest row has no next observation yet (unless ended): never sample it
        newest = (self.pos - 1) % self.t_cap
        stored = self.t_cap if self.full else self.pos
        if self.k and self.full:  # nor the oldest k-1 rows: their stacks may reach overwritten rows
            t = (self.pos + self.k - 1 + rng.integers(0, self.t_cap - self.k, batch_size)) % self.t_cap
        else:
            t = rng.integers(0, stored - 1, batch_size)
            t = np.where(t >= newest, t + 1, t) % self.t_cap if self.full else t
        i = rng.integers(0, self.n, batch_size)
        if self.k:
            obs, nxt = self._stacks(t, i), self._stacks((t + 1) % self.t_cap, i)
        else:
            obs, nxt = self.obs[t, i], self.obs[(t + 1) % self.t_cap, i]
        for b in np.flatnonzero(self.ended[t, i]):
            nxt[b] = self.final[(int(t[b]), int(i[b]))]
        out = {"obs": obs, "next_obs": nxt, "actions": self.actions[t, i], "rewards": self.rewards[t, i],
               "terminated": self.terminated[t, i], "task": self.task[t, i]}
        return self._batch(out, t, i)

    # ------------------------------------------------------------------ n-step returns (DQN)

    def can_sample_nstep(self, n: int) -> bool:
        """Whether some row has its next `n` rows stored (see sample_nstep)."""
        if self.full:
            return self.t_cap - (self.k - 1 if self.k else 0) - n > 0
        return self.pos - n > 0

    def sample_nstep(self, batch_size: int, n: int, gamma: float,
                     rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        """Transitions with n-step returns, read from the ring at sample time.

        For a row (t, i): ``rewards`` = sum_{j<m} gamma^j r[t+j, i], where m <= n stops at the
        first row whose episode ended (terminated or truncated); ``discount`` = gamma^m;
        ``terminated`` = whether that end was a termination (the target then has no bootstrap);
        ``next_obs`` = the observation m steps on, or the ended row's final observation (so a
        truncation bootstraps from the state it cut off). ``task`` and ``mask`` are row t's: an
        n-step window never crosses an episode end, so they hold for ``next_obs`` too. Start
        rows are drawn uniformly among those whose next n rows are stored (n = 1 is the usual
        one-step transition); `rng` as in sample."""
        rng = rng or self.rng
        T, k = self.t_cap, self.k
        if self.full:
            off = k - 1 if k else 0  # a stack at the oldest k-1 rows may reach overwritten rows
            t = (self.pos + off + rng.integers(0, T - off - n, batch_size)) % T
        else:
            t = rng.integers(0, self.pos - n, batch_size)
        i = rng.integers(0, self.n, batch_size)
        ret = np.zeros(batch_size, np.float64)
        alive = np.ones(batch_size, bool)
        steps = np.zeros(batch_size, np.int64)
        for j in range(n):  # rows t .. t+n-1, stopping after an episode end
            tj = (t + j) % T
            ret += np.where(alive, gamma**j * self.rewards[tj, i], 0.0)
            steps += alive
            alive &= ~self.ended[tj, i]
        last = (t + steps - 1) % T
        nxt_t = (t + steps) % T
        ended = self.ended[last, i]
        if k:
            obs, nxt = self._stacks(t, i), self._stacks(nxt_t, i)
        else:
            obs, nxt = self.obs[t, i], self.obs[nxt_t, i]
        for b in np.flatnonzero(ended):
            nxt[b] = self.final[(int(last[b]), int(i[b]))]
        out = {"obs": obs, "next_obs": nxt, "actions": self.actions[t, i], "rewards": ret.astype(np.float32),
               "terminated": self.terminated[last, i], "discount": (gamma ** steps).astype(np.float32),
               "task": self.task[t, i]}
        return self._batch(out, t, i)
