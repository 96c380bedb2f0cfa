"""Env steps/s of gymnax's JAX MinAtar games, random actions, for comparison with bench_device_env.py.

jax is not an mtmoe dependency, so this script runs in its own venv outside the repo, not in .venv:

    python3.11 -m venv /tmp/gxvenv && /tmp/gxvenv/bin/pip install jax jaxlib gymnax six
    /tmp/gxvenv/bin/python bench/bench_gymnax.py --envs 64 1024 16384       # JAX on the CPU
    /tmp/gxvenv/bin/python bench/bench_gymnax.py --games Breakout-MinAtar --steps 512 --repeats 3

(Tested with jax/jaxlib 0.10.2, gymnax 1.0.1, flax 0.12.8; gymnax 1.0.1 imports ``six`` without
declaring it, hence the extra package.) For each game and env count, one jitted function runs a
``jax.lax.scan`` of ``--steps`` steps of ``jax.vmap(env.step)``: uniform random actions over
gymnax's action set (drawn with jax.random inside the scan), gymnax's own auto-reset (``step``
computes ``reset_env`` every step and selects it where done), the float32 observation carried
through the scan so XLA cannot drop it. It is compiled ahead of time (``lower().compile()``, the
"compile s" column); the rate is the best of ``--repeats`` calls, block_until_ready, in env steps
summed over envs. gymnax's Seaquest keeps fixed 100-row entity buffers (scatter-add compaction,
all-pairs collisions) and is ~50-100x slower than the other four on a CPU: time it with a short
scan, e.g. ``--games Seaquest-MinAtar --steps 8 --repeats 1``.

Params: gymnax's ``env.default_params`` for every game. They are not minatar's defaults: gymnax
has no sticky-action parameter at all (minatar's ``sticky_action_prob`` is 0.1; gymnax steps the
chosen action every time), it adds a ``max_steps_in_episode`` truncation of 1000 steps (2500 for
Freeway; minatar has no cap beyond Freeway's own 2500-step game clock), and it uses the minimal
action set (``use_minimal_action_set=True``). Its observations are float32 (10, 10, C) arrays,
not uint8. mtmoe's TensorMinAtarVec does sticky actions (0.1) and uint8 observations, so it does
somewhat more work per step than what is timed here.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import cpu_model, markdown_table  # noqa: E402  (common imports torch only inside machine_line)

GAMES = ["Breakout-MinAtar", "SpaceInvaders-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar"]


def make_rollout(env, params, n: int, steps: int):
    import jax
    import jax.numpy as jnp

    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def body(carry, _):
        key, state, obs, total = carry
        key, k_act, k_step = jax.random.split(key, 3)
        actions = jax.random.randint(k_act, (n,), 0, env.num_actions)
        obs, state, reward, _, _, _ = step(jax.random.split(k_step, n), state, actions, params)
        return (key, state, obs, total + reward.sum()), None

    @jax.jit
    def rollout(carry):
        return jax.lax.scan(body, carry, None, length=steps)[0]

    key_reset, key = jax.random.split(jax.random.PRNGKey(0))
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key_reset, n), params)
    return rollout, (key, state, obs, jnp.zeros((), jnp.float32))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--games", nargs="+", default=GAMES, choices=GAMES)
    p.add_argument("--envs", type=int, nargs="+", default=[64, 1024, 16384])
    p.add_argument("--steps", type=int, default=256, help="scan length of one timed call")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per figure (the best is shown)")
    p.add_argument("--device", default="cpu", help="JAX_PLATFORMS to use (cpu, cuda, ...)")
    args = p.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", args.device)
    from importlib.metadata import version

    import gymnax
    import jax

    print(f"machine: {cpu_model()}; os.cpu_count() {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}); "
          "load avg %.2f %.2f %.2f; " % os.getloadavg() +
          f"python {platform.python_version()}, jax {jax.__version__}, jaxlib {version('jaxlib')}, "
          f"gymnax {version('gymnax')}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"jax device: {jax.devices()[0]} ({jax.default_backend()})\n", flush=True)

    rows = []
    for game in args.games:
        env, params = gymnax.make(game)
        for n in args.envs:
            rollout, carry = make_rollout(env, params, n, args.steps)
            start = time.perf_counter()
            rollout = rollout.lower(carry).compile()  # ahead of time: the timed calls do not trace
            compile_s = time.perf_counter() - start
            best = 0.0
            for _ in range(args.repeats):
                start = time.perf_counter()
                carry = jax.block_until_ready(rollout(carry))
                best = max(best, args.steps * n / (time.perf_counter() - start))
            rows.append([game, f"{n:,}", f"{best:,.0f}", f"{compile_s:.1f}"])
            print(f"  {game} n={n}: {best:,.0f}/s (compile {compile_s:.1f}s)", flush=True)
            del rollout, carry
    print(markdown_table(["game", "envs", f"gymnax steps/s ({jax.default_backend()})", "compile s"], rows))


if __name__ == "__main__":
    main()
