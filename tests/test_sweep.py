"""`mtmoe sweep`: grid parsing, and a sweep of tiny runs that is killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mtmoe.errors import MtmoeError
from mtmoe.runner.run import run_name
from mtmoe.sweep import Grid, parse_ints, state_of, sweep
from sweep_checks import assert_resumed_once, summary_stamps
from mtmoe.tasks import load_registry

REGISTRY = load_registry()
# tiny PPO iterations (8 envs x 32 steps) so that checkpoints come often
TINY = ["num_envs=8", "ppo.num_steps=32", "ppo.num_minibatches=2", "ppo.update_epochs=1", "log_every=256",
        "eval_every=-1", "probe_every=-1", "checkpoint_every=1024"]


@pytest.mark.parametrize("text,expected", [("0-4", [0, 1, 2, 3, 4]), ("1,2,4", [1, 2, 4]), ("0-2,7,1", [0, 1, 2, 7]),
                                           ("3", [3])])
def test_parse_ints(text, expected):
    assert parse_ints(text, "--seeds") == expected


@pytest.mark.parametrize("text", ["a", "4-2", "1,,x"])
def test_parse_ints_rejects_bad_input_in_one_line(text):
    with pytest.raises(MtmoeError, match="--seeds"):
        parse_ints(text, "--seeds")


def test_grid_runs_placement_none_once_per_seed():
    grid = Grid(suites=["minatar-single"], seeds=[0, 1], placements=["none", "critic"], moes=["softmoe", "topk"],
                steps=1000)
    names = sorted(run_name(c) for c in grid.configs(REGISTRY))
    assert names == ["ppo-critic-softmoe-penultimate-e4-s0", "ppo-critic-softmoe-penultimate-e4-s1",
                     "ppo-critic-topk-penultimate-e4-s0", "ppo-critic-topk-penultimate-e4-s1",
                     "ppo-none-dense-s0", "ppo-none-dense-s1"]


def test_size_family_gives_placement_none_a_growing_dense_twin_per_size():
    grid = Grid(suites=["minatar-single"], seeds=[0], placements=["none", "critic"], experts=[1, 16],
                expert_widths=[256], steps=1000)
    cfgs = {run_name(c): c for c in grid.configs(REGISTRY)}
    small, large = cfgs["ppo-none-dense-match-e1-w256-s0"], cfgs["ppo-none-dense-match-e16-w256-s0"]
    assert small.net.placement == large.net.placement == "none"
    assert large.net.hidden[0] > small.net.hidden[0] and small.dense_match == "e1-w256"
    assert set(cfgs) >= {"ppo-critic-softmoe-penultimate-e1-w256-s0", "ppo-critic-softmoe-penultimate-e16-w256-s0"}


def test_killed_sweep_resumes_and_skips_finished_runs(tmp_path):
    out = tmp_path / "sweep"
    args = ["--suite", "minatar-single", "--placements", "none,critic", "--seeds", "0", "--steps", "8192",
            "--out", str(out), "--jobs", "2"] + [x for s in TINY for x in ("--set", s)]
    proc = subprocess.Popen([sys.executable, "-m", "mtmoe.cli", "sweep", *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("*/*/checkpoint.pt")):
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its runs die at once, mid-run
    proc.wait()
    run_dirs = sorted(out.glob("minatar-single/*"))
    assert len(run_dirs) == 2 and not any(state_of(d) == "done" for d in run_dirs)
    interrupted = [d for d in run_dirs if state_of(d) == "resumable"]
    assert interrupted

    grid = Grid(suites=["minatar-single"], seeds=[0], placements=["none", "critic"], steps=8192, sets=TINY)
    counts = sweep(grid, REGISTRY, out, jobs=2, progress=False, poll=0.1)
    assert counts["done"] == 2 and counts["failed"] == 0 and counts["resumed"] == len(interrupted)
    assert_resumed_once(run_dirs, interrupted, 8192)

    stamps = summary_stamps(run_dirs)
    again = sweep(grid, REGISTRY, out, jobs=2, progress=False, poll=0.1)
    assert again["skipped"] == 2 and again["done"] == 0
    assert summary_stamps(run_dirs) == stamps
    assert len(json.loads((out / "sweep.json").read_text())) == 3  # each invocation recorded


def test_a_failing_run_is_retried_then_reported(tmp_path):
    grid = Grid(suites=["minatar-single"], seeds=[0], placements=["none"], steps=512, sets=TINY)
    cfg = grid.configs(REGISTRY)[0]
    from mtmoe.sweep import run_folder

    run_dir = run_folder(tmp_path, cfg)
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_text("not a checkpoint")  # resuming from it fails
    counts = sweep(grid, REGISTRY, tmp_path, jobs=1, retries=1, progress=False, poll=0.1)
    assert counts["failed"] == 1
    log = (run_dir / "log.txt").read_text()
    assert log.count("# ") == 2  # launched twice: the first try and one retry
