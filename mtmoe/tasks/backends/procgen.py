"""Backend ``procgen``: the 16 Procgen games (Cobbe et al. 2020) through procgen-mirror's gym3 API.

gym3 semantics, translated to the same-step contract: after ``act(a)``, ``observe()`` returns
``(reward, obs, first)`` where ``reward`` belongs to the step just taken and ``first`` marks
slots whose episode ended on that step and that already show the next episode's first
observation. So ``terminated = first``, and ``reward`` needs no shifting.

What procgen cannot give:
- the final observation of an ended episode (gym3 autoresets inside C++): ``final_obs`` is None;
- the reason an episode ended: a game's own time limit (1000 steps in coinrun) also comes out
  as ``terminated``, as in procgen's baselines; ``truncated`` is always False;
- resetting one slot: so ``max_episode_steps`` is refused, and ``reset`` rebuilds the whole
  env (a few ms once the assets are loaded); a seed seeds the whole batch (``rand_seed``),
  not slot by slot.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from mtmoe.tasks.backend import BackendSpec, StepResult, register_backend


@dataclass(frozen=True)
class ProcgenOptions:
    distribution_mode: str = "easy"
    """Level difficulty: 'easy', 'hard', 'extreme', 'memory' or 'exploration'."""
    num_levels: int = 0
    """Number of distinct levels to draw from (0: unlimited)."""
    start_level: int = 0
    """Seed of the first level; levels are start_level .. start_level + num_levels - 1."""
    use_backgrounds: bool = True
    """Draw the games' background images (False: plain black)."""
    restrict_themes: bool = False
    """One visual theme per game instead of several."""
    use_monochrome_assets: bool = False
    """Monochrome rectangles instead of sprites."""
    center_agent: bool = True
    """The view follows the agent (False: the whole level, in games that allow it)."""
    use_sequential_levels: bool = False
    """Reaching the end of a level continues to the next one instead of ending the episode."""


def _import_procgen():
    # procgen imports the old `gym`, which prints a deprecation banner on stderr; we never use it
    with contextlib.redirect_stderr(io.StringIO()):
        import procgen
    return procgen


def combo_name(combo: tuple[str, ...]) -> str:
    return "+".join(combo) if combo else "NOOP"


class ProcgenVecEnv:
    """``num_envs`` copies of one Procgen game as one gym3 env, obs (n, 3, 64, 64) uint8."""

    def __init__(self, env: str, num_envs: int, options: ProcgenOptions, max_episode_steps: int | None):
        if max_episode_steps is not None:
            raise ValueError("procgen cannot cut single episodes (gym3 has no per-slot reset); "
                             "its games end episodes themselves: leave max_episode_steps unset")
        self.procgen = _import_procgen()
        if env not in self.procgen.env.ENV_NAMES:  # an unknown name aborts the process in C++
            raise ValueError(f"no Procgen game {env!r}; choose from {', '.join(self.procgen.env.ENV_NAMES)}")
        self.game, self.options, self.num_envs = env, options, num_envs
        self.env = self._build(seed=None)
        names = tuple(combo_name(c) for c in self.env.combos)
        self.spec = BackendSpec(obs_kind="pixels", obs_shape=(3, 64, 64), action_kind="discrete",
                                n_actions=len(names), action_names=names)
        self.stepped = False

    def _build(self, seed: int | None, **extra):
        o = self.options
        levels = {} if o.distribution_mode == "exploration" else (  # exploration fixes its one level
            dict(num_levels=o.num_levels, start_level=o.start_level))
        return self.procgen.ProcgenGym3Env(
            num=self.num_envs, env_name=self.game, distribution_mode=o.distribution_mode,
            use_backgrounds=o.use_backgrounds, restrict_themes=o.restrict_themes,
            use_monochrome_assets=o.use_monochrome_assets, center_agent=o.center_agent,
            use_sequential_levels=o.use_sequential_levels,
            rand_seed=None if seed is None else seed % 2**31,  # procgen takes a non-negative int32
            **levels, **extra,
        )

    @staticmethod
    def _chw(rgb: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None or self.stepped:  # gym3 cannot reset: start a new env
            self.env.close()
            self.env = self._build(seed)
            self.stepped = False
        _, ob, _ = self.env.observe()
        return self._chw(ob["rgb"])

    def step(self, actions: np.ndarray) -> StepResult:
        self.env.act(np.asarray(actions, np.int32))
        self.stepped = True
        reward, ob, first = self.env.observe()
        first = first.astype(bool)
        return StepResult(obs=self._chw(ob["rgb"]), reward=reward.astype(np.float32), terminated=first,
                          truncated=np.zeros(self.num_envs, bool), episode_end=first.copy(), final_obs=None)

    def close(self) -> None:
        self.env.close()


register_backend("procgen", ProcgenVecEnv, ProcgenOptions,
                 describe="Procgen games via procgen-mirror's gym3 API (64x64 RGB, 15 actions)")
