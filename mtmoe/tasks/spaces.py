"""Unified spaces for a set of tasks: padded observations, a union action set, masks.

Discrete tasks get one action set, the union of theirs: by action *name* (``semantic``, e.g.
ALE's FIRE means the same in every game) or by index (``positional``, pad to the largest set).
Each task gets a mask over the union and a table from union index to its own action index.
Continuous tasks share ``Box(-1, 1, (max_dim,))``; a task uses its first ``dim`` entries, which
the mixture rescales to the task's own bounds, and ignores the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from mtmoe.errors import ConfigError
from mtmoe.tasks.backend import BackendSpec


@dataclass(frozen=True)
class UnifiedSpaces:
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Space
    action_masks: np.ndarray
    """(num_tasks, n_union) bool for discrete, (num_tasks, max_dim) bool for continuous."""
    to_local: list[np.ndarray]
    """Discrete: per task, (n_union,) int64 union index -> the task's own action (masked -> 0)."""
    action_names: tuple[str, ...] | None
    """Discrete: names of the union actions when the union is semantic."""

    @property
    def discrete(self) -> bool:
        return isinstance(self.action_space, gym.spaces.Discrete)


def unify(task_ids: list[str], specs: list[BackendSpec], action_union: str = "semantic", source: str = "suite") -> UnifiedSpaces:
    kinds = {s.obs_kind for s in specs}
    if len(kinds) > 1:
        raise ConfigError(source, "tasks", "mixes pixel and vector observations; a suite needs one kind")
    if specs[0].obs_kind == "pixels":
        sizes = {s.obs_shape[1:] for s in specs}
        if len(sizes) > 1:
            listing = ", ".join(f"{t}: {s.obs_shape[1]}x{s.obs_shape[2]}" for t, s in zip(task_ids, specs))
            raise ConfigError(source, "tasks", f"pixel tasks differ in image size ({listing}); resize them to one size")
        channels = max(s.obs_shape[0] for s in specs)
        high = max(s.obs_high for s in specs)
        obs_space = gym.spaces.Box(0, int(high), (channels, *specs[0].obs_shape[1:]), np.uint8)
    else:
        dim = max(s.obs_shape[0] for s in specs)
        obs_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)

    action_kinds = {s.action_kind for s in specs}
    if len(action_kinds) > 1:
        raise ConfigError(source, "tasks", "mixes discrete and continuous action spaces")
    if specs[0].action_kind == "continuous":
        dim = max(s.action_dim for s in specs)
        masks = np.zeros((len(specs), dim), bool)
        for k, s in enumerate(specs):
            masks[k, : s.action_dim] = True
        box = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
        return UnifiedSpaces(obs_space, box, masks, [], None)

    semantic = action_union == "semantic" and all(s.action_names for s in specs)
    if semantic:
        names: list[str] = []
        for s in specs:
            names += [a for a in s.action_names if a not in names]
        index = {a: i for i, a in enumerate(names)}
        n_union = len(names)
    else:
        n_union = max(s.n_actions for s in specs)
    masks = np.zeros((len(specs), n_union), bool)
    to_local = []
    for k, s in enumerate(specs):
        table = np.zeros(n_union, np.int64)
        for local in range(s.n_actions):
            u = index[s.action_names[local]] if semantic else local
            table[u], masks[k, u] = local, True
        to_local.append(table)
    return UnifiedSpaces(obs_space, gym.spaces.Discrete(n_union), masks, to_local, tuple(names) if semantic else None)


class ActionRescaler:
    """[-1, 1] policy actions (first `dim` entries) -> a task's own bounds, clipped first."""

    def __init__(self, spec: BackendSpec):
        self.dim = spec.action_dim
        self.low = np.asarray(spec.action_low, np.float32)
        self.half_range = (np.asarray(spec.action_high, np.float32) - self.low) / 2
        self.identity = bool(np.all(self.low == -1) and np.all(self.half_range == 1))

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        a = np.minimum(np.maximum(actions[:, : self.dim], -1.0), 1.0)
        return a if self.identity else self.low + (a + 1.0) * self.half_range
