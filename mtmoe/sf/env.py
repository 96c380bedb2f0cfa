"""A suite's mixture as a Sample Factory env: one SF env = a small TaskMixture whose slots are SF "agents".

Sample Factory creates its envs inside its rollout-worker processes. Each SF env here is a
*simultaneous* TaskMixture of every task of the suite with ``slots_per_task`` slots each, exposed
as a vectorized multi-agent env (``num_agents`` = its slots, ``is_multiagent`` = True) for SF's
batched sampler. Observations are a dict: ``obs`` (the unified observation), ``task_id`` and, for
discrete suites, ``action_mask`` (the model masks invalid actions itself: SF 2.1.1 has no masks).
Autoreset is the mixture's same-step autoreset, which is what SF expects of vectorized envs.

Per-task episode stats go through SF's episodic-stats channel: ``infos`` is a dict of tensors with
one entry per slot (SF keeps the entries of the slots that are done). ``mtmoe_return`` holds the raw
score of each game that ended on that step (NaN elsewhere: a slot may be done without its game
ending, e.g. on a life loss), ``mtmoe_normalized`` its normalized score, ``mtmoe_task`` the task index.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from mtmoe.tasks.mixture import TaskMixture
from mtmoe.tasks.schema import SuiteSpec, TaskSpec

ENV_NAME = "mtmoe_mixture"
STAT_KEYS = ("mtmoe_return", "mtmoe_normalized", "mtmoe_task")


class SFMixtureEnv(gym.Env):
    """A simultaneous TaskMixture with `slots_per_task` slots per task, as an SF vectorized env."""

    metadata = {"render_modes": []}

    def __init__(self, suite: SuiteSpec, tasks: list[TaskSpec], slots_per_task: int, seed: int = 0):
        self.mix = TaskMixture(suite, tasks, envs_per_task=[slots_per_task] * len(tasks))
        self.num_agents = self.mix.num_envs
        self.is_multiagent = True
        self.base_seed = seed
        spaces = {"obs": self.mix.single_observation_space,
                  "task_id": gym.spaces.Box(0, max(0, self.mix.num_tasks - 1), (), np.int64)}
        if self.mix.spaces.discrete:
            spaces["action_mask"] = gym.spaces.Box(0, 1, self.mix.action_mask.shape[1:], bool)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = self.mix.single_action_space
        self._nan = np.full(self.num_agents, np.nan, np.float32)

    def _obs(self, obs: np.ndarray, info: dict) -> dict:
        out = {"obs": obs, "task_id": np.array(info["task_id"], np.int64)}  # copies: the mixture's are read-only
        if "action_mask" in self.observation_space.spaces:
            out["action_mask"] = np.array(info["action_mask"], bool)
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        # SF hands each env its global env id as the seed of its first reset
        obs, info = self.mix.reset(seed=None if seed is None else self.base_seed * 100_003 + seed)
        return self._obs(obs, info), {}

    def step(self, actions):
        actions = actions.cpu().numpy() if isinstance(actions, torch.Tensor) else np.asarray(actions)
        obs, reward, terminated, truncated, info = self.mix.step(actions)
        ret, norm, task = self._nan.copy(), self._nan.copy(), self._nan.copy()
        for e in info.get("episodes", ()):
            ret[e["slot"]], norm[e["slot"]], task[e["slot"]] = e["return"], e["normalized"], e["task_index"]
        infos = {"mtmoe_return": torch.from_numpy(ret), "mtmoe_normalized": torch.from_numpy(norm),
                 "mtmoe_task": torch.from_numpy(task)}
        return (self._obs(obs, info), np.asarray(reward, np.float32), np.asarray(terminated, bool),
                np.asarray(truncated, bool), infos)

    def render(self):
        return None

    def close(self):
        self.mix.close()


def make_env(full_env_name, cfg=None, env_config=None, render_mode=None, *, suite: SuiteSpec, tasks: list[TaskSpec],
             slots_per_task: int, seed: int) -> SFMixtureEnv:
    """SF's env factory signature, with the suite bound by functools.partial (picklable for SF's
    spawned worker processes)."""
    patch_sample_factory()
    return SFMixtureEnv(suite, tasks, slots_per_task, seed)


def patch_sample_factory() -> None:
    """Sample Factory 2.1.1 on gymnasium 1.x: SF reads ``num_agents`` / ``is_multiagent`` through its
    own gymnasium wrappers, and gymnasium 1.0 removed the wrappers' attribute forwarding, so a
    vectorized env would count as one agent. Read them from the innermost env that has them.
    Applied in each process that builds envs (it is called by make_env, before SF wraps the env)."""
    from sample_factory.algo.utils import make_env as sf_make_env

    if getattr(sf_make_env, "_mtmoe_patched", False):
        return
    original = sf_make_env.get_multiagent_info

    def get_multiagent_info(env):
        inner = env
        while not hasattr(inner, "num_agents") and isinstance(inner, gym.Wrapper):
            inner = inner.env
        return original(inner)

    sf_make_env.get_multiagent_info = get_multiagent_info  # is_multiagent_env looks it up in the module too
    sf_make_env._mtmoe_patched = True


def plan_slots(num_envs: int, num_tasks: int, num_workers: int, envs_per_worker: int) -> int:
    """Slots per task of each SF env so that all SF envs together hold about `num_envs` slots
    (at least one slot per task per env)."""
    sf_envs = num_workers * envs_per_worker
    return max(1, round(num_envs / (sf_envs * num_tasks)))
