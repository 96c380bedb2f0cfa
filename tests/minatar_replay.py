"""Replay minatar's games on given uniforms, side by side with a tensor game, and compare exactly.

A tensor game takes its randomness as uniform columns (see mtmoe/tasks/tensor_minatar/game.py).
Here minatar's own ``Env`` (one game, no sticky-action wrapper) is given the same numbers: its
``env.random`` is a :class:`UniformRandom`, a stand-in for numpy's RandomState whose ``rand`` and
``randint`` answer from one row of uniforms. The column is chosen by the calling *site*: the
caller's frame, as ``"<file>:<line>"`` (minatar is pinned to 1.0.15, so lines are stable) or
``"<file>:<function>"``; a :class:`MinatarSpec` maps sites to draw names of the tensor game.
A site given k columns may be hit until k values are used up within one step (a ``size=m``
call takes m at once); an unmapped site or an exhausted one raises ``LookupError``.

The arithmetic mirrors the torch side bit for bit: ``randint`` is float32
``low + floor(u * (high - low))`` clamped as ``game.randint`` does, and ``rand()`` returns a float
whose comparisons round the other operand to float32, as ``torch_float32 < p`` does.

:class:`SideBySide` builds N minatar envs and a tensor game, resets both from the same
uniforms, steps them with the same actions and fresh uniforms, resets where terminal (same step,
same reset uniforms) and after every step asserts that reward, terminal, observation,
difficulty and the full state (``spec.read_state`` puts minatar's attributes into the tensor
game's ``state_dict`` layout) agree, naming step, env and field of any mismatch.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

# ---------------------------------------------------------------- uniform transforms


def randint_from_uniform(u: np.ndarray, low: int, high: int) -> np.ndarray:
    """numpy mirror of ``game.randint``: float32 low + floor(u * (high - low)), clamped to high - 1."""
    scaled = np.floor(np.asarray(u, np.float32) * np.float32(high - low))
    return np.minimum(scaled.astype(np.int64) + low, max(high - 1, low))


class Float32Uniform(float):
    """A uniform that compares like a float32 torch tensor: the other operand is rounded to float32."""

    def _f32(self, other):
        return np.float32(self), np.float32(other)

    def __lt__(self, other):
        a, b = self._f32(other)
        return bool(a < b)

    def __le__(self, other):
        a, b = self._f32(other)
        return bool(a <= b)

    def __gt__(self, other):
        a, b = self._f32(other)
        return bool(a > b)

    def __ge__(self, other):
        a, b = self._f32(other)
        return bool(a >= b)


class UniformRandom:
    """Stand-in for ``numpy.random.RandomState`` that answers from a loaded row of uniforms."""

    def __init__(self):
        self.row = np.zeros(0, np.float32)
        self.sites: dict[str, list[int]] = {}
        self.used: dict[str, int] = {}

    def load(self, row, sites: dict[str, list[int]]) -> None:
        """Answer the next calls from ``row`` (float32 uniforms); ``sites``: site -> column indices."""
        self.row, self.sites, self.used = np.asarray(row, np.float32), sites, {}

    def _take(self, count: int) -> np.ndarray:
        frame = sys._getframe(2)  # the caller of rand / randint
        file = os.path.basename(frame.f_code.co_filename)
        keys = (f"{file}:{frame.f_lineno}", f"{file}:{frame.f_code.co_name}")
        key = next((k for k in keys if k in self.sites), None)
        if key is None:
            raise LookupError(f"random call at {keys[0]} ({keys[1]}) is not in the site map {sorted(self.sites)}")
        cols, start = self.sites[key], self.used.get(key, 0)
        if start + count > len(cols):
            raise LookupError(f"site {key} needs {start + count} columns in one step, has {len(cols)}")
        self.used[key] = start + count
        return self.row[cols[start:start + count]]

    def rand(self, *size):
        if not size:
            return Float32Uniform(self._take(1)[0])
        return self._take(math.prod(size)).reshape(size)  # float32: array comparisons stay float32

    def randint(self, low, high=None, size=None, dtype=int):
        if high is None:
            low, high = 0, low
        if high <= low:
            raise ValueError("low >= high")  # as numpy raises
        shape = () if size is None else ((size,) if isinstance(size, int) else tuple(size))
        values = randint_from_uniform(self._take(math.prod(shape)), low, high)
        return int(values[0]) if size is None else values.reshape(shape)


# ---------------------------------------------------------------- per-game knowledge


@dataclass
class MinatarSpec:
    """What the harness must know about one game to replay it."""

    game: str
    """minatar module name (minatar.environments.<game>)."""
    step_sites: dict[str, list[str]]
    """Random call sites hit during ``act`` -> draw names of the tensor game's ``draws``."""
    reset_sites: dict[str, list[str]]
    """Random call sites hit during ``reset`` -> names in ``reset_draws``."""
    read_state: Callable[[Any], dict[str, Any]]
    """One minatar Env -> {state_dict key: value without the env axis}."""


