"""A deterministic backend for testing the mixture layer exactly.

Slot i of a `scripted` task plays episodes of `length` steps; the reward at step t of an episode
is `reward * (t + 1)` (so clipping and scaling are visible), the observation is filled with
`marker` and carries the in-episode step counter in its last entry. Discrete: the last action
taken is stored so the test can check the union -> local action mapping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtmoe.tasks.backend import BackendSpec, StepResult, register_backend


@dataclass
class ScriptedOptions:
    length: int = 5
    """Episode length."""
    reward: float = 1.0
    """Reward scale."""
    marker: float = 1.0
    """Value filling the observation."""
    obs_dim: int = 3
    """Vector obs size (or channels for pixels)."""
    pixels: bool = False
    """Give (obs_dim, 4, 4) uint8 images instead of vectors."""
    actions: list = None
    """Discrete action names (None with n_actions: positional)."""
    n_actions: int = 3
    """Number of discrete actions; 0 means continuous with `obs_dim`-1 dims."""


class ScriptedBackend:
    def __init__(self, env, num_envs, options: ScriptedOptions, max_episode_steps):
        o = options
        self.o, self.num_envs = o, num_envs
        shape = (o.obs_dim, 4, 4) if o.pixels else (o.obs_dim,)
        if o.n_actions:
            names = tuple(o.actions) if o.actions else None
            self.spec = BackendSpec("pixels" if o.pixels else "vector", shape, "discrete",
                                    n_actions=len(names) if names else o.n_actions, action_names=names)
        else:
            d = o.obs_dim - 1
            self.spec = BackendSpec("pixels" if o.pixels else "vector", shape, "continuous",
                                    action_low=(-2.0,) * d, action_high=(2.0,) * d)
        self.t = np.zeros(num_envs, np.int64)
        self.last_actions = None
        self.resets = 0

    def _obs(self):
        dtype = np.uint8 if self.o.pixels else np.float32
        obs = np.full((self.num_envs, *self.spec.obs_shape), self.o.marker, dtype)
        if not self.o.pixels:
            obs[:, -1] = self.t
        return obs

    def reset(self, seed=None):
        self.resets += 1
        self.t[:] = 0
        return self._obs()

    def step(self, actions):
        self.last_actions = np.array(actions)
        self.t += 1
        reward = (self.o.reward * self.t).astype(np.float32)
        done = self.t >= self.o.length
        final = self._obs() if done.any() else None
        self.t[done] = 0
        no = np.zeros(self.num_envs, bool)
        return StepResult(self._obs(), reward, done.copy(), no, done.copy(), final)

    def close(self):
        pass


register_backend("scripted", ScriptedBackend, ScriptedOptions, describe="test-only scripted env")
