"""The local back end of `mtmoe sweep`: runs as subprocesses of this machine, sharing its cores and GPUs.

Each run is ``python -m mtmoe.sweep RUN_DIR`` (:func:`run_worker`), at most ``jobs`` at once;
:func:`plan` gives each job slot its torch threads and its GPU. What an attempt's end makes of a
run is the rule both back ends share, :func:`mtmoe.sweep.jobs.settle`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mtmoe.errors import MtmoeError
from mtmoe.runner.lock import ELSEWHERE_EXIT, RunInUse, held_by
from mtmoe.sweep.grid import Grid
from mtmoe.sweep.jobs import (Job, count_outcomes, prepare, queue_jobs, record_invocation, settle, state_of,
                              worker_command)
from mtmoe.sweep.view import SweepView
from mtmoe.tasks.registry import Registry


@dataclass
class LocalJob(Job):
    """A job whose attempts are subprocesses of this machine."""

    proc: subprocess.Popen | None = None
    slot: int = -1
    log: object = None


def gpu_count() -> int:
    """CUDA devices this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_jobs(runs_per_device: int = 1) -> tuple[int, int]:
    """(jobs, gpus): ``runs_per_device`` jobs per GPU when CUDA is present, else one per CPU core."""
    gpus = gpu_count()
    return (gpus * runs_per_device if gpus else (os.cpu_count() or 1)), gpus


@dataclass
class Plan:
    """How a local sweep shares the machine: runs at once, torch threads per run, and the GPU of
    each job slot (``gpu_of[slot]``, a ``CUDA_VISIBLE_DEVICES`` value; empty without GPUs)."""

    jobs: int
    threads: int
    gpu_of: list[str]
    note: str = ""


