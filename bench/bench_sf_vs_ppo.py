"""Sample Factory's APPO (`mtmoe run --backend sample-factory`) against mtmoe's own PPO: env steps/s
on the same suite, with the same network, placement and PPO settings.

    python bench/bench_sf_vs_ppo.py                          # minatar-multitask, critic, 200k steps, 1 seed
    python bench/bench_sf_vs_ppo.py --threads 2              # mtmoe with 2 torch threads only (default: 1 and 2)
    python bench/bench_sf_vs_ppo.py --seeds 3 --steps 500000
    python bench/bench_sf_vs_ppo.py --placement both --moe topk --sf-workers 4
    python bench/bench_sf_vs_ppo.py --only sf                # one side alone
    python bench/bench_sf_vs_ppo.py --quick                  # smoke run (20k steps)

Both sides are full runs through mtmoe's run functions (`mtmoe.runner.run.train`,
`mtmoe.sf.run.train_sf`) with evaluation, probes and checkpoints switched off, each in its own
subprocess. Reported per side: training env steps/s as each backend measures it (mtmoe: the
training loop, envs and networks built before the clock starts; SF: from its processes' start to
its stop, so SF's worker start-up counts), the whole command's wall time (imports, process start-up,
env creation included), and the mean training return of the last 20 episodes per task.

Matched: the suite's preset (`ppo-minatar`: lr 5e-3 annealed, 4 epochs, 8 minibatches, clip 0.2,
entropy 0.01, gamma 0.99, lambda 0.95), the network (`--placement`, `--moe`, 4 experts, the MinAtar
torso, 64x64), about the same env slots (mtmoe 64; SF rounds to every task in every SF env: 60 with
2 workers) and samples per update (slots x 128). Not matched, by design of the two algorithms: SF
trains asynchronously on 32-step trajectories with some policy lag (APPO), mtmoe alternates 128-step
rollouts and updates (PPO); SF runs its rollout workers, inference worker and learner as separate
processes with 1 torch thread each, mtmoe one process with `--threads` torch threads (each listed
count is one mtmoe row). On a machine that others load, 2 threads can be several times slower
than 1 (the threads wait for each other): compare the rows on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit_result, machine_line, markdown_table, mean, mean_std, run_worker  # noqa: E402

OFF = ["eval_every=-1", "probe_every=-1", "checkpoint_every=-1"]


def run_one(backend: str, args) -> dict:
    import json

    import torch

    from mtmoe.runner.config import compose
    from mtmoe.tasks.registry import load_registry

    t0 = time.perf_counter()
    torch.set_num_threads(int(args.threads))
    reg = load_registry()
    cfg, _ = compose(reg, args.suite, steps=args.steps, seed=args.seed, device="cpu",
                     net_flags={"placement": args.placement, "moe": args.moe}, sets=OFF + [f"threads={args.threads}"])
    out = Path(tempfile.mkdtemp(prefix="bench-sf-"))
    if backend == "mtmoe":
        from mtmoe.runner.run import train

        run_dir = train(cfg, reg, out, progress=False)
    else:
        from mtmoe.sf import SFOptions
        from mtmoe.sf.run import train_sf

        run_dir = train_sf(cfg, reg, out, SFOptions(num_workers=args.sf_workers), progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {"backend": backend, "threads": int(args.threads), "seed": args.seed, "steps": summary["steps"],
            "sps": summary["steps_per_s"],
            "wall_s": time.perf_counter() - t0, "envs": config["num_envs"], "returns": summary["final_return"],
            "workers": (config.get("sf") or {}).get("num_workers")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="minatar-multitask")
    p.add_argument("--placement", default="critic")
    p.add_argument("--moe", default="softmoe")
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--threads", default="1,2", help="torch threads of the mtmoe runs, e.g. 1,2: one row each "
                   "(SF: 1 per process)")
    p.add_argument("--sf-workers", type=int, default=0, help="SF rollout workers (0: one per core)")
    p.add_argument("--only", choices=["mtmoe", "sf"])
    p.add_argument("--quick", action="store_true", help="20k steps")
    p.add_argument("--worker", choices=["mtmoe", "sf"], help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        emit_result(run_one(args.worker, args))
        return
    if args.quick:
        args.steps = 20_000
    threads = [int(t) for t in args.threads.split(",")]
    setups = [("mtmoe", t) for t in threads] if args.only != "sf" else []
    setups += [("sf", 1)] if args.only != "mtmoe" else []
    results = []
    for seed in range(args.seeds):
        for backend, th in setups:
            cmd = [f"--worker={backend}", f"--seed={seed}", f"--suite={args.suite}", f"--placement={args.placement}",
                   f"--moe={args.moe}", f"--steps={args.steps}", f"--threads={th}", f"--sf-workers={args.sf_workers}"]
            print(f"# {backend}, {th} thread(s), seed {seed} ...", file=sys.stderr, flush=True)
            results.append(run_worker(os.path.abspath(__file__), cmd))
    tasks = list(results[0]["returns"])
    header = ["backend", "env slots", "env steps", "training steps/s", "wall s (whole run)",
              *[f"return {t.removeprefix('minatar-')}" for t in tasks]]
    rows = []
    for backend, th in setups:
        rs = [r for r in results if r["backend"] == backend and r["threads"] == th]
        name = (f"mtmoe PPO ({th} torch thread{'s' if th > 1 else ''})" if backend == "mtmoe" else
                f"Sample Factory APPO ({rs[0]['workers']} workers)")
        rows.append([name, str(rs[0]["envs"]), f"{int(mean([r['steps'] for r in rs])):,}",
                     mean_std([r["sps"] for r in rs], "{:,.0f}"), mean_std([r["wall_s"] for r in rs], "{:.0f}"),
                     *[mean_std([r["returns"][t] for r in rs]) for t in tasks]])
    print()
    print(machine_line(f"{args.threads} (mtmoe), 1 per process (SF)"))
    print(f"suite {args.suite}, placement {args.placement}, moe {args.moe}, {args.steps:,} env steps, "
          f"{args.seeds} seed(s); returns: mean of the last 20 training episodes per task")
    print()
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
