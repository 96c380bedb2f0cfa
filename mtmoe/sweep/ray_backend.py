"""`mtmoe sweep --backend ray [--address ADDR]`: the same grid as `mtmoe.sweep`, spread over a Ray cluster.

The contract is that of :func:`mtmoe.sweep.local.sweep`: the same folders (``<out>/<suite>/<run name>``),
the same skip / resume / restart rules (:func:`mtmoe.sweep.jobs.prepare`), the same worker
(``python -m mtmoe.sweep RUN_DIR``, which resumes from ``checkpoint.pt`` by itself), the same
``<run>/log.txt``, the same outcome of an attempt (:func:`mtmoe.sweep.jobs.settle`) and the same
counts {done, failed, skipped, resumed}.

Each run is one plain Ray task (``ray.remote``) asking for ``num_cpus`` = the run's torch threads
and, when the cluster has GPUs, ``num_gpus=1/runs_per_device`` (a fraction of a GPU when several
runs share one; Ray sets ``CUDA_VISIBLE_DEVICES``). The task
readies the folder and launches the worker subprocess; a run killed mid-way (node lost, sweep
killed) leaves its checkpoint and is resumed when it is launched again. A worker that exits
non-zero is relaunched by the driver, from its checkpoint, up to ``retries`` times; a Ray worker
that crashes is retried by Ray (``max_retries=retries``).

Without ``address`` a local Ray instance is started, bound to the loopback interface only (no
dashboard), and shut down at the end. With ``address`` (``HOST:PORT`` of a running head node, or
``auto``) the driver connects to that cluster. Results are gathered by path, not shipped
through Ray: **every node must see the sweep folder at the same absolute path** (NFS or another
shared filesystem) and have mtmoe installed in the same environment as the driver.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mtmoe.errors import MtmoeError
from mtmoe.runner.config import RunConfig
from mtmoe.sweep.grid import Grid
from mtmoe.sweep.jobs import (Job, count_outcomes, prepare, queue_jobs, record_invocation, settle, state_of,
                              worker_command)
from mtmoe.sweep.view import SweepView
from mtmoe.tasks.registry import Registry

INSTALL_HINT = 'the Ray backend needs ray: pip install -e ".[ray]"'


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MtmoeError(INSTALL_HINT) from None
    return ray


@dataclass
class RayJob(Job):
    """A job whose attempts are Ray tasks."""

    ref: object = None  # the ObjectRef of the attempt in flight
    mark: int = 0  # size of log.txt at submission: the task has started once it grows


def _death_signal():
    """A preexec_fn that asks Linux to SIGTERM the worker subprocess when the Ray worker that launched
    it dies (force-cancelled, node lost), so no orphan keeps writing to the folder. libc is loaded
    here, in the parent: the child only makes one C call between fork and exec."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _attempt(run_dir: str, cfg: dict, tasks_dirs: list[str], wandb=None) -> tuple[int, str]:
    """The body of a Ray task: ready the folder, run the worker; returns (exit status, state before)."""
    run = Path(run_dir)
    state = prepare(run, RunConfig.from_dict(cfg, str(run / "config.json")))
    cmd = worker_command(run_dir, tasks_dirs, wandb)
    with open(run / "log.txt", "a") as log:
        log.write(f"# {datetime.now().isoformat(timespec='seconds')} {' '.join(cmd)}  [ray, {socket.gethostname()}]\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_death_signal())
        try:
            return proc.wait(), state
        finally:  # cancelled: stop the run; its checkpoint lets the next sweep resume it
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _connect(ray, address: str | None) -> bool:
    """Connect to ADDRESS, or start a loopback-only local instance. Returns whether we connected."""
    if ray.is_initialized():  # the caller's own Ray session: use it, leave it open
        return False
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        if address:
            _reachable(address)
            ray.init(address=address, **quiet)
            return True
        import torch

        from ray._private import ray_constants  # loopback only: no "public" node IP, servers bind 127.0.0.1

        env, flag = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"), ray_constants.ENABLE_RAY_CLUSTER
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
        try:
            ray.init(address="local", num_cpus=os.cpu_count() or 1,
                     num_gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0,
                     _node_ip_address="127.0.0.1", **quiet)
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = flag
            if env is None:
                os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
            else:
                os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = env
        return True
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise MtmoeError(f"sweep --backend ray: cannot start or reach {where}: {e}") from None


def _reachable(address: str) -> None:
    """Fail at once on a HOST:PORT nobody listens on (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as e:
        raise MtmoeError(f"sweep --backend ray: no Ray head node at {address} ({e.strerror or e}); start one "
                         f"with `ray start --head --port={port}` there") from None


def _shape(ray, jobs: int, runs_per_device: int = 1) -> tuple[int, int]:
    """(threads per run, GPUs in the cluster): ``runs_per_device`` runs per GPU, else one per CPU core,
    unless --jobs."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]
    if not nodes:
        raise MtmoeError("sweep --backend ray: the Ray cluster has no node with CPUs")
    cpus = sum(int(n["CPU"]) for n in nodes)
    node_cpus = min(int(n["CPU"]) for n in nodes)  # a run must fit on one node
    gpus = sum(int(n.get("GPU", 0)) for n in nodes)
    if jobs:
        threads = cpus // jobs
    elif gpus:
        threads = min(int(n["CPU"]) // (max(1, int(n.get("GPU", 0))) * runs_per_device)
                      for n in nodes if n.get("GPU", 0))
    else:
        threads = 1
    return max(1, min(threads, node_cpus)), gpus


def gpu_share(runs_per_device: int) -> float:
    """Ray's ``num_gpus`` for one run when ``runs_per_device`` share a GPU: 1/N, rounded down to Ray's
    4-decimal resource precision so that N of them fit on one GPU."""
    return math.floor(10_000 / runs_per_device) / 10_000


def sweep_ray(grid: Grid, registry: Registry, out: Path, jobs: int = 0, retries: int = 1, tasks_dirs=(),
              progress: bool | None = None, poll: float = 1.0, address: str | None = None,
              runs_per_device: int = 1, wandb=None) -> dict[str, int]:
    """Run the grid on Ray; returns counts {done, failed, skipped, resumed}. See the module docstring.

    ``jobs`` (0: as many as the cluster's resources allow) caps the runs in flight and sets each
    run's threads to the cluster's CPUs // jobs; ``runs_per_device`` runs share each GPU;
    ``wandb`` (WandbOptions): every run logs to Weights & Biases too."""
    if runs_per_device < 1:
        raise MtmoeError(f"--runs-per-device: expected a whole number > 0, got {runs_per_device}")
    ray = _import_ray()
    configs = grid.configs(registry)
    if not configs:
        raise MtmoeError("sweep: the grid is empty")
    out = out.resolve()  # the nodes find the runs by this path
    out.mkdir(parents=True, exist_ok=True)
    started = _connect(ray, address)
    queue: list[RayJob] = []
    view = None
    try:
        threads, gpus = _shape(ray, jobs, runs_per_device)
        if not gpus and runs_per_device > 1:
            print(f"sweep: the Ray cluster has no GPU, so --runs-per-device {runs_per_device} has no effect",
                  file=sys.stderr)
        record_invocation(out, grid, configs)
        queue = queue_jobs(configs, out, threads, gpus, RayJob)
        task = ray.remote(_attempt).options(num_cpus=threads, num_gpus=gpu_share(runs_per_device) if gpus else 0,
                                            max_retries=retries, retry_exceptions=False)
        view = SweepView(queue, sys.stderr.isatty() if progress is None else progress)
        worker_args = ([str(Path(d).resolve()) for d in tasks_dirs], wandb)
        _drive(ray, queue, task, jobs, retries, worker_args, view, poll)
    finally:  # interrupted: stop the runs in flight; their checkpoints let the next sweep resume them
        _cancel_in_flight(ray, queue)
        if view is not None:
            view.close()
        if started:
            ray.shutdown()
    return count_outcomes(queue)


def _drive(ray, queue: list[RayJob], task, jobs: int, retries: int, worker_args: tuple, view: SweepView,
           poll: float) -> None:
    """Submit, collect and relaunch until no run is queued or running."""
    while True:
        _submit(queue, task, jobs, worker_args)
        in_flight = {j.ref: j for j in queue if j.ref is not None}
        ready = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=poll)[0] if in_flight else []
        for ref in ready:
            _finish(ray, in_flight[ref], retries)
        for job in in_flight.values():  # a task counts as running once its worker writes to log.txt
            if job.ref is not None and job.state == "queued" and _log_size(job.run_dir) > job.mark:
                job.state, job.started = "running", time.time()
        view.update()
        if not any(j.state in ("queued", "running") for j in queue):
            break
        if not in_flight:
            time.sleep(poll)


