"""`mtmoe run --backend sample-factory`: a tiny APPO run with an MoE critic on a MinAtar mixture
writes results that `mtmoe compare` reads; the env, the model (masks, MoE aux loss) and the guards.

Sample Factory is optional (pip install --no-deps -r requirements/sample-factory.txt). Without it
these tests skip, unless MTMOE_REQUIRE_SF is set (`make test` sets it: CI must run them).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time

import numpy as np
import pytest
import torch

from mtmoe.cli import main
from mtmoe.errors import ConfigError, MtmoeError
from mtmoe.tasks import load_registry

REGISTRY = load_registry()
SUITE = "minatar-multitask"
TASKS = list(REGISTRY.suite(SUITE).tasks)
HAVE_SF = importlib.util.find_spec("sample_factory") is not None
REASON = "Sample Factory is not installed (pip install --no-deps -r requirements/sample-factory.txt)"


@pytest.fixture
def sf():
    if not HAVE_SF:
        if os.environ.get("MTMOE_REQUIRE_SF"):
            pytest.fail(REASON + "; MTMOE_REQUIRE_SF is set (make test installs it)")
        pytest.skip(REASON)


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def test_missing_sample_factory_is_one_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "sample_factory", None)  # `import sample_factory` now raises ImportError
    rc = main(["run", "--backend", "sample-factory", "--suite", SUITE, "--steps", "1000", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "requirements/sample-factory.txt" in err[0]


def test_unsupported_runs_fail_with_one_line(tmp_path, capsys):
    base = ["run", "--backend", "sample-factory", "--steps", "1000", "--out", str(tmp_path)]
    for extra, words in ((["--suite", "minatar-continual"], "continual"),
                         (["--suite", "mujoco-single", "--algo", "sac"], "APPO only"),
                         (["--suite", SUITE, "--resume", str(tmp_path)], "cannot be resumed"),
                         (["--suite", SUITE, "--set", "sf.no_such_option=1"], "sf.no_such_option")):
        rc = main(base + extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and words in err[0], (extra, err)
    assert not list(tmp_path.iterdir())  # nothing was started


def test_sf_options_split_from_mtmoe_sets():
    from mtmoe.sf.run import split_sets

    ours, opts = split_sets(["sf.num_workers=3", "ppo.learning_rate=1e-3", "sf.extra=--max_policy_lag=10"])
    assert ours == ["ppo.learning_rate=1e-3"] and opts.num_workers == 3 and opts.extra == "--max_policy_lag=10"
    with pytest.raises(ConfigError, match="envs_per_worker"):
        split_sets(["sf.envs_per_worker=3"])


def test_crash_lines_in_sf_log_are_found(tmp_path):
    from mtmoe.sf.run import _crash_in_log

    log = tmp_path / "log.txt"
    log.write_text("starting\n[w1] Unhandled exception boom in evt loop rollout_proc1\n")
    line, offset = _crash_in_log(log, 0)
    assert "boom" in line and offset == log.stat().st_size
    assert _crash_in_log(log, offset) == (None, offset)


def test_mixture_env_is_one_vectorized_sf_env_with_per_task_episode_stats(sf):
    from sample_factory.algo.utils.make_env import BatchedVecEnv

    from mtmoe.sf.env import make_env

    suite = REGISTRY.suite(SUITE)
    env = BatchedVecEnv(make_env("mtmoe_mixture", None, None, suite=suite,
                                 tasks=[REGISTRY.task(t) for t in TASKS], slots_per_task=2, seed=0))
    assert env.num_agents == 6  # SF sees every slot as an agent (gymnasium 1.x patch in make_env)
    obs, _ = env.reset(seed=1)
    assert obs["obs"].shape == (6, *env.observation_space["obs"].shape) and obs["obs"].dtype == torch.uint8
    assert obs["task_id"].tolist() == [0, 0, 1, 1, 2, 2] and obs["action_mask"].dtype == torch.bool
    rng, seen = np.random.default_rng(0), []
    for _ in range(500):
        actions = torch.from_numpy(np.argmax(rng.random(obs["action_mask"].shape) + obs["action_mask"].numpy(), -1))
        obs, rew, term, trunc, infos = env.step(actions)
        ended = torch.isfinite(infos["mtmoe_return"])
        assert bool(((term | trunc) | ~ended).all())  # stats only on slots that are done
        seen += [int(k) for k in infos["mtmoe_task"][ended]]
        if len(set(seen)) == 3:
            break
    assert set(seen) == {0, 1, 2}
    env.close()


def _sf_cfg():
    from sample_factory.cfg.arguments import parse_full_cfg, parse_sf_args

    argv = ["--env=mtmoe_mixture", "--normalize_input=False", "--normalize_returns=False", "--use_rnn=False"]
    parser, _ = parse_sf_args(argv)
    return parse_full_cfg(parser, argv)


def test_model_masks_invalid_actions_and_trains_the_moe_aux_loss(sf):
    from mtmoe.sf.env import SFMixtureEnv
    from mtmoe.sf.model import MASKED_LOGIT, MtmoeActorCritic, net_config
    from mtmoe.nets import collect_moe
    from mtmoe.runner.config import compose

    cfg, suite = compose(REGISTRY, SUITE, net_flags={"placement": "both", "moe": "topk"})
    env = SFMixtureEnv(suite, [REGISTRY.task(t) for t in TASKS], 4, seed=0)
    obs, _ = env.reset(seed=0)
    model = MtmoeActorCritic(env.observation_space, env.action_space, _sf_cfg(), net_config(cfg.to_dict()["net"]),
                             aux_coef=0.5)
    batch = {k: torch.from_numpy(v) for k, v in obs.items()}
    out = model(batch, torch.zeros(12, 1))
    mask = batch["action_mask"]
    assert (out["action_logits"][~mask] == MASKED_LOGIT).all() and out["values"].shape == (12,)
    assert mask.gather(1, out["actions"].long().view(-1, 1)).all()  # sampled actions are valid for their task

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]

    weights = torch.randn(12, model.param_size + 1)
    attached = grads((model.forward_head(batch) * weights).sum())  # the aux loss rides on the head's output
    with collect_moe() as moe:
        actor_out, value = model.net(batch["obs"], batch["task_id"])
    aux = moe.aux_loss()
    assert aux.item() > 0
    head = torch.cat([actor_out.masked_fill(~mask, MASKED_LOGIT), value.unsqueeze(-1)], -1)
    explicit = grads((head * weights).sum() + 0.5 * aux)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(attached, explicit))
    env.close()


def test_timeout_kills_sample_factory_and_its_workers(sf, tmp_path, monkeypatch):
    import subprocess

    import mtmoe.sf.run as sfrun
    from mtmoe.runner.config import compose
    from mtmoe.sf import SFOptions

    started = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(sfrun.subprocess, "Popen", popen)
    cfg, _ = compose(REGISTRY, SUITE, steps=10_000_000)
    with pytest.raises(MtmoeError, match="did not finish within 3 s"):
        sfrun.train_sf(cfg, REGISTRY, tmp_path, SFOptions(num_workers=1, timeout_s=3), progress=False)
    pgid = started[0].pid  # start_new_session: the group of SF's main process and its workers
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("Sample Factory's processes outlived the timeout")


def test_tiny_appo_run_with_moe_critic_is_read_by_compare(sf, tmp_path, capsys):
    """The issue's acceptance test: ~20k env steps of APPO, SoftMoE critic, MinAtar mixture."""
    from mtmoe.compare import compare
    from mtmoe.compare.load import load_runs

    t0 = time.time()
    rc = main(["run", "--backend", "sample-factory", "--suite", SUITE, "--placement", "critic", "--moe", "softmoe",
               "--steps", "20000", "--out", str(tmp_path), "--set", "sf.num_workers=2", "--set", "eval_episodes=4",
               "--set", "probe_per_task=64", "--set", "log_every=5000"])
    assert rc == 0, capsys.readouterr().err
    run_dir, = (tmp_path / SUITE).iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["backend"] == "sample-factory" and config["net"]["placement"] == "critic"
    assert config["net"]["moe"] == "softmoe" and config["sf"]["num_workers"] == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] >= 20_000 and summary["steps_per_s"] > 0 and summary["stopped"] is None
    assert all(_finite(summary["final_return"][t]) and summary["episodes"][t] > 0 for t in TASKS)
    assert all(_finite(summary["eval"][t]["return"]) for t in TASKS)
    counts = summary["param_counts"]["actor_critic"]
    assert counts["critic"] > counts["actor"]  # the SoftMoE critic, not SF's default model, was trained
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [l for l in lines if "return" in l]
    assert len(train) >= 2 and train[-1]["global_step"] >= 20_000
    assert all(_finite(train[-1]["return"][t]) for t in TASKS)
    assert any("eval" in l for l in lines) and any("probe" in l for l in lines)
    assert list((run_dir / "tb").iterdir())

    warnings = []
    runs = load_runs([tmp_path], warnings.append)
    assert len(runs) == 1 and not warnings  # SF's own config.json does not pass for a second run
    assert sorted(runs[0].train) == sorted(TASKS) and sorted(runs[0].evals) == sorted(TASKS)
    for score in ("eval", "train"):
        result = compare([tmp_path], tmp_path / f"compare-{score}", score=score, reps=200, plots=False,
                         warn=warnings.append)
        entry = result[SUITE]
        assert entry["tasks"] == TASKS and list(entry["table"]) == ["critic"]
        assert all(_finite(entry["per_task"]["critic"][t][0]) for t in TASKS)
        assert (tmp_path / f"compare-{score}" / "report.md").is_file()
    # one run: the one warning is compare's about fewer than 5 seeds, once per comparison
    assert len(warnings) == 2 and all("fewer than 5 seeds for critic (1)" in w for w in warnings), warnings
    print(f"tiny SF run + compare: {time.time() - t0:.0f} s")
