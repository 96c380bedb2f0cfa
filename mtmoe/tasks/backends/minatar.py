"""Backend ``minatar``: the five MinAtar games (Young & Tian 2019), vectorized by a plain loop.

A loop over ``minatar.Environment`` objects writing into one preallocated buffer outran
gymnasium's ``SyncVectorEnv`` over MinAtar's gym envs (up to ~1.5x on Breakout with 32 envs;
within noise on SpaceInvaders, whose game logic dominates; ``bench/bench_backends.py
--baselines``), so the vector env is that loop. ``MinAtarEnv`` is the single-env gymnasium face of the same game
(MinAtar's own gym env fails gymnasium's ``check_env``: its reset does not seed ``np_random``).

Observations are channels first, (C, 10, 10) uint8 0/1 with C = 4..10 by game. Action names map
MinAtar's letters to ALE's names, so a semantic union lines MinAtar up with Atari.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from mtmoe.tasks.backend import BackendSpec, StepResult, raises_for_unknown, register_backend

GAMES = {"Asterix": "asterix", "Breakout": "breakout", "Freeway": "freeway",
         "Seaquest": "seaquest", "SpaceInvaders": "space_invaders"}
LETTER_NAMES = {"n": "NOOP", "l": "LEFT", "u": "UP", "r": "RIGHT", "d": "DOWN", "f": "FIRE"}


@dataclass(frozen=True)
class MinAtarOptions:
    sticky_action_prob: float = 0.1
    """Chance the previous action repeats instead of the chosen one (MinAtar's default)."""
    difficulty_ramping: bool = True
    """Games speed up as the episode goes on (MinAtar's default)."""
    minimal_action_set: bool = True
    """Only the game's meaningful actions (the v1 envs); False gives all six (v0)."""


def game_module(env: str) -> str:
    """'Breakout', 'MinAtar/Breakout-v1' or 'breakout' -> MinAtar's module name 'breakout'."""
    name = env.removeprefix("MinAtar/").split("-v")[0]
    if name in GAMES.values():
        return name
    if name not in GAMES:
        raise ValueError(f"no MinAtar game {env!r}; choose from {', '.join(GAMES)}")
    return GAMES[name]


class MinAtarEnv(gym.Env):
    """One MinAtar game as a gymnasium env with channels-first uint8 observations."""

    def __init__(self, game: str, sticky_action_prob: float = 0.1, difficulty_ramping: bool = True,
                 minimal_action_set: bool = True):
        from minatar import Environment  # imports matplotlib: keep it out of module import

        self.game = Environment(game_module(game), sticky_action_prob, difficulty_ramping)
        self.action_set = self.game.minimal_action_set() if minimal_action_set else list(range(6))
        self.action_names = tuple(LETTER_NAMES[self.game.env.action_map[a]] for a in self.action_set)
        channels = self.game.state_shape()[2]
        self.observation_space = gym.spaces.Box(0, 1, (channels, 10, 10), np.uint8)
        self.action_space = gym.spaces.Discrete(len(self.action_set))

    def restart(self) -> None:
        """Start a new episode; sticky actions do not carry over from the last one."""
        self.game.last_action = 0
        self.game.reset()

    def observe(self) -> np.ndarray:
        return self.game.state().transpose(2, 0, 1).view(np.uint8).copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.game.seed(seed)  # the same stream as MinAtar's own Environment.seed
        self.restart()
        return self.observe(), {}

    def step(self, action):
        reward, done = self.game.act(self.action_set[int(action)])
        return self.observe(), float(reward), bool(done), False, {}


class MinAtarVecEnv:
    """``num_envs`` copies of one game stepped in a loop, same-step autoreset."""

    exact_pickle = True  # plain Python state: a pickled copy continues exactly (run checkpoints)

    def __init__(self, env: str, num_envs: int, options: MinAtarOptions, max_episode_steps: int | None):
        o = options
        self.envs = [MinAtarEnv(env, o.sticky_action_prob, o.difficulty_ramping, o.minimal_action_set)
                     for _ in range(num_envs)]
        first = self.envs[0]
        self.spec = BackendSpec(obs_kind="pixels", obs_shape=first.observation_space.shape, obs_high=1.0,
                                action_kind="discrete", n_actions=len(first.action_set),
                                action_names=first.action_names)
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.steps = np.zeros(num_envs, np.int64)
        channels = first.observation_space.shape[0]
        self.state = np.zeros((num_envs, 10, 10, channels), bool)  # MinAtar's HWC, transposed once per step

    @staticmethod
    def _chw(state: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(state.transpose(0, 3, 1, 2)).view(np.uint8)

    def reset(self, seed: int | None = None) -> np.ndarray:
        for i, env in enumerate(self.envs):
            env.reset(seed=None if seed is None else seed + i)
            self.state[i] = env.game.state()
        self.steps[:] = 0
        return self._chw(self.state)

    def step(self, actions: np.ndarray) -> StepResult:
        self.steps += 1
        cut = self.steps >= self.max_episode_steps if self.max_episode_steps else np.zeros(self.num_envs, bool)
        cut_list, rewards, dones, final = cut.tolist(), [], [], None  # python lists: cheaper per item
        for i, (env, a) in enumerate(zip(self.envs, np.asarray(actions).tolist())):
            game = env.game
            reward, done = game.act(env.action_set[a])
            rewards.append(reward)
            dones.append(done)
            if done or cut_list[i]:
                if final is None:
                    final = np.zeros_like(self.state)
                final[i] = game.state()
                env.restart()
            self.state[i] = game.state()
        terminated = np.array(dones, bool)
        truncated = cut & ~terminated
        ended = terminated | truncated
        self.steps[ended] = 0
        return StepResult(obs=self._chw(self.state), reward=np.array(rewards, np.float32), terminated=terminated,
                          truncated=truncated, episode_end=ended, final_obs=None if final is None else self._chw(final))

    def close(self) -> None:
        self.envs.clear()


def tensor_minatar(env: str, num_envs: int, options: MinAtarOptions, max_episode_steps: int | None, device):
    """The same game as batched torch ops on `device` (mtmoe.tasks.tensor_minatar, checked against minatar)."""
    from mtmoe.tasks.tensor_minatar.vec import TensorMinAtarVec

    o = options
    return TensorMinAtarVec(env, num_envs, device, o.sticky_action_prob, o.difficulty_ramping, o.minimal_action_set,
                            max_episode_steps)


register_backend("minatar", MinAtarVecEnv, MinAtarOptions, check_env=raises_for_unknown(game_module),
                 device_factory=tensor_minatar,
                 describe="MinAtar 10x10 games (Breakout, SpaceInvaders, Asterix, Freeway, Seaquest)")
