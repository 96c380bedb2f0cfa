"""Continual World's metrics on synthetic curves with known values, and a tiny sequential
Meta-World run whose summary carries success rates and those metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mtmoe.cli import main
from mtmoe.metrics.continual_world import continual_world_metrics, forward_transfer, phase_auc, value_at

PHASES = [("a", 0, 100), ("b", 100, 200)]


def test_phase_auc_is_the_trapezoid_mean_level():
    assert phase_auc([(0, 0.0), (100, 1.0)], 0, 100) == pytest.approx(0.5)
    # 0 → 1 over the first half, then flat at 1: area 25 + 50 over 100 steps
    assert phase_auc([(0, 0.0), (50, 1.0), (100, 1.0)], 0, 100) == pytest.approx(0.75)
    assert phase_auc([(150, 0.4)], 100, 200) == 0.4  # a single point: its value
    assert phase_auc([(300, 1.0)], 0, 100) is None  # no point in the phase
    assert phase_auc([(0, 0.0), (100, 1.0), (200, 0.0)], 0, 100) == pytest.approx(0.5)  # later points ignored


def test_forward_transfer_formula():
    assert forward_transfer(0.75, 0.5) == pytest.approx(0.5)  # (0.75 − 0.5) / (1 − 0.5)
    assert forward_transfer(0.25, 0.5) == pytest.approx(-0.5)
    assert forward_transfer(0.5, 0.5) == 0.0
    assert forward_transfer(0.9, 1.0) is None and forward_transfer(None, 0.2) is None


def test_forgetting_and_average_performance_on_known_curves():
    curves = {"a": [(0, 0.0), (50, 0.6), (100, 0.8), (150, 0.5), (200, 0.2)],
              "b": [(0, 0.0), (100, 0.0), (150, 0.5), (200, 1.0)]}
    m = continual_world_metrics(curves, PHASES, end_step=200)
    assert m["end_of_phase"] == {"a": 0.8, "b": 1.0}
    assert m["final"] == {"a": 0.2, "b": 1.0}
    assert m["forgetting"]["a"] == pytest.approx(0.6) and m["forgetting"]["b"] == 0.0
    assert m["average_performance"] == pytest.approx(0.6)
    assert m["auc"]["a"] == pytest.approx((50 * 0.3 + 50 * 0.7) / 100)
    assert m["auc"]["b"] == pytest.approx(0.5)


def test_a_returning_task_is_judged_at_the_end_of_its_last_phase():
    phases = PHASES + [("a", 200, 300)]
    curves = {"a": [(100, 0.8), (200, 0.1), (300, 0.9)], "b": [(200, 1.0), (300, 0.7)]}
    m = continual_world_metrics(curves, phases, end_step=300)
    assert m["forgetting"]["a"] == 0.0 and m["forgetting"]["b"] == pytest.approx(0.3)


def test_value_at_and_missing_scores():
    assert value_at([(0, 0.1), (100, 0.4)], 99) == 0.1 and value_at([(10, 0.1)], 5) is None
    m = continual_world_metrics({"a": [(50, 1.0)]}, PHASES, end_step=200)
    assert m["average_performance"] is None and m["forgetting"]["b"] is None


TASKS_YAML = """
defaults:
  backend: metaworld
  options: {goals: random}
  max_episode_steps: 20
tasks:
  - {id: tiny-reach, env: reach-v3}
  - {id: tiny-push, env: push-v3}
"""
SUITE_YAML = """
name: tiny-cw
tasks: [tiny-reach, tiny-push]
mode: sequential
num_envs: 2
switch_every: 160
algo: sac
preset: sac-mujoco
budgets: {default: 320}
"""


def test_sequential_metaworld_run_reports_success_and_continual_world_metrics(tmp_path: Path, capsys):
    (tmp_path / "tasks" / "suites").mkdir(parents=True)
    (tmp_path / "tasks" / "tiny.yaml").write_text(TASKS_YAML)
    (tmp_path / "tasks" / "suites" / "tiny-cw.yaml").write_text(SUITE_YAML)
    sets = ["sac.learning_starts=40", "sac.batch_size=16", "sac.buffer_size=1024", "eval_every=80",
            "eval_episodes=2", "probe_every=-1", "log_every=40"]
    code = main(["run", "--tasks-dir", str(tmp_path / "tasks"), "--suite", "tiny-cw", "--placement", "critic",
                 "--steps", "320", "--out", str(tmp_path / "runs"), *[a for s in sets for a in ("--set", s)]])
    assert code == 0
    summary = json.loads(next((tmp_path / "runs").rglob("summary.json")).read_text())
    # every 20-step episode ends, so both tasks have success rates in training and evaluation
    assert set(summary["final_success"]) == {"tiny-reach", "tiny-push"}
    assert all(0.0 <= v <= 1.0 for v in summary["final_success"].values())
    assert all(0.0 <= summary["eval"][t]["success"] <= 1.0 for t in ("tiny-reach", "tiny-push"))
    cw = summary["nonstationarity"]["continual_world"]
    assert cw["score"] == "success" and set(cw["auc"]) == {"tiny-reach", "tiny-push"}
    final = [summary["eval"][t]["success"] for t in ("tiny-reach", "tiny-push")]
    assert math.isclose(cw["average_performance"], sum(final) / 2)
    out = capsys.readouterr().out
    assert "eval success" in out and "Continual World (success)" in out
