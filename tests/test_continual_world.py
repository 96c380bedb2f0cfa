"""Continual World's metrics on synthetic curves with known values, and a tiny sequential
Meta-World run whose summary carries success rates and those metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mtmoe.cli import main
from mtmoe.metrics.continual_world import (continual_world_metrics, forward_transfer, phase_auc, resampled,
                                           value_at)

PHASES = [("a", 0, 100), ("b", 100, 200)]


def test_phase_auc_is_the_trapezoid_mean_level():
    assert phase_auc([(0, 0.0), (100, 1.0)], 0, 100) == pytest.approx(0.5)
    # 0 → 1 over the first half, then flat at 1: area 25 + 50 over 100 steps
    assert phase_auc([(0, 0.0), (50, 1.0), (100, 1.0)], 0, 100) == pytest.approx(0.75)
    assert phase_auc([(150, 0.4)], 100, 200) == 0.4  # a single point: its value
    assert phase_auc([(300, 1.0)], 0, 100) is None  # no point in the phase
    assert phase_auc([(0, 0.0), (100, 1.0), (200, 0.0)], 0, 100) == pytest.approx(0.5)  # later points ignored


def test_resampled_interpolates_and_holds_the_ends():
    curve = [(100, 0.2), (0, 0.0), (200, 1.0)]  # any order
    at = resampled(curve, [0, 50, 150, 300])
    assert [s for s, _ in at] == [0, 50, 150, 300]
    assert [v for _, v in at] == pytest.approx([0.0, 0.1, 0.6, 1.0])
    assert resampled([(100, 0.4)], [0, 500]) == [(0, 0.4), (500, 0.4)]
    assert resampled([], [0, 10]) == []


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


def _run(root, suite, tasks, seed, success, cw=None, phases=None, curves=None, placement="none"):
    """A results folder with the fields compare reads: eval success per task, optionally
    Continual World's metrics (sequential) and eval success curves {task: [(step, rate)]}."""
    path = root / suite / f"sac-{placement}-s{seed}"
    path.mkdir(parents=True)
    net = {"placement": placement, "moe": "softmoe", "position": "penultimate", "num_experts": 4, "expert_width": 0}
    (path / "config.json").write_text(json.dumps({"suite": suite, "algo": "sac", "seed": seed, "net": net}))
    norm = {t: {"low": 0.0, "high": 1.0, "source": "none: normalized equals raw"} for t in tasks}
    summary = {"suite": suite, "algo": "sac", "placement": placement, "seed": seed, "steps": 200, "steps_per_s": 1.0,
               "final_return": {t: 1.0 for t in tasks}, "final_normalized": {t: 1.0 for t in tasks},
               "final_success": dict(zip(tasks, success)), "normalization": norm,
               "eval": {t: {"return": 1.0, "normalized": 1.0, "episodes": 2, "success": s} for t, s in zip(tasks, success)},
               "param_counts": {"actor": {"total": 10}}, "nonstationarity": None}
    if cw:
        summary["nonstationarity"] = {"phases": phases, "forgetting": [], "switch_drop": [], "steps_to_recover": [],
                                      "continual_world": cw}
    (path / "summary.json").write_text(json.dumps(summary))
    steps = sorted({s for c in (curves or {}).values() for s, _ in c})
    lines = [{"global_step": s, "eval": {t: {"return": v, "normalized": v, "episodes": 2, "success": v}
                                         for t, c in curves.items() for s2, v in c if s2 == s}} for s in steps]
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_compare_reports_continual_world_metrics_and_forward_transfer(tmp_path):
    """Metrics recomputed from the eval curves; the reference taken at the run's own eval points."""
    from mtmoe.compare import compare

    phases = [["a", 0, 100], ["b", 100, 200]]
    for seed, later_a in enumerate([0.6, 0.8]):  # a learned to 1.0 in its phase, then kept 0.6 / 0.8
        curves = {"a": [(50, 0.5), (100, 1.0), (150, later_a), (200, later_a)],
                  "b": [(50, 0.0), (100, 0.0), (150, 0.5), (200, 1.0)]}
        cw = {"score": "success", "average_performance": None, "forgetting": {}, "auc": {}, "final": {},
              "end_of_phase": {}}  # what the run recorded is not what compare reports
        _run(tmp_path / "res", "seq-x", ["a", "b"], seed, [later_a, 1.0], cw=cw, phases=phases, curves=curves)
    # the dense single-task reference of a: success rising 0 → 1 over 100 steps, evaluated every 10
    # steps; at the continual runs' points (50, 100 steps into a's phase) it is 0.5, 1.0, as theirs
    _run(tmp_path / "res", "one-a", ["a"], 0, [1.0], curves={"a": [(s, min(s / 100, 1.0)) for s in range(0, 201, 10)]})
    # a single-task run of another network is not the dense runs' reference
    _run(tmp_path / "res", "one-a", ["a"], 0, [1.0], curves={"a": [(s, 1.0) for s in range(0, 201, 10)]},
         placement="critic")
    result = compare([tmp_path / "res"], tmp_path / "cmp", score="success", reps=50, plots=False, warn=lambda m: None)
    table = result["seq-x"]["continual_world"]["none"]
    assert table["average_performance"] == pytest.approx(((0.6 + 1.0) / 2 + (0.8 + 1.0) / 2) / 2)
    assert table["forgetting"] == pytest.approx((0.4 + 0.0 + 0.2 + 0.0) / 4)
    # AUC_a = AUC_a^b = 0.75 on the same points: no transfer (over all 11 reference points AUC^b
    # would be 0.5 and FT 0.5); b has no reference
    assert table["forward_transfer"] == pytest.approx(0.0)
    assert table["references"] == "1/2 (same)"
    assert result["seq-x"]["normalization"] == {"a": "success rate", "b": "success rate"}
    assert result["seq-x"]["scores"]["none"] == [[0.6, 1.0], [0.8, 1.0]]
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "Continual World's metrics" in report and "final evaluation success rate" in report
