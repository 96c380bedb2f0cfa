"""Env steps/s of the tensor MinAtar games against the loop backend, random actions.

    python bench/bench_device_env.py                                  # all games, 64 1024 16384 envs
    python bench/bench_device_env.py --device cuda --seconds 2
    python bench/bench_device_env.py --games breakout asterix --envs 64 1024 --threads 1
    python bench/bench_device_env.py --envs 1024 --threads 1 --compile     # adds torch.compile'd steps

The tensor side is ``mtmoe.tasks.tensor_minatar.vec.TensorMinAtarVec`` (sticky actions, minimal
action set, same-step autoreset, uint8 observations, all on the device); where that module is
missing, the bare game (step, reset where terminal, observe, uniforms from torch.rand). The loop
side is the ``minatar`` backend, ``MinAtarVecEnv``, a Python loop over minatar envs on the CPU.
Rates are env steps summed over envs, the best of ``--repeats`` timings of ``--seconds`` each
(a timing runs at least one step, so the loop backend at 16384 envs may take fewer steps).
Games without a tensor implementation yet are skipped with a note. ``--compile`` adds a row per
game and count for ``TensorMinAtarVec(compile=True)`` (its compilation is not timed).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, markdown_table  # noqa: E402

GAMES = ["breakout", "space_invaders", "asterix", "freeway", "seaquest"]


def tensor_game_class(game: str):
    """The registered tensor game, or None if it is not implemented yet."""
    from mtmoe.tasks.tensor_minatar.game import GAMES as REGISTERED

    try:
        importlib.import_module(f"mtmoe.tasks.tensor_minatar.{game}")
    except ModuleNotFoundError:
        return None
    return REGISTERED.get(game)


def vec_env_class():
    try:
        return importlib.import_module("mtmoe.tasks.tensor_minatar.vec").TensorMinAtarVec
    except ModuleNotFoundError:
        return None


def best_rate(step, n: int, seconds: float, repeats: int, sync=lambda: None) -> float:
    """Best of ``repeats`` timings of at least ``seconds`` (and one step): env steps per second."""
    for _ in range(3):  # warm up caches, lazy allocations and kernels
        step()
    sync()
    best = 0.0
    for _ in range(repeats):
        steps, start = 0, time.perf_counter()
        while steps == 0 or time.perf_counter() - start < seconds:
            for _ in range(8 if n <= 1024 else 1):
                step()
                steps += 1
            sync()
        best = max(best, steps * n / (time.perf_counter() - start))
    return best


def tensor_stepper(game: str, n: int, device: torch.device, compile_: bool = False):
    """A zero-argument step of n tensor envs on ``device`` and a label of what it runs."""
    vec_cls, cls = vec_env_class(), tensor_game_class(game)
    actions = torch.randint(len(cls.minimal_actions), (64, n), device=device)
    count = iter(range(10 ** 12))
    if vec_cls is not None:
        vec = vec_cls(game, n, device, seed=0, compile=compile_)
        return (lambda: vec.step(actions[next(count) % 64])), "TensorMinAtarVec" + (", compiled" if compile_ else "")
    full = torch.tensor(["nlurdf".index(a) for a in cls.minimal_actions], device=device)[actions]
    env = cls(n, device)
    gen = torch.Generator(device=device).manual_seed(0)
    env.reset(torch.ones(n, dtype=torch.bool, device=device),
              torch.rand(n, len(cls.reset_draws), generator=gen, device=device))

    def step():
        u = torch.rand(n, len(cls.draws) + len(cls.reset_draws), generator=gen, device=device)
        _, terminal = env.step(full[next(count) % 64], u[:, :len(cls.draws)])
        env.reset(terminal, u[:, len(cls.draws):])
        return env.observe()

    return step, "bare game"


def loop_stepper(game: str, n: int):
    from mtmoe.tasks.backends.minatar import MinAtarOptions, MinAtarVecEnv

    vec = MinAtarVecEnv(game, n, MinAtarOptions(), None)
    vec.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, vec.spec.n_actions, (64, n))
    count = iter(range(10 ** 12))
    return lambda: vec.step(actions[next(count) % 64])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--games", nargs="+", default=GAMES, choices=GAMES)
    p.add_argument("--envs", type=int, nargs="+", default=[64, 1024, 16384])
    p.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    p.add_argument("--repeats", type=int, default=2, help="measurements per figure (the best is shown)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-loop", action="store_true", help="skip the loop backend")
    p.add_argument("--compile", action="store_true", help="also time TensorMinAtarVec(compile=True)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(machine_line(torch.get_num_threads()))
    print(f"tensor device: {device} ({name})\n", flush=True)

    rows, notes = [], []
    for game in args.games:
        if tensor_game_class(game) is None:
            notes.append(f"{game}: no tensor implementation yet, skipped")
            continue
        for n in args.envs:
            rates = {}
            for compile_ in (False, True) if args.compile else (False,):
                step, via = tensor_stepper(game, n, device, compile_)
                rates[via] = best_rate(step, n, args.seconds, args.repeats, sync)
                del step
            loop = float("nan") if args.no_loop else best_rate(loop_stepper(game, n), n, args.seconds, 1)
            for via, tensor in rates.items():
                ratio = "n/a" if args.no_loop else f"{tensor / loop:.1f}x"
                rows.append([game, f"{n:,}", via, f"{tensor:,.0f}", "n/a" if args.no_loop else f"{loop:,.0f}", ratio])
                print(f"  {game} n={n} {via}: tensor {tensor:,.0f}/s, loop {loop:,.0f}/s", file=sys.stderr, flush=True)
    print(markdown_table(["game", "envs", "tensor path", f"tensor steps/s ({device.type})", "loop steps/s (cpu)",
                          "tensor / loop"], rows))
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
