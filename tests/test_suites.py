"""Every built-in task and suite builds and steps on this machine; mixture statistics equal the
underlying env's."""

from __future__ import annotations

import numpy as np
import pytest

from mtmoe.tasks import load_registry, make_mixture
from mtmoe.tasks.backends.minatar import MinAtarOptions, MinAtarVecEnv
from mtmoe.tasks.mixture import SEED_STRIDE, make_backend

REGISTRY = load_registry()


def valid_random_actions(env, rng):
    if env.spaces.discrete:
        return np.argmax(rng.random(env.action_mask.shape) + env.action_mask, -1)
    return rng.uniform(-1, 1, (env.num_envs, env.single_action_space.shape[0])).astype(np.float32)


@pytest.mark.parametrize("task_id", sorted(REGISTRY.tasks))
def test_every_builtin_task_builds_and_steps(task_id):
    task = REGISTRY.task(task_id)
    backend = make_backend(task, 2)
    obs = backend.reset(seed=0)
    assert obs.shape == (2, *backend.spec.obs_shape) and obs.dtype == backend.spec.obs_dtype
    rng = np.random.default_rng(0)
    for _ in range(5):
        if backend.spec.action_kind == "discrete":
            a = rng.integers(0, backend.spec.n_actions, 2)
        else:
            a = rng.uniform(backend.spec.action_low, backend.spec.action_high, (2, backend.spec.action_dim)).astype(np.float32)
        res = backend.step(a)
        assert res.obs.shape == obs.shape and res.reward.shape == (2,) and np.isfinite(res.reward).all()
    backend.close()


SMALL = {"atari-multitask": 5, "atari-continual": 2, "procgen-multitask": 4, "procgen-single": 2, "atari-single": 2,
         "minatar-multitask": 6, "minatar-continual": 4, "minatar5-multitask": 5, "minatar-single": 4}


# the generated mt1-* / cw1-* / minatar1-* suites differ only in their task (each task builds in the test above)
SUITES = sorted(s for s in REGISTRY.suites if not s.startswith(("mt1-", "cw1-", "minatar1-"))
                or s in ("mt1-reach", "cw1-hammer", "minatar1-breakout"))


def test_minatar1_gives_each_minatar_game_its_own_suite_with_the_preset():
    games = sorted(t for t, spec in REGISTRY.tasks.items() if spec.backend == "minatar")
    assert len(games) == 5
    for game in games:
        suite = REGISTRY.suite("minatar1-" + game.removeprefix("minatar-"))
        assert suite.tasks == (game,) and suite.preset == "ppo-minatar" and suite.num_envs == 64


@pytest.mark.parametrize("suite", SUITES)
def test_every_builtin_suite_builds_and_steps(suite):
    spec = REGISTRY.suite(suite)
    n = SMALL.get(suite)
    phase = 10 * (n or spec.slots())  # suites with their own switch_every (cw10: 1M) get a short one here
    env = make_mixture(suite, REGISTRY, num_envs=n, steps=phase * spec.phases,
                       switch_every=phase if spec.mode == "sequential" else None)
    obs, info = env.reset(seed=0)
    assert obs.shape == (env.num_envs, *env.single_observation_space.shape)
    assert set(info["task_id"]) == ({0} if spec.mode == "sequential" else set(range(len(spec.tasks))))
    rng = np.random.default_rng(0)
    switches = 0
    for _ in range(12):
        obs, reward, term, trunc, info = env.step(valid_random_actions(env, rng))
        assert env.single_observation_space.contains(obs[0]) or env.single_observation_space.dtype != np.uint8
        switches += "switch" in info
    assert switches == (1 if spec.mode == "sequential" else 0)  # phases are 10 vector steps long
    env.close()


def test_mixture_episode_stats_equal_the_underlying_env():
    """minatar-multitask with a fixed action script: the mixture's per-task episode returns and
    lengths equal those of the same games stepped directly with the same seeds and actions."""
    env = make_mixture("minatar-multitask", REGISTRY, num_envs=3)
    env.reset(seed=7)
    direct = []
    for k, task in enumerate(env.tasks):
        b = MinAtarVecEnv(task.env, 1, task.options, task.max_episode_steps)
        b.reset(seed=7 + SEED_STRIDE * (k + 1))
        direct.append(b)
    rng = np.random.default_rng(0)
    got, want = [], []
    returns, lengths = np.zeros(3), np.zeros(3, int)
    for _ in range(1500):
        union = valid_random_actions(env, rng)
        _, _, _, _, info = env.step(union)
        got += [(e["task"], e["return"], e["length"]) for e in info.get("episodes", [])]
        for k, b in enumerate(direct):
            res = b.step(env.spaces.to_local[k][union[k:k + 1]])
            returns[k] += res.reward[0]
            lengths[k] += 1
            if res.episode_end[0]:
                want.append((env.task_names[k], returns[k], lengths[k]))
                returns[k], lengths[k] = 0, 0
    assert len(got) >= 10
    assert sorted(got) == sorted(want)


def test_suite_show_minatar_continual_lists_tasks_and_schedule():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mtmoe.cli", "suites", "show", "minatar-continual"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for t in ("minatar-space-invaders", "minatar-breakout", "minatar-asterix"):
        assert t in out.stdout
    assert "switch every 10,000,000 env steps" in out.stdout
    assert "phase 2: minatar-asterix" in out.stdout
    assert "uint8 (6, 10, 10)" in out.stdout
