"""Steps/s of each environment backend under random actions (env steps summed over slots).

    python bench/bench_backends.py                       # every backend, num_envs 1 8 32
    python bench/bench_backends.py --only minatar --num-envs 64 --seconds 3
    python bench/bench_backends.py --baselines           # + gymnasium SyncVectorEnv for comparison

The baselines are the alternatives the minatar and mujoco backends were measured against
(gymnasium's SyncVectorEnv, same-step autoreset); the mixture layer is compared to these figures.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import mtmoe.tasks.backends  # noqa: F401  (registers the backends)
from mtmoe.tasks.backend import BACKENDS

CASES = [
    ("ale", "breakout"), ("ale", "space_invaders"),
    ("minatar", "Breakout"), ("minatar", "SpaceInvaders"), ("minatar", "Seaquest"),
    ("mujoco", "HalfCheetah-v5"), ("mujoco", "Hopper-v5"), ("mujoco", "Ant-v5"),
    ("procgen", "coinrun"), ("procgen", "bigfish"),
    ("gym", "CartPole-v1"), ("gym", "Pendulum-v1"),
]
BASELINES = [  # gymnasium ids stepped by SyncVectorEnv
    ("minatar", "Breakout", "MinAtar/Breakout-v1"), ("minatar", "SpaceInvaders", "MinAtar/SpaceInvaders-v1"),
    ("minatar", "Seaquest", "MinAtar/Seaquest-v1"),
    ("mujoco", "HalfCheetah-v5", "HalfCheetah-v5"), ("mujoco", "Hopper-v5", "Hopper-v5"),
    ("mujoco", "Ant-v5", "Ant-v5"), ("gym", "CartPole-v1", "CartPole-v1"),
]


def random_actions(n: int, discrete: int = 0, low=(), high=(), count: int = 256) -> np.ndarray:
    """`count` batches of random actions: ints below `discrete`, else uniform in [low, high]."""
    rng = np.random.default_rng(0)
    if discrete:
        return rng.integers(0, discrete, (count, n))
    return rng.uniform(low, high, (count, n, len(low))).astype(np.float32)


def timed(step, actions: np.ndarray, n: int, seconds: float, repeats: int) -> float:
    """Best of `repeats` timings: on a shared machine, other load only ever slows a run down."""
    for a in actions[:8]:  # warm up caches and lazy allocations
        step(a)
    best = 0.0
    for _ in range(repeats):
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for a in actions:
                step(a)
            steps += len(actions)
        best = max(best, steps * n / (time.perf_counter() - start))
    return best


def bench_backend(backend: str, env: str, n: int, seconds: float, repeats: int) -> float:
    info = BACKENDS[backend]
    vec = info.factory(env, n, info.options(), None)
    vec.reset(seed=0)
    s = vec.spec
    rate = timed(vec.step, random_actions(n, s.n_actions, s.action_low, s.action_high), n, seconds, repeats)
    vec.close()
    return rate


def bench_sync(env_id: str, n: int, seconds: float, repeats: int) -> float:
    if env_id.startswith("MinAtar/") and env_id not in gym.registry:
        import minatar.gym

        minatar.gym.register_envs()
    vec = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(n)],
                                   autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    vec.reset(seed=0)
    space = vec.single_action_space
    if isinstance(space, gym.spaces.Discrete):
        actions = random_actions(n, int(space.n))
    else:
        actions = random_actions(n, 0, space.low, space.high)
    rate = timed(vec.step, actions, n, seconds, repeats)
    vec.close()
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-envs", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    p.add_argument("--repeats", type=int, default=3, help="measurements per figure (the best is shown)")
    p.add_argument("--only", nargs="+", default=None, help="backends to run (default: all)")
    p.add_argument("--baselines", action="store_true", help="also time gymnasium SyncVectorEnv")
    args = p.parse_args()

    rows = [(b, e, "backend", lambda n, b=b, e=e: bench_backend(b, e, n, args.seconds, args.repeats)) for b, e in CASES]
    if args.baselines:
        rows += [(b, e, "SyncVectorEnv", lambda n, i=i: bench_sync(i, n, args.seconds, args.repeats)) for b, e, i in BASELINES]
    rows = [r for r in rows if args.only is None or r[0] in args.only]
    header = f"{'backend':<9} {'env':<16} {'via':<14}" + "".join(f"{'n=' + str(n):>10}" for n in args.num_envs)
    print(header + "\n" + "-" * len(header))
    for backend, env, via, run in sorted(rows, key=lambda r: (r[0], r[1], r[2])):
        rates = "".join(f"{run(n):>10,.0f}" for n in args.num_envs)
        print(f"{backend:<9} {env:<16} {via:<14}{rates}", flush=True)


if __name__ == "__main__":
    main()
