"""The contract of a tensor MinAtar game: N copies of one game as batched torch operations.

A game keeps its whole state as tensors with a leading env axis (N, ...) on one device and
changes it only by pure tensor code: no Python loop over envs, no host sync, no data-dependent
shape. Randomness enters as *uniform draws passed in*: every call gets a (N, K) float tensor
``u`` of uniforms in [0, 1), one column per random call site of minatar's game (``draws`` /
``reset_draws`` name them). The vector env draws ``u`` from a torch generator on the device; the
equality tests pass the same numbers to ``minatar`` itself (through a RandomState stand-in), so
a tensor game and ``minatar.Environment`` can be stepped side by side and compared exactly.

minatar's draws map onto uniforms as: ``rand() < p`` <-> ``u < p``; ``randint(lo, hi)`` <->
``lo + floor(u * (hi - lo))``; ``rand(k)`` / ``randint(lo, hi, k)`` <-> k columns.

Actions are indices into minatar's full action set ``"nlurdf"`` (0..5); the vector env maps
the minimal action set onto them. Observations are (N, C, 10, 10) bool planes in minatar's
channel order (its ``state()`` transposed to channels first).
"""

from __future__ import annotations

import torch

ACTION_LETTERS = "nlurdf"  # minatar's action_map: noop, left, up, right, down, fire


class TensorGame:
    """Base class of the five games. Subclasses set the class attributes and implement the methods."""

    name: str
    """minatar's module name: 'breakout', 'space_invaders', 'asterix', 'freeway', 'seaquest'."""
    channels: tuple[str, ...]
    """minatar's channel names in channel order."""
    minimal_actions: str
    """minatar's minimal action set as letters of ACTION_LETTERS, in minatar's order (e.g. 'nlr')."""
    draws: tuple[str, ...] = ()
    """Names of the uniform columns one ``step`` consumes (its random call sites, in order)."""
    reset_draws: tuple[str, ...] = ()
    """Names of the uniform columns one ``reset`` consumes."""

    def __init__(self, num_envs: int, device: torch.device | str = "cpu", ramping: bool = True):
        self.num_envs, self.device, self.ramping = num_envs, torch.device(device), ramping

    def reset(self, mask: torch.Tensor, u: torch.Tensor) -> None:
        """Start a new episode in the envs where ``mask`` (N,) bool is set; others are untouched.
        ``u``: (N, len(reset_draws)) uniforms (rows of unmasked envs are ignored)."""
        raise NotImplementedError

    def step(self, action: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One minatar ``act`` in every env: ``action`` (N,) long in 0..5, ``u`` (N, len(draws)).
        Returns (reward (N,) float32, terminal (N,) bool). An env already terminal stays as it is
        and returns reward 0, terminal True, as minatar does."""
        raise NotImplementedError

    def observe(self) -> torch.Tensor:
        """(N, C, 10, 10) bool: minatar's ``state()`` of every env, channels first. A new tensor
        each call (no view of the game's state): callers may keep it."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every state tensor by name (checkpoints; tests compare it with minatar's attributes)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.Tensor)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            getattr(self, k).copy_(v)

    def difficulty(self) -> torch.Tensor:
        """(N,) long: minatar's ``difficulty_ramp()`` (0 for games that do not ramp)."""
        return torch.zeros(self.num_envs, dtype=torch.long, device=self.device)


def randint(u: torch.Tensor, low, high) -> torch.Tensor:
    """minatar's ``randint(low, high)`` from uniforms u: low + floor(u * (high - low)), long.
    ``high`` may be a tensor (a per-env count, e.g. free slots). Clamped to high - 1: a float32 u
    just below 1 can round u * (high - low) up to a whole number."""
    v = (low + torch.floor(u * (high - low))).long()
    # bound max(high - 1, low) without making device tensors of Python ints (a host sync on CUDA)
    if isinstance(high, torch.Tensor):
        top = torch.maximum(high - 1, low) if isinstance(low, torch.Tensor) else (high - 1).clamp(min=low)
        return torch.minimum(v, top)
    if isinstance(low, torch.Tensor):
        return torch.minimum(v, low.clamp(min=high - 1))
    return v.clamp(max=max(high - 1, low))


GAMES: dict[str, type[TensorGame]] = {}


def register_game(cls: type[TensorGame]) -> type[TensorGame]:
    """Class decorator: make a game available to the tensor backend under its minatar name."""
    GAMES[cls.name] = cls
    return cls
