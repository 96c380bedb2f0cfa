"""Expert load per task: recorded by the probes (known values for hard task routing, rows that sum
to one for SoftMoE), and drawn by `mtmoe compare` from the runs' final probes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces

from mtmoe.compare import compare
from mtmoe.compare.routing import load_tables
from mtmoe.nets import NetConfig, build_actor_critic
from mtmoe.runner.probes import probe

TASKS = ["task-a", "task-b", "task-c"]


def _probe(moe: str, experts: int):
    torch.manual_seed(0)
    obs_space, act_space = spaces.Box(-1, 1, (8,), np.float32), spaces.Discrete(3)
    net = build_actor_critic(obs_space, act_space, NetConfig(hidden=(16, 16), placement="critic", moe=moe,
                                                             num_experts=experts, num_tasks=3))
    task = torch.arange(3).repeat_interleave(10)
    return probe({"actor_critic": net}, torch.randn(30, 8), task, TASKS)["moe"]


def test_task_routing_sends_each_task_to_its_own_expert():
    (stats,) = _probe("task", 3).values()
    assert stats["expert_load_per_task"] == {t: [float(i == k) for i in range(3)] for k, t in enumerate(TASKS)}


def test_softmoe_load_per_task_rows_sum_to_one_and_average_to_the_overall_load():
    (stats,) = _probe("softmoe", 4).values()
    rows = np.array([stats["expert_load_per_task"][t] for t in TASKS])
    assert rows.shape == (3, 4) and np.allclose(rows.sum(1), 1.0, atol=1e-5)
    assert np.allclose(rows.mean(0), stats["expert_load"], atol=1e-5)  # equal task counts


def _write_run(root, placement, seed, per_task):
    path = root / "suite-x" / f"ppo-{placement}-s{seed}"
    path.mkdir(parents=True)
    net = {"placement": placement, "moe": "task", "position": "penultimate", "num_experts": 3, "expert_width": 0}
    (path / "config.json").write_text(json.dumps({"suite": "suite-x", "algo": "ppo", "seed": seed, "net": net}))
    norm = {t: {"low": 0.0, "high": 1.0, "source": "test reference"} for t in TASKS}
    probe_moe = {"critic.hidden1": {"load_entropy": 1.0, "expert_load_per_task": per_task}} if per_task else {}
    (path / "summary.json").write_text(json.dumps({
        "suite": "suite-x", "algo": "ppo", "placement": placement, "seed": seed, "steps": 100, "steps_per_s": 1.0,
        "final_return": {t: 0.5 for t in TASKS}, "final_normalized": {t: 0.5 for t in TASKS}, "normalization": norm,
        "eval": {t: {"return": 0.5 + seed, "normalized": 0.5, "episodes": 1} for t in TASKS},
        "param_counts": {"actor_critic": {"total": 1}}, "nonstationarity": None,
        "final_probe": {"moe": probe_moe}}))
    (path / "metrics.jsonl").write_text(json.dumps({"global_step": 100, "return": {t: 0.5 for t in TASKS}}) + "\n")


def test_compare_draws_the_mean_load_per_task_over_seeds(tmp_path):
    one_hot = {t: [float(i == k) for i in range(3)] for k, t in enumerate(TASKS)}
    uniform = {t: [1 / 3] * 3 for t in TASKS}
    for seed in range(5):
        _write_run(tmp_path / "res", "critic", seed, one_hot if seed % 2 == 0 else uniform)
        _write_run(tmp_path / "res", "none", seed, None)
    out = compare([tmp_path / "res"], tmp_path / "report", reps=100, warn=lambda m: None)
    png = tmp_path / "report" / out["suite-x"]["plots"]["expert_load"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Expert load per task" in (tmp_path / "report" / "report.md").read_text()
    from mtmoe.compare.load import load_runs

    runs = load_runs([tmp_path / "res"], warn=lambda m: None)
    tables = load_tables(runs)
    ((label, layer),) = tables
    tasks, load, seeds = tables[(label, layer)]
    assert layer == "critic.hidden1" and tasks == TASKS and seeds == 5
    assert load == pytest.approx(np.eye(3) * 0.6 + 0.4 / 3)  # 3 one-hot seeds, 2 uniform ones
