"""Backend ``ale``: Atari 2600 games through ale-py's native C++ vector env.

``ale_py.AtariVectorEnv`` does the usual preprocessing in C++ threads (max-pool over the last
two frames of each frameskip, resize, grayscale, frame stack, no-op starts, FIRE at reset) and
autoresets in the same step, putting the ended episodes' last observations in
``info["final_obs"]``. Rewards stay unclipped: the mixture clips and keeps raw scores.

Life loss: ale-py's ``episodic_life`` resets the whole game on every life loss (the game's
score is lost) and ``life_loss_info`` reports ``terminated`` on a life loss *and* at game over,
indistinguishably. So we keep ALE's flags for game over (``episode_end``) and find life losses
ourselves from ``info["lives"]``; on a life loss ``final_obs`` is the current observation,
since the game goes on from it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import numpy as np

from mtmoe.tasks.backend import BackendSpec, StepResult, raises_for_unknown, register_backend

FRAMES_PER_EPISODE = 108_000  # ALE v5's default cap: 30 minutes of play at 60 Hz


@dataclass(frozen=True)
class AleOptions:
    frameskip: int = 4
    """Emulator frames per agent step (the observation max-pools the last two)."""
    repeat_action_probability: float = 0.25
    """Sticky actions: chance of repeating the previous action on each frame (ALE v5)."""
    full_action_space: bool = False
    """True: all 18 joystick actions; False: the game's minimal action set."""
    noop_max: int = 30
    """Reset plays a random number of no-ops, up to this many (0: none)."""
    stack: int = 4
    """Frames stacked along the channel axis."""
    size: int = 84
    """Height and width the frames are resized to."""
    grayscale: bool = True
    """One channel per frame; False gives RGB (three channels per frame)."""
    terminal_on_life_loss: bool = False
    """`terminated` on every life loss; the game goes on and `episode_end` waits for game over."""
    use_fire_reset: bool = True
    """Press FIRE after reset in games that need it to start."""
    num_threads: int = 0
    """Emulator worker threads (0: chosen by ALE from the cores and envs)."""


def rom_name(env: str) -> str:
    """'Breakout', 'MsPacman', 'ALE/MsPacman-v5' or 'ms_pacman' -> ale-py's 'ms_pacman'."""
    from ale_py import roms

    name = re.sub(r"-v\d+$", "", env.removeprefix("ALE/"))
    if not name.islower():
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    known = roms.get_all_rom_ids()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"no ALE ROM named {name!r}{hint}")
    return name


class AleVecEnv:
    """``num_envs`` copies of one Atari game, same-step autoreset, raw rewards."""

    def __init__(self, env: str, num_envs: int, options: AleOptions, max_episode_steps: int | None):
        from ale_py import AtariVectorEnv  # loads the emulator: keep it out of module import

        o = options
        frames = max_episode_steps * o.frameskip if max_episode_steps else FRAMES_PER_EPISODE
        self.env = AtariVectorEnv(
            rom_name(env), num_envs, num_threads=o.num_threads, max_num_frames_per_episode=frames,
            repeat_action_probability=o.repeat_action_probability, full_action_space=o.full_action_space,
            autoreset_mode="SameStep", img_height=o.size, img_width=o.size, grayscale=o.grayscale,
            stack_num=o.stack, frameskip=o.frameskip, noop_max=o.noop_max, use_fire_reset=o.use_fire_reset,
            reward_clipping=False, episodic_life=False, life_loss_info=False,
        )
        names = tuple(a.name for a in self.env.ale.get_action_set())
        channels = o.stack if o.grayscale else 3 * o.stack
        self.spec = BackendSpec(obs_kind="pixels", obs_shape=(channels, o.size, o.size),
                                action_kind="discrete", n_actions=len(names), action_names=names)
        self.num_envs = num_envs
        self.life_loss = o.terminal_on_life_loss
        self.lives = np.zeros(num_envs, np.int32)

    def _chw(self, obs: np.ndarray) -> np.ndarray:
        if obs.ndim == 5:  # RGB comes as (n, stack, H, W, 3): fold colour into channels
            n, s, h, w, c = obs.shape
            obs = np.ascontiguousarray(obs.transpose(0, 1, 4, 2, 3)).reshape(n, s * c, h, w)
        return obs

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, info = self.env.reset(seed=seed)
        self.lives = info["lives"].copy()
        return self._chw(obs)

    def step_async(self, actions: np.ndarray) -> None:
        """Start a step on ALE's thread pool; the mixture starts every task before waiting."""
        self.env.send(np.asarray(actions, np.int64))

    def step(self, actions: np.ndarray) -> StepResult:
        self.step_async(actions)
        return self.step_wait()

    def step_wait(self) -> StepResult:
        obs, reward, terminated, truncated, info = self.env.recv()
        obs = self._chw(obs)
        game_over = terminated | truncated
        final_obs = self._chw(info["final_obs"]) if game_over.any() else None
        lives = info["lives"]
        if self.life_loss:
            lost = (lives < self.lives) & ~game_over
            if lost.any():
                if final_obs is None:
                    final_obs = obs.copy()
                else:
                    final_obs[lost] = obs[lost]
                terminated = terminated | lost
        self.lives = lives.copy()
        return StepResult(obs=obs, reward=reward.astype(np.float32), terminated=terminated,
                          truncated=truncated & ~terminated, episode_end=game_over, final_obs=final_obs)

    def close(self) -> None:
        self.env.close()


register_backend("ale", AleVecEnv, AleOptions, check_env=raises_for_unknown(rom_name),
                 describe="Atari 2600 via ale-py's C++ vector env (84x84 gray, stack 4, sticky actions)")
