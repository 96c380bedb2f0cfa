"""`mtmoe run` end to end on tiny budgets: files written, numbers finite, nothing overwritten."""

from __future__ import annotations

import json
import math

import pytest

from mtmoe.runner.config import compose
from mtmoe.runner.run import train
from mtmoe.tasks import load_registry

REGISTRY = load_registry()

TINY = {
    "ppo": ["num_envs=6", "ppo.num_steps=16", "ppo.num_minibatches=2", "ppo.update_epochs=1", "log_every=1",
            "eval_episodes=2"],
    "sac": ["sac.learning_starts=50", "sac.buffer_size=1000", "sac.batch_size=32", "log_every=50", "eval_episodes=1"],
    "dqn": ["dqn.learning_starts=50", "dqn.buffer_size=1000", "dqn.batch_size=32", "log_every=50", "eval_episodes=1"],
}


@pytest.mark.parametrize("suite,algo,steps,placement", [
    ("minatar-multitask", "ppo", 6 * 16 * 3, "critic"),
    ("minatar-continual", "ppo", 6 * 16 * 3, "both"),
    ("mujoco-single", "sac", 150, "critic"),
    ("minatar-multitask", "sac", 150, "both"),
    ("minatar-multitask", "dqn", 150, "critic"),
    ("minatar-continual", "dqn", 150, "critic"),
])
def test_run_writes_every_file(tmp_path, suite, algo, steps, placement):
    cfg, spec = compose(REGISTRY, suite, algo=algo, steps=steps, net_flags={"placement": placement}, sets=TINY[algo])
    run_dir = train(cfg, REGISTRY, tmp_path, progress=False)
    assert run_dir.parent == tmp_path / suite
    config = json.loads((run_dir / "config.json").read_text())
    assert config["net"]["placement"] == placement and config["steps"] == steps
    every = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    lines = [x for x in every if "probe" not in x and "eval" not in x]
    evals = [x["eval"] for x in every if "eval" in x]
    assert evals and set(evals[-1]) == set(spec.tasks)
    assert all(r["episodes"] <= 2 for r in evals[-1].values())
    probes = [x["probe"] for x in every if "probe" in x]
    assert lines and lines[-1]["global_step"] >= steps - cfg.num_envs
    for line in lines:
        for k, v in line.items():
            if isinstance(v, float):
                assert math.isfinite(v), (k, v)
    # probes: every task, every tower, dormant fractions in [0, 1], finite numbers; MoE routing
    assert probes and set(probes[-1]["tasks"]) == set(spec.tasks)
    for per_tower in probes[-1]["tasks"].values():
        for values in per_tower.values():
            assert all(0.0 <= values[f"dormant@{tau}"] <= 1.0 for tau in (0.0, 0.025, 0.1))
            assert values["dormant@0.0"] <= values["dormant@0.025"] <= values["dormant@0.1"]
            assert values["srank"] >= 1 and math.isfinite(values["feature_norm"])
    assert probes[-1]["moe"], "an MoE placement must report routing"
    if spec.mode == "simultaneous" and len(spec.tasks) > 1:  # gradient interference
        inter = probes[-1]["interference"]
        assert set(inter) == ({"critic"} if algo == "dqn" else {"actor", "critic"})
        for tower in inter.values():
            assert len(tower["pairs"]) == 3 and all(-1.0 - 1e-6 <= c <= 1.0 + 1e-6 for c in tower["pairs"].values())
    for stats in probes[-1]["moe"].values():
        assert 0.0 <= stats["load_entropy"] <= 1.0 + 1e-6 and stats.get("task_mi", 0.0) >= -1e-9
    assert list((run_dir / "tb").iterdir())
    assert (run_dir / "checkpoint.pt").is_file() and not (run_dir / "checkpoint.pt.tmp").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["placement"] == placement and summary["steps"] >= steps - cfg.num_envs
    assert set(summary["final_return"]) == set(spec.tasks)
    assert summary["eval"] == evals[-1]
    if spec.mode == "sequential":  # the switches of the schedule show up in the metrics
        switches = [s for line in lines for s in line["switches"]]
        assert [s["to"] for s in switches] == list(spec.order[1:])
        ns = summary["nonstationarity"]
        assert [p[0] for p in ns["phases"]] == list(spec.order)
        assert {"forgetting", "switch_drop", "steps_to_recover"} <= set(ns)