def resolve_sites(sites: dict[str, list[str]], names: tuple[str, ...]) -> dict[str, list[int]]:
    index = {n: i for i, n in enumerate(names)}
    return {site: [index[n] for n in cols] for site, cols in sites.items()}


def make_envs(spec: MinatarSpec, n: int, ramping: bool = True) -> list:
    """N minatar game envs (no sticky actions) whose ``random`` is a :class:`UniformRandom`."""
    module = importlib.import_module(f"minatar.environments.{spec.game}")
    envs = []
    for _ in range(n):
        env = module.Env(ramping=ramping)  # its __init__ reset used a RandomState; SideBySide resets again
        env.random = UniformRandom()
        envs.append(env)
    return envs


# ---------------------------------------------------------------- uniforms

_FRACTIONS = np.array([k / d for d in range(2, 10) for k in range(1, d)], np.float32)
EDGE_UNIFORMS = np.unique(np.concatenate([
    [0.0, 1 - 2 ** -24], _FRACTIONS, np.nextafter(_FRACTIONS, np.float32(0)), np.nextafter(_FRACTIONS, np.float32(1))
]).astype(np.float32))
"""Uniforms on and next to the boundaries of ``u < k/d`` and ``randint`` with up to 9 outcomes."""


class Uniforms:
    """(N, K) float32 uniforms from a seeded torch generator; with ``edge_prob`` an entry is
    replaced by one of EDGE_UNIFORMS (rounding boundaries), ``exclude`` columns never are."""

    def __init__(self, seed: int, edge_prob: float = 0.0):
        self.gen = torch.Generator().manual_seed(seed)
        self.edge_prob = edge_prob
        self.edges = torch.from_numpy(EDGE_UNIFORMS)

    def __call__(self, n: int, k: int, exclude: tuple[int, ...] = ()) -> torch.Tensor:
        u = torch.rand(n, k, generator=self.gen)
        if self.edge_prob and k:
            pick = torch.rand(n, k, generator=self.gen) < self.edge_prob
            pick[:, list(exclude)] = False
            edge = self.edges[torch.randint(len(self.edges), (n, k), generator=self.gen)]
            u = torch.where(pick, edge, u)
        return u


def random_policy(actions: str | list[int], seed: int) -> Callable:
    """Uniform choice among ``actions`` (letters of 'nlurdf' or full-set indices) every step."""
    idx = torch.tensor(["nlurdf".index(a) for a in actions] if isinstance(actions, str) else actions)
    gen = torch.Generator().manual_seed(seed)

    def policy(t, game, u):
        return idx[torch.randint(len(idx), (game.num_envs,), generator=gen)]

    return policy


# ---------------------------------------------------------------- side by side


@dataclass
class ReplayStats:
    """What a run went through (for tests to check that interesting states were reached)."""

    steps: int = 0
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    max_difficulty: int = 0


