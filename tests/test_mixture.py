"""Mixture semantics on a scripted backend, where every number is known in advance."""

from __future__ import annotations

import numpy as np
import pytest

import scripted  # noqa: F401  (registers the `scripted` backend)
from mtmoe.tasks import TaskMixture
from mtmoe.tasks.schema import parse_suite, parse_task


def task(tid, **options):
    reward = options.pop("reward_handling", None)
    data = {"id": tid, "backend": "scripted", "env": tid, "options": options}
    if reward:
        data["reward"] = reward
    if "norm" in options:
        data["normalization"] = options.pop("norm")
        data["options"] = options
    return parse_task(data, "test")[0]


def suite(**kw):
    data = {"name": "s", "tasks": kw.pop("tasks"), "budgets": {"default": 1000}, **kw}
    return parse_suite(data, "test")[0]


@pytest.mark.parametrize("num_envs,expected", [(6, [2, 2, 2]), (7, [3, 2, 2]), (3, [1, 1, 1])])
def test_simultaneous_slot_allocation_and_task_ids(num_envs, expected):
    tasks = [task(f"t{k}", marker=k) for k in range(3)]
    env = TaskMixture(suite(tasks=["t0", "t1", "t2"], num_envs=num_envs), tasks)
    obs, info = env.reset(seed=0)
    assert [s.stop - s.start for s in env.slices] == expected
    assert info["task_id"].tolist() == sum(([k] * c for k, c in enumerate(expected)), [])
    # each slot's observation comes from its own task
    assert np.array_equal(obs[:, 0], info["task_id"].astype(np.float32))


def test_envs_per_task():
    tasks = [task("a"), task("b")]
    env = TaskMixture(suite(tasks=["a", "b"], envs_per_task=3), tasks)
    assert env.num_envs == 6
    assert env.reset()[1]["task_id"].tolist() == [0, 0, 0, 1, 1, 1]


def test_vector_padding_and_masks():
    tasks = [task("small", obs_dim=2, n_actions=2), task("big", obs_dim=5, n_actions=4)]
    env = TaskMixture(suite(tasks=["small", "big"], num_envs=2, action_union="positional"), tasks)
    obs, info = env.reset()
    assert env.single_observation_space.shape == (5,)
    assert obs[0, 2:].tolist() == [0, 0, 0]  # padded features are zero
    assert env.single_action_space.n == 4
    assert info["action_mask"].tolist() == [[True, True, False, False], [True, True, True, True]]


def test_pixel_channel_padding():
    tasks = [task("p4", obs_dim=4, pixels=True, marker=7), task("p6", obs_dim=6, pixels=True, marker=9)]
    env = TaskMixture(suite(tasks=["p4", "p6"], num_envs=2), tasks)
    obs, _ = env.reset()
    assert obs.shape == (2, 6, 4, 4) and obs.dtype == np.uint8
    assert (obs[0, :4] == 7).all() and (obs[0, 4:] == 0).all() and (obs[1] == 9).all()


def test_semantic_action_union_maps_to_local_actions():
    tasks = [task("a", actions=["NOOP", "FIRE", "LEFT"]), task("b", actions=["NOOP", "LEFT", "RIGHT", "FIRE"])]
    env = TaskMixture(suite(tasks=["a", "b"], num_envs=2), tasks)
    _, info = env.reset()
    assert env.spaces.action_names == ("NOOP", "FIRE", "LEFT", "RIGHT")
    assert info["action_mask"].tolist() == [[True, True, True, False], [True, True, True, True]]
    env.step(np.array([2, 2]))  # LEFT for both
    assert env.backends[0].last_actions.tolist() == [2]
    assert env.backends[1].last_actions.tolist() == [1]
    env.step(np.array([1, 1]))  # FIRE
    assert env.backends[0].last_actions.tolist() == [1] and env.backends[1].last_actions.tolist() == [3]


