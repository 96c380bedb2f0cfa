"""`mtmoe probe RUN_DIR…`: the plasticity and routing probe of a run's checkpoint, with this mtmoe.

A run records its probes while it trains, with the probe code of its day. When that code
changes (``PROBE_VERSION`` in ``mtmoe.runner.probes`` says how), this command measures a
finished run again from its checkpoint: the run's ``config.json`` rebuilds its mixture and
networks (as `mtmoe evaluate` does), the probe batch is drawn exactly as the run drew it (same
seed, same random play), and the probe's result goes to ``RUN_DIR/probe.json`` (``probe-1.json``
… when that exists: nothing is overwritten). `mtmoe compare` reads these files beside what the
runs recorded. Runs without a checkpoint, and unfinished runs (no ``summary.json``: their
checkpoint is not the end of training), are skipped with one line each.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from mtmoe.errors import MtmoeError
from mtmoe.runner.checkpoint import CHECKPOINT
from mtmoe.runner.evaluate_run import build, numbered_path, read_checkpoint, write_new
from mtmoe.runner.records import read_config
from mtmoe.runner.run import pick_device


def probe_run(run_dir: Path, registry, device: str = "auto") -> Path:
    """Probe one run's checkpoint; -> the json written."""
    from mtmoe.runner.probes import PROBE_VERSION, collect_probe_batch, probe

    start = time.time()
    cfg = read_config(run_dir, "probe")
    checkpoint = run_dir / CHECKPOINT
    dev = pick_device(device)
    state = read_checkpoint(checkpoint, dev, "probe")
    env, agent = build(cfg, registry, dev, state, checkpoint)
    try:
        obs, task = collect_probe_batch(env, cfg.probe_per_task, cfg.seed)  # as the run's Prober drew it
        result = probe(agent.probe_networks(), torch.from_numpy(obs).to(dev), torch.from_numpy(task).to(dev),
                       env.task_names)
    finally:
        env.close()
    record = {"run_dir": str(run_dir), "checkpoint": str(checkpoint), "suite": cfg.suite,
              "global_step": int(getattr(agent, "global_step", 0)), "probe_version": PROBE_VERSION,
              "probe_per_task": cfg.probe_per_task, "device": str(dev), "probe": result,
              "wall_time_s": round(time.time() - start, 2)}
    return write_new(numbered_path(run_dir, "probe"), record)


def current_probe(run_dir: Path) -> str | None:
    """Where a finished run's final probe of the current version already is (a file name), or None."""
    import json

    from mtmoe.runner.probes import PROBE_VERSION

    summary = json.loads((run_dir / "summary.json").read_text())
    if int(summary.get("probe_version", 1)) == PROBE_VERSION and summary.get("final_probe"):
        return "summary.json"
    for path in sorted(run_dir.glob("probe*.json")):
        try:
            record = json.loads(path.read_text())
        except (ValueError, OSError):
            continue
        if record.get("probe_version") == PROBE_VERSION and record.get("global_step") == summary.get("steps"):
            return path.name
    return None


def probe_runs(run_dirs: list[Path], registry, device: str = "auto", say=print, again: bool = False) -> list[Path]:
    """Probe every run folder given (a folder of runs: each run under it); -> the jsons written."""
    from mtmoe.compare.load import find_run_dirs
    from mtmoe.runner.probes import PROBE_VERSION

    runs = find_run_dirs(run_dirs)
    if not runs:
        raise MtmoeError("probe: no run folder (with a config.json) under " + ", ".join(map(str, run_dirs)))
    written = []
    for k, run in enumerate(runs, 1):
        if not (run / CHECKPOINT).is_file():
            say(f"[{k}/{len(runs)}] {run}: no {CHECKPOINT}; skipped")
            continue
        if not (run / "summary.json").is_file():  # its checkpoint is not the end of training
            say(f"[{k}/{len(runs)}] {run}: unfinished (no summary.json); skipped")
            continue
        current = None if again else current_probe(run)
        if current:
            say(f"[{k}/{len(runs)}] {run}: its final probe is current (version {PROBE_VERSION}, in {current}); "
                "skipped (--again probes it anyway)")
            continue
        path = probe_run(run, registry, device)
        say(f"[{k}/{len(runs)}] {run}: wrote {path.name}")
        written.append(path)
    return written
