"""Tokenizers: features -> tokens (B, m, d) for an MoE layer.

On a feature map (B, C, h, w) (Obando-Ceron et al. 2024, Dopamine labs/moes):
  per_conv    h*w tokens of C features (one token per spatial position; the default)
  per_feature C tokens of h*w features (one token per feature map)
  per_sample  1 token of C*h*w features
  per_patch   a learned p x p / stride p conv embeds each patch: (h//p)*(w//p) tokens of patch_dim
On a feature vector (B, D):
  split (and per_conv / per_patch)  num_tokens tokens of ceil(D / num_tokens) (zero-padded)
  per_sample  1 token of D;  per_feature  D tokens of 1
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import NetConfig
from .layers import init_layer
from .registry import get_tokenizer, register_tokenizer


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous.

    A tokenizer that transposes a feature map would hand the torso a transposed gradient, and
    the torso's elementwise backward kernels (its activation's) run several times slower on that
    than on a contiguous one (CPU, a (256, 16, 8, 8) map: ReLU backward ~0.9 ms instead of
    ~0.1 ms; the copy costs ~0.05 ms).
    """

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


class Tokenizer(nn.Module):
    num_tokens: int
    token_dim: int
    kind: str

    def describe(self) -> str:
        return f"{self.kind}: {self.num_tokens} tokens x {self.token_dim}"


class SplitTokens(Tokenizer):
    """(B, D) -> (B, k, ceil(D/k)), zero-padding D up to a multiple of k."""

    kind = "split"

    def __init__(self, dim: int, k: int):
        super().__init__()
        k = max(1, min(k, dim))
        self.num_tokens, self.token_dim = k, math.ceil(dim / k)
        self.pad = self.num_tokens * self.token_dim - dim

    def forward(self, x):
        x = x.flatten(1)
        if self.pad:
            x = F.pad(x, (0, self.pad))
        return x.view(x.shape[0], self.num_tokens, self.token_dim)


class PerConv(Tokenizer):
    kind = "per_conv"

    def __init__(self, c: int, h: int, w: int):
        super().__init__()
        self.num_tokens, self.token_dim = h * w, c

    def forward(self, x):  # (B, C, h, w) -> (B, h*w, C)
        return _ContiguousGrad.apply(x).flatten(2).transpose(1, 2)


class PerFeature(Tokenizer):
    kind = "per_feature"

    def __init__(self, c: int, h: int, w: int):
        super().__init__()
        self.num_tokens, self.token_dim = c, h * w

    def forward(self, x):  # (B, C, h, w) -> (B, C, h*w)
        return x.flatten(2)


class PerSample(Tokenizer):
    kind = "per_sample"

    def __init__(self, dim: int):
        super().__init__()
        self.num_tokens, self.token_dim = 1, dim

    def forward(self, x):  # (B, ...) -> (B, 1, D)
        return x.flatten(1).unsqueeze(1)


class PerPatch(Tokenizer):
    kind = "per_patch"

    def __init__(self, c: int, h: int, w: int, patch: int, dim: int, ortho: bool):
        super().__init__()
        if h < patch or w < patch:
            raise ValueError(f"per_patch: patch {patch} larger than the {h}x{w} feature map")
        self.embed = init_layer(nn.Conv2d(c, dim, patch, stride=patch), 1.0, ortho)
        self.num_tokens, self.token_dim = (h // patch) * (w // patch), dim

    def forward(self, x):  # (B, C, h, w) -> (B, h'*w', dim)
        # The conv (kernel = stride = patch) as patchify + one matmul, same values: on CPU its
        # forward + backward takes half the time of the convolution's (whose input gradient is
        # slow on small maps). Patchify = two copies with long contiguous runs (channels last,
        # then patch rows side by side); the weight is permuted to match.
        B, c, h, w = x.shape
        p = self.embed.kernel_size[0]
        hp, wp = h // p, w // p
        x = _ContiguousGrad.apply(x)[:, :, : hp * p, : wp * p].permute(0, 2, 3, 1).contiguous()  # (B, h, w, c)
        x = x.view(B, hp, p, wp, p * c).transpose(2, 3).reshape(B * hp * wp, p * p * c)  # (u, v, c) per patch
        weight = self.embed.weight.permute(0, 2, 3, 1).reshape(self.token_dim, p * p * c)
        return torch.addmm(self.embed.bias, x, weight.t()).view(B, hp * wp, -1)

    def describe(self) -> str:
        k = self.embed.kernel_size[0]
        return f"per_patch ({k}x{k}): {self.num_tokens} tokens x {self.token_dim}"


def _vector(in_shape, cfg: NetConfig, kind: str) -> Tokenizer:
    d = math.prod(in_shape)
    if kind == "per_sample":
        return PerSample(d)
    if kind == "per_feature":
        return SplitTokens(d, d)
    return SplitTokens(d, cfg.num_tokens)


def _map_or_vector(kind: str, make_map):
    def builder(in_shape, cfg: NetConfig) -> Tokenizer:
        if len(in_shape) != 3:
            return _vector(in_shape, cfg, kind)
        return make_map(*in_shape, cfg)
    return builder


register_tokenizer("per_conv", _map_or_vector("per_conv", lambda c, h, w, cfg: PerConv(c, h, w)))
register_tokenizer("per_feature", _map_or_vector("per_feature", lambda c, h, w, cfg: PerFeature(c, h, w)))
register_tokenizer("per_sample", _map_or_vector("per_sample", lambda c, h, w, cfg: PerSample(c * h * w)))
register_tokenizer("per_patch", _map_or_vector(
    "per_patch", lambda c, h, w, cfg: PerPatch(c, h, w, cfg.patch_size, cfg.patch_dim or c, cfg.ortho_init)))
register_tokenizer("split", lambda in_shape, cfg: _vector(in_shape, cfg, "split"))


def build_tokenizer(in_shape: tuple[int, ...], cfg: NetConfig) -> Tokenizer:
    """The configured tokenizer for features of ``in_shape`` ('auto': per_conv on maps, split on vectors)."""
    name = cfg.tokenizer
    if name == "auto":
        name = "per_conv" if len(in_shape) == 3 else "split"
    return get_tokenizer(name)(tuple(in_shape), cfg)
