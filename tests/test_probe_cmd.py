"""`mtmoe probe DIR…`: a run's checkpoint probed again gives what the run recorded at the same step
(same probe batch, same networks), into probe.json, never overwritten; bad inputs are one line."""

from __future__ import annotations

import json
import shutil

import pytest

from mtmoe.cli import main
from mtmoe.runner.probes import PROBE_VERSION

# 2 iterations of 3 envs x 8 steps; probes every 24 steps, so the last one is at the end, where the
# checkpoint is written
TINY = ["--set", "num_envs=3", "--set", "ppo.num_steps=8", "--set", "eval_every=-1", "--set", "probe_every=24",
        "--set", "probe_per_task=12", "--set", "log_every=1"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "--suite", "minatar-multitask", "--steps", "48", "--placement", "both", "--position", "big",
                 "--moe", "task", "--out", str(out), *TINY]) == 0
    return next((out / "minatar-multitask").iterdir())


def test_a_probe_of_the_final_checkpoint_equals_the_runs_final_probe(run_dir, capsys):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["probe_version"] == PROBE_VERSION
    assert main(["probe", str(run_dir)]) == 0  # recorded by the current probe: nothing to do
    assert "final probe is current (version" in capsys.readouterr().err and not (run_dir / "probe.json").exists()
    assert main(["probe", "--again", str(run_dir)]) == 0
    record = json.loads((run_dir / "probe.json").read_text())
    assert record["probe_version"] == PROBE_VERSION and record["global_step"] == summary["steps"] == 48
    assert record["probe"]["tasks"] == summary["final_probe"]["tasks"]
    assert record["probe"]["moe"] == summary["final_probe"]["moe"]
    assert "wrote probe.json" in capsys.readouterr().err


def test_a_second_probe_keeps_the_first_and_runs_without_a_checkpoint_are_skipped(run_dir, tmp_path, capsys):
    copy = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, copy)
    bare = tmp_path / "runs" / "no-checkpoint"
    shutil.copytree(run_dir, bare)
    (bare / "checkpoint.pt").unlink()
    going = tmp_path / "runs" / "unfinished"
    shutil.copytree(run_dir, going)
    (going / "summary.json").unlink()
    assert main(["probe", "--again", str(tmp_path / "runs")]) == 0
    err = capsys.readouterr().err
    assert "no-checkpoint: no checkpoint.pt; skipped" in err and "probed 1 run(s)" in err
    assert "unfinished: unfinished (no summary.json); skipped" in err and not (going / "probe-1.json").exists()
    assert (copy / "probe-1.json").is_file() and (copy / "probe.json").is_file()  # the copied one is kept
    assert not (bare / "probe-1.json").exists()  # nothing new where there is no checkpoint


def test_a_folder_without_runs_is_one_line(tmp_path, capsys):
    assert main(["probe", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mtmoe: error: probe: no run folder")


def test_an_old_runs_probe_is_written_once(run_dir, tmp_path, capsys):
    old = tmp_path / "old-run"
    shutil.copytree(run_dir, old, ignore=shutil.ignore_patterns("probe*.json"))
    summary = json.loads((old / "summary.json").read_text())
    (old / "summary.json").write_text(json.dumps({**summary, "probe_version": PROBE_VERSION - 1}))
    assert main(["probe", str(old)]) == 0 and (old / "probe.json").is_file()
    assert main(["probe", str(old)]) == 0  # the second time, probe.json is the current probe
    assert "current (version %d, in probe.json); skipped" % PROBE_VERSION in capsys.readouterr().err
    assert not (old / "probe-1.json").exists()
