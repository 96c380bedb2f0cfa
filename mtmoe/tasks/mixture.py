"""One vector env over many tasks: simultaneous (multi-task) or sequential (continual).

- ``simultaneous``: env slots are split across tasks; every step holds every task.
- ``sequential``: all slots run one task for ``switch_every`` env steps (summed over slots),
  then the next task of ``order``, for ``cycles`` rounds; after the last phase the last task
  keeps running. The step that reaches a phase boundary truncates every slot's episode
  (``final_obs`` holds the old task's last observations), returns the new task's first
  observations, and says so in ``info["switch"]``.

Spaces are unified (``spaces.unify``). Per step, ``info`` holds:
``task_id`` (n,), ``action_mask`` (n, A), ``raw_reward`` (n,), ``episode_end`` (n,), and
when something happened: ``final_obs`` (rows of slots whose episode ended),
``episodes`` (one dict per finished game: task, task_index, slot, return (raw score),
normalized, length, and success (0/1) for tasks that define it) and ``switch`` (from, to, phase, step).
Training rewards follow each task's reward handling (clip, scale); scores stay raw.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from mtmoe.tasks.backend import BACKENDS, VecBackend
from mtmoe.tasks.schema import SuiteSpec, TaskSpec
from mtmoe.tasks.spaces import ActionRescaler, UnifiedSpaces, unify

SEED_STRIDE = 10_007  # keeps the seed streams of different tasks and phases apart


def make_backend(task: TaskSpec, num_envs: int) -> VecBackend:
    return BACKENDS[task.backend].factory(task.env, num_envs, task.options, task.max_episode_steps)


def split_slots(num_envs: int, num_tasks: int) -> list[int]:
    """Even split, the remainder going to the first tasks."""
    base, extra = divmod(num_envs, num_tasks)
    return [base + (k < extra) for k in range(num_tasks)]


def slot_counts(suite: SuiteSpec, num_envs: int | None = None) -> list[int]:
    """Slots per task of a simultaneous suite; `num_envs` (total) overrides the suite's."""
    if suite.envs_per_task and not num_envs:
        return [suite.envs_per_task] * len(suite.tasks)
    return split_slots(num_envs or suite.slots(), len(suite.tasks))


@dataclass(frozen=True)
class Phase:
    index: int
    task_index: int
    start: int
    """First env step of the phase."""
    end: int | None
    """First env step after it (None: the last phase runs on)."""


def plan_schedule(suite: SuiteSpec, num_envs: int, switch_every: int | None) -> list[Phase]:
    """The phases of a sequential suite (empty for a simultaneous one)."""
    if suite.mode != "sequential":
        return []
    if not switch_every or switch_every % num_envs:
        raise ValueError(f"switch_every ({switch_every}) must be a positive multiple of num_envs ({num_envs})")
    order = [suite.tasks.index(t) for t in suite.order] * suite.cycles
    return [Phase(i, k, i * switch_every, (i + 1) * switch_every if i + 1 < len(order) else None)
            for i, k in enumerate(order)]


