"""Returns of a uniformly random policy on a task, played through the task's own backend (its
options, sticky actions and step cap: what training sees). The low end of a normalization,
e.g. MinAtar's random scores in data/minatar_reference.csv (bench/minatar_random.py)."""

from __future__ import annotations

import numpy as np

from mtmoe.tasks.mixture import make_backend
from mtmoe.tasks.schema import TaskSpec


def random_returns(task: TaskSpec, episodes: int, num_envs: int = 16, seed: int = 0) -> np.ndarray:
    """Returns of `episodes` episodes played at random, the same number by each of `num_envs` slots
    (the first N episodes to end over all slots would favour short ones)."""
    backend = make_backend(task, num_envs)
    if backend.spec.action_kind != "discrete":
        raise ValueError(f"{task.id}: random_returns plays discrete actions only")
    rng = np.random.default_rng(seed)
    backend.reset(seed=seed)
    quota = -(-episodes // num_envs)
    running, done = np.zeros(num_envs), [[] for _ in range(num_envs)]
    while min(len(d) for d in done) < quota:
        step = backend.step(rng.integers(backend.spec.n_actions, size=num_envs))
        running += step.reward
        for i in np.flatnonzero(step.episode_end):
            if len(done[i]) < quota:
                done[i].append(running[i])
            running[i] = 0.0
    backend.close()
    return np.concatenate(done)
