"""The user's path: `mtmoe run` on every built-in suite through the CLI's own entry point, on the
suite's own preset, with evaluation, probes and checkpoints inside the run.

Only the run's size is shrunk (env slots, rollout length; for SAC the replay warm-up so that
updates happen), and the evaluation/probe/checkpoint intervals are set so that each happens
during the run. The placement puts MoE layers in a tower that reads the shared encoder where
the preset has one (Atari, Procgen).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mtmoe.cli import main
from mtmoe.runner.config import load_preset
from mtmoe.tasks import load_registry

REGISTRY = load_registry()
# built-in suites; of the generated mt1-* (50), cw1-* (10) and minatar1-* (5) suites (one per task, one file
# each) one stands for all
GENERATED, STAND_INS = ("mt1-", "cw1-", "minatar1-"), ("mt1-reach", "cw1-hammer", "minatar1-breakout")
BUILTIN = sorted(name for name, s in REGISTRY.suites.items() if "/tasks/suites/" in s.source.replace("\\", "/")
                 and (not name.startswith(GENERATED) or name in STAND_INS))


def _placement(suite) -> str:
    shared = load_preset(suite.preset).get("net", {}).get("shared_encoder", False)
    return "critic" if shared else "both"


def _tiny_args(suite, out: Path) -> list[str]:
    """A two-iteration run (three for sequential suites) with every kind of line inside it."""
    algo = load_preset(suite.preset)["algo"]
    slots = max(2, len(suite.tasks)) if suite.mode == "simultaneous" else 2
    if algo == "ppo":
        steps = slots * 8 * (2 if suite.mode == "simultaneous" else suite.phases)
        size = [f"num_envs={slots}", "ppo.num_steps=8"]
    else:
        steps = slots * 48 * (1 if suite.mode == "simultaneous" else suite.phases)
        size = [f"num_envs={slots}", "sac.learning_starts=16", "sac.batch_size=16", "sac.buffer_size=4096"]
    every = max(slots, steps // 2 // slots * slots)
    sets = size + [f"eval_every={every}", f"probe_every={every}", f"checkpoint_every={every}", "eval_episodes=1",
                   "eval_max_steps=30", "probe_per_task=8", "log_every=1"]
    return ["run", "--suite", suite.name, "--placement", _placement(suite), "--steps", str(steps),
            "--out", str(out), *[a for s in sets for a in ("--set", s)]]


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_every_builtin_suite_is_covered():
    assert len(BUILTIN) == 20, BUILTIN


def _check_run(suite, out: Path, steps: int) -> None:
    (run_dir,) = (out / suite.name).iterdir()
    records = _records(run_dir)
    training = [r for r in records if "sps" in r]
    probes = [r["probe"] for r in records if "probe" in r]
    evals = [r["eval"] for r in records if "eval" in r]
    assert training and len(probes) >= 2 and len(evals) >= 2
    for p in probes:
        assert set(p["tasks"]) == set(suite.tasks)
        for towers in p["tasks"].values():
            assert towers and all(0.0 <= v["dormant@0.1"] <= 1.0 and v["srank"] >= 1 for v in towers.values())
        assert p["moe"], "the MoE placement reports routing"
    towers = set(probes[-1]["tasks"][suite.tasks[0]])
    assert {"actor", "critic"} <= towers or {"actor", "q1.critic"} <= towers
    if _placement(suite) == "critic":  # the shared encoder is probed as a tower of its own
        assert "encoder" in towers
    assert all(set(e) == set(suite.tasks) for e in evals)
    assert (run_dir / "checkpoint.pt").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == steps and summary["stopped"] is None


HEADLINE = "atari-multitask"  # run by test_headline_command_as_the_readme_shows_it


@pytest.mark.parametrize("name", [n for n in BUILTIN if n != HEADLINE])
def test_every_builtin_suite_trains_end_to_end(tmp_path, capsys, name):
    suite = REGISTRY.suite(name)
    args = _tiny_args(suite, tmp_path)
    assert main(args) == 0, capsys.readouterr().err
    _check_run(suite, tmp_path, int(args[args.index("--steps") + 1]))


def test_headline_command_as_the_readme_shows_it(tmp_path):
    """`mtmoe run --suite atari-multitask --placement critic` as a subprocess (the console script),
    with a step count and the run made small by --set."""
    suite = REGISTRY.suite(HEADLINE)
    args = _tiny_args(suite, tmp_path)
    assert args[:5] == ["run", "--suite", "atari-multitask", "--placement", "critic"]
    mtmoe = Path(sys.executable).with_name("mtmoe")
    done = subprocess.run([str(mtmoe), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.startswith("mtmoe: training ppo on atari-multitask")
    assert "final eval" in done.stdout and "Traceback" not in done.stderr
    _check_run(suite, tmp_path, int(args[args.index("--steps") + 1]))


@pytest.mark.parametrize("name,preset", [("minatar-multitask", "dqn-minatar"), ("atari-single", "dqn-atari")])
def test_dqn_on_its_presets_end_to_end(tmp_path, capsys, name, preset):
    """`mtmoe run --suite S --algo dqn --placement critic` takes the dqn preset of the suite's family."""
    suite = REGISTRY.suite(name)
    steps = 3 * 64
    sets = ["dqn.learning_starts=32", "dqn.batch_size=8", "dqn.buffer_size=1024", "eval_every=96", "probe_every=96",
            "checkpoint_every=96", "eval_episodes=1", "eval_max_steps=30", "probe_per_task=8", "log_every=1"]
    args = ["run", "--suite", name, "--algo", "dqn", "--placement", "critic", "--steps", str(steps), "--out",
            str(tmp_path), *[a for s in sets for a in ("--set", s)]]
    assert main(args) == 0, capsys.readouterr().err
    (run_dir,) = (tmp_path / name).iterdir()
    assert json.loads((run_dir / "config.json").read_text())["preset"] == preset
    records = _records(run_dir)
    probes = [r["probe"] for r in records if "probe" in r]
    evals = [r["eval"] for r in records if "eval" in r]
    assert len(probes) >= 2 and len(evals) >= 2 and any("q_loss" in r for r in records)
    assert set(probes[-1]["tasks"]) == set(suite.tasks) and probes[-1]["moe"]
    assert all(set(towers) == {"q.critic"} for towers in probes[-1]["tasks"].values())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == steps and summary["stopped"] is None and summary["algo"] == "dqn"