class ReplayMismatch(AssertionError):
    pass


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class SideBySide:
    """A tensor game and N minatar envs driven by the same actions and uniforms."""

    def __init__(self, spec: MinatarSpec, game_cls, n: int, ramping: bool = True, autoreset: bool = True):
        self.spec, self.n, self.autoreset = spec, n, autoreset
        self.game = game_cls(n, "cpu", ramping=ramping)
        self.envs = make_envs(spec, n, ramping)
        self.step_sites = resolve_sites(spec.step_sites, game_cls.draws)
        self.reset_sites = resolve_sites(spec.reset_sites, game_cls.reset_draws)
        self.stats = ReplayStats()
        self._returns = np.zeros(n)
        self._lengths = np.zeros(n, np.int64)
        self._finished = np.zeros(n, bool)

    def reset(self, u_reset: torch.Tensor, mask: torch.Tensor | None = None, t: int = -1) -> None:
        """Reset the envs where ``mask`` is set (all by default) in both, then check those."""
        mask = torch.ones(self.n, dtype=torch.bool) if mask is None else mask
        self.game.reset(mask, u_reset)
        rows, which = u_reset.numpy(), np.flatnonzero(mask.numpy())
        for i in which:
            self.envs[i].random.load(rows[i], self.reset_sites)
            self.envs[i].reset()
        self.check(t, "reset", which)

    def step(self, action: torch.Tensor, u: torch.Tensor, u_reset: torch.Tensor, t: int) -> None:
        reward, terminal = self.game.step(action, u)
        expect_r, expect_t = np.zeros(self.n, np.float32), np.zeros(self.n, bool)
        rows = u.numpy()
        for i, (env, a) in enumerate(zip(self.envs, action.tolist())):
            env.random.load(rows[i], self.step_sites)
            expect_r[i], expect_t[i] = env.act(a)
        self._compare(t, "step", {"reward": (reward, expect_r), "terminal": (terminal, expect_t)})
        self.check(t, "step")
        self._count(expect_r, expect_t)
        if self.autoreset and expect_t.any():
            self.reset(u_reset, torch.from_numpy(expect_t), t)

    def _count(self, reward: np.ndarray, terminal: np.ndarray) -> None:
        s, live = self.stats, ~self._finished
        s.steps += 1
        self._returns += reward * live
        self._lengths += live
        for i in np.flatnonzero(terminal & live):
            s.episode_returns.append(float(self._returns[i]))
            s.episode_lengths.append(int(self._lengths[i]))
        self._returns[terminal], self._lengths[terminal] = 0, 0
        if not self.autoreset:  # a terminal env stays terminal: count its episode once
            self._finished |= terminal

    def check(self, t: int, phase: str, which: np.ndarray | None = None) -> None:
        """Assert observation, difficulty and every state tensor equal minatar's (in envs ``which``)."""
        which = np.arange(self.n) if which is None else which
        envs = [self.envs[i] for i in which]
        index = torch.from_numpy(which)
        obs = np.stack([env.state() for env in envs]).transpose(0, 3, 1, 2)
        diff = np.array([env.difficulty_ramp() or 0 for env in envs])
        self.stats.max_difficulty = max(self.stats.max_difficulty, int(diff.max()))
        pairs = {"observe()": (self.game.observe()[index], obs), "difficulty()": (self.game.difficulty()[index], diff)}
        states = [self.spec.read_state(env) for env in envs]
        ours = self.game.state_dict()
        if set(states[0]) != set(ours):
            raise ReplayMismatch(f"state keys differ: tensor {sorted(ours)} vs read_state {sorted(states[0])}")
        for key in ours:
            pairs[f"state[{key!r}]"] = (ours[key][index], np.array([s[key] for s in states]))
        self._compare(t, phase, pairs, which)

    def _compare(self, t: int, phase: str, pairs: dict, which: np.ndarray | None = None) -> None:
        which = np.arange(self.n) if which is None else which
        lines = []
        for name, (got, want) in pairs.items():
            got = _as_numpy(got)
            if got.shape != want.shape:
                lines.append(f"  {name}: shape {got.shape} vs minatar {want.shape}")
                continue
            bad = (got.astype(np.float64) != want.astype(np.float64)).reshape(len(which), -1).any(1)
            if bad.any():
                j = int(np.argmax(bad))
                lines.append(f"  {name} env {which[j]} (of {int(bad.sum())} bad): "
                             f"tensor {_show(got[j])} vs minatar {_show(want[j])}")
        if lines:
            raise ReplayMismatch(f"{self.spec.game}: mismatch at step {t} ({phase}):\n" + "\n".join(lines))

    def run(self, steps: int, policy: Callable, uniforms: Uniforms, exclude_reset: tuple[int, ...] = (),
            exclude_step: tuple[int, ...] = ()) -> ReplayStats:
        """Reset all, then ``steps`` steps; ``policy(t, game, u) -> (N,) long`` sees the step's uniforms."""
        k, kr = len(self.game.draws), len(self.game.reset_draws)
        self.reset(uniforms(self.n, kr, exclude_reset))
        for t in range(steps):
            u, u_reset = uniforms(self.n, k, exclude_step), uniforms(self.n, kr, exclude_reset)
            self.step(policy(t, self.game, u), u, u_reset, t)
        return self.stats


