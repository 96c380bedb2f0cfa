"""Env steps/s of each mixture against its raw backends with the same slots.

"raw" steps the very backends the mixture holds (same tasks, same slot counts) directly with
random actions in each task's own action space; "mixture" steps the TaskMixture with random
valid union actions. The difference is the mixture layer: action mapping, observation padding,
reward handling, episode statistics and the switch logic.

    python bench/bench_mixture.py            # all suites below
    python bench/bench_mixture.py --quick    # fewer steps (the `make demo` job)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mtmoe.tasks import load_registry, make_mixture

# suite, env slots (None: the suite's own), vector steps
SUITES = [
    ("minatar-multitask", None, 300),
    ("minatar-continual", None, 300),
    ("minatar5-multitask", None, 300),
    ("atari-multitask", 10, 300),
    ("atari-continual", 8, 300),
    ("mujoco-multitask", 4, 1000),
    ("mujoco-continual", 4, 1000),
    ("procgen-multitask", 16, 500),
    ("gym-single", 8, 2000),
    ("mt10", None, 300),
    ("cw10", None, 1000),
]


def random_actions(env, rng, steps):
    """Pre-drawn valid union actions (so both loops spend nothing on sampling)."""
    out = []
    for _ in range(steps):
        if env.spaces.discrete:
            logits = rng.random(env.action_mask.shape) + env.action_mask  # valid actions win
            out.append(np.argmax(logits, -1))
        else:
            out.append(rng.uniform(-1, 1, (env.num_envs, env.single_action_space.shape[0])).astype(np.float32))
    return out


def time_raw(env, rng, steps):
    local = []
    for _ in range(steps):
        per_task = []
        for b in env.backends:
            if b.spec.action_kind == "discrete":
                per_task.append(rng.integers(0, b.spec.n_actions, b.num_envs))
            else:
                lo, hi = np.array(b.spec.action_low), np.array(b.spec.action_high)
                per_task.append(rng.uniform(lo, hi, (b.num_envs, len(lo))).astype(np.float32))
        local.append(per_task)
    active = env.active_tasks
    t0 = time.perf_counter()
    for per_task in local:
        for k in active:  # a sequential suite steps its active task only, as the mixture does
            env.backends[k].step(per_task[k])
    return steps * sum(env.backends[k].num_envs for k in active) / (time.perf_counter() - t0)


def time_mixture(env, rng, steps):
    actions = random_actions(env, rng, steps)
    t0 = time.perf_counter()
    for a in actions:
        env.step(a)
    return steps * env.num_envs / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="minatar suites only, fewer steps")
    parser.add_argument("--suites", help="comma-separated suite names")
    parser.add_argument("--repeats", type=int, default=3, help="alternate raw/mixture this many times, keep the best")
    args = parser.parse_args()
    reg = load_registry()
    chosen = SUITES
    if args.suites:
        chosen = [s for s in SUITES if s[0] in args.suites.split(",")]
    if args.quick:
        chosen = [(s, n, steps // 3) for s, n, steps in SUITES if s.startswith("minatar")]
        args.repeats = 2
    print(f"{'suite':<20} {'slots':>5} {'raw steps/s':>12} {'mixture steps/s':>16} {'overhead':>9}")
    for name, num_envs, steps in chosen:
        env = make_mixture(name, reg, num_envs=num_envs, steps=10**9)
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        raw, mix = [], []
        for _ in range(args.repeats):  # alternate so machine noise hits both alike
            raw.append(time_raw(env, rng, steps))
            mix.append(time_mixture(env, rng, steps))
        r, m = max(raw), max(mix)
        print(f"{name:<20} {env.num_envs:>5} {r:>12,.0f} {m:>16,.0f} {100 * (r / m - 1):>8.1f}%", flush=True)
        env.close()


if __name__ == "__main__":
    main()
