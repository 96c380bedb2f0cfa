"""Properties of the environment backends (mtmoe.tasks.backends): layout, seeding, same-step
autoreset, raw rewards, life-loss semantics, gymnasium's env checker."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import mtmoe.tasks.backends  # noqa: F401  (registers the backends)
from mtmoe.tasks.backend import BACKENDS, StepResult
from mtmoe.tasks.backends.minatar import MinAtarEnv


def make(backend: str, env: str, n: int = 2, max_episode_steps: int | None = None, **options):
    info = BACKENDS[backend]
    return info.factory(env, n, info.options(**options), max_episode_steps)


def random_actions(spec, n: int, steps: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if spec.action_kind == "discrete":
        return rng.integers(0, spec.n_actions, (steps, n))
    return rng.uniform(spec.action_low, spec.action_high, (steps, n, spec.action_dim)).astype(np.float32)


def rollout(vec, seed: int, steps: int) -> tuple[np.ndarray, list[StepResult]]:
    obs = vec.reset(seed=seed)
    results = [vec.step(a) for a in random_actions(vec.spec, vec.num_envs, steps)]
    return obs, results


class ImageEnv(gym.Env):
    """5-step episodes of HWC uint8 images filled with the step count: the generic image path."""

    observation_space = gym.spaces.Box(0, 255, (8, 6, 3), np.uint8)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 1.0, self.t == 5, False, {}

    def _obs(self):
        obs = np.full((8, 6, 3), self.t, np.uint8)
        obs[..., 2] = 100  # a marker in the last colour channel
        return obs


gym.register("MtmoeTestImage-v0", entry_point=ImageEnv)

CASES = [  # (backend, env, options, obs_shape, n_actions or -action_dim)
    ("ale", "breakout", {}, (4, 84, 84), 4),
    ("ale", "MsPacman", {"grayscale": False, "stack": 2, "size": 64}, (6, 64, 64), 9),
    ("minatar", "Breakout", {}, (4, 10, 10), 3),
    ("minatar", "SpaceInvaders", {}, (6, 10, 10), 4),
    ("minatar", "Asterix", {}, (4, 10, 10), 5),
    ("minatar", "Freeway", {}, (7, 10, 10), 3),
    ("minatar", "Seaquest", {"minimal_action_set": False}, (10, 10, 10), 6),
    ("mujoco", "HalfCheetah-v5", {}, (17,), -6),
    ("mujoco", "Hopper-v5", {}, (11,), -3),
    ("procgen", "coinrun", {}, (3, 64, 64), 15),
    ("gym", "CartPole-v1", {}, (4,), 2),
    ("gym", "Pendulum-v1", {"vectorization": "async"}, (3,), -1),
    ("gym", "MtmoeTestImage-v0", {}, (3, 8, 6), 3),
]


@pytest.mark.parametrize("backend,env,options,shape,actions", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_layout(backend, env, options, shape, actions):
    n = 2
    vec = make(backend, env, n, **options)
    spec = vec.spec
    assert spec.obs_shape == shape
    if actions > 0:
        assert spec.action_kind == "discrete" and spec.n_actions == actions
        assert spec.action_names is None or len(spec.action_names) == actions
    else:
        assert spec.action_kind == "continuous" and spec.action_dim == -actions
        assert all(lo < hi for lo, hi in zip(spec.action_low, spec.action_high))
    obs, results = rollout(vec, seed=0, steps=10)
    for o in [obs] + [r.obs for r in results]:
        assert o.shape == (n, *shape) and o.dtype == spec.obs_dtype
    for r in results:
        assert r.reward.shape == (n,) and r.reward.dtype == np.float32
        for flags in (r.terminated, r.truncated, r.episode_end):
            assert flags.shape == (n,) and flags.dtype == np.bool_
        assert not (r.terminated & r.truncated).any()
        assert r.final_obs is None or r.final_obs.shape == obs.shape
    if spec.obs_kind == "pixels":
        assert obs.max() <= spec.obs_high
    vec.close()


def test_action_names():
    assert make("ale", "breakout").spec.action_names == ("NOOP", "FIRE", "RIGHT", "LEFT")
    assert make("ale", "pong", full_action_space=True).spec.n_actions == 18
    assert make("minatar", "Breakout", n=1).spec.action_names == ("NOOP", "LEFT", "RIGHT")
    assert make("minatar", "SpaceInvaders", n=1).spec.action_names == ("NOOP", "LEFT", "RIGHT", "FIRE")
    full = make("minatar", "Freeway", n=1, minimal_action_set=False).spec.action_names
    assert full == ("NOOP", "LEFT", "UP", "RIGHT", "DOWN", "FIRE")
    names = make("procgen", "coinrun").spec.action_names
    assert names[:5] == ("LEFT+DOWN", "LEFT", "LEFT+UP", "DOWN", "NOOP")


@pytest.mark.parametrize("backend,env", [("ale", "ALE/Breakout-v5"), ("minatar", "MinAtar/Asterix-v1"),
                                         ("mujoco", "Hopper-v5"), ("procgen", "bigfish"), ("gym", "CartPole-v1")])
def test_same_seed_same_episodes(backend, env):
    runs = []
    for _ in range(2):
        vec = make(backend, env)
        obs, results = rollout(vec, seed=7, steps=60)
        runs.append(np.stack([obs] + [r.obs for r in results]))
        vec.close()
    np.testing.assert_array_equal(runs[0], runs[1])
    vec = make(backend, env)
    obs, results = rollout(vec, seed=8, steps=60)
    assert not np.array_equal(runs[0], np.stack([obs] + [r.obs for r in results]))


def test_unknown_names():
    with pytest.raises(ValueError, match="ms_pacman"):
        make("ale", "MsPacmann")
    with pytest.raises(ValueError, match="Breakout"):
        make("minatar", "Pong")
    with pytest.raises(ValueError, match="coinrun"):
        make("procgen", "coinrunn")
    with pytest.raises(ValueError, match="max_episode_steps"):
        make("procgen", "coinrun", max_episode_steps=100)


def test_gym_image_autoreset():
    vec = make("gym", "MtmoeTestImage-v0", n=2)
    obs = vec.reset(seed=0)
    assert (obs[:, :2] == 0).all() and (obs[:, 2] == 100).all()  # HWC -> CHW
    for t in range(1, 6):
        r = vec.step(np.zeros(2, np.int64))
    assert r.terminated.all() and r.episode_end.all() and not r.truncated.any()
    assert (r.final_obs[:, 0] == 5).all() and (r.obs[:, 0] == 0).all()


def test_cartpole_autoreset_and_return():
    """Always pushing left ends CartPole within ~10 steps; reward is 1 per step."""
    vec = make("gym", "CartPole-v1", n=3)
    vec.reset(seed=0)
    returns, lengths, finished = np.zeros(3), np.zeros(3), []
    while len(finished) < 6:
        r = vec.step(np.zeros(3, np.int64))
        returns += r.reward
        lengths += 1
        for i in np.flatnonzero(r.episode_end):
            assert r.terminated[i] and np.abs(r.final_obs[i, 2]) > 0.2  # pole angle past the limit
            assert np.abs(r.obs[i]).max() <= 0.05  # a fresh start state
            finished.append((returns[i], lengths[i]))
        returns[r.episode_end] = 0
        lengths[r.episode_end] = 0
    assert all(ret == length for ret, length in finished)


def test_minatar_truncation_matches_single_env():
    """Slot 0 of a seeded vector env replays MinAtarEnv seeded alike; episodes cut at step 20."""
    vec = make("minatar", "Asterix", n=2, max_episode_steps=20)
    actions = random_actions(vec.spec, 2, 20)
    vec.reset(seed=3)
    ref = MinAtarEnv("Asterix")
    ref.reset(seed=3)
    vec_return, ref_return = 0.0, 0.0
    for t, a in enumerate(actions):
        r = vec.step(a)
        ref_obs, ref_reward, ref_done, _, _ = ref.step(a[0])
        vec_return += r.reward[0]
        ref_return += ref_reward
        assert not ref_done, "this seed's episode must outlast the limit"
        assert r.truncated.any() == (t == 19)
    assert r.truncated[0] and r.episode_end[0] and not r.terminated[0]
    assert vec_return == ref_return
    np.testing.assert_array_equal(r.final_obs[0], ref_obs)
    ref.restart()
    np.testing.assert_array_equal(r.obs[0], ref.observe())


def test_mujoco_truncation_matches_single_env():
    vec = make("mujoco", "HalfCheetah-v5", n=2, max_episode_steps=5)
    actions = random_actions(vec.spec, 2, 5)
    vec.reset(seed=1)
    ref = gym.make("HalfCheetah-v5")
    ref.reset(seed=1)
    for a in actions:
        r = vec.step(a)
        ref_obs, *_ = ref.step(a[0])
    assert r.truncated.all() and not r.terminated.any()
    np.testing.assert_allclose(r.final_obs[0], ref_obs.astype(np.float32))
    assert not np.allclose(r.obs[0], r.final_obs[0])


def test_ale_truncation_and_final_obs():
    vec = make("ale", "breakout", n=2, max_episode_steps=30)
    obs = vec.reset(seed=0)
    for t, a in enumerate(random_actions(vec.spec, 2, 30)):
        prev, r = obs, vec.step(a)
        obs = r.obs
        assert r.truncated.all() == (t == 29)
    assert r.episode_end.all() and not r.terminated.any()
    np.testing.assert_array_equal(r.final_obs[:, :3], prev[:, 1:])  # the stack moved on by one frame
    assert (r.obs[:, :3] == 0).all() and r.obs[:, 3].any()  # a fresh stack: one frame, zero-padded


def test_ale_rewards_are_raw():
    vec = make("ale", "space_invaders", n=2)
    _, results = rollout(vec, seed=0, steps=300)
    rewards = np.concatenate([r.reward for r in results])
    assert rewards.max() > 1  # Space Invaders scores 5-30 per alien; clipping would give 1


def test_ale_terminal_on_life_loss():
    """Same dynamics with and without the option; with it, each life loss is terminal."""
    runs = {}
    for flag in (False, True):
        vec = make("ale", "breakout", n=1, terminal_on_life_loss=flag)
        vec.reset(seed=0)
        results = []
        for a in random_actions(vec.spec, 1, 3000):
            results.append(vec.step(a))
            if results[-1].episode_end[0]:
                break
        runs[flag] = results
    plain, lives = runs[False], runs[True]
    assert len(plain) == len(lives) < 3000
    np.testing.assert_array_equal(np.stack([r.obs for r in plain]), np.stack([r.obs for r in lives]))
    assert sum(r.terminated[0] for r in plain) == 1  # game over only
    assert sum(r.terminated[0] for r in lives) == 5  # Breakout's 5 lives
    assert sum(r.episode_end[0] for r in lives) == 1
    for r in lives[:-1]:
        if r.terminated[0]:
            np.testing.assert_array_equal(r.final_obs[0], r.obs[0])  # the game goes on from here


def test_procgen_semantics():
    vec = make("procgen", "bigfish", n=2)
    obs = vec.reset(seed=0)
    np.testing.assert_array_equal(obs, vec.reset())  # not stepped yet: the same first frame
    _, results = rollout(vec, seed=0, steps=300)
    ends = 0
    for r in results:
        assert r.final_obs is None and not r.truncated.any()
        np.testing.assert_array_equal(r.terminated, r.episode_end)
        ends += r.episode_end.sum()
    assert ends > 0  # random bigfish episodes last ~50-200 steps


@pytest.mark.parametrize("env", ["Breakout", "SpaceInvaders", "Asterix", "Freeway", "Seaquest"])
def test_check_env_minatar(env):
    check_env(MinAtarEnv(env), skip_render_check=True)


@pytest.mark.parametrize("env", ["HalfCheetah-v5", "CartPole-v1", "Pendulum-v1", "MtmoeTestImage-v0"])
def test_check_env_gymnasium(env):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checker's advice on float64 spaces is not a failure
        check_env(gym.make(env).unwrapped, skip_render_check=True)


def test_import_is_light():
    code = ("import sys, mtmoe.tasks.backends; "
            "print(sorted(m for m in ('ale_py', 'procgen', 'minatar', 'mujoco') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert set(BACKENDS) >= {"ale", "minatar", "mujoco", "procgen", "gym"}
