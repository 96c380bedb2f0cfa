"""bench/gpu_check.sh --cpu-smoke: every stage of the GPU check runs on the CPU with tiny sizes and
gives its row in the table, none "failed" (the GPU machine is lent for minutes only: the script
must work the first time there)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
STAGES = ["install", "machine", "imports", "tensor MinAtar, 16 envs", "tensor MinAtar, 64 envs", "run-dense", "run-critic",
          "run-dense-host-envs", "atari", "sweep", "dqn", "study"]


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
               OUT=str(tmp_path / "out"), GPU_CHECK_STAGES="all")
    done = subprocess.run(["bash", str(SCRIPT), "--cpu-smoke"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert table.strip().splitlines()[-1] in done.stdout  # the table is printed too
    rows = _rows(table)
    assert list(rows) == STAGES, table
    assert "failed" not in table, table + "\n" + (tmp_path / "out" / "gpu_check_logs.txt").read_text()[-4000:]
    for name in ("run-dense", "run-critic", "run-dense-host-envs", "atari", "dqn"):
        assert "training env steps/s (summary.json)" in rows[name][2]
    assert "gymnasium 1.4.0" in rows["imports"][2]
    assert "breakout" in rows["tensor MinAtar, 64 envs"][2] and "seaquest" in rows["tensor MinAtar, 64 envs"][2]
    assert "(2/2 runs" in rows["sweep"][2] and "(8/8 runs" in rows["study"][2]
    assert "--grid configs/sweeps/reference-study.yaml" in rows["study"][1]
    assert "env_device=host" in rows["run-dense-host-envs"][1] and "--runs-per-device 16" in rows["sweep"][1]
    assert "--algo dqn --placement critic" in rows["dqn"][1] and "envs host" in rows["dqn"][2], rows["dqn"]


def _fake_python(tmp_path: Path, otherwise: str) -> Path:
    """A python that runs `python -c ...` (the machine and imports stages) and the table's helper script,
    and does `otherwise` for the rest (the benchmarks and mtmoe commands)."""
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\ncase "$1" in -c|*gpu_check_helper.py) exec {sys.executable} "$@";; esac\n{otherwise}\n')
    fake.chmod(0o755)
    return fake


def _smoke(tmp_path: Path, python: Path, timeout: float = 120, **extra) -> subprocess.CompletedProcess:
    env = dict(os.environ, GPU_CHECK_PYTHON=str(python), GPU_CHECK_WORK=str(tmp_path / "work"), **extra)
    env.setdefault("OUT", str(tmp_path / "out"))
    return subprocess.run(["bash", str(SCRIPT), "--cpu-smoke"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_a_failing_stage_reports_its_last_line_and_the_others_run(tmp_path):
    """A python that imports mtmoe but whose commands fail: each stage fails in its row with the
    command's last line, the others still run, the table comes out (default stages: no study)."""
    done = _smoke(tmp_path, _fake_python(tmp_path, "echo 'boom: no such python' >&2; exit 3"))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(done.stdout)
    assert list(rows) == [s for s in STAGES if s != "study"]
    assert "failed" not in rows["machine"][2] + rows["imports"][2], rows
    for name in STAGES[3:-1]:
        if name != "sweep":
            assert "failed: boom: no such python" in rows[name][2], rows[name]
    assert rows["sweep"][2].startswith("failed: not started, run-dense failed")  # 16 doomed runs: not tried


def test_without_the_imports_no_stage_starts_and_only_the_chosen_stages_appear(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: gymnasium' >&2\nexit 1\n")
    fake.chmod(0o755)
    done = _smoke(tmp_path, fake, GPU_CHECK_STAGES="atari,study")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(done.stdout)
    assert list(rows) == ["install", "machine", "imports", "atari", "study"]
    assert "ModuleNotFoundError: gymnasium" in rows["imports"][2]
    for name in ("atari", "study"):
        assert rows[name][2] == "failed: not started, the imports failed" and rows[name][3] == "0"
    assert not list((tmp_path / "work").glob("atari*")), "a stage ran although the imports failed"


def test_without_ale_py_only_the_atari_stage_is_skipped(tmp_path):
    shadow = tmp_path / "shadow" / "ale_py"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not for this Python')\n")
    done = _smoke(tmp_path, _fake_python(tmp_path, "echo 'boom' >&2; exit 3"), GPU_CHECK_STAGES="atari,sweep",
                  PYTHONPATH=f"{tmp_path / 'shadow'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(done.stdout)
    assert list(rows) == ["install", "machine", "imports", "atari", "sweep"]
    assert "missing: ale_py (ImportError)" in rows["imports"][2] and "failed" not in rows["imports"][2]
    assert rows["atari"][2] == "failed: not started, ale_py does not import"
    assert "failed: boom" in rows["sweep"][2]  # it started (and this python fails it)


def test_a_command_cut_off_midway_still_left_the_rows_so_far_in_out(tmp_path):
    """The device tool returns what is under $OUT even when it kills the command: the table is
    written after every stage (and before each), not only at the end."""
    fake = _fake_python(tmp_path, "sleep 600")  # the first benchmark never ends
    env = dict(os.environ, GPU_CHECK_PYTHON=str(fake), GPU_CHECK_WORK=str(tmp_path / "work"), OUT=str(tmp_path / "out"))
    proc = subprocess.Popen(["bash", str(SCRIPT), "--cpu-smoke"], cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    logs = tmp_path / "out" / "gpu_check_logs.txt"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "==== tensor.log" not in (logs.read_text() if logs.exists() else ""):
            time.sleep(0.5)  # until the benchmark stage has started (and hangs)
        assert proc.poll() is None, "the script ended although its benchmark hangs"
    finally:
        # as the device tool does: the script and all it started (`timeout` puts its stage in a
        # process group of its own, so the whole session goes, not only the script's group)
        if shutil.which("pkill"):
            subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    rows = _rows(table)
    assert list(rows) == ["install", "machine", "imports"] and "failed" not in rows["imports"][2], table
    assert "==== imports.log" in logs.read_text() and "==== tensor.log" in logs.read_text()
