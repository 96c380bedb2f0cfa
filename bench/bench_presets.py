"""What a user sees: `mtmoe run` on each suite with its own preset, whole command, side by side.

Each row is one `mtmoe run --suite S --steps N [--placement P] [--set ...]` subprocess, exactly as
a user types it (evaluation, probes and checkpoints on, the preset's defaults); the table gives
the command's wall time, the time spent in evaluation and probes, and the training env steps/s
that `summary.json` reports (env steps / (wall time - evaluation - probes)). These are the
figures to quote for a preset, beside micro-benchmarks such as bench_ppo_vs_sb3.py (a network
no preset uses) or bench_nets.py (one update).

    python bench/bench_presets.py              # MinAtar multitask, dense and critic, host and tensor envs
    python bench/bench_presets.py --runs minatar-multitask:none:131072 minatar-multitask:critic:131072 \
        atari-multitask:critic:4096 mujoco-multitask:none:2000
    python bench/bench_presets.py --threads 1 --set probe_every=-1 --set eval_every=-1
    python bench/bench_presets.py --threads 1 --runs minatar-multitask:none:131072:env_device=host \
        minatar-multitask:none:131072:env_device=tensor            # Python-loop envs against tensor envs

A run is SUITE:PLACEMENT:STEPS[:KEY=VALUE,...] (the extra fields go to that run's --set).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, markdown_table  # noqa: E402

DEFAULT_RUNS = ["minatar-multitask:none:131072", "minatar-multitask:none:131072:env_device=tensor",
                "minatar-multitask:critic:131072", "minatar-multitask:critic:131072:env_device=tensor"]


def run_one(suite: str, placement: str, steps: int, sets: list[str], threads: int, out: Path) -> dict:
    mtmoe = str(Path(sys.executable).with_name("mtmoe"))
    cmd = ["mtmoe", "run", "--suite", suite, "--steps", str(steps)]
    if placement != "none":
        cmd += ["--placement", placement]
    extra = list(sets) + ([f"threads={threads}"] if threads else [])
    cmd += [a for s in extra for a in ("--set", s)]
    t0 = time.time()
    done = subprocess.run([mtmoe, *cmd[1:], "--out", str(out)], capture_output=True, text=True)
    wall = time.time() - t0
    if done.returncode != 0:
        return {"command": " ".join(cmd), "error": done.stderr.strip().splitlines()[-1:]}
    (summary_path,) = (out / suite).glob("*/summary.json")
    s = json.loads(summary_path.read_text())
    shutil.rmtree(out / suite)
    return {"command": " ".join(cmd), "steps": s["steps"], "process_s": wall, "run_s": s["wall_time_s"],
            "measuring_s": s["eval_and_probe_time_s"], "sps": s["steps_per_s"],
            "whole_sps": s["steps"] / wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, metavar="SUITE:PLACEMENT:STEPS[:SETS]")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to every run")
    args = p.parse_args()
    print(machine_line(args.threads or 0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.runs:
            suite, placement, steps, *extra = spec.split(":")
            sets = args.set + (extra[0].split(",") if extra else [])
            r = run_one(suite, placement, int(steps), sets, args.threads, Path(tmp))
            if "error" in r:
                rows.append([f"`{r['command']}`", "failed", " ".join(r["error"]), "", "", ""])
            else:
                rows.append([f"`{r['command']}`", f"{r['steps']:,}", f"{r['process_s']:.0f} s",
                             f"{r['measuring_s']:.0f} s", f"{r['sps']:,.0f}", f"{r['whole_sps']:,.0f}"])
            print(rows[-1], file=sys.stderr, flush=True)
    print(markdown_table(["command (whole)", "env steps", "wall time of the command", "of it evaluation + probes",
                          "training env steps/s (summary.json)", "env steps / wall time"], rows))


if __name__ == "__main__":
    main()