def test_continuous_active_dims_rescaled():
    tasks = [task("c2", obs_dim=3, n_actions=0), task("c4", obs_dim=5, n_actions=0)]
    env = TaskMixture(suite(tasks=["c2", "c4"], num_envs=2), tasks)
    _, info = env.reset()
    assert env.single_action_space.shape == (4,)
    assert info["action_mask"].tolist() == [[True, True, False, False], [True] * 4]
    env.step(np.array([[1.0, -1.0, 0.3, 0.3], [0.5, 0.0, 2.0, -5.0]], np.float32))
    assert env.backends[0].last_actions.tolist() == [[2.0, -2.0]]  # bounds are [-2, 2]
    assert env.backends[1].last_actions.tolist() == [[1.0, 0.0, 2.0, -2.0]]  # clipped to [-1, 1] first


def test_reward_handling_and_raw_episode_stats():
    tasks = [task("r", length=3, reward=2.0, reward_handling={"clip": True, "scale": 0.5},
                  norm={"low": 0.0, "high": 24.0})]
    env = TaskMixture(suite(tasks=["r"], num_envs=2), tasks)
    env.reset()
    rewards, episodes = [], []
    for _ in range(3):
        _, r, term, trunc, info = env.step(np.zeros(2, np.int64))
        rewards.append(r.tolist())
        assert info["raw_reward"].tolist() == [2.0 * len(rewards)] * 2
        episodes += info.get("episodes", [])
    assert rewards == [[0.5, 0.5]] * 3  # sign-clipped then scaled
    assert term.all() and "final_obs" in info
    assert [e["return"] for e in episodes] == [12.0, 12.0]  # 2 + 4 + 6, raw
    assert [e["normalized"] for e in episodes] == [0.5, 0.5]
    assert [e["length"] for e in episodes] == [3, 3]


@pytest.mark.parametrize("cycles", [1, 2])
def test_sequential_switches_exactly_in_order(cycles):
    tasks = [task(f"t{k}", marker=k, length=1000) for k in range(3)]
    spec = suite(tasks=["t0", "t1", "t2"], mode="sequential", num_envs=4, order=["t2", "t0", "t1"],
                 cycles=cycles, switch_every=12)
    env = TaskMixture(spec, tasks)
    obs, info = env.reset(seed=1)
    seen, switches = [int(info["task_id"][0])], []
    for step in range(1, 3 * cycles * 3 + 3):
        obs, _, term, trunc, info = env.step(np.zeros(4, np.int64))
        assert (info["task_id"] == info["task_id"][0]).all()  # all slots run one task
        assert np.array_equal(obs[:, 0], info["task_id"].astype(np.float32))
        if "switch" in info:
            switches.append((step * 4, info["switch"]["from"], info["switch"]["to"]))
            assert trunc.all() and not term.any()
            assert (info["final_obs"][:, 0] == tasks.index(next(t for t in tasks if t.id == info["switch"]["from"]))).all()
            assert obs[:, -1].tolist() == [0] * 4  # a fresh episode of the new task
        seen.append(int(info["task_id"][0]))
    order = ["t2", "t0", "t1"] * cycles
    assert switches == [(12 * (i + 1), order[i], order[i + 1]) for i in range(len(order) - 1)]
    assert seen[-1] == 1  # the last task runs on after the last phase
    assert env.global_step == (3 * cycles * 3 + 2) * 4


def test_sequential_rejects_switch_not_multiple_of_slots():
    tasks = [task("a"), task("b")]
    with pytest.raises(ValueError, match="multiple"):
        TaskMixture(suite(tasks=["a", "b"], mode="sequential", num_envs=4), tasks, switch_every=10)


def test_mixing_pixels_and_vectors_is_an_error():
    from mtmoe.errors import ConfigError

    tasks = [task("v"), task("p", pixels=True)]
    with pytest.raises(ConfigError, match="mixes pixel and vector"):
        TaskMixture(suite(tasks=["v", "p"], num_envs=2), tasks)
