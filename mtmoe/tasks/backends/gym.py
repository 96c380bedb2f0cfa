"""Backend ``gym``: any gymnasium id, through gymnasium's own vector envs (same-step autoreset).

Observations: a rank-1 Box becomes a float32 vector; a rank-3 uint8 Box (HWC images, gymnasium's
convention) becomes channels-first pixels. Actions: Discrete, or a rank-1 Box (bounds in the
spec). Other spaces are refused with a clear error rather than flattened silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from mtmoe.tasks.backend import BackendSpec, StepResult, register_backend


@dataclass(frozen=True)
class GymOptions:
    env_kwargs: dict = field(default_factory=dict)
    """Keyword arguments passed to gym.make."""
    vectorization: str = "sync"
    """'sync' (one process; faster on few cores) or 'async' (one process per env)."""


def spec_from_spaces(env: str, obs_space: gym.Space, action_space: gym.Space) -> BackendSpec:
    """The backend spec of one env's spaces (pixels if HWC uint8 images, else a vector)."""
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) not in (1, 3):
        raise ValueError(f"{env}: observation space {obs_space} is neither a vector nor an image Box")
    if len(obs_space.shape) == 3:
        if obs_space.dtype != np.uint8:
            raise ValueError(f"{env}: image observations must be uint8, got {obs_space.dtype}")
        h, w, c = obs_space.shape
        obs = dict(obs_kind="pixels", obs_shape=(c, h, w), obs_high=float(obs_space.high.max()))
    else:
        obs = dict(obs_kind="vector", obs_shape=obs_space.shape)
    if isinstance(action_space, gym.spaces.Discrete):
        act = dict(action_kind="discrete", n_actions=int(action_space.n))
    elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        act = dict(action_kind="continuous", action_low=tuple(action_space.low.astype(float)),
                   action_high=tuple(action_space.high.astype(float)))
    else:
        raise ValueError(f"{env}: action space {action_space} is neither Discrete nor a rank-1 Box")
    return BackendSpec(**obs, **act)


def to_batch(spec: BackendSpec, obs: np.ndarray) -> np.ndarray:
    """A batch of raw observations (n, ...) in the backend layout."""
    if spec.obs_kind == "pixels":
        return np.ascontiguousarray(np.asarray(obs).transpose(0, 3, 1, 2))
    return np.asarray(obs, np.float32)


def as_actions(spec: BackendSpec, actions: np.ndarray) -> np.ndarray:
    if spec.action_kind == "discrete":
        return np.asarray(actions, np.int64)
    return np.asarray(actions, np.float32)


class GymVecEnv:
    """A gymnasium SyncVectorEnv / AsyncVectorEnv of ``num_envs`` copies of one id."""

    def __init__(self, env: str, num_envs: int, options: GymOptions, max_episode_steps: int | None):
        if options.vectorization not in ("sync", "async"):
            raise ValueError(f"vectorization must be 'sync' or 'async', got {options.vectorization!r}")
        kwargs: dict[str, Any] = dict(options.env_kwargs)
        if max_episode_steps:
            kwargs["max_episode_steps"] = max_episode_steps
        fns = [lambda: gym.make(env, **kwargs) for _ in range(num_envs)]
        vec_cls = gym.vector.SyncVectorEnv if options.vectorization == "sync" else gym.vector.AsyncVectorEnv
        self.env = vec_cls(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        self.spec = spec_from_spaces(env, self.env.single_observation_space, self.env.single_action_space)
        self.num_envs = num_envs

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, _ = self.env.reset(seed=seed)
        return to_batch(self.spec, obs)

    def step(self, actions: np.ndarray) -> StepResult:
        obs, reward, terminated, truncated, info = self.env.step(as_actions(self.spec, actions))
        obs = to_batch(self.spec, obs)
        ended = terminated | truncated
        final_obs = None
        if ended.any():  # info["final_obs"] is an object array, None where no episode ended
            final_obs = np.zeros_like(obs)
            rows = np.flatnonzero(ended)
            final_obs[rows] = to_batch(self.spec, np.stack([info["final_obs"][i] for i in rows]))
        return StepResult(obs=obs, reward=np.asarray(reward, np.float32), terminated=terminated,
                          truncated=truncated & ~terminated, episode_end=ended, final_obs=final_obs)

    def close(self) -> None:
        self.env.close()


def check_gym_id(env: str) -> str | None:
    """None if gymnasium knows `env` (after importing its module for 'module:Id'), else why not."""
    import importlib

    name = env
    if ":" in env:
        module, name = env.split(":", 1)
        try:
            importlib.import_module(module)
        except Exception as e:  # ImportError, or a malformed name such as '' or '.x'
            return f"cannot import module {module!r} for gymnasium id {env!r} ({e})"
    if name.startswith("ALE/"):
        import ale_py  # noqa: F401  (registers the ALE ids)
    try:
        gym.spec(name)
    except gym.error.Error as e:
        return f"no gymnasium env {name!r} ({str(e).splitlines()[0]})"
    return None


register_backend("gym", GymVecEnv, GymOptions,
                 describe="any gymnasium id (vector or HWC image obs; Discrete or Box actions)", check_env=check_gym_id)
