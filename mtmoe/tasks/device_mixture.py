"""A task mixture that stays on one device: every task a tensor backend (MinAtar as tensor ops).

Same schedule, slots, unified spaces, reward handling and seeding as :class:`TaskMixture`, but
observations, rewards, terminals, task ids, action masks and the padding are tensors on the
agent's device, and a step makes no host transfer and no host sync: the sequential schedule
follows ``global_step``, a host integer, so switches need no device data. Finished episodes are
not listed per step (that would read the device): ``info["episode_return"]`` and
``info["episode_length"]`` hold each slot's finished return/length where ``info["episode_end"]``
is set, and :meth:`DeviceMixture.episodes` turns a rollout's worth of them into the mixture's
usual episode dicts with one host read.
"""

from __future__ import annotations

import gymnasium as gym
import torch

from mtmoe.tasks.backend import BACKENDS
from mtmoe.tasks.mixture import phase_at, phase_task_ids, plan_schedule, slot_layout, task_seed
from mtmoe.tasks.schema import SuiteSpec, TaskSpec
from mtmoe.tasks.spaces import UnifiedSpaces, unify


def has_device_backend(tasks: list[TaskSpec]) -> bool:
    return all(BACKENDS[t.backend].device_factory is not None for t in tasks)


class DeviceMixture:
    """See the module docstring; the attributes agents and the runner read are TaskMixture's."""

    on_device = True
    exact_pickle = True  # a pickled copy (backend states included) continues exactly: run checkpoints

    def __init__(self, suite: SuiteSpec, tasks: list[TaskSpec], device: torch.device | str,
                 num_envs: int | None = None, switch_every: int | None = None):
        if not has_device_backend(tasks):
            raise ValueError("every task of a device mixture needs a backend with a device_factory")
        self.suite, self.tasks, self.device = suite, tasks, torch.device(device)
        self.task_names = [t.id for t in tasks]
        self.num_tasks, self.mode = len(tasks), suite.mode
        self.num_envs, counts, self.slices = slot_layout(suite, self.num_tasks, num_envs, None)
        self.backends = [BACKENDS[t.backend].device_factory(t.env, c, t.options, t.max_episode_steps, self.device)
                         for t, c in zip(tasks, counts)]
        self.spaces: UnifiedSpaces = unify(self.task_names, [b.spec for b in self.backends], suite.action_union,
                                           suite.source)
        if not self.spaces.discrete:
            raise ValueError("device mixtures handle discrete actions only")
        self.single_observation_space = self.spaces.observation_space
        self.single_action_space = self.spaces.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._to_local = [torch.as_tensor(t, device=self.device) for t in self.spaces.to_local]
        self._masks = torch.as_tensor(self.spaces.action_masks, device=self.device)
        self._channels = [b.spec.obs_shape[0] for b in self.backends]
        self._clip = [t.reward.clip for t in tasks]
        self._scale = [t.reward.scale for t in tasks]
        self.switch_every = switch_every or suite.switch_every
        self.schedule = plan_schedule(suite, self.num_envs, self.switch_every)
        self._seed: int | None = None
        self.global_step, self.phase = 0, 0
        self._obs = torch.zeros((self.num_envs, *self.single_observation_space.shape), dtype=torch.uint8,
                                device=self.device)
        self._ep_return = torch.zeros(self.num_envs, dtype=torch.float64, device=self.device)
        self._ep_length = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self._set_slot_tables()

    # ------------------------------------------------------------------ bookkeeping

    def _set_slot_tables(self) -> None:
        self.active_tasks, task_id = phase_task_ids(self.schedule, self.phase, self.slices, self.num_envs)
        self._phase_end = self.schedule[self.phase].end if self.schedule else None
        self.task_id = torch.as_tensor(task_id, device=self.device)
        self.action_mask = self._masks[self.task_id]

    def _task_seed(self, k: int) -> int | None:
        return task_seed(self._seed, k, self.phase)

    def _put(self, out: torch.Tensor, k: int, task_obs: torch.Tensor) -> None:
        out[self.slices[k], : self._channels[k]] = task_obs  # channels past the task's stay zero

    def _info(self) -> dict:
        return {"task_id": self.task_id, "action_mask": self.action_mask}

    def _reset_active(self) -> torch.Tensor:
        obs = torch.zeros_like(self._obs)
        for k in self.active_tasks:
            self._put(obs, k, self.backends[k].reset(seed=self._task_seed(k)))
        self._ep_return.zero_()
        self._ep_length.zero_()
        return obs

    # ------------------------------------------------------------------ vector env API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._seed = seed
        self.global_step, self.phase = 0, 0
        self._set_slot_tables()
        return self._reset_active(), self._info()

    def resume_at(self, global_step: int, seed: int | None = None):
        """Fresh episodes at the phase of `global_step` (as TaskMixture.resume_at)."""
        self.reset(seed=seed)
        self.global_step, self.phase = global_step, phase_at(self.schedule, global_step)
        self._set_slot_tables()
        return self._reset_active(), self._info()

    def _training_reward(self, raw: torch.Tensor, k: int) -> torch.Tensor:
        r = torch.sign(raw) if self._clip[k] else raw
        return r * self._scale[k] if self._scale[k] != 1.0 else r

    def step(self, actions: torch.Tensor):
        """`actions` (n,) long tensor of union actions on the device -> obs, reward, terminated,
        truncated, info (all tensors on the device)."""
        obs, final_obs = torch.zeros_like(self._obs), torch.zeros_like(self._obs)
        raw = torch.zeros(self.num_envs, dtype=torch.float32, device=self.device)
        reward, terminated = torch.zeros_like(raw), torch.zeros_like(raw, dtype=torch.bool)
        truncated = torch.zeros_like(terminated)
        for k in self.active_tasks:
            sl = self.slices[k]
            res = self.backends[k].step(self._to_local[k][actions[sl]])
            self._put(obs, k, res.obs)
            self._put(final_obs, k, res.final_obs)
            raw[sl], reward[sl] = res.reward, self._training_reward(res.reward, k)
            terminated[sl], truncated[sl] = res.terminated, res.truncated
        self._ep_return += raw
        self._ep_length += 1
        self.global_step += self.num_envs
        ended = terminated | truncated  # games that ended (a switch's cuts are not finished games)
        info = {"raw_reward": raw, "task_id": self.task_id, "action_mask": self.action_mask, "episode_end": ended,
                "final_obs": final_obs, "episode_return": torch.where(ended, self._ep_return, 0.0),
                "episode_length": torch.where(ended, self._ep_length, 0), "episode_task": self.task_id}
        if self._phase_end is not None and self.global_step >= self._phase_end:
            info["switch"] = self._switch()
            truncated = truncated | ~terminated  # the switch cuts every running episode
        if "switch" in info:  # the new phase's task(s), fresh episodes
            obs = self._reset_active()
            info.update(self._info())
        else:
            self._ep_return.masked_fill_(ended, 0.0)
            self._ep_length.masked_fill_(ended, 0)
        return obs, reward, terminated, truncated, info

    def _switch(self) -> dict:
        old = self.schedule[self.phase]
        self.phase += 1
        new = self.schedule[self.phase]
        self._set_slot_tables()
        return {"from": self.task_names[old.task_index], "to": self.task_names[new.task_index],
                "phase": new.index, "step": self.global_step}

    def episodes(self, ended: torch.Tensor, returns: torch.Tensor, lengths: torch.Tensor,
                 task: torch.Tensor) -> list[dict]:
        """Finished episodes of a rollout ((T, n) tensors of the step infos) as the mixture's
        episode dicts, in step order: one host read for the whole rollout."""
        t_idx, slot = torch.nonzero(ended, as_tuple=True)
        rows = torch.stack([t_idx.double(), slot.double(), returns[t_idx, slot].double(),
                            lengths[t_idx, slot].double(), task[t_idx, slot].double()], 1).cpu().numpy()
        out = []
        for _, i, ret, length, k in rows:
            k = int(k)
            out.append({"task": self.task_names[k], "task_index": k, "slot": int(i), "return": float(ret),
                        "normalized": self.tasks[k].normalization(float(ret)), "length": int(length)})
        return out

    def close(self) -> None:
        for b in self.backends:
            b.close()

    # ------------------------------------------------------------------ checkpoints

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["backends"] = [b.state_dict() for b in self.backends]
        state["_rebuild"] = [(t, b.num_envs) for t, b in zip(self.tasks, self.backends)]
        return state

    def __setstate__(self, state: dict) -> None:
        saved = state.pop("backends")
        rebuild = state.pop("_rebuild")
        self.__dict__.update(state)
        self.backends = []
        for (t, n), s in zip(rebuild, saved):
            b = BACKENDS[t.backend].device_factory(t.env, n, t.options, t.max_episode_steps, self.device)
            b.load_state_dict(s)
            self.backends.append(b)