def test_runs_never_overwrite_each_other(tmp_path):
    cfg, _ = compose(REGISTRY, "minatar-single", steps=6 * 16, sets=TINY["ppo"])
    a = train(cfg, REGISTRY, tmp_path, progress=False)
    b = train(cfg, REGISTRY, tmp_path, progress=False)
    assert a != b and (a / "summary.json").exists() and (b / "summary.json").exists()


def test_non_finite_loss_stops_the_run_with_a_clear_message(tmp_path):
    from mtmoe.errors import MtmoeError

    cfg, _ = compose(REGISTRY, "minatar-single", steps=6 * 16 * 50,
                     sets=TINY["ppo"] + ["ppo.learning_rate=1e30", "ppo.max_grad_norm=1e30", "ppo.anneal_lr=false"])
    with pytest.raises(MtmoeError, match="non-finite loss") as err:
        train(cfg, REGISTRY, tmp_path, progress=False)
    run_dir = next((tmp_path / "minatar-single").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped"] and summary["steps"] < 6 * 16 * 50
    assert "\n" not in str(err.value)


def test_set_parses_scientific_notation_and_lists():
    from mtmoe.runner.config import parse_sets

    assert parse_sets(["ppo.learning_rate=1e-3", "net.hidden=[64, 64]", "seed=3", "name=abc"]) == {
        "ppo": {"learning_rate": 1e-3}, "net": {"hidden": [64, 64]}, "seed": 3, "name": "abc"}


def test_a_suites_env_count_overridden_by_its_own_preset_is_noted_once():
    """atari-multitask declares 8 envs per task; its ppo-atari preset's 8 slots win, and the run says
    so; with the user's own --set num_envs, or another algorithm's preset, nothing is noted."""
    from mtmoe.runner.config import env_count_note

    cfg, suite = compose(REGISTRY, "atari-multitask")
    assert cfg.num_envs == 8 and suite.slots() == 40
    assert env_count_note(cfg, suite) == ("atari-multitask declares 8 envs per task (40 slots); its preset "
                                          "ppo-atari's num_envs wins: 8 slots (--set num_envs=40 takes the suite's)")
    sets = ["num_envs=40"]
    cfg, suite = compose(REGISTRY, "atari-multitask", sets=sets)
    assert cfg.num_envs == 40 and env_count_note(cfg, suite, sets) is None
    for name, algo in (("minatar-multitask", None), ("minatar-multitask", "dqn"), ("atari-multitask", "dqn")):
        cfg, suite = compose(REGISTRY, name, algo=algo)
        assert env_count_note(cfg, suite) is None, (name, algo)


def _training_lines(run_dir):
    out = []
    for x in (run_dir / "metrics.jsonl").read_text().splitlines():
        line = json.loads(x)
        out.append({k: v for k, v in line.items() if k not in ("time", "sps")})
    return out


@pytest.mark.parametrize("suite,algo,steps,sets", [
    ("minatar-continual", "ppo", 6 * 16 * 12, ["checkpoint_every=384"]),
    ("minatar-continual", "ppo", 6 * 16 * 12, ["checkpoint_every=384", "env_device=tensor"]),
    ("minatar-single", "sac", 600, ["checkpoint_every=200", "num_envs=2", "net.hidden=[32]"]),
    ("minatar-continual", "dqn", 600, ["checkpoint_every=200", "num_envs=3", "net.hidden=[32]", "dqn.n_step=3"]),
])
def test_resumed_run_equals_the_uninterrupted_run(tmp_path, suite, algo, steps, sets):
    cfg, _ = compose(REGISTRY, suite, algo=algo, steps=steps, net_flags={"placement": "critic"},
                     sets=TINY[algo] + sets + ["log_every=1"])
    whole = train(cfg, REGISTRY, tmp_path / "a", progress=False)
    # "killed" after the first checkpoint and two more log points; then resumed from the checkpoint
    cut = train(cfg, REGISTRY, tmp_path / "b", progress=False, stop_at_step=int(steps * 0.6))
    assert (cut / "checkpoint.pt").exists() and not (cut / "summary.json").exists()
    resumed = train(cfg, REGISTRY, tmp_path / "b", progress=False, resume=cut)
    assert resumed == cut
    assert _training_lines(resumed) == _training_lines(whole)
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, resumed))
    assert a["final_return"] == b["final_return"] and a["eval"] == b["eval"] and b["resumed"]