def _submit(queue: list[RayJob], task, jobs: int, worker_args: tuple) -> None:
    """Submit the queued jobs not yet in flight, keeping at most ``jobs`` in flight (0: no cap);
    `worker_args`: _attempt's (tasks folders, W&B options)."""
    waiting = [j for j in queue if j.state == "queued" and j.ref is None]
    in_flight = [j for j in queue if j.ref is not None]
    for job in waiting[: max(0, jobs - len(in_flight)) if jobs else None]:
        job.resumed = job.resumed or state_of(job.run_dir) == "resumable"
        job.mark = _log_size(job.run_dir)
        job.ref = task.remote(str(job.run_dir), job.cfg.to_dict(), *worker_args)
        job.attempts += 1


def _cancel_in_flight(ray, queue: list[RayJob]) -> None:
    for job in queue:
        if job.ref is not None:
            try:
                ray.cancel(job.ref, force=True)
            except Exception:  # noqa: BLE001 - finished or gone meanwhile
                pass


def _log_size(run_dir: Path) -> int:
    try:
        return (run_dir / "log.txt").stat().st_size
    except OSError:
        return 0


def _finish(ray, job: RayJob, retries: int) -> None:
    ref, job.ref = job.ref, None
    try:
        code, before = ray.get(ref)
        job.resumed = job.resumed or before == "resumable"
    except Exception as e:  # noqa: BLE001 - the Ray worker or its node died past max_retries
        code = None
        try:
            with open(job.run_dir / "log.txt", "a") as log:
                log.write(f"[ray] the task failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}\n")
        except OSError:
            pass
    settle(job, code, retries)
