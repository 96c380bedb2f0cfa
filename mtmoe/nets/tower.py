"""A tower (actor, critic or Q): [torso] -> hidden layers -> head, some of them MoE layers.

With L hidden sizes the layers are hidden0 .. hidden{L-1}, head. Position picks the MoE ones:
  penultimate  hidden{L-1} (the layer feeding the head; the papers' default)
  final        head
  all          every hidden layer and the head
  big          the whole tower: one MoE whose experts are complete towers (torso included
               unless the encoder is shared), routing the whole observation as one token
An MoE layer replacing hidden{i} tokenizes its input (a feature map with the configured
tokenizer, a vector split into num_tokens), keeps the token size (d -> expert_width -> d,
as in Dopamine labs/moes), and hands its output tokens to the next layer (flattened for a
dense layer, as tokens for another MoE). An MoE head maps tokens to the outputs and averages
over tokens. Conditioning inputs (one-hot task id, the action of a Q network) join the first
layer: concatenated to the flattened features, or to every token.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .capture import ProbeCapture
from .config import NetConfig
from .experts import ExpertMLP, ExpertTower
from .layers import HIDDEN_GAIN, Dense, count_params
from .moe.base import MoELayer
from .registry import get_moe
from .tokenizers import build_tokenizer


class DenseBlock(nn.Module):
    def __init__(self, in_features: int, out_features: int, act: str | None, gain: float, ortho: bool):
        super().__init__()
        self.dense = Dense(in_features, out_features, act, gain, ortho)

    def forward(self, x, cond=None, task_id=None):
        x = x.flatten(1)
        if cond is not None:
            x = torch.cat([x, cond], -1)
        return self.dense(x)

    def describe(self) -> str:
        return self.dense.describe()


class MoEBlock(nn.Module):
    """tokenize (unless the input already is tokens) -> [+cond per token] -> MoE [-> mean if head]."""

    def __init__(self, tokenizer: nn.Module | None, moe: MoELayer, is_head: bool):
        super().__init__()
        self.tokenizer, self.moe, self.is_head = tokenizer, moe, is_head

    def forward(self, x, cond=None, task_id=None):
        tokens = self.tokenizer(x) if self.tokenizer is not None else x
        if cond is not None:
            tokens = torch.cat([tokens, cond.unsqueeze(1).expand(-1, tokens.shape[1], -1)], -1)
        y = self.moe(tokens, task_id)
        return y.mean(1) if self.is_head else y

    def describe(self) -> str:
        tok = f"[{self.tokenizer.describe()}] " if self.tokenizer is not None else ""
        return tok + self.moe.describe()


def moe_layer_indices(position: str, num_hidden: int) -> set[int]:
    """Which of a tower's layers (0 … num_hidden - 1 hidden, num_hidden the head) are MoE layers."""
    if position == "penultimate":
        if num_hidden == 0:
            raise ValueError("position 'penultimate' needs at least one hidden layer")
        return {num_hidden - 1}
    if position == "final":
        return {num_hidden}
    if position == "all":
        return set(range(num_hidden + 1))
    return set()


