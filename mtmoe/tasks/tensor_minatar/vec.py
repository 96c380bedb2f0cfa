"""``TensorMinAtarVec``: N copies of one tensor MinAtar game as a vector env on one device.

It adds to a :class:`~mtmoe.tasks.tensor_minatar.game.TensorGame` what ``minatar.Environment``
and the ``minatar`` backend add to a game: sticky actions, the minimal action set, a per-env
time limit and same-step autoreset. Everything stays on the device: a step draws one block of
uniforms from a ``torch.Generator`` on the device (sticky column, then the game's draws, then the
reset draws for envs that end) and runs without a host sync.

Semantics follow minatar 1.0.15's ``Environment``:

- sticky actions: ``if rand() < p: a = last_action``; ``last_action = a``, in the full action set,
  the sticky uniform drawn before the game's;
- ``last_action`` is *not* cleared when an episode ends (minatar's ``Environment.reset`` leaves it
  alone), so the first action of an autoreset episode can repeat the last one of the previous
  episode. Only :meth:`TensorMinAtarVec.reset` (a restart of the whole vector env) clears it.
  (The numpy ``minatar`` backend's ``MinAtarEnv.restart`` clears it per episode: the two differ
  there.)

``compile=True`` runs a step (after the uniforms are drawn) as one ``torch.compile``d graph, the
same values as eager (tested). On a CPU inductor's vectorized C++ is turned off for it
(``cpp.simdlen = 1``): for these games it ran 4-8x slower than eager, failed to build for
Breakout and SpaceInvaders and gave wrong Seaquest states (torch 2.13, AMD EPYC with AVX2). Scalar code pays for
some games only (1,024 envs, one thread: Asterix 2.5x, Freeway 1.9x eager; Seaquest 1.1x;
SpaceInvaders 0.9x, Breakout 0.5x), so it is an option, off by default; ``bench_device_env.py
--compile`` measures it. Its first step compiles (5-20 s on a CPU).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch

from mtmoe.tasks.backend import BackendSpec
from mtmoe.tasks.backends.minatar import LETTER_NAMES, game_module
from mtmoe.tasks.tensor_minatar.batch_ops import select_rows
from mtmoe.tasks.tensor_minatar.game import ACTION_LETTERS, GAMES, TensorGame


def game_class(game: str) -> type[TensorGame]:
    """'Breakout', 'MinAtar/Breakout-v1' or 'breakout' -> the registered tensor game class."""
    module = game_module(game)
    if module not in GAMES:  # games register themselves on import
        importlib.import_module(f"mtmoe.tasks.tensor_minatar.{module}")
    return GAMES[module]


@dataclass
class TensorStepResult:
    """One step of all envs; every field is a tensor on the env's device."""

    obs: torch.Tensor
    """(N, C, 10, 10) uint8: next observations (first of a new episode where one ended)."""
    reward: torch.Tensor
    """(N,) float32."""
    terminated: torch.Tensor
    """(N,) bool: the game ended."""
    truncated: torch.Tensor
    """(N,) bool: the time limit ended the episode (and the game did not)."""
    episode_end: torch.Tensor
    """(N,) bool: terminated | truncated."""
    final_obs: torch.Tensor
    """(N, C, 10, 10) uint8: the observation before any autoreset (in ended rows, the last one
    of the ended episode; elsewhere equal to ``obs``)."""


