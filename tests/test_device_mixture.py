"""The device mixture: the TaskMixture's layout, schedule and episode statistics, with tensors."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from mtmoe.runner.config import compose
from mtmoe.runner.run import train
from mtmoe.tasks import TaskMixture, load_registry, make_mixture
from mtmoe.tasks.device_mixture import DeviceMixture

REGISTRY = load_registry()


def _random_actions(mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.argmax(torch.rand(mask.shape, generator=gen) + mask.float(), -1)


@pytest.mark.parametrize("suite", ["minatar-multitask", "minatar-continual", "minatar5-multitask"])
def test_layout_equals_the_task_mixture(suite):
    dev = make_mixture(suite, REGISTRY, num_envs=10, steps=3000, device="cpu")
    host = make_mixture(suite, REGISTRY, num_envs=10, steps=3000)
    assert isinstance(dev, DeviceMixture) and isinstance(host, TaskMixture)
    assert dev.single_observation_space == host.single_observation_space
    assert dev.single_action_space == host.single_action_space and dev.schedule == host.schedule
    obs, info = dev.reset(seed=3)
    _, hinfo = host.reset(seed=3)
    assert obs.dtype == torch.uint8 and obs.shape == (10, *host.single_observation_space.shape)
    assert np.array_equal(info["task_id"].numpy(), hinfo["task_id"])
    assert np.array_equal(info["action_mask"].numpy(), hinfo["action_mask"])
    for k, sl in enumerate(dev.slices):  # channels past a task's own are zero padding
        if k in dev.active_tasks:
            assert not obs[sl, dev._channels[k]:].any() and obs[sl, : dev._channels[k]].any()
    host.close()


def test_sequential_switch_and_episode_statistics():
    env = make_mixture("minatar-continual", REGISTRY, num_envs=8, steps=3 * 800, device="cpu")
    assert env.switch_every == 800
    obs, info = env.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    running = torch.zeros(8, dtype=torch.float64)
    switches, finished = [], 0
    for step in range(1, 3 * 100 + 1):
        obs, reward, term, trunc, info = env.step(_random_actions(info["action_mask"], gen))
        running += info["raw_reward"].double()
        ended = info["episode_end"]
        assert torch.equal(info["episode_return"][ended], running[ended])  # returns add up the raw rewards
        assert not info["episode_return"][~ended].any()
        finished += int(ended.sum())
        running[ended] = 0
        if "switch" in info:
            switches.append((env.global_step, info["switch"]["to"]))
            assert trunc[~term].all()  # every running episode is cut
            assert (info["task_id"] == env.schedule[env.phase].task_index).all()
            running.zero_()
    assert switches == [(800, env.task_names[env.schedule[1].task_index]),
                        (1600, env.task_names[env.schedule[2].task_index])]
    assert finished > 0


def test_episodes_are_read_once_per_rollout_in_step_order():
    env = make_mixture("minatar-multitask", REGISTRY, num_envs=6, device="cpu")
    _, info = env.reset(seed=1)
    gen = torch.Generator().manual_seed(1)
    ended, rets, lens, tasks, expected = [], [], [], [], []
    for t in range(300):
        task = info["task_id"].clone()
        _, _, _, _, info = env.step(_random_actions(info["action_mask"], gen))
        ended.append(info["episode_end"]), rets.append(info["episode_return"]), lens.append(info["episode_length"])
        tasks.append(task)
        for i in torch.nonzero(info["episode_end"]).flatten().tolist():
            expected.append((env.task_names[int(task[i])], i, float(info["episode_return"][i])))
    eps = env.episodes(torch.stack(ended), torch.stack(rets), torch.stack(lens), torch.stack(tasks))
    assert [(e["task"], e["slot"], e["return"]) for e in eps] == expected and expected
    assert all(e["length"] > 0 for e in eps)


def test_a_pickled_mixture_continues_exactly():
    env = make_mixture("minatar-multitask", REGISTRY, num_envs=6, device="cpu")
    _, info = env.reset(seed=2)
    gen = torch.Generator().manual_seed(2)
    for _ in range(50):
        _, _, _, _, info = env.step(_random_actions(info["action_mask"], gen))
    twin = pickle.loads(pickle.dumps(env))
    actions = [_random_actions(info["action_mask"], gen) for _ in range(100)]
    a = [env.step(x)[0] for x in actions]
    b = [twin.step(x)[0] for x in actions]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_ppo_learns_breakout_with_envs_on_the_device(tmp_path):
    """The preset's PPO on MinAtar Breakout through the device path: the random policy scores
    ~0.5 a game; within 48k env steps the agent must do clearly better."""
    cfg, _ = compose(REGISTRY, "minatar-single", steps=49152,
                     sets=["probe_every=-1", "eval_every=-1", "threads=1", "env_device=tensor"])
    run_dir = train(cfg, REGISTRY, tmp_path, progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["envs"] == "tensor"
    assert summary["final_return"]["minatar-breakout"] > 1.2, summary["final_return"]
