"""Small shared pieces: activations, initialisation, the dense layer of a tower."""

from __future__ import annotations

import math

import torch
from torch import nn

HIDDEN_GAIN = math.sqrt(2.0)


def activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "tanh": nn.Tanh}[name]()


def act_fn(name: str):
    return {"relu": torch.relu, "tanh": torch.tanh}[name]


def init_layer(layer: nn.Module, gain: float, ortho: bool) -> nn.Module:
    """Orthogonal weights with ``gain`` and zero bias (PPO convention), or PyTorch's default."""
    if ortho:
        nn.init.orthogonal_(layer.weight, gain)
        if getattr(layer, "bias", None) is not None:
            nn.init.zeros_(layer.bias)
    return layer


def init_stacked_(weight: torch.Tensor, gain: float, ortho: bool) -> None:
    """Initialise an (E, d_in, d_out) stack of expert matrices, each like an nn.Linear."""
    with torch.no_grad():
        for e in range(weight.shape[0]):  # construction time only, never in forward
            if ortho:
                nn.init.orthogonal_(weight[e], gain)
            else:
                bound = 1.0 / math.sqrt(weight.shape[1])
                weight[e].uniform_(-bound, bound)


def count_params(module: nn.Module | None) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters())


class Dense(nn.Module):
    """Linear (+ activation) on flattened input; the dense layer of a tower."""

    def __init__(self, in_features: int, out_features: int, act: str | None, gain: float, ortho: bool):
        super().__init__()
        self.linear = init_layer(nn.Linear(in_features, out_features), gain, ortho)
        self.act = act_fn(act) if act else None
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return self.act(y) if self.act is not None else y

    def describe(self) -> str:
        return f"dense    {self.in_features} -> {self.out_features}"
