"""`mtmoe sweep --backend ray`: tiny sweeps on a local, loopback-only Ray instance; a killed one is resumed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from mtmoe.errors import MtmoeError  # noqa: E402
from mtmoe.sweep import Grid, state_of  # noqa: E402
from mtmoe.sweep.ray_backend import sweep_ray  # noqa: E402
from mtmoe.tasks import load_registry  # noqa: E402

from sweep_checks import assert_resumed_once, summary_stamps  # noqa: E402  (tests/ is on sys.path: conftest.py)
from test_sweep import TINY  # noqa: E402

REGISTRY = load_registry()
SUITE, PLACEMENTS = "minatar-single", ["none", "critic"]


@pytest.fixture(scope="module", autouse=True)
def ray_tmp():
    """Ray's session files in a short private folder (socket paths must stay short); Ray shut down after."""
    tmp = tempfile.mkdtemp(prefix="mtray", dir="/tmp")
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    yield tmp
    if ray.is_initialized():
        ray.shutdown()
    if old is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = old
    shutil.rmtree(tmp, ignore_errors=True)


def _grid(steps: int) -> Grid:
    return Grid(suites=[SUITE], seeds=[0], placements=PLACEMENTS, steps=steps, sets=TINY)


def test_missing_ray_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(MtmoeError, match=r'pip install -e "\.\[ray\]"'):
        sweep_ray(_grid(512), REGISTRY, tmp_path)


def test_tiny_ray_sweep_writes_every_summary(tmp_path):
    counts = sweep_ray(_grid(1024), REGISTRY, tmp_path, progress=False, poll=0.2)
    assert counts == {"done": 2, "failed": 0, "skipped": 0, "elsewhere": 0, "resumed": 0}
    run_dirs = sorted(tmp_path.glob(f"{SUITE}/*"))
    assert len(run_dirs) == 2
    for d in run_dirs:
        assert json.loads((d / "summary.json").read_text())["steps"] == 1024
        assert "[ray," in (d / "log.txt").read_text()
    assert not ray.is_initialized()  # the local instance it started is shut down


def _session_pids(sid: int) -> list[int]:
    """Live processes of session SID (the killed sweep's Ray daemons, workers and runs, nothing else)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(p.name))
    return pids


def test_killed_ray_sweep_resumes_and_skips_finished_runs(tmp_path, ray_tmp):
    out = tmp_path / "sweep"
    args = ["--suite", SUITE, "--placements", ",".join(PLACEMENTS), "--seeds", "0", "--steps", "8192",
            "--out", str(out), "--backend", "ray"] + [x for s in TINY for x in ("--set", s)]
    proc = subprocess.Popen([sys.executable, "-m", "mtmoe.cli", "sweep", *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "RAY_TMPDIR": ray_tmp})
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list(out.glob("*/*/checkpoint.pt")):
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.1)
    finally:  # the sweep, its Ray instance and its runs die at once, mid-run
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for _ in range(100):  # Ray workers have their own process groups, but stay in the session
            stray = _session_pids(proc.pid)
            if not stray:
                break
            for pid in stray:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        assert not _session_pids(proc.pid)
    run_dirs = sorted(out.glob(f"{SUITE}/*"))
    assert len(run_dirs) == 2 and not any(state_of(d) == "done" for d in run_dirs)
    interrupted = [d for d in run_dirs if state_of(d) == "resumable"]
    assert interrupted

    counts = sweep_ray(_grid(8192), REGISTRY, out, progress=False, poll=0.2)
    assert counts["done"] == 2 and counts["failed"] == 0 and counts["resumed"] == len(interrupted)
    assert_resumed_once(run_dirs, interrupted, 8192)

    stamps = summary_stamps(run_dirs)
    again = sweep_ray(_grid(8192), REGISTRY, out, progress=False, poll=0.2)
    assert again == {"done": 0, "failed": 0, "skipped": 2, "elsewhere": 0, "resumed": 0}
    assert summary_stamps(run_dirs) == stamps
    assert len(json.loads((out / "sweep.json").read_text())) == 3  # each invocation recorded
    assert not ray.is_initialized()


def test_a_failing_ray_run_is_relaunched_then_reported(tmp_path):
    grid = Grid(suites=[SUITE], seeds=[0], placements=["none"], steps=512, sets=TINY)
    from mtmoe.sweep import run_folder

    run_dir = run_folder(tmp_path, grid.configs(REGISTRY)[0])
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_text("not a checkpoint")  # resuming from it fails
    counts = sweep_ray(grid, REGISTRY, tmp_path, retries=1, progress=False, poll=0.2)
    assert counts["failed"] == 1 and counts["done"] == 0
    assert (run_dir / "log.txt").read_text().count("# ") == 2  # launched twice: the first try and one retry
