"""Random-policy scores of the MinAtar tasks, as mtmoe plays them (the low end of their normalization).

Plays `--episodes` full episodes per game with uniformly random actions through the task's own
backend (sticky actions 0.1, difficulty ramping, minimal action set, the task's step cap: exactly
what training sees) and prints a CSV block: game, episodes, mean return, standard error.
The committed `mtmoe/tasks/data/minatar_reference.csv` holds its output (with the command).

    python bench/minatar_random.py --episodes 1000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mtmoe.tasks.random_play import random_returns
from mtmoe.tasks.registry import load_registry

TASKS = ["minatar-asterix", "minatar-breakout", "minatar-freeway", "minatar-seaquest", "minatar-space-invaders"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    reg = load_registry()
    print("game,episodes,random_mean,random_stderr")
    for tid in TASKS:
        t0 = time.time()
        r = random_returns(reg.task(tid), args.episodes, args.num_envs, args.seed)
        print(f"{reg.task(tid).env},{len(r)},{r.mean():.4f},{r.std(ddof=1) / np.sqrt(len(r)):.4f}"
              f"  # {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
