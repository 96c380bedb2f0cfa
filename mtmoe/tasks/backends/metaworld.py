"""Backend ``metaworld``: the Meta-World v3 manipulation tasks (metaworld 3.1.1, MuJoCo 3.3.0).

One task is one Meta-World env (``reach-v3``, ``push-v3``, …): 39-d observations (hand, object
and goal positions: Meta-World's multi-task benchmarks show the goal), 4-d actions in [-1, 1],
500-step episodes that end by truncation only (Meta-World never terminates on success). Goals
follow the benchmark's own convention: ``goals: random`` (default) draws one of the task's 50
goal variations — made once by ``metaworld.MT1(task, seed=benchmark_seed)``, as MT10/MT50 make
theirs — at every episode start (metaworld's RandomTaskSelectWrapper); ``goals: fixed`` keeps
the first variation for the whole run.

Success is Meta-World's ``info["success"]``: ``StepResult.success`` carries it per step, and an
episode counts as a success when any of its steps succeeded (the convention of mtrl and
MOORE's evaluation). Vectorized by a plain loop over the envs, like the ``mujoco`` backend.

Continual World (Wołczyk et al. 2021) names its tasks ``-v1``/``-v2``: those names are taken as
the v3 task of the same name (the v3 envs are the maintained ports; their rewards and success
conditions are Meta-World v2's).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from mtmoe.tasks.backend import BackendSpec, StepResult, raises_for_unknown, register_backend

EPISODE_STEPS = 500  # Meta-World's max_path_length for every task


@dataclass(frozen=True)
class MetaWorldOptions:
    goals: Literal["random", "fixed"] = "random"
    """random: one of the task's 50 goal variations per episode (MT10/MT50); fixed: the first, always."""
    benchmark_seed: int = 0
    """Seed of metaworld.MT1's goal variations: the same 50 goals in every run, whatever the run's seed."""
    reward_function_version: Literal["v1", "v2"] = "v2"
    """Meta-World's reward shaping (v2: the maintained one)."""


# MT50's tasks in metaworld's order (metaworld.env_dict.ALL_V3_ENVIRONMENTS, checked by the tests):
# written out so that reading a task file does not import metaworld and MuJoCo (~1 s)
MT50 = tuple(f"{n}-v3" for n in (
    "assembly", "basketball", "bin-picking", "box-close", "button-press-topdown", "button-press-topdown-wall",
    "button-press", "button-press-wall", "coffee-button", "coffee-pull", "coffee-push", "dial-turn", "disassemble",
    "door-close", "door-lock", "door-open", "door-unlock", "hand-insert", "drawer-close", "drawer-open",
    "faucet-open", "faucet-close", "hammer", "handle-press-side", "handle-press", "handle-pull-side", "handle-pull",
    "lever-pull", "pick-place-wall", "pick-out-of-hole", "pick-place", "plate-slide", "plate-slide-side",
    "plate-slide-back", "plate-slide-back-side", "peg-insert-side", "peg-unplug-side", "soccer", "stick-push",
    "stick-pull", "push", "push-wall", "push-back", "reach", "reach-wall", "shelf-place", "sweep-into", "sweep",
    "window-open", "window-close"))
MT10 = ("reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3")


def task_name(env: str) -> str:
    """'push-v3', 'push-v2', 'push-v1' or 'push' -> 'push-v3'; ValueError for a name Meta-World lacks."""
    base = env.removeprefix("Meta-World/")
    for suffix in ("-v1", "-v2", "-v3"):
        base = base.removesuffix(suffix)
    name = f"{base}-v3"
    if name not in MT50:
        raise ValueError(f"no Meta-World task {env!r} (e.g. {', '.join(MT10[:3])}; {len(MT50)} in MT50)")
    return name


@lru_cache(maxsize=64)
def _benchmark(name: str, seed: int):
    """metaworld.MT1 of a task: its env class and 50 goal variations (~1 s to make: made once)."""
    import metaworld

    benchmark = metaworld.MT1(name, seed=seed)
    return benchmark.train_classes[name], tuple(benchmark.train_tasks)


class MetaWorldVecEnv:
    """``num_envs`` copies of one Meta-World task stepped in a loop, same-step autoreset."""

    def __init__(self, env: str, num_envs: int, options: MetaWorldOptions, max_episode_steps: int | None):
        cls, goals = _benchmark(task_name(env), options.benchmark_seed)
        self.goals = goals if options.goals == "random" else goals[:1]
        self.envs = [cls(reward_function_version=options.reward_function_version) for _ in range(num_envs)]
        self.max_steps = min(max_episode_steps or EPISODE_STEPS, EPISODE_STEPS)
        first = self.envs[0]
        self.spec = BackendSpec(obs_kind="vector", obs_shape=first.observation_space.shape, action_kind="continuous",
                                action_low=tuple(map(float, first.action_space.low)),
                                action_high=tuple(map(float, first.action_space.high)))
        self.num_envs = num_envs
        self.obs = np.zeros((num_envs, *self.spec.obs_shape), np.float32)
        self.steps = np.zeros(num_envs, np.int64)
        self.rng = np.random.default_rng()

    def _new_episode(self, i: int) -> np.ndarray:
        env = self.envs[i]
        env.set_task(self.goals[int(self.rng.integers(len(self.goals)))])
        obs, _ = env.reset()
        self.steps[i] = 0
        return obs

    def reset(self, seed: int | None = None) -> np.ndarray:
        self.rng = np.random.default_rng(seed)
        for i, env in enumerate(self.envs):
            if seed is not None:
                env.seed(seed + i)  # Meta-World's own seeding of object and hand placement
            self.obs[i] = self._new_episode(i)
        return self.obs.copy()

    def step(self, actions: np.ndarray) -> StepResult:
        n = self.num_envs
        reward, success = np.zeros(n, np.float32), np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        final = None
        for i, (env, a) in enumerate(zip(self.envs, np.asarray(actions, np.float32))):
            obs, reward[i], _, _, info = env.step(a)
            success[i] = bool(info["success"])
            self.steps[i] += 1
            if self.steps[i] >= self.max_steps:
                truncated[i] = True
                if final is None:
                    final = np.zeros_like(self.obs)
                final[i] = obs
                obs = self._new_episode(i)
            self.obs[i] = obs
        return StepResult(obs=self.obs.copy(), reward=reward, terminated=np.zeros(n, bool), truncated=truncated,
                          episode_end=truncated.copy(), final_obs=final, success=success)

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs.clear()


register_backend("metaworld", MetaWorldVecEnv, MetaWorldOptions, check_env=raises_for_unknown(task_name),
                 describe="Meta-World v3 manipulation tasks (reach-v3, push-v3, …; success reported per episode)")