@pytest.mark.parametrize("show", [False, True])
def test_progress_of_a_resumed_run_counts_only_the_steps_trained_since(monkeypatch, capsys, show):
    """Resumed at step 300,000, 4,000 steps in 2 s is 2,000 steps/s (not 152,000: every step over
    the time since the resume), in the plain lines and the rich bar alike."""
    from mtmoe.runner import periodic

    clock = iter([100.0, 100.0, 102.0, 102.0])
    monkeypatch.setattr(periodic.time, "time", lambda: next(clock))
    bar = periodic.Progress(3_000_000, ["a"], show=show)
    bar.begin_at(300_000)
    bar.update(304_000, {"a": 1.0})
    if show:
        task = bar.bar.tasks[0]
        shown = (task.completed, task.fields["sps"])
        bar.close()
        assert shown == (304_000, "2,000")
    else:
        assert "step 304,000/3,000,000  2,000 steps/s  a: 1.0" in capsys.readouterr().err


def test_resume_without_saved_envs_continues_at_the_right_phase(tmp_path):
    """MuJoCo envs cannot be saved exactly: the resumed run restarts episodes, not the schedule."""
    cfg, _ = compose(REGISTRY, "mujoco-continual", algo="ppo", steps=6 * 16 * 8,
                     sets=TINY["ppo"] + ["checkpoint_every=192"])
    cut = train(cfg, REGISTRY, tmp_path, progress=False, stop_at_step=400)
    resumed = train(cfg, REGISTRY, tmp_path, progress=False, resume=cut)
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["resumed"] and summary["steps"] == 6 * 16 * 8
    lines = [x for x in _training_lines(resumed) if "eval" not in x and "probe" not in x]
    steps = [x["global_step"] for x in lines]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # no line written twice
    switches = [s["to"] for x in lines for s in x["switches"]]
    assert switches == list(REGISTRY.suite("mujoco-continual").order[1:])  # every switch exactly once


@pytest.mark.parametrize("per_phase", [False, True])
def test_learning_rate_decays_over_the_run_or_within_each_phase(tmp_path, per_phase):
    """minatar-continual, 3 phases of 2 PPO iterations each (6 slots x 16 steps = 96 per iteration)."""
    cfg, _ = compose(REGISTRY, "minatar-continual", algo="ppo", steps=96 * 6,
                     sets=TINY["ppo"] + ["switch_every=192", "ppo.learning_rate=0.01",
                                         f"ppo.anneal_per_phase={str(per_phase).lower()}"])
    run_dir = train(cfg, REGISTRY, tmp_path, progress=False)
    lrs = [x["learning_rate"] for x in _training_lines(run_dir) if "learning_rate" in x]
    expected = [0.01, 0.005] * 3 if per_phase else [0.01 * (1 - i / 6) for i in range(6)]
    assert lrs == pytest.approx(expected)
