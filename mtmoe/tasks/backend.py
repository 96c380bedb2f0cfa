"""The contract between an environment backend and the mixture layer.

A backend turns one task (one game / env id with its options) into a *vectorized* env of
``num_envs`` copies with a tiny numpy interface. The mixture layer (``mixture.py``) stacks
backends of several tasks into one vector env with unified spaces, so everything a backend
returns is a plain numpy array in a fixed layout:

- observations: pixels channels-first ``(n, C, H, W)`` uint8; vectors ``(n, D)`` float32;
- rewards: float32, *raw* (unclipped, unscaled: the mixture applies the task's reward
  handling and keeps raw returns for scores);
- autoreset in the *same step*: when a slot's episode ends, the returned observation is
  already the first observation of its next episode, and the last observation of the
  ended episode is in ``StepResult.final_obs`` (rows of ended slots only are meaningful);
- ``episode_end`` marks the end of a *game* for score keeping; it differs from
  ``terminated | truncated`` only when a backend makes life loss terminal (ALE option).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Protocol

import numpy as np


@dataclass(frozen=True)
class BackendSpec:
    """What one backend tells the mixture about its spaces."""

    obs_kind: Literal["pixels", "vector"]
    """`pixels`: uint8 (C, H, W); `vector`: float32 (D,)."""
    obs_shape: tuple[int, ...]
    """Shape of one observation, channels first for pixels."""
    action_kind: Literal["discrete", "continuous"]
    obs_high: float = 255.0
    """Largest pixel value (255 for images, 1 for MinAtar's 0/1 planes); nets scale by it."""
    n_actions: int = 0
    """Number of discrete actions (0 for continuous)."""
    action_names: tuple[str, ...] | None = None
    """Semantic names of the discrete actions (e.g. ALE's 'FIRE'), used to build a union
    action set across tasks; None when the backend has no names (positional union)."""
    action_low: tuple[float, ...] = ()
    """Continuous: per-dimension lower bound."""
    action_high: tuple[float, ...] = ()
    """Continuous: per-dimension upper bound."""

    @property
    def action_dim(self) -> int:
        return len(self.action_low)

    @property
    def obs_dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.obs_kind == "pixels" else np.dtype(np.float32)


@dataclass
class StepResult:
    obs: np.ndarray
    """(n, *obs_shape): next observations (first obs of a new episode where one ended)."""
    reward: np.ndarray
    """(n,) float32 raw reward."""
    terminated: np.ndarray
    """(n,) bool: MDP termination (includes life loss when that option is on)."""
    truncated: np.ndarray
    """(n,) bool: time limit or other truncation."""
    episode_end: np.ndarray
    """(n,) bool: end of a whole game (for score keeping)."""
    final_obs: np.ndarray | None = None
    """(n, *obs_shape) or None when no slot ended: last obs of the ended episodes."""
    success: np.ndarray | None = None
    """(n,) bool, from backends whose tasks define success (Meta-World's info["success"]): this
    step succeeded. An episode succeeds when any of its steps did; None: the task has no success."""


class VecBackend(Protocol):
    """A vectorized env of one task. Built by a backend factory (see ``register_backend``)."""

    spec: BackendSpec
    num_envs: int

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset all slots; slot i is seeded with ``seed + i`` when a seed is given."""

    def step(self, actions: np.ndarray) -> StepResult:
        """Step all slots. Discrete actions: (n,) int64 in [0, n_actions);
        continuous: (n, action_dim) float32 within the bounds."""

    def close(self) -> None: ...

    # Optional: ``exact_pickle = True`` on a backend whose pickled copy continues exactly where it
    # was (run checkpoints then save the envs; gymnasium's EzPickle envs re-create a fresh env).
    # Optional: backends that can step in the background (ALE's thread pool) also define
    # ``step_async(actions) -> None`` and ``step_wait() -> StepResult``; the mixture then starts
    # every task's step before it waits for any, so tasks run in parallel.


@dataclass(frozen=True)
class BackendInfo:
    """A registered backend: how to build it and which options its YAML may set."""

    name: str
    factory: Callable[..., VecBackend]
    """A VecBackend class (or function) called as
    factory(env: str, num_envs: int, options: <options dataclass>, max_episode_steps: int | None)."""
    options: type
    """A dataclass whose fields (with defaults) are the backend's allowed YAML options."""
    describe: str = ""
    check_env: Callable[[str], str | None] | None = None
    """Optional, cheap (no env is built): env name -> None if the backend has it, else what is
    wrong (one line). Called when a task file is read, so a typo fails there, not mid-run."""
    device_factory: Callable[..., object] | None = None
    """Optional: the same task as batched tensor ops on a device, called as
    device_factory(env, num_envs, options, max_episode_steps, device); its reset/step take and
    return tensors on that device (see mtmoe.tasks.device_mixture)."""


BACKENDS: dict[str, BackendInfo] = {}


def register_backend(
    name: str, factory: Callable[..., VecBackend], options: type, describe: str = "",
    check_env: Callable[[str], str | None] | None = None, device_factory: Callable[..., object] | None = None,
) -> None:
    """Add a backend (a user may register their own, e.g. a new simulator)."""
    BACKENDS[name] = BackendInfo(name=name, factory=factory, options=options, describe=describe,
                                 check_env=check_env, device_factory=device_factory)


def raises_for_unknown(name_fn: Callable[[str], object]) -> Callable[[str], str | None]:
    """A ``check_env`` from a function that raises ValueError for a name the backend lacks."""

    def check(env: str) -> str | None:
        try:
            name_fn(env)
        except ValueError as e:
            return str(e)
        return None

    return check
