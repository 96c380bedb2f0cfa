"""How much faster can `mtmoe run` get on this CPU with the same values? A ceiling, measured.

Three figures from one process, on the suite's own preset (default minatar-multitask, ppo-minatar):

1. the core's matrix-product rate: the best GFLOP/s of an n x n x n fp32 ``torch.mm`` (n = 1024),
   a practical peak of this core for the products a network update is made of;
2. the preset's PPO update (``PPO.update`` on a real rollout of the preset's envs and network: all
   epochs and minibatches, with Adam): its counted FLOPs (``torch.utils.flop_counter``: matrix
   products and convolutions, forward and backward) per second, and that as a share of (1);
3. the update's share of a training iteration (rollout + advantages + update, best of ``--iters``;
   timed in process CPU time with one thread, which other processes barely inflate, and in wall
   time with more, since CPU time would add up the threads).

If the update reached the matrix-product rate it would be (1) / (2) times faster, and by Amdahl's
law an iteration at most 1 / (1 - u + u * rate / peak) times faster (u = the update's share): the
ceiling printed last. It is generous (elementwise work, Adam and memory traffic are taken as free).

    python bench/bench_update_bound.py                       # minatar-multitask, 1 thread
    python bench/bench_update_bound.py --placement critic --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, markdown_table  # noqa: E402

from mtmoe.runner.config import compose  # noqa: E402
from mtmoe.runner.run import build_agent, make_env, seed_everything  # noqa: E402
from mtmoe.tasks.registry import load_registry  # noqa: E402


def best_time(fn, iters: int, clock) -> float:
    best = float("inf")
    for _ in range(iters):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def matmul_gflops(n: int, repeats: int) -> float:
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    multiply = lambda: torch.mm(a, b, out=out)  # noqa: E731
    multiply()  # warm-up
    return 2 * n ** 3 / best_time(multiply, repeats, time.perf_counter) / 1e9


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="minatar-multitask")
    p.add_argument("--placement", default="none")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=3, help="timed iterations; the best is kept")
    p.add_argument("--matmul-n", type=int, default=1024)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    registry = load_registry()
    cfg, _ = compose(registry, args.suite, seed=0, device="cpu", sets=[f"threads={args.threads}"],
                     net_flags={"placement": args.placement} if args.placement != "none" else None)
    seed_everything(cfg.seed)
    env = make_env(cfg, registry, torch.device("cpu"))
    agent, _ = build_agent(cfg, env, torch.device("cpu"))
    if not hasattr(agent, "advantages"):
        raise SystemExit(f"{cfg.algo}: this bound is written for PPO's rollout/update iteration")
    agent.reset()
    agent.rollout()  # warm-up: first allocations, mkldnn primitives
    adv, ret = agent.advantages()
    agent.update(adv, ret)

    clock, clock_name = (time.process_time, "process CPU time") if args.threads == 1 else (time.perf_counter, "wall")
    rollout_s = best_time(agent.rollout, args.iters, clock)
    adv_s = best_time(agent.advantages, args.iters, clock)
    adv, ret = agent.advantages()
    update_s = best_time(lambda: agent.update(adv, ret), args.iters, clock)
    with FlopCounterMode(display=False) as counter:
        agent.update(adv, ret)
    update_flops = counter.get_total_flops()
    peak = matmul_gflops(args.matmul_n, 10)

    rate = update_flops / update_s / 1e9
    share = update_s / (rollout_s + adv_s + update_s)
    ceiling = 1 / (1 - share + share * rate / peak)
    steps = agent.steps_per_iteration()
    print(machine_line(args.threads))
    print(f"{args.suite}, preset {cfg.preset}, placement {args.placement}, {steps:,} env steps per iteration "
          f"({clock_name}, best of {args.iters})\n")
    rows = [["matrix product (fp32, n = %d)" % args.matmul_n, "", "", f"{peak:.1f}", "100%"],
            ["rollout (envs + acting forward)", f"{rollout_s * 1e3:.0f}", "", "", ""],
            ["advantages (GAE)", f"{adv_s * 1e3:.0f}", "", "", ""],
            ["update (all epochs, minibatches, Adam)", f"{update_s * 1e3:.0f}", f"{update_flops / 1e9:.2f}",
             f"{rate:.1f}", f"{100 * rate / peak:.0f}%"]]
    print(markdown_table(["part", "ms per iteration", "counted GFLOP", "GFLOP/s", "of matmul rate"], rows))
    print(f"\ntraining loop: {steps / (rollout_s + adv_s + update_s):,.0f} env steps/s ({clock_name}); the update is "
          f"{100 * share:.0f}% of it.\nCeiling: an update at the matrix-product rate would make the loop at most "
          f"{ceiling:.2f}x faster (everything but counted FLOPs free).")


if __name__ == "__main__":
    main()
