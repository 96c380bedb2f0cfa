"""Extension points: add an MoE kind, a torso or a tokenizer without touching core code.

    from mtmoe.nets import register_moe, register_torso, MoELayer

    class MyMoE(MoELayer): ...              # see mtmoe/nets/moe/base.py for the contract
    register_moe("mine", MyMoE)             # NetConfig(moe="mine") now builds it

    def my_torso(obs_shape, cfg):           # returns an nn.Module with .out_shape
        ...
    register_torso("mine", my_torso)        # NetConfig(torso="mine")

Built-ins register themselves when ``mtmoe.nets`` is imported.
"""

from __future__ import annotations

from typing import Any, Callable

_MOES: dict[str, type] = {}
_TORSOS: dict[str, Callable[..., Any]] = {}
_TOKENIZERS: dict[str, Callable[..., Any]] = {}


def _put(table: dict, kind: str, name: str, value: Any, overwrite: bool) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} name must be a non-empty string")
    if name in table and not overwrite:
        raise ValueError(f"{kind} {name!r} is already registered (pass overwrite=True to replace it)")
    table[name] = value


def register_moe(name: str, cls: type, *, overwrite: bool = False) -> type:
    """Register an MoE kind: ``cls(make_experts, token_dim, num_tokens, cfg)``, a MoELayer subclass."""
    from .moe.base import MoELayer

    if not (isinstance(cls, type) and issubclass(cls, MoELayer)):
        raise TypeError("an MoE kind must be a subclass of mtmoe.nets.MoELayer")
    _put(_MOES, "moe kind", name, cls, overwrite)
    return cls


def register_torso(name: str, builder: Callable[..., Any], *, overwrite: bool = False) -> Callable[..., Any]:
    """Register a torso: ``builder(obs_shape: tuple, cfg: NetConfig) -> nn.Module`` with ``.out_shape``.

    ``out_shape`` is ``(C, h, w)`` for a feature map or ``(D,)`` for a vector. The module
    receives float observations already scaled to [0, 1] (pixels) or raw (vectors).
    """
    if not callable(builder):
        raise TypeError("a torso builder must be callable")
    _put(_TORSOS, "torso", name, builder, overwrite)
    return builder


def register_tokenizer(name: str, builder: Callable[..., Any], *, overwrite: bool = False) -> Callable[..., Any]:
    """Register a tokenizer: ``builder(in_shape: tuple, cfg) -> nn.Module`` with ``.num_tokens``,
    ``.token_dim`` and ``forward(x) -> (B, num_tokens, token_dim)``."""
    if not callable(builder):
        raise TypeError("a tokenizer builder must be callable")
    _put(_TOKENIZERS, "tokenizer", name, builder, overwrite)
    return builder


def get_moe(name: str) -> type:
    try:
        return _MOES[name]
    except KeyError:
        raise KeyError(f"unknown moe kind {name!r}; registered: {sorted(_MOES)}") from None


def get_torso(name: str) -> Callable[..., Any]:
    try:
        return _TORSOS[name]
    except KeyError:
        raise KeyError(f"unknown torso {name!r}; registered: {sorted(_TORSOS)}") from None


def get_tokenizer(name: str) -> Callable[..., Any]:
    try:
        return _TOKENIZERS[name]
    except KeyError:
        raise KeyError(f"unknown tokenizer {name!r}; registered: {sorted(_TOKENIZERS)}") from None


def moe_kinds() -> list[str]:
    return list(_MOES)


def torsos() -> list[str]:
    return list(_TORSOS)


def tokenizers() -> list[str]:
    return list(_TOKENIZERS)
