"""Helpers shared by the mtmoe-vs-Stable-Baselines3 benchmarks (bench_ppo_vs_sb3.py, bench_sac_vs_sb3.py,
bench_dqn.py).

Each measured run goes to a fresh Python subprocess of the calling script (``--worker ...``), so
runs do not share allocator state, warmed caches or thread pools; the worker prints one line
``RESULT {json}`` that the parent collects into a markdown table.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time

RESULT_PREFIX = "RESULT "


def sb3_learn_clock(at: int):
    """An SB3 callback that notes the wall clock (``.t``) and env step (``.step``) when the run
    reaches env step `at` (learning_starts): the start of the learning phase."""
    from stable_baselines3.common.callbacks import BaseCallback

    class LearnClock(BaseCallback):
        def __init__(self):
            super().__init__()
            self.t, self.step = None, None

        def _on_step(self) -> bool:
            if self.t is None and self.num_timesteps >= at:
                self.t, self.step = time.perf_counter(), self.num_timesteps
            return True

    return LearnClock()


# ---------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU's model name; a twin of mtmoe.runner.records.cpu_model because bench_gymnax.py runs
    in a venv without mtmoe."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(threads: int) -> str:
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = "load avg %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "load avg n/a"
    versions = f"python {platform.python_version()}, torch {torch.__version__}"
    try:
        import stable_baselines3

        versions += f", stable-baselines3 {stable_baselines3.__version__}"
    except ImportError:
        versions += ", stable-baselines3 not installed"
    return (f"machine: {cpu_model()}; os.cpu_count() {os.cpu_count()} (usable {usable}); "
            f"torch threads per run {threads}; {load}; {versions}")


# ---------------------------------------------------------------- mtmoe env


def single_task_env(task_id: str, num_envs: int, algo: str = "ppo"):
    """The mtmoe mixture of one task on `num_envs` slots (as tests/test_agents.py builds it)."""
    from mtmoe.tasks import load_registry, make_mixture
    from mtmoe.tasks.schema import parse_suite

    suite = parse_suite({"name": f"bench-{task_id}", "tasks": [task_id], "num_envs": num_envs, "algo": algo,
                         "budgets": {"default": 1}}, "bench")[0]
    return make_mixture(suite, load_registry())


# ---------------------------------------------------------------- subprocess runs


def warm_up(env, agent, steps: int) -> None:
    """Train a throwaway mtmoe agent for `steps` env steps (first-call costs paid outside the timing)."""
    for _ in agent.iterate(steps, log_every=steps):
        pass
    env.close()


def timed_iterate(env, agent, steps: int, learning_starts: int, last: int) -> dict:
    """Train a replay agent (SAC, DQN) for `steps` env steps; wall clock of the whole loop and of the
    learning phase, which starts at the first yield (env step `learning_starts`), and the raw
    returns of the last `last` training episodes. Closes the env."""
    import torch

    returns, t_learn, s_learn = [], None, 0
    t0 = time.perf_counter()
    for stats in agent.iterate(steps, log_every=learning_starts if learning_starts > 0 else 1000):
        returns += [e["return"] for e in stats["episodes"]]
        if t_learn is None:
            t_learn, s_learn = time.perf_counter(), agent.global_step
    t1 = time.perf_counter()
    env.close()
    return dict(steps=agent.global_step, wall=t1 - t0, learn_steps=agent.global_step - s_learn, learn_wall=t1 - t_learn,
                episodes=len(returns), returns=returns[-last:], threads=torch.get_num_threads())


def emit_result(result: dict) -> None:
    """Worker side: hand a result to the parent."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def require_sb3(impls) -> None:
    """Before any run: one line and exit status 1 when the SB3 side is asked for but not installed (its
    worker would otherwise fail with a traceback after the mtmoe side has run)."""
    import importlib.util

    if "sb3" in impls and importlib.util.find_spec("stable_baselines3") is None:
        sys.exit("stable-baselines3 is not installed: pip install -e \".[bench]\" (or --only mtmoe)")


def run_worker(script: str, worker_args: list[str]) -> dict:
    """Parent side: run `python script --worker ...` and return its RESULT dict (raises on failure).
    The worker's other output (stderr, warnings) passes through to the terminal."""
    cmd = [sys.executable, script, *worker_args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_PREFIX)]
    for l in proc.stdout.splitlines():
        if not l.startswith(RESULT_PREFIX):
            print(l, flush=True)
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker failed (rc {proc.returncode}): {' '.join(cmd)}")
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    result["process_s"] = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------- statistics and table


def mean(xs) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def std(xs) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if len(xs) < 2:
        return 0.0 if xs else float("nan")
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def mean_std(xs, fmt: str = "{:.2f}") -> str:
    m = mean(xs)
    if math.isnan(m):
        return "n/a"
    n = len([x for x in xs if x is not None and not math.isnan(x)])
    return fmt.format(m) if n < 2 else f"{fmt.format(m)} ± {fmt.format(std(xs))}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *[line(r) for r in rows]])


def lcm(*xs: int) -> int:
    out = 1
    for x in xs:
        out = out * x // math.gcd(out, x)
    return out