class TensorMinAtarVec:
    """``num_envs`` copies of one MinAtar game, batched as torch tensors on ``device``."""

    def __init__(self, game: str, num_envs: int, device: torch.device | str = "cpu",
                 sticky_action_prob: float = 0.1, difficulty_ramping: bool = True,
                 minimal_action_set: bool = True, max_episode_steps: int | None = None,
                 seed: int | None = None, compile: bool = False):
        cls = game_class(game)
        self.num_envs, self.device = num_envs, torch.device(device)
        self.game = cls(num_envs, self.device, ramping=difficulty_ramping)
        self.sticky_action_prob, self.max_episode_steps = sticky_action_prob, max_episode_steps
        letters = cls.minimal_actions if minimal_action_set else ACTION_LETTERS
        self.action_map = torch.tensor([ACTION_LETTERS.index(a) for a in letters], device=self.device)
        self.spec = BackendSpec(obs_kind="pixels", obs_shape=(len(cls.channels), 10, 10), obs_high=1.0,
                                action_kind="discrete", n_actions=len(letters),
                                action_names=tuple(LETTER_NAMES[a] for a in letters))
        self.n_step_draws, self.n_reset_draws = len(cls.draws), len(cls.reset_draws)
        self.generator = torch.Generator(device=self.device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.steps = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.last_action = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self._all = torch.ones(num_envs, dtype=torch.bool, device=self.device)
        self._never = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self.reset()
        # A game without reset draws starts every episode in the same state: reuse its first
        # observation instead of observing again after an autoreset.
        self._start_obs = None if self.n_reset_draws else self.game.observe()[:1].view(torch.uint8).clone()
        self._step = self._tensor_step
        if compile:  # scalar C++ on a CPU: see the module docstring
            options = {"cpp.simdlen": 1} if self.device.type == "cpu" else None
            self._step = torch.compile(self._tensor_step, dynamic=False, options=options)

    def _uniforms(self, k: int) -> torch.Tensor:
        return torch.rand(self.num_envs, k, generator=self.generator, device=self.device)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Restart every env (and clear sticky actions); ``seed`` reseeds the generator first."""
        if seed is not None:
            self.generator.manual_seed(seed)
        self.game.reset(self._all, self._uniforms(self.n_reset_draws))
        self.steps.zero_()
        self.last_action.zero_()
        return self.game.observe().view(torch.uint8)

    def step(self, actions: torch.Tensor) -> TensorStepResult:
        """``actions``: (N,) long in the (minimal or full) action set, on the device."""
        u = self._uniforms(1 + self.n_step_draws + self.n_reset_draws)
        k = 1 + self.n_step_draws
        return self.step_with_uniforms(actions, u[:, 0], u[:, 1:k], u[:, k:])

    def step_with_uniforms(self, actions: torch.Tensor, u_sticky: torch.Tensor, u_game: torch.Tensor,
                           u_reset: torch.Tensor) -> TensorStepResult:
        """A step on given uniforms: ``u_sticky`` (N,), ``u_game`` (N, len(draws)), ``u_reset``
        (N, len(reset_draws)); :meth:`step` draws them. Tests replay minatar on the same numbers."""
        return TensorStepResult(*self._step(actions, u_sticky, u_game, u_reset))

    def _tensor_step(self, actions: torch.Tensor, u_sticky: torch.Tensor, u_game: torch.Tensor,
                     u_reset: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The step as pure tensor code, fields in TensorStepResult's order (what ``compile`` compiles)."""
        chosen = self.action_map[actions]
        action = torch.where(u_sticky < self.sticky_action_prob, self.last_action, chosen)
        self.last_action.copy_(action)
        reward, terminated = self.game.step(action, u_game)
        self.steps += 1
        if self.max_episode_steps:
            truncated = (self.steps >= self.max_episode_steps) & ~terminated
        else:
            truncated = self._never
        ended = terminated | truncated
        final_obs = self.game.observe().view(torch.uint8)
        self.game.reset(ended, u_reset)
        self.steps.masked_fill_(ended, 0)
        if self._start_obs is None:
            obs = self.game.observe().view(torch.uint8)
        else:
            obs = select_rows(ended, self._start_obs, final_obs)
        return obs, reward, terminated, truncated.clone(), ended, final_obs

    def difficulty(self) -> torch.Tensor:
        """(N,) long: each env's difficulty ramp (minatar's ``difficulty_ramp()``)."""
        return self.game.difficulty()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Game state (keys ``game.<name>``), step counters, last actions and generator state."""
        state = {f"game.{k}": v.clone() for k, v in self.game.state_dict().items()}
        state.update(steps=self.steps.clone(), last_action=self.last_action.clone(),
                     generator=self.generator.get_state())
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a :meth:`state_dict`; the env then continues exactly as the saved one would."""
        self.game.load_state_dict({k.removeprefix("game."): v for k, v in state.items() if k.startswith("game.")})
        self.steps.copy_(state["steps"])
        self.last_action.copy_(state["last_action"])
        self.generator.set_state(state["generator"])

    def close(self) -> None:
        pass