def slot_layout(suite: SuiteSpec, num_tasks: int, num_envs: int | None,
                envs_per_task: list[int] | None) -> tuple[int, list[int], list[slice]]:
    """(slots in all, slots per backend, each task's slice of the slots). Simultaneous: the tasks
    split the slots; sequential: every task's backend has all of them (one runs at a time)."""
    if suite.mode == "simultaneous":
        counts = envs_per_task or slot_counts(suite, num_envs)
        if len(counts) != num_tasks or min(counts) < 1:
            raise ValueError(f"need one or more slots for each of the {num_tasks} tasks, got {counts}")
        bounds = np.cumsum([0] + counts)
        return sum(counts), counts, [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    n = num_envs or suite.slots()
    return n, [n] * num_tasks, [slice(0, n)] * num_tasks


def task_seed(seed: int | None, task: int, phase: int) -> int | None:
    """The reset seed of one task's backend in one phase (None: unseeded)."""
    return None if seed is None else seed + SEED_STRIDE * (task + 1) + SEED_STRIDE * 97 * phase


def phase_at(schedule: list[Phase], global_step: int) -> int:
    """The index of the phase that `global_step` falls in (0 for a simultaneous suite)."""
    phase = 0
    while schedule and schedule[phase].end is not None and global_step >= schedule[phase].end:
        phase += 1
    return phase


def phase_task_ids(schedule: list[Phase], phase: int, slices: list[slice], num_envs: int) -> tuple[list[int], np.ndarray]:
    """(tasks running in this phase, task id of every slot)."""
    active = [schedule[phase].task_index] if schedule else list(range(len(slices)))
    task_id = np.zeros(num_envs, np.int64)
    for k in active:
        task_id[slices[k]] = k
    return active, task_id


class TaskMixture(gym.vector.VectorEnv):
    """A gymnasium VectorEnv (same-step autoreset) over the tasks of a suite."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(self, suite: SuiteSpec, tasks: list[TaskSpec], num_envs: int | None = None,
                 switch_every: int | None = None, envs_per_task: list[int] | None = None):
        self.suite, self.tasks = suite, tasks
        self.task_names = [t.id for t in tasks]
        self.num_tasks = len(tasks)
        self.mode = suite.mode
        self.num_envs, counts, self.slices = slot_layout(suite, self.num_tasks, num_envs, envs_per_task)
        self.backends = [make_backend(t, c) for t, c in zip(tasks, counts)]
        self.specs = [b.spec for b in self.backends]
        self.spaces: UnifiedSpaces = unify(self.task_names, self.specs, suite.action_union, suite.source)
        self.rescalers = [ActionRescaler(s) for s in self.specs] if not self.spaces.discrete else []
        self._async = all(hasattr(b, "step_async") for b in self.backends)
        self._discrete = self.spaces.discrete
        self._raw_rewards = all(not t.reward.clip and t.reward.scale == 1.0 for t in tasks)  # train on raw rewards
        self._unpadded = [s.obs_shape == self.spaces.observation_space.shape for s in self.specs]
        self.single_observation_space = self.spaces.observation_space
        self.single_action_space = self.spaces.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

        self.switch_every = switch_every or suite.switch_every
        self.schedule = plan_schedule(suite, self.num_envs, self.switch_every)
        self._seed: int | None = None
        self.global_step = 0
        self.phase = 0
        self._set_slot_tables()

    # ------------------------------------------------------------------ bookkeeping

    def _set_slot_tables(self) -> None:
        """Per-phase tables, recomputed at reset and at a switch (never per step)."""
        self.active_tasks, self.task_id = phase_task_ids(self.schedule, self.phase, self.slices, self.num_envs)
        self._phase_end = self.schedule[self.phase].end if self.schedule else None
        self.action_mask = self.spaces.action_masks[self.task_id]
        self.task_id.flags.writeable = self.action_mask.flags.writeable = False

    def _task_seed(self, k: int) -> int | None:
        return task_seed(self._seed, k, self.phase)

    def _new_obs(self) -> np.ndarray:
        return np.zeros((self.num_envs, *self.single_observation_space.shape), self.single_observation_space.dtype)

    def _put(self, obs: np.ndarray, k: int, task_obs: np.ndarray) -> None:
        sl = self.slices[k]
        if task_obs.shape[1:] == obs.shape[1:]:
            obs[sl] = task_obs
        else:  # pad channels (pixels) or features (vectors) with zeros
            obs[sl, : task_obs.shape[1]] = task_obs

    def _info(self) -> dict:
        # read-only arrays, replaced (never changed in place) at a switch: safe to keep
        return {"task_id": self.task_id, "action_mask": self.action_mask}

    # ------------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._seed = seed
        self.global_step, self.phase = 0, 0
        self._set_slot_tables()
        obs = self._new_obs()
        for k in self.active_tasks:
            self._put(obs, k, self.backends[k].reset(seed=self._task_seed(k)))
        self._ep_return = np.zeros(self.num_envs, np.float64)
        self._ep_length = np.zeros(self.num_envs, np.int64)
        self._ep_success = np.zeros(self.num_envs, bool)
        self._has_success = np.zeros(self.num_envs, bool)  # slots whose backend reported success
        return obs, self._info()

    def resume_at(self, global_step: int, seed: int | None = None):
        """Reset, then stand at `global_step` of the schedule (for resuming a run whose envs could
        not be saved): the phase of that step, with fresh episodes of its task(s)."""
        self.reset(seed=seed)
        self.global_step, self.phase = global_step, phase_at(self.schedule, global_step)
        self._set_slot_tables()
        obs = self._new_obs()
        for k in self.active_tasks:
            self._put(obs, k, self.backends[k].reset(seed=self._task_seed(k)))
        return obs, self._info()

    def _local_actions(self, k: int, actions: np.ndarray) -> np.ndarray:
        a = actions[self.slices[k]]
        return self.spaces.to_local[k][a.astype(np.int64, copy=False)] if self._discrete else self.rescalers[k](a)

    def _training_reward(self, raw: np.ndarray, k: int) -> np.ndarray:
        handling = self.tasks[k].reward
        r = np.sign(raw) if handling.clip else raw.copy()
        return r * handling.scale if handling.scale != 1.0 else r

    def _padded(self, k: int, task_obs: np.ndarray | None) -> np.ndarray | None:
        if task_obs is None or self._unpadded[k]:
            return task_obs  # backends hand over fresh arrays: no copy needed
        obs = self._new_obs()
        self._put(obs, k, task_obs)
        return obs

    def _step_backends(self, active: list[int], actions: np.ndarray) -> list:
        if not self._async:
            return [self.backends[k].step(self._local_actions(k, actions)) for k in active]
        for k in active:  # start all, then wait: tasks step in parallel
            self.backends[k].step_async(self._local_actions(k, actions))
        return [self.backends[k].step_wait() for k in active]

    def step(self, actions):
        actions = np.asarray(actions)
        active = self.active_tasks
        if len(active) == 1:  # one task on every slot (sequential, single task): no gathering
            k = active[0]
            res = self.backends[k].step(self._local_actions(k, actions))
            obs, final_obs = self._padded(k, res.obs), self._padded(k, res.final_obs)
            raw, terminated, truncated, episode_end = res.reward, res.terminated, res.truncated, res.episode_end
            reward = self._training_reward(raw, k)
            self._note_success(res, slice(None))
        else:
            results = self._step_backends(active, actions)
            obs, final_obs = self._new_obs(), None
            for k, res in zip(active, results):
                self._put(obs, k, res.obs)
                self._note_success(res, self.slices[k])
                if res.final_obs is not None:
                    if final_obs is None:
                        final_obs = self._new_obs()
                    self._put(final_obs, k, res.final_obs)
            raw = np.concatenate([r.reward for r in results])
            reward = raw.copy() if self._raw_rewards else np.concatenate(
                [self._training_reward(r.reward, k) for k, r in zip(active, results)])
            terminated = np.concatenate([r.terminated for r in results])
            truncated = np.concatenate([r.truncated for r in results])
            episode_end = np.concatenate([r.episode_end for r in results])

        info = {"raw_reward": raw, "episode_end": episode_end, "task_id": self.task_id, "action_mask": self.action_mask}
        self._ep_return += raw
        self._ep_length += 1
        if episode_end.any():
            info["episodes"] = self._finished_episodes(np.flatnonzero(episode_end))
        self.global_step += self.num_envs
        if self._phase_end is not None and self.global_step >= self._phase_end:
            final_obs, info["switch"] = self._switch(obs, final_obs, terminated, truncated)
            info.update(self._info())
            obs = self._new_obs()
            for k in self.active_tasks:
                self._put(obs, k, self.backends[k].reset(seed=self._task_seed(k)))
            self._ep_return[:] = 0
            self._ep_length[:] = 0
            self._ep_success[:] = False
            self._has_success[:] = False
        if final_obs is not None:
            info["final_obs"] = final_obs
        return obs, reward, terminated, truncated, info

    def _note_success(self, res, slots: slice) -> None:
        if res.success is not None:
            self._ep_success[slots] |= res.success
            self._has_success[slots] = True

    def _finished_episodes(self, slots: np.ndarray) -> list[dict]:
        out = []
        for i in slots:
            k = int(self.task_id[i])
            ret = float(self._ep_return[i])
            out.append({"task": self.task_names[k], "task_index": k, "slot": int(i), "return": ret,
                        "normalized": self.tasks[k].normalization(ret), "length": int(self._ep_length[i])})
            if self._has_success[i]:
                out[-1]["success"] = float(self._ep_success[i])
        self._ep_return[slots] = 0
        self._ep_length[slots] = 0
        self._ep_success[slots] = False
        return out

    def _switch(self, obs, final_obs, terminated, truncated):
        """Cut every running episode of the old task and move to the next phase."""
        old = self.schedule[self.phase]
        cut = ~(terminated | truncated)
        if final_obs is None:
            final_obs = self._new_obs()
        final_obs[cut] = obs[cut]
        truncated |= cut
        self.phase += 1
        new = self.schedule[self.phase]
        self._set_slot_tables()
        event = {"from": self.task_names[old.task_index], "to": self.task_names[new.task_index],
                 "phase": new.index, "step": self.global_step}
        return final_obs, event

    def __setstate__(self, state: dict) -> None:
        """Checkpoints from before episodes carried success lack its arrays."""
        self.__dict__.update(state)
        for name in ("_ep_success", "_has_success"):
            if name not in state and "_ep_return" in state:
                setattr(self, name, np.zeros(len(state["_ep_return"]), bool))

    def close_extras(self, **kwargs):
        for b in self.backends:
            b.close()


TWIN_MAX_ENVS = 64  # evaluation/probe envs in all: MT50's 50 MuJoCo scenes take ~0.25 s each to build


def simultaneous_twin(env: TaskMixture, envs_per_task: int) -> TaskMixture:
    """A simultaneous mixture of the same tasks with the same unified spaces: evaluation and
    probes see every task, whether the suite is simultaneous or sequential. Many tasks get
    fewer slots each (at least one), so that the twin holds at most TWIN_MAX_ENVS envs."""
    envs_per_task = max(1, min(envs_per_task, TWIN_MAX_ENVS // env.num_tasks))
    suite = dataclasses.replace(env.suite, mode="simultaneous", switch_every=None, order=env.suite.tasks, cycles=1,
                                num_envs=None, envs_per_task=envs_per_task)
    return TaskMixture(suite, env.tasks)
