"""Run folders and the jobs that fill them, shared by both back ends (local processes and Ray).

A run's folder, ``<out>/<suite>/<run name>``, tells its state (:func:`state_of`); :func:`prepare`
readies it for a launch. A :class:`Job` is one grid point in a sweep's queue; :func:`settle` is the
one rule, for both back ends, of what an attempt's end makes of it (done, queued again, failed).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mtmoe.runner.config import RunConfig
from mtmoe.runner.checkpoint import CHECKPOINT
from mtmoe.runner.records import run_name
from mtmoe.sweep.grid import Grid


def worker_command(run_dir: Path | str, tasks_dirs=(), wandb=None) -> list[str]:
    """The process that trains one grid point (both back ends): ``python -m mtmoe.sweep RUN_DIR
    [--tasks-dir D]… [--wandb --wandb-project P [--wandb-group G]]``; `wandb`: a WandbOptions or None."""
    cmd = [sys.executable, "-m", "mtmoe.sweep", str(run_dir)]
    for d in tasks_dirs:
        cmd += ["--tasks-dir", str(d)]
    if wandb is not None:
        cmd += ["--wandb", "--wandb-project", wandb.project] + (["--wandb-group", wandb.group] if wandb.group else [])
    return cmd


def run_folder(out: Path, cfg: RunConfig) -> Path:
    return out / cfg.suite / run_name(cfg)


def state_of(run_dir: Path) -> str:
    """done | resumable | fresh (nothing usable yet)."""
    if (run_dir / "summary.json").is_file():
        return "done"
    if (run_dir / CHECKPOINT).is_file():
        return "resumable"
    return "fresh"


def _partial(run_dir: Path) -> bool:
    """Whether a folder without a checkpoint holds anything of a started run (its lock file aside)."""
    from mtmoe.runner.lock import LOCK_NAME

    return run_dir.is_dir() and any(p.name != LOCK_NAME for p in run_dir.iterdir())


def prepare(run_dir: Path, cfg: RunConfig) -> str:
    """Make the folder ready to launch; returns its state before."""
    state = state_of(run_dir)
    if state == "fresh" and _partial(run_dir):
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir.rename(run_dir.with_name(f"{run_dir.name}.incomplete-{stamp}"))  # keep, never overwrite
    run_dir.mkdir(parents=True, exist_ok=True)
    if state == "fresh" or not (run_dir / "config.json").is_file():
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    return state


@dataclass
class Job:
    """One run of a sweep. Each back end subclasses it with what it tracks of an attempt in flight."""

    cfg: RunConfig
    run_dir: Path
    state: str = "queued"  # queued | running | done | failed | skipped | elsewhere (another process trains it)
    attempts: int = 0
    resumed: bool = False
    started: float = 0.0

    def progress(self) -> tuple[int, dict]:
        """(last logged step, last per-task returns) from metrics.jsonl."""
        path = self.run_dir / "metrics.jsonl"
        try:
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - 8192))
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return 0, {}
        for line in reversed(lines):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "return" in rec:
                return int(rec["global_step"]), rec["return"]
        return 0, {}


def queue_jobs(configs: list[RunConfig], out: Path, threads: int, gpus: int, job_type: type[Job] = Job) -> list:
    """One job per run config: CPU when no GPU, threads per run, finished runs skipped."""
    queue = []
    for cfg in configs:
        if cfg.device == "auto" and not gpus:
            cfg.device = "cpu"
        cfg.threads = cfg.threads or threads
        job = job_type(cfg, run_folder(out, cfg))
        if state_of(job.run_dir) == "done":
            job.state = "skipped"
        queue.append(job)
    return queue


def record_invocation(out: Path, grid: Grid, configs: list[RunConfig]) -> None:
    """Append this invocation to <out>/sweep.json (the grids that filled the folder), with the run
    folders it plans (`runs`, relative to <out>), so `mtmoe compare` can tell a run that never
    finished from one that was never planned. Sweeps started at once on one folder take turns (a
    lock file), the file is replaced whole (never seen half-written), and one that cannot be read
    is kept beside as ``sweep.json.unreadable-<time>`` with a warning, never silently dropped."""
    import fcntl
    import os

    path = out / "sweep.json"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".sweep.json.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            history = json.loads(path.read_text()) if path.is_file() else []
        except (json.JSONDecodeError, UnicodeDecodeError):
            kept = path.with_name(f"sweep.json.unreadable-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
            path.replace(kept)
            print(f"mtmoe: warning: {path} could not be read; kept as {kept.name}, a new one started",
                  file=sys.stderr)
            history = []
        planned = [str(run_folder(out, cfg).relative_to(out)) for cfg in configs]
        history.append({"time": datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv),
                        "runs": len(configs), "run_dirs": planned, "grid": {k: v for k, v in grid.__dict__.items()}})
        tmp = path.with_name(f".sweep.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(history, indent=2))
        os.replace(tmp, path)


def settle(job: Job, code: int | None, retries: int) -> None:
    """The end of an attempt, from the worker's exit status (None: it never reported one): done when
    it is 0 and the run wrote summary.json; elsewhere when another process held the run folder
    (mtmoe.runner.lock.ELSEWHERE_EXIT: not an attempt of ours); otherwise queued again while
    ``job.attempts <= retries``, else failed."""
    from mtmoe.runner.lock import ELSEWHERE_EXIT

    if code == 0 and state_of(job.run_dir) == "done":
        job.state = "done"
    elif code == ELSEWHERE_EXIT:
        job.state = "elsewhere"
    elif job.attempts <= retries:
        job.state = "queued"  # again: from its checkpoint when it wrote one
    else:
        job.state = "failed"


def count_outcomes(queue: list[Job]) -> dict[str, int]:
    """What a sweep returns: {done, failed, skipped, elsewhere (another process trains it), resumed}."""
    counts = {s: sum(j.state == s for j in queue) for s in ("done", "failed", "skipped", "elsewhere")}
    counts["resumed"] = sum(j.resumed for j in queue)
    return counts


def describe(run_dir: Path, steps: int) -> tuple[str, int]:
    """What `mtmoe sweep` would do with a grid point's folder, in words, and the env steps it has
    (summary.json's when done, else the last logged training line's)."""
    import time

    from mtmoe.runner.lock import held_by

    state = state_of(run_dir)
    who = held_by(run_dir)
    if who:
        return f"leave it: {who} is training it", Job(None, run_dir).progress()[0]
    if state == "done":
        try:
            return "skip (done)", int(json.loads((run_dir / "summary.json").read_text()).get("steps", steps))
        except (OSError, ValueError, AttributeError):
            return "skip (done; its summary.json does not read)", 0
    step, _ = Job(None, run_dir).progress()
    files = [p.stat().st_mtime for p in run_dir.iterdir() if p.is_file()] if run_dir.is_dir() else []
    ago = (time.time() - max(files)) / 60 if files else None
    busy = f" (its folder was written {ago:.0f} min ago: is a sweep running it now?)" if ago is not None and ago < 15 else ""
    if state == "resumable":
        return "resume from its checkpoint" + busy, step
    if _partial(run_dir):
        return "move the folder aside and start again (no checkpoint yet)" + busy, step
    return "start", 0
