"""`mtmoe sweep`: a grid of runs (suites × placements × MoE kinds × positions × experts × seeds).

Every grid point has a fixed folder, ``<out>/<suite>/<run name>``, so a sweep started again
finds its own work: a folder with ``summary.json`` is complete and skipped; one with a
checkpoint is resumed from it; one without (killed before its first checkpoint) is moved aside
to ``<name>.incomplete-<time>`` and started again. Runs are subprocesses (``python -m
mtmoe.sweep RUN_DIR``), at most ``jobs`` at once (default: one per CPU core, or
``runs_per_device`` per GPU); each gets ``cores // jobs`` torch threads and, with GPUs, its own
``CUDA_VISIBLE_DEVICES`` naming one GPU, round-robin over the job slots (:func:`plan`), so that
with ``jobs = runs_per_device × GPUs`` every GPU runs ``runs_per_device`` runs at once.
A run that fails is retried (from its checkpoint) up to ``retries`` times; its output is in
``<run>/log.txt``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mtmoe.errors import MtmoeError
from mtmoe.runner.config import RunConfig, compose
from mtmoe.runner.run import CHECKPOINT, run_name
from mtmoe.tasks.registry import Registry


def parse_list(text: str | None, flag: str) -> list[str]:
    if text is None:
        return []
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise MtmoeError(f"{flag}: expected a comma-separated list, got {text!r}")
    return items


def parse_ints(text: str | None, flag: str) -> list[int]:
    """'0-4' -> [0..4]; '1,2,4' -> [1, 2, 4]; '0-2,7' -> [0, 1, 2, 7]."""
    out: list[int] = []
    for part in parse_list(text, flag):
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, part)
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise ValueError
                out += list(range(lo_i, hi_i + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise MtmoeError(f"{flag}: {part!r} is not an integer or a range like 0-4") from None
    return list(dict.fromkeys(out))


@dataclass
class Grid:
    """The axes of a sweep. Empty axes take the suite/preset default."""

    suites: list[str]
    seeds: list[int]
    placements: list[str] = field(default_factory=lambda: ["none", "actor", "critic", "both"])
    moes: list[str] = field(default_factory=list)
    positions: list[str] = field(default_factory=list)
    experts: list[int] = field(default_factory=list)
    expert_widths: list[int] = field(default_factory=list)
    algo: str | None = None
    preset: str | None = None
    steps: int | None = None
    budget: str | None = None
    device: str = "auto"
    sets: list[str] = field(default_factory=list)

    @property
    def size_family(self) -> bool:
        """Several MoE sizes: placement none then gets a width-matched dense twin per size."""
        return len(self.experts) > 1 or len(self.expert_widths) > 1

    def configs(self, registry: Registry) -> list[RunConfig]:
        """One composed RunConfig per distinct run. Placement none ignores the MoE axes, except in
        a size family, where it runs once per MoE size with hidden widths matched to it
        (mtmoe.scaling.sizes)."""
        out, seen, widths = [], set(), {}
        axes = itertools.product(self.suites, self.placements, self.moes or [None], self.positions or [None],
                                 self.experts or [None], self.expert_widths or [None], self.seeds)
        for suite, placement, moe, position, experts, width, seed in axes:
            dense = placement == "none"
            match = dense and self.size_family
            flags = {"placement": "both" if match else placement, "moe": None if dense and not match else moe,
                     "position": None if dense and not match else position,
                     "num_experts": None if dense and not match else experts,
                     "expert_width": None if dense and not match else width}
            cfg, _ = compose(registry, suite, preset=self.preset, algo=self.algo, steps=self.steps,
                             budget=self.budget, seed=seed, device=self.device, net_flags=flags, sets=self.sets)
            if match:  # the dense twin of this MoE size
                from mtmoe.scaling.sizes import size_tag

                tag = size_tag(cfg.net)
                if (suite, tag) not in widths:
                    widths[(suite, tag)] = _matched_hidden(cfg, registry)
                cfg.net = dataclasses.replace(cfg.net, placement="none", hidden=widths[(suite, tag)])
                cfg.dense_match = tag
            key = (cfg.suite, run_name(cfg))
            if key not in seen:
                seen.add(key)
                out.append(cfg)
        return out


def _matched_hidden(cfg: RunConfig, registry: Registry) -> tuple[int, ...]:
    from mtmoe.scaling.sizes import matched_hidden
    from mtmoe.tasks import make_mixture

    env = make_mixture(cfg.suite, registry, num_envs=len(registry.suite(cfg.suite).tasks), steps=cfg.steps)
    try:
        return matched_hidden(cfg.net, cfg.algo, env.single_observation_space, env.single_action_space)
    finally:
        env.close()


def run_folder(out: Path, cfg: RunConfig) -> Path:
    return out / cfg.suite / run_name(cfg)


def state_of(run_dir: Path) -> str:
    """done | resumable | fresh (nothing usable yet)."""
    if (run_dir / "summary.json").is_file():
        return "done"
    if (run_dir / CHECKPOINT).is_file():
        return "resumable"
    return "fresh"


def prepare(run_dir: Path, cfg: RunConfig) -> str:
    """Make the folder ready to launch; returns its state before."""
    state = state_of(run_dir)
    if state == "fresh" and run_dir.exists() and any(run_dir.iterdir()):
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir.rename(run_dir.with_name(f"{run_dir.name}.incomplete-{stamp}"))  # keep, never overwrite
    run_dir.mkdir(parents=True, exist_ok=True)
    if state == "fresh" or not (run_dir / "config.json").is_file():
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    return state


@dataclass
class _Job:
    cfg: RunConfig
    run_dir: Path
    state: str = "queued"  # queued | running | done | failed | skipped
    attempts: int = 0
    resumed: bool = False
    proc: subprocess.Popen | None = None
    slot: int = -1
    started: float = 0.0
    log: object = None

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
          progress: bool | None = None, poll: float = 1.0, runs_per_device: int = 1) -> dict[str, int]:
    """Run the grid; returns counts {done, failed, skipped}. See the module docstring."""
    configs = grid.configs(registry)
    if not configs:
        raise MtmoeError("sweep: the grid is empty")
    shape = plan(jobs, runs_per_device)
    if shape.note:
        print(shape.note, file=sys.stderr)
    jobs, gpus = shape.jobs, len(set(shape.gpu_of))
    out.mkdir(parents=True, exist_ok=True)
    _record(out, grid, len(configs))
    queue = _queue(configs, out, shape.threads, gpus, _Job)
    view = _View(queue, sys.stderr.isatty() if progress is None else progress)
    free = list(range(jobs))
    try:
        while True:
            for job in queue:
                if job.state == "running" and job.proc.poll() is not None:
                    _finish(job, retries)
                    free.append(job.slot)
            waiting = [j for j in queue if j.state == "queued"]
            while free and waiting:
                _launch(waiting.pop(0), free.pop(0), shape.gpu_of, tasks_dirs)
            view.update()
            if not any(j.state in ("queued", "running") for j in queue):
                break
            time.sleep(poll)
    finally:  # interrupted: stop the children; their checkpoints let the next sweep resume them
        for job in queue:
            if job.proc is not None and job.proc.poll() is None:
                job.proc.terminate()
        for job in queue:
            if job.proc is not None:
                try:
                    job.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    job.proc.kill()
        view.close()
    counts = {s: sum(j.state == s for j in queue) for s in ("done", "failed", "skipped")}
    counts["resumed"] = sum(j.resumed for j in queue)
    return counts


def _queue(configs: list[RunConfig], out: Path, threads: int, gpus: int, job_type=_Job) -> list:
    """One job per run config (both backends): CPU when no GPU, threads per run, finished runs skipped."""
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


def _record(out: Path, grid: Grid, n: int) -> None:
    """Append this invocation to <out>/sweep.json (the grids that filled the folder)."""
    path = out / "sweep.json"
    try:
        history = json.loads(path.read_text()) if path.is_file() else []
    except json.JSONDecodeError:
        history = []
    history.append({"time": datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv),
                    "runs": n, "grid": {k: v for k, v in grid.__dict__.items()}})
    path.write_text(json.dumps(history, indent=2))


def _launch(job: _Job, slot: int, gpu_of: list[str], tasks_dirs) -> None:
    state = prepare(job.run_dir, job.cfg)
    job.resumed = job.resumed or state == "resumable"
    env = dict(os.environ)
    if gpu_of:
        env["CUDA_VISIBLE_DEVICES"] = gpu_of[slot]
    cmd = [sys.executable, "-m", "mtmoe.sweep", str(job.run_dir)]
    for d in tasks_dirs:
        cmd += ["--tasks-dir", str(d)]
    job.log = open(job.run_dir / "log.txt", "a")
    job.log.write(f"# {datetime.now().isoformat(timespec='seconds')} {' '.join(cmd)}\n")
    job.log.flush()
    job.proc = subprocess.Popen(cmd, stdout=job.log, stderr=subprocess.STDOUT, env=env)
    job.state, job.slot, job.started = "running", slot, time.time()
    job.attempts += 1


def _finish(job: _Job, retries: int) -> None:
    job.log.close()
    if job.proc.returncode == 0 and state_of(job.run_dir) == "done":
        job.state = "done"
    elif job.attempts <= retries:
        job.state = "queued"  # again: from its checkpoint when it wrote one
    else:
        job.state = "failed"
    job.proc = None


class _View:
    """The grid's progress: a rich live table on a terminal, a line per state change otherwise."""

    def __init__(self, queue: list[_Job], show: bool):
        self.queue, self.show = queue, show
        self.seen: dict[Path, str] = {}
        self.start = time.time()
        if show:
            from rich.live import Live

            self.live = Live(self._table(), refresh_per_second=2, transient=False)
            self.live.start()

    def _table(self):
        from rich.table import Table

        counts = {s: sum(j.state == s for j in self.queue) for s in ("queued", "running", "done", "failed", "skipped")}
        title = (f"sweep: {len(self.queue)} runs · " + " · ".join(f"{v} {k}" for k, v in counts.items() if v)
                 + f" · {time.time() - self.start:.0f} s")
        table = Table(title=title)
        for col in ("suite", "run", "state", "steps", "returns"):
            table.add_column(col)
        shown = [j for j in self.queue if j.state in ("running", "failed")][:30]
        shown += [j for j in self.queue if j.state == "queued"][: max(0, 8 - len(shown))]
        for j in shown:
            step, returns = j.progress() if j.state == "running" else (0, {})
            pct = f"{step:,}/{j.cfg.steps:,} ({100 * step / max(j.cfg.steps, 1):.0f}%)" if step else "-"
            ret = "  ".join(f"{t}: {v:.1f}" for t, v in returns.items() if v is not None)
            table.add_row(j.cfg.suite, j.run_dir.name, j.state + (" (resumed)" if j.resumed else ""), pct, ret)
        return table

    def update(self) -> None:
        if self.show:
            self.live.update(self._table())
            return
        for j in self.queue:
            if self.seen.get(j.run_dir) != j.state:
                self.seen[j.run_dir] = j.state
                if j.state != "queued":
                    extra = " (resumed)" if j.resumed and j.state == "running" else ""
                    print(f"[{time.time() - self.start:6.0f} s] {j.cfg.suite}/{j.run_dir.name}: {j.state}{extra}",
                          file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.show:
            self.live.update(self._table())
            self.live.stop()


def _worker(argv: list[str]) -> int:
    """`python -m mtmoe.sweep RUN_DIR [--tasks-dir D]`: train or resume the run in RUN_DIR."""
    import argparse

    from mtmoe.runner.run import train
    from mtmoe.tasks.registry import load_registry

    p = argparse.ArgumentParser(prog="python -m mtmoe.sweep")
    p.add_argument("run_dir")
    p.add_argument("--tasks-dir", action="append", default=[])
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir)
    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()), str(run_dir / "config.json"))
    registry = load_registry(args.tasks_dir)
    try:
        if state_of(run_dir) == "resumable":
            train(cfg, registry, run_dir.parent, progress=False, resume=run_dir)
        else:
            train(cfg, registry, run_dir.parent, progress=False, run_dir=run_dir)
    except MtmoeError as e:
        print(f"mtmoe: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