def _show(x: np.ndarray) -> str:
    if x.ndim >= 2:  # a plane or a stack of planes: list the set cells
        return "cells " + str([tuple(int(v) for v in c) for c in np.argwhere(x)])
    return np.array2string(x.astype(np.int64) if x.dtype == bool else x, separator=",")


# ---------------------------------------------------------------- return statistics


def tensor_returns(game_cls, n: int, episodes_per_env: int, policy: Callable, seed: int, ramping: bool = True,
                   max_steps: int = 10 ** 6) -> np.ndarray:
    """Returns of the first ``episodes_per_env`` episodes of each of n envs (no length bias),
    uniforms from torch.rand."""
    game = game_cls(n, "cpu", ramping=ramping)
    gen = torch.Generator().manual_seed(seed)
    game.reset(torch.ones(n, dtype=torch.bool), torch.rand(n, len(game.reset_draws), generator=gen))
    ret, done = torch.zeros(n), torch.zeros(n, dtype=torch.long)
    out = []
    for t in range(max_steps):
        u = torch.rand(n, len(game.draws), generator=gen)
        r, term = game.step(policy(t, game, u), u)
        ret += r
        keep = term & (done < episodes_per_env)
        out.append(ret[keep].clone())
        done += term.long()
        ret[term] = 0
        if bool((done >= episodes_per_env).all()):
            return torch.cat(out).numpy()
        game.reset(term, torch.rand(n, len(game.reset_draws), generator=gen))
    raise RuntimeError("episodes did not finish")


def minatar_returns(game: str, episodes: int, actions: str, seed: int, ramping: bool = True) -> np.ndarray:
    """Returns of minatar's own game (its RandomState) under a uniform policy over ``actions``."""
    module = importlib.import_module(f"minatar.environments.{game}")
    env = module.Env(ramping=ramping)
    env.random = np.random.RandomState(seed)
    pick = np.random.RandomState(seed + 1)
    idx = ["nlurdf".index(a) for a in actions]
    out = []
    for _ in range(episodes):
        env.reset()
        total, terminal = 0.0, False
        while not terminal:
            r, terminal = env.act(idx[pick.randint(len(idx))])
            total += r
        out.append(total)
    return np.array(out)


def welch_z(a: np.ndarray, b: np.ndarray) -> float:
    """z statistic of the difference of two sample means (unequal variances)."""
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return 0.0 if se == 0 else float((a.mean() - b.mean()) / se)
