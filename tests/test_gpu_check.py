"""bench/gpu_check.sh --cpu-smoke: every stage of the GPU check runs on the CPU with tiny sizes and
gives its row in the table, none "failed" (the GPU machine is lent for minutes only: the script
must work the first time there)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
STAGES = ["install", "machine", "tensor MinAtar, 16 envs", "tensor MinAtar, 64 envs", "run-dense", "run-critic",
          "run-dense-host-envs", "atari", "sweep", "study"]


def _rows(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| stage"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_cpu_smoke_gives_every_stage_a_row_and_none_failed(tmp_path):
    env = dict(os.environ, GPU_CHECK_PYTHON=sys.executable, GPU_CHECK_WORK=str(tmp_path / "work"),
               OUT=str(tmp_path / "out"))
    done = subprocess.run(["bash", str(SCRIPT), "--cpu-smoke"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert table.strip().splitlines()[-1] in done.stdout  # the table is printed too
    rows = _rows(table)
    assert list(rows) == STAGES, table
    assert "failed" not in table, table + "\n" + (tmp_path / "out" / "gpu_check_logs.txt").read_text()[-4000:]
    for name in ("run-dense", "run-critic", "run-dense-host-envs", "atari"):
        assert "training env steps/s (summary.json)" in rows[name][2]
    assert "breakout" in rows["tensor MinAtar, 64 envs"][2] and "seaquest" in rows["tensor MinAtar, 64 envs"][2]
    assert "(2/2 runs" in rows["sweep"][2] and "(8/8 runs" in rows["study"][2]
    assert "--grid configs/sweeps/reference-study.yaml" in rows["study"][1]
    assert "env_device=host" in rows["run-dense-host-envs"][1] and "--runs-per-device 16" in rows["sweep"][1]


def test_a_failing_stage_reports_its_last_line_and_the_others_run(tmp_path):
    """A python that cannot run mtmoe: every stage fails in its row, the table still comes out."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'boom: no such python' >&2\nexit 3\n")
    fake.chmod(0o755)
    env = dict(os.environ, GPU_CHECK_PYTHON=str(fake), GPU_CHECK_WORK=str(tmp_path / "work"))
    env.pop("OUT", None)
    done = subprocess.run(["bash", str(SCRIPT), "--cpu-smoke"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(done.stdout)
    assert list(rows) == STAGES
    for name in STAGES[1:-2]:
        assert "failed: boom: no such python" in rows[name][2], rows[name]
    for name in ("sweep", "study"):  # 16 doomed runs each: not tried
        assert rows[name][2].startswith("failed: not started, run-dense failed")
