"""Meta-World backend and suites: task lists against metaworld's own, every MT10 task builds and
steps, success per episode equals the env's info["success"], Continual World's order and phases."""

from __future__ import annotations

import numpy as np
import pytest

from mtmoe.errors import ConfigError
from mtmoe.tasks import make_mixture
from mtmoe.tasks.backends.metaworld import MT10, MT50, MetaWorldOptions, MetaWorldVecEnv, task_name
from mtmoe.tasks.mixture import plan_schedule
from mtmoe.tasks.registry import expand_template, load_registry

# awarelab/continual_world, continualworld/tasks.py, TASK_SEQS["CW10"] (v1 names)
CW10 = ["hammer", "push-wall", "faucet-close", "push-back", "stick-pull", "handle-press-side", "push",
        "shelf-place", "window-close", "peg-unplug-side"]


def test_task_lists_are_metaworlds():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS, MT10_V3

    assert MT50 == tuple(ALL_V3_ENVIRONMENTS) and MT10 == tuple(MT10_V3)
    assert task_name("hammer-v1") == task_name("hammer-v2") == task_name("hammer") == "hammer-v3"
    with pytest.raises(ValueError, match="no Meta-World task"):
        task_name("hammer-v9x")


def test_builtin_suites():
    reg = load_registry()
    assert [reg.task(t).env for t in reg.suite("mt10").tasks] == list(MT10)
    assert sorted(reg.task(t).env for t in reg.suite("mt50").tasks) == sorted(MT50)
    mt1 = [s for s in reg.suites if s.startswith("mt1-")]
    assert len(mt1) == 50 and reg.suite("mt1-reach").tasks == ("mw-reach",)
    cw1 = [s for s in reg.suites if s.startswith("cw1-")]
    assert len(cw1) == 10 and reg.suite("cw1-hammer").tasks == ("cw-hammer",)


@pytest.mark.parametrize("name,cycles", [("cw10", 1), ("cw20", 2)])
def test_continual_world_order_and_phase_lengths_are_exact(name, cycles):
    suite = load_registry().suite(name)
    assert [t.removeprefix("cw-") for t in suite.order] == CW10 and suite.cycles == cycles
    reg = load_registry()
    assert all(reg.task(t).max_episode_steps == 200 for t in suite.tasks)  # continualworld/envs.py
    phases = plan_schedule(suite, 1, suite.switch_every)
    assert len(phases) == 10 * cycles
    assert [p.start for p in phases] == [i * 1_000_000 for i in range(10 * cycles)]
    assert [suite.tasks[p.task_index].removeprefix("cw-") for p in phases] == CW10 * cycles


def test_template_errors_are_one_line():
    with pytest.raises(ConfigError, match="for_each_task"):
        expand_template({"for_each_task": {"backnd": "metaworld"}, "name": "x-{name}"}, "t.yaml", {})
    with pytest.raises(ConfigError, match="no task of backend"):
        expand_template({"for_each_task": {"backend": "metaworld", "prefix": "zz-"}, "name": "x"}, "t.yaml",
                        load_registry().tasks)


def test_every_mt10_task_builds_and_steps():
    env = make_mixture("mt10", load_registry(), steps=1000)
    obs, info = env.reset(seed=0)
    assert obs.shape == (10, 39) and obs.dtype == np.float32
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(np.zeros((10, 4), np.float32))
    assert np.isfinite(obs).all() and np.isfinite(reward).all() and not terminated.any()
    env.close()


def _scripted_episode(seed: int, policy: bool) -> tuple[list[bool], float]:
    """(the env's own info["success"] per step, the mixture's episode success) for one reach-v3
    episode played by metaworld's scripted policy (or by zero actions), with the same goal and seed."""
    import metaworld
    from metaworld.policies import SawyerReachV3Policy

    mixture = make_mixture("mt1-reach", load_registry(), steps=1000)
    obs, _ = mixture.reset(seed=seed)
    backend: MetaWorldVecEnv = mixture.backends[0]
    twin_bench = metaworld.MT1("reach-v3", seed=MetaWorldOptions().benchmark_seed)
    twin = twin_bench.train_classes["reach-v3"]()
    twin.seed(mixture._task_seed(0))  # what the backend did: env.seed(seed + slot), then its goal draw
    goal = np.random.default_rng(mixture._task_seed(0)).integers(len(backend.goals))
    twin.set_task(twin_bench.train_tasks[int(goal)])
    twin_obs, _ = twin.reset()
    assert np.allclose(obs[0], twin_obs, atol=1e-5)
    act = SawyerReachV3Policy().get_action if policy else (lambda o: np.zeros(4, np.float32))
    twin_success, episode = [], None
    for _ in range(500):
        a = act(twin_obs)
        twin_obs, _, _, _, twin_info = twin.step(a)
        twin_success.append(bool(twin_info["success"]))
        obs, _, _, _, info = mixture.step(np.asarray(a, np.float32)[None])
        if info.get("episodes"):
            episode = info["episodes"][0]
    mixture.close()
    assert episode is not None and episode["length"] == 500
    return twin_success, episode["success"]


@pytest.mark.parametrize("policy", [True, False])
def test_episode_success_is_the_envs_info_success(policy):
    twin_success, episode_success = _scripted_episode(seed=3, policy=policy)
    assert episode_success == float(any(twin_success))
    assert episode_success == (1.0 if policy else 0.0)  # the scripted policy solves reach; standing still does not


def test_tasks_without_success_report_none():
    env = make_mixture("minatar-single", load_registry(), num_envs=2, steps=1000)
    env.reset(seed=0)
    episodes = []
    while not episodes:
        episodes = env.step(np.zeros(2, np.int64))[4].get("episodes", [])
    assert "success" not in episodes[0]
    env.close()
