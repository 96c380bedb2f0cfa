"""Torsos: observation -> features. MLP, MinAtar CNN, Nature CNN, IMPALA CNN.

Each torso has ``out_shape`` ((C, h, w) for a feature map, (D,) for a vector) and
``forward_features(x) -> (out, {layer_name: activation})`` for plasticity probes.
Inputs are float: pixels already scaled to [0, 1] by the tower.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import NetConfig
from .layers import HIDDEN_GAIN, act_fn, init_layer
from .registry import register_torso

DEFAULT_HIDDEN = {"mlp": (256, 256), "minatar": (256,), "nature": (512,), "impala": (256,)}


def auto_torso(obs_shape: tuple[int, ...]) -> str:
    """vector -> mlp; pixels with H, W <= 16 -> minatar; >= 72 (84x84) -> nature; else (64x64) impala."""
    if len(obs_shape) != 3:
        return "mlp"
    h, w = obs_shape[1:]
    if max(h, w) <= 16:
        return "minatar"
    if min(h, w) >= 72:
        return "nature"
    return "impala"


def default_hidden(torso: str) -> tuple[int, ...]:
    return DEFAULT_HIDDEN.get(torso, (256,))


class _Torso(nn.Module):
    out_shape: tuple[int, ...]

    def _set_out_shape(self, in_shape: tuple[int, ...]) -> None:
        with torch.no_grad():
            self.out_shape = tuple(self.forward(torch.zeros(1, *in_shape)).shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x, capture=False)[0]

    def describe(self) -> str:
        return f"{self.name:8s} {tuple(self.in_shape)} -> {tuple(self.out_shape)}"


class MLPTorso(_Torso):
    """Flatten, then ``sizes`` dense layers (none by default: the tower's hidden layers follow)."""

    name = "mlp"

    def __init__(self, obs_shape: tuple[int, ...], sizes: tuple[int, ...] = (), act: str = "relu",
                 ortho: bool = True):
        super().__init__()
        self.in_shape = obs_shape
        dims = [math.prod(obs_shape), *sizes]
        self.layers = nn.ModuleList(init_layer(nn.Linear(a, b), HIDDEN_GAIN, ortho) for a, b in zip(dims, dims[1:]))
        self.act = act_fn(act)
        self.out_shape = (dims[-1],)

    def forward_features(self, x, capture=True):
        feats = {}
        x = x.flatten(1)
        for i, layer in enumerate(self.layers):
            x = self.act(layer(x))
            if capture:
                feats[f"fc{i}"] = x
        return x, feats


class ConvTorso(_Torso):
    """A stack of (conv, relu) layers; ``spec`` = [(out_channels, kernel, stride, padding)]."""

    def __init__(self, name: str, obs_shape: tuple[int, ...], spec, ortho: bool = True):
        super().__init__()
        self.name, self.in_shape = name, obs_shape
        c = obs_shape[0]
        convs = []
        for out, k, s, p in spec:
            convs.append(init_layer(nn.Conv2d(c, out, k, s, p), HIDDEN_GAIN, ortho))
            c = out
        self.convs = nn.ModuleList(convs)
        self._set_out_shape(obs_shape)

    def forward_features(self, x, capture=True):
        feats = {}
        for i, conv in enumerate(self.convs):
            x = torch.relu(conv(x))
            if capture:
                feats[f"conv{i}"] = x
        return x, feats


class _ResBlock(nn.Module):
    def __init__(self, c: int, ortho: bool):
        super().__init__()
        self.conv0 = init_layer(nn.Conv2d(c, c, 3, padding=1), HIDDEN_GAIN, ortho)
        self.conv1 = init_layer(nn.Conv2d(c, c, 3, padding=1), HIDDEN_GAIN, ortho)

    def forward(self, x):
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ImpalaTorso(_Torso):
    """IMPALA CNN (Espeholt et al. 2018): per stage conv3x3 -> maxpool3x3/2 -> 2 residual blocks."""

    name = "impala"

    def __init__(self, obs_shape: tuple[int, ...], channels=(16, 32, 32), ortho: bool = True):
        super().__init__()
        self.in_shape = obs_shape
        c = obs_shape[0]
        stages = []
        for out in channels:
            stages.append(nn.ModuleDict({
                "conv": init_layer(nn.Conv2d(c, out, 3, padding=1), HIDDEN_GAIN, ortho),
                "res0": _ResBlock(out, ortho),
                "res1": _ResBlock(out, ortho),
            }))
            c = out
        self.stages = nn.ModuleList(stages)
        self._set_out_shape(obs_shape)

    def forward_features(self, x, capture=True):
        feats = {}
        for i, st in enumerate(self.stages):
            x = nn.functional.max_pool2d(st["conv"](x), 3, 2, padding=1)
            x = st["res1"](st["res0"](x))
            if capture:
                feats[f"stage{i}"] = torch.relu(x)
        return torch.relu(x), feats


def _mlp(obs_shape, cfg: NetConfig):
    return MLPTorso(obs_shape, tuple(cfg.mlp_torso), cfg.activation, cfg.ortho_init)


def _minatar(obs_shape, cfg: NetConfig):
    # Young & Tian (2019): one 3x3 stride-1 conv with 16 channels, no padding.
    chans = cfg.torso_channels or (16,)
    return ConvTorso("minatar", obs_shape, [(c, 3, 1, 0) for c in chans], cfg.ortho_init)


def _nature(obs_shape, cfg: NetConfig):
    # Mnih et al. (2015): 32x8x8/4, 64x4x4/2, 64x3x3/1.
    chans = cfg.torso_channels or (32, 64, 64)
    if len(chans) != 3:
        raise ValueError("the nature torso takes exactly 3 conv channel counts")
    return ConvTorso("nature", obs_shape, [(chans[0], 8, 4, 0), (chans[1], 4, 2, 0), (chans[2], 3, 1, 0)],
                     cfg.ortho_init)


def _impala(obs_shape, cfg: NetConfig):
    return ImpalaTorso(obs_shape, tuple(cfg.torso_channels or (16, 32, 32)), cfg.ortho_init)


register_torso("mlp", _mlp)
register_torso("minatar", _minatar)
register_torso("nature", _nature)
register_torso("impala", _impala)


def build_torso(name: str, obs_shape: tuple[int, ...], cfg: NetConfig) -> nn.Module:
    from .registry import get_torso

    torso = get_torso(name)(tuple(obs_shape), cfg)
    if not hasattr(torso, "out_shape"):
        raise TypeError(f"torso {name!r} must set .out_shape")
    return torso