def plan(jobs: int = 0, runs_per_device: int = 1) -> Plan:
    """Jobs (``jobs``, or ``runs_per_device`` per GPU, or one per CPU core without GPUs), threads
    (the cores divided among the jobs, at least 1) and each slot's GPU, round-robin: slot i runs on
    GPU i mod #GPUs, so ``runs_per_device × #GPUs`` jobs put ``runs_per_device`` runs on each GPU.
    GPU names are taken from this process's own ``CUDA_VISIBLE_DEVICES`` when it has one (so a
    sweep started with ``CUDA_VISIBLE_DEVICES=2,3`` uses GPUs 2 and 3)."""
    if runs_per_device < 1:
        raise MtmoeError(f"--runs-per-device: expected a whole number > 0, got {runs_per_device}")
    auto_jobs, gpus = default_jobs(runs_per_device)
    note = ""
    if not gpus and runs_per_device > 1:
        note = (f"sweep: no GPU here, so --runs-per-device {runs_per_device} has no effect: {jobs or auto_jobs} "
                f"run(s) at once ({'as --jobs says' if jobs else 'one per CPU core'})")
    jobs = jobs or auto_jobs
    cores = os.cpu_count() or 1
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    names = visible[:gpus] if len(visible) >= gpus else [str(i) for i in range(gpus)]
    return Plan(jobs=jobs, threads=max(1, cores // jobs), gpu_of=[names[s % gpus] for s in range(jobs)] if gpus else [],
                note=note)


def sweep(grid: Grid, registry: Registry, out: Path, jobs: int = 0, retries: int = 1, tasks_dirs=(),
          progress: bool | None = None, poll: float = 1.0, runs_per_device: int = 1, wandb=None) -> dict[str, int]:
    """Run the grid; returns counts {done, failed, skipped, resumed}. See :mod:`mtmoe.sweep`.
    `wandb`: WandbOptions, to log every run to Weights & Biases too."""
    configs = grid.configs(registry)
    if not configs:
        raise MtmoeError("sweep: the grid is empty")
    shape = plan(jobs, runs_per_device)
    if shape.note:
        print(shape.note, file=sys.stderr)
    jobs, gpus = shape.jobs, len(set(shape.gpu_of))
    out.mkdir(parents=True, exist_ok=True)
    record_invocation(out, grid, configs)
    queue = queue_jobs(configs, out, shape.threads, gpus, LocalJob)
    view = SweepView(queue, sys.stderr.isatty() if progress is None else progress)
    free = list(range(jobs))
    try:
        while True:
            for job in queue:
                if job.state == "running" and job.proc.poll() is not None:
                    _finish(job, retries)
                    free.append(job.slot)
            waiting = [j for j in queue if j.state == "queued"]
            while free and waiting:
                slot = free.pop(0)
                if not _launch(waiting.pop(0), slot, shape.gpu_of, tasks_dirs, wandb):
                    free.append(slot)
            view.update()
            if not any(j.state in ("queued", "running") for j in queue):
                break
            time.sleep(poll)
    finally:  # interrupted: stop the children; their checkpoints let the next sweep resume them
        _stop_children(queue)
        view.close()
    return count_outcomes(queue)


def _launch(job: LocalJob, slot: int, gpu_of: list[str], tasks_dirs, wandb) -> bool:
    """Start the job's worker in the slot; False (the job left to it) when another process trains its folder."""
    if _held(job.run_dir):
        job.state = "elsewhere"
        return False
    state = prepare(job.run_dir, job.cfg)
    job.resumed = job.resumed or state == "resumable"
    env = dict(os.environ)
    if gpu_of:
        env["CUDA_VISIBLE_DEVICES"] = gpu_of[slot]
    cmd = worker_command(job.run_dir, tasks_dirs, wandb)
    job.log = open(job.run_dir / "log.txt", "a")
    job.log.write(f"# {datetime.now().isoformat(timespec='seconds')} {' '.join(cmd)}\n")
    job.log.flush()
    job.proc = subprocess.Popen(cmd, stdout=job.log, stderr=subprocess.STDOUT, env=env)
    job.state, job.slot, job.started = "running", slot, time.time()
    job.attempts += 1
    return True


def _held(run_dir: Path, grace: float = 5.0) -> bool:
    """Whether another process trains the folder, asked for up to `grace` seconds: a run killed a
    moment ago (a sweep stopped and started again) may not have let go of its lock yet."""
    end = time.time() + grace
    while held_by(run_dir):
        if time.time() > end:
            return True
        time.sleep(0.2)
    return False


def _finish(job: LocalJob, retries: int) -> None:
    job.log.close()
    settle(job, job.proc.returncode, retries)
    job.proc = None


def _stop_children(queue: list[LocalJob]) -> None:
    """Terminate the runs still going, then wait for each (killed after 30 s)."""
    for job in queue:
        if job.proc is not None and job.proc.poll() is None:
            job.proc.terminate()
    for job in queue:
        if job.proc is not None:
            try:
                job.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                job.proc.kill()


def run_worker(argv: list[str]) -> int:
    """`python -m mtmoe.sweep RUN_DIR [--tasks-dir D] [--wandb …]`: train or resume the run in RUN_DIR."""
    import argparse

    from mtmoe.runner.logger import WandbOptions
    from mtmoe.runner.records import read_config
    from mtmoe.runner.run import train
    from mtmoe.tasks.registry import load_registry

    p = argparse.ArgumentParser(prog="python -m mtmoe.sweep")
    p.add_argument("run_dir")
    p.add_argument("--tasks-dir", action="append", default=[])
    p.add_argument("--wandb", action="store_true")
    p.add_argument("--wandb-project", default="mtmoe")
    p.add_argument("--wandb-group")
    args = p.parse_args(argv)
    wandb = WandbOptions(project=args.wandb_project, group=args.wandb_group) if args.wandb else None
    run_dir = Path(args.run_dir)
    registry = load_registry(args.tasks_dir)
    try:
        cfg = read_config(run_dir, "python -m mtmoe.sweep")
        if state_of(run_dir) == "resumable":
            train(cfg, registry, run_dir.parent, progress=False, resume=run_dir, wandb=wandb)
        else:
            train(cfg, registry, run_dir.parent, progress=False, run_dir=run_dir, wandb=wandb)
    except RunInUse as e:
        print(f"mtmoe: {e}", file=sys.stderr)
        return ELSEWHERE_EXIT
    except MtmoeError as e:
        print(f"mtmoe: error: {e}", file=sys.stderr)
        return 2
    return 0
