"""Whole-tower experts (position `big`) on a CPU: one call per tower against the vmapped call.

The reference study's two costliest variants are SoftMoE `big` and task-routed `big` in both
towers (the ppo-minatar network: MinAtar torso, 64, 64). On a CPU, `ExpertTower` runs one call
per tower (SoftMoE: every tower on its slots; task routing: each tower on its own samples only);
before, it ran all towers in one `torch.func.vmap` call (grouped convolutions), and task routing
ran every tower on every sample and kept the routed output. This prints, side by side in one
run, ms per PPO minibatch update (forward, backward and Adam step at the preset's 1,024 samples)
and per rollout forward (64 envs, no grad) for both ways; the old ways are the same module's
`vmapped` method and `run_all_keep_routed`, patched in.

    python bench/bench_big_experts.py
    python bench/bench_big_experts.py --threads 2 --iters 20

A micro-benchmark: what `mtmoe run` does with these variants is in summary.json's steps_per_s
(see README, "Grid files, and the reference study's grid").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, markdown_table  # noqa: E402

from mtmoe.nets import NetConfig, build_actor_critic  # noqa: E402
from mtmoe.nets.experts import ExpertTower, run_all_keep_routed  # noqa: E402

NOW = {"forward": ExpertTower.forward, "forward_indexed": ExpertTower.forward_indexed}
BEFORE = {"forward": lambda self, x, need_hidden=True: self.vmapped(x),
          "forward_indexed": lambda self, x, idx: run_all_keep_routed(self, x, idx)}


def timed(fn, iters: int) -> float:
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters * 1e3


def measure(moe: str, ways: dict, iters: int) -> tuple[float, float]:
    for name, fn in ways.items():
        setattr(ExpertTower, name, fn)
    torch.manual_seed(0)
    obs = spaces.Box(0, 1, (6, 10, 10), np.float32)
    net = build_actor_critic(obs, spaces.Discrete(6), NetConfig(placement="both", position="big", moe=moe,
                                                               num_tasks=3, hidden=(64, 64), torso="minatar"))
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = (torch.rand(1024, 6, 10, 10) < 0.1).float()
    task = torch.arange(1024) % 3

    def update():
        logits, value = net(x, task)
        opt.zero_grad()
        (logits.logsumexp(-1).mean() + value.square().mean()).backward()
        opt.step()

    def act():
        with torch.no_grad():
            net(x[:64], task[:64])

    return timed(update, iters), timed(act, iters * 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for moe in ("softmoe", "task"):
        before, now = measure(moe, BEFORE, args.iters), measure(moe, NOW, args.iters)
        rows.append([f"{moe} big, both towers", f"{before[0]:.1f} / {now[0]:.1f}", f"{before[0] / now[0]:.2f}x",
                     f"{before[1]:.2f} / {now[1]:.2f}", f"{before[1] / now[1]:.2f}x"])
    for name, fn in NOW.items():
        setattr(ExpertTower, name, fn)
    print(machine_line(args.threads))
    print(markdown_table(["network", "update ms at 1,024: vmapped / per tower", "speed-up",
                          "rollout forward ms at 64: vmapped / per tower", "speed-up"], rows))


if __name__ == "__main__":
    main()