class Tower(nn.Module):
    """See the module docstring. ``forward(x, cond, task_id)`` -> (B, out_dim)."""

    def __init__(self, name: str, in_shape: tuple[int, ...], out_dim: int, cfg: NetConfig, *,
                 use_moe: bool, make_torso: Callable[[], nn.Module] | None, cond_dim: int = 0,
                 out_gain: float = 1.0):
        super().__init__()
        self.name, self.in_shape, self.out_dim, self.cond_dim = name, tuple(in_shape), out_dim, cond_dim
        self.use_moe = use_moe
        # multi-head: the head has out_dim outputs per task and the task's own are kept (MT-MH-SAC)
        self.heads = cfg.num_tasks if cfg.task_heads and cfg.num_tasks > 1 else 1
        out_dim = out_dim * self.heads
        self.big = use_moe and cfg.position == "big"
        hidden = tuple(cfg.hidden)
        act, ortho = cfg.activation, cfg.ortho_init

        if self.big:
            self._init_big(out_dim, cfg, make_torso, out_gain)
            return

        self.torso = make_torso() if make_torso is not None else None
        shape = tuple(self.torso.out_shape) if self.torso is not None else self.in_shape
        L = len(hidden)
        moe_at = moe_layer_indices(cfg.position, L) if use_moe else set()

        tokens: tuple[int, int] | None = None  # (m, d) when the running state is tokens
        layers, names = [], []
        for i in range(L + 1):
            head = i == L
            out = out_dim if head else hidden[i]
            c = cond_dim if i == 0 else 0
            if i in moe_at:
                tokenizer = None
                if tokens is None:
                    tokenizer = build_tokenizer(shape, cfg)
                    tokens = (tokenizer.num_tokens, tokenizer.token_dim)
                m, d = tokens
                d_out = out_dim if head else d
                width = cfg.expert_width or (hidden[i] if not head else (hidden[-1] if hidden else 256))
                gain = out_gain if head else 1.0

                def make_experts(num_experts: int, width_scale: int = 1, _d=d + c, _w=width, _o=d_out, _g=gain):
                    return ExpertMLP(num_experts, _d, _w * width_scale, _o, act, ortho, _g)

                layers.append(MoEBlock(tokenizer, get_moe(cfg.moe)(make_experts, d + c, m, cfg), head))
                tokens = (m, d_out)
            else:
                in_f = (tokens[0] * tokens[1] if tokens is not None else math.prod(shape)) + c
                layers.append(DenseBlock(in_f, out, None if head else act, out_gain if head else HIDDEN_GAIN, ortho))
                tokens = None
                shape = (out,)
            names.append("head" if head else f"hidden{i}")
        self.layers = nn.ModuleList(layers)
        self.layer_names = names
        self._name_moe_layers()

    def _init_big(self, out_dim: int, cfg: NetConfig, make_torso, out_gain: float) -> None:
        """Position 'big': the whole tower (torso and layers) is one expert of one MoE layer."""
        self.torso = None
        flat = math.prod(self.in_shape) + self.cond_dim

        def make_towers(num_experts: int, width_scale: int = 1) -> ExpertTower:
            return ExpertTower(lambda: FlatTower(self.in_shape, out_dim, cfg.replace(task_heads=False), make_torso,
                                                 self.cond_dim, out_gain), num_experts)

        moe = get_moe(cfg.moe)(make_towers, flat, 1, cfg)
        self.layer_names = ["big"]
        self.layers = nn.ModuleList([MoEBlock(_Flatten(flat), moe, is_head=True)])
        self._name_moe_layers()

    def _name_moe_layers(self) -> None:
        """Each MoE layer learns its qualified name ('critic.hidden0'): the key of its telemetry."""
        for name, layer in self.moe_layers().items():
            layer.name = name

    def run(self, x, cond=None, task_id=None, capture: ProbeCapture | None = None):
        """-> (output (B, out_dim), input of the last layer). Records activations into ``capture``."""
        if self.torso is not None:
            x = capture.torso(self.name, "torso", self.torso, x) if capture is not None else self.torso(x)
        prev = x
        last = len(self.layers) - 1
        for i, (name, layer) in enumerate(zip(self.layer_names, self.layers)):
            prev = x
            x = layer(x, cond if i == 0 else None, task_id)
            if capture is not None:
                capture.layer(self.name, name, x.flatten(1), neurons=i < last)
        if capture is not None and not self.big:
            capture.representation(self.name, prev)
        if self.heads > 1:  # each row keeps its task's head
            if task_id is None:
                raise ValueError(f"{self.name}: task_heads needs the task id of every row")
            x = x.view(x.shape[0], self.heads, self.out_dim)[torch.arange(x.shape[0], device=x.device), task_id]
        return x, prev

    def record_experts(self, capture: ProbeCapture) -> None:
        """After a probe forward: every MoE layer's expert hidden rows, as neurons of this tower.
        Position 'big': each expert tower is probed like a dense tower, on the rows routed to it
        (its torso and hidden layers as neurons, its head's input as one of the representations)."""
        for name, layer in zip(self.layer_names, self.layers):
            if not isinstance(layer, MoEBlock):
                continue
            if self.big:
                self._record_expert_towers(capture, layer.moe)
                continue
            for e, rows in layer.moe.captured_per_expert().items():
                capture.layer(self.name, f"{name}.expert{e}", rows, neurons=True)

    def _record_expert_towers(self, capture: ProbeCapture, moe: MoELayer) -> None:
        towers = moe.experts
        for e, rows in moe.captured_inputs_per_expert().items():
            if rows.shape[0] == 0:  # no input routed to this expert: nothing to score
                continue
            inner = ProbeCapture()
            torch.func.functional_call(towers._template, towers.tower_params(e), (rows,), {"capture": inner})
            acts = inner.towers["expert"]
            for layer, act in acts.neurons.items():
                capture.layer(self.name, f"big.expert{e}.{layer}", act, neurons=True)
            capture.expert_representation(self.name, acts.representation)

    def forward(self, x, cond=None, task_id=None):
        return self.run(x, cond, task_id)[0]

    def moe_layers(self) -> dict[str, MoELayer]:
        return {f"{self.name}.{n}": l.moe for n, l in zip(self.layer_names, self.layers) if isinstance(l, MoEBlock)}

    def summary_rows(self) -> list[tuple[str, str, int]]:
        rows = []
        if self.torso is not None:
            desc = self.torso.describe() if hasattr(self.torso, "describe") else type(self.torso).__name__
            rows.append(("torso", desc, count_params(self.torso)))
        for n, layer in zip(self.layer_names, self.layers):
            rows.append((n, layer.describe(), count_params(layer)))
            template = getattr(layer.moe.experts, "_template", None) if isinstance(layer, MoEBlock) else None
            if isinstance(template, FlatTower):  # position 'big': show one expert tower
                rows += [(f" .{sub}", f"{desc} (each expert)", c) for sub, desc, c in template.tower.summary_rows()]
        return rows


class _Flatten(nn.Module):
    """Whole observation (+ cond) as one token: (B, ...) -> (B, 1, D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_tokens, self.token_dim = 1, dim

    def forward(self, x):
        return x.flatten(1).unsqueeze(1)

    def describe(self) -> str:
        return f"whole input: 1 token x {self.token_dim}"


class FlatTower(nn.Module):
    """A dense tower fed a flat vector [obs features, cond]; an expert of position 'big'.

    forward((N, D + cond)) -> (out (N, out_dim), hidden (N, h)) with hidden the head's input.
    """

    def __init__(self, in_shape, out_dim, cfg: NetConfig, make_torso, cond_dim: int, out_gain: float):
        super().__init__()
        self.in_shape, self.cond_dim = tuple(in_shape), cond_dim
        self.in_dim, self.out_dim = math.prod(self.in_shape) + cond_dim, out_dim
        self.tower = Tower("expert", in_shape, out_dim, cfg, use_moe=False, make_torso=make_torso,
                           cond_dim=cond_dim, out_gain=out_gain)

    def forward(self, flat, capture: ProbeCapture | None = None):
        n = flat.shape[0]
        x = flat[:, : self.in_dim - self.cond_dim].reshape(n, *self.in_shape)
        cond = flat[:, self.in_dim - self.cond_dim:] if self.cond_dim else None
        out, prev = self.tower.run(x, cond, capture=capture)
        return out, prev.flatten(1)
