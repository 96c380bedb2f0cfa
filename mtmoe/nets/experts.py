"""Batched experts: E experts evaluated in one batched op, not a Python loop over experts (one
exception: whole towers on a CPU, one call per tower, see ExpertTower).

Contract (what every MoE kind calls): ``experts(x)`` with x of shape (E, N, d_in) returns
``(out (E, N, d_out), hidden (E, N, h))``; ``hidden`` is the experts' last hidden activation
(for plasticity probes). ``experts(x, need_hidden=False)`` may return ``(out, None)``: the
built-in kinds pass it outside probes, which lets ExpertMLP run large inputs in row chunks whose
hidden activations stay in cache (see ``_ChunkedMLP``). ``num_experts`` and ``out_dim`` are attributes.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from .layers import HIDDEN_GAIN, init_stacked_

_ACT_INPLACE = {"relu": torch.relu_, "tanh": torch.tanh_}  # in place: saves an (E, N, width) copy
_ACT_BACKWARD = {  # (grad, activation output) -> grad of the pre-activation, written into grad
    "relu": lambda g, h: torch.ops.aten.threshold_backward.grad_input(g, h, 0, grad_input=g),
    "tanh": lambda g, h: torch.ops.aten.tanh_backward.grad_input(g, h, grad_input=g),
}


class _ChunkedMLP(torch.autograd.Function):
    """E two-layer MLPs on (E, N, d_in) in chunks of rows, recomputing the hidden layer in backward.

    Same values as ``act(x @ w1 + b1) @ w2 + b2`` (rows are independent), but the (E, N, width)
    hidden activations are never materialized: each chunk's stay in cache, where the unchunked
    version streams several (E, N, width) tensors through memory in forward and backward (on CPU
    the cost of large-token MoE layers, e.g. per-conv tokens). The first layer's bias rides in
    the matmul as an extra input column of ones (a (d_in + 1)-deep matmul costs what a d_in-deep
    one does; a broadcast bias add is a pass over the hidden activations). Backward recomputes
    the first layer.
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, act: str, chunk: int):
        act_ = _ACT_INPLACE[act]
        E, N, _ = x.shape
        xa = torch.cat([x, x.new_ones(E, N, 1)], 2)  # (E, N, d_in + 1)
        wa = torch.cat([w1, b1], 1)  # (E, d_in + 1, width)
        outs = [torch.baddbmm(b2, act_(torch.bmm(xa[:, s:s + chunk], wa)), w2) for s in range(0, N, chunk)]
        ctx.save_for_backward(xa, wa, w2)
        ctx.act, ctx.chunk = act, chunk
        return torch.cat(outs, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        xa, wa, w2 = ctx.saved_tensors
        act_ = _ACT_INPLACE[ctx.act]
        act_backward, chunk = _ACT_BACKWARD[ctx.act], ctx.chunk
        need_x = ctx.needs_input_grad[0]
        gwa, gw2 = torch.zeros_like(wa), torch.zeros_like(w2)
        w1t, w2t = wa[:, :-1].transpose(1, 2), w2.transpose(1, 2)
        gx = []
        for s in range(0, xa.shape[1], chunk):
            xc, gc = xa[:, s:s + chunk], grad_out[:, s:s + chunk]
            h = act_(torch.bmm(xc, wa))  # recomputed; (E, chunk, width) stays in cache
            gw2.baddbmm_(h.transpose(1, 2), gc)
            gh = act_backward(torch.bmm(gc, w2t), h)
            gwa.baddbmm_(xc.transpose(1, 2), gh)
            if need_x:
                gx.append(torch.bmm(gh, w1t))
        gb2 = grad_out.sum(1, keepdim=True)
        return torch.cat(gx, 1) if need_x else None, gwa[:, :-1], gwa[:, -1:], gw2, gb2, None, None


def run_all_keep_routed(experts: nn.Module, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every expert on every sample's tokens x (B, m, d_in), keeping sample b's from expert idx[b]:
    (B, m, d_out), (B, m, h). Fixed shapes and no host sync, at E times the compute; an expert gets
    zero gradient from the samples not routed to it."""
    B, m, _ = x.shape
    E = experts.num_experts
    out, h = experts(x.reshape(1, B * m, -1).expand(E, -1, -1))
    rows = torch.arange(B, device=x.device)
    return out.view(E, B, m, -1).transpose(0, 1)[rows, idx], h.view(E, B, m, -1).transpose(0, 1)[rows, idx]


class ExpertMLP(nn.Module):
    """E two-layer MLPs d_in -> width -> d_out as stacked (E, d_in, d_out) weights (torch.baddbmm)."""

    # Task routing: gather each sample's expert weights when m*(E-1) exceeds this (see forward_indexed);
    # measured on CPU: gathering wins for per-conv tokens (m=64), running all experts for m <= 16.
    gather_threshold: float = 48.0
    # Without need_hidden, run in row chunks when the hidden activations (E, N, width) exceed
    # chunk_above elements, in chunks of about chunk_elems elements (both measured on CPU: a
    # chunk's activations fit in L2; small inputs are faster in one piece).
    chunk_above: int = 2 ** 19
    chunk_elems: int = 2 ** 17

    def __init__(self, num_experts: int, d_in: int, width: int, d_out: int, act: str = "relu",
                 ortho: bool = True, out_gain: float = 1.0):
        super().__init__()
        self.num_experts, self.in_dim, self.width, self.out_dim = num_experts, d_in, width, d_out
        self.w1 = nn.Parameter(torch.empty(num_experts, d_in, width))
        self.b1 = nn.Parameter(torch.zeros(num_experts, 1, width))
        self.w2 = nn.Parameter(torch.empty(num_experts, width, d_out))
        self.b2 = nn.Parameter(torch.zeros(num_experts, 1, d_out))
        init_stacked_(self.w1, HIDDEN_GAIN, ortho)
        init_stacked_(self.w2, out_gain, ortho)
        if not ortho:  # nn.Linear-like bias init
            with torch.no_grad():
                self.b1.uniform_(-d_in ** -0.5, d_in ** -0.5)
                self.b2.uniform_(-width ** -0.5, width ** -0.5)
        self.act = act
        self.act_ = _ACT_INPLACE[act]

    def forward(self, x: torch.Tensor, need_hidden: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        E, N, _ = x.shape
        # chunks are sized for a CPU cache; on a GPU they would only add kernel launches
        if not need_hidden and x.device.type == "cpu" and E * N * self.width > self.chunk_above:
            chunk = max(64, self.chunk_elems // (E * self.width))
            if N > chunk:
                return _ChunkedMLP.apply(x, self.w1, self.b1, self.w2, self.b2, self.act, chunk), None
        h = self.act_(torch.baddbmm(self.b1, x, self.w1))  # (E, N, width)
        return torch.baddbmm(self.b2, h, self.w2), h  # (E, N, d_out)

    def forward_indexed(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sample b's tokens x[b] (B, m, d_in) through expert idx[b] only -> (B, m, d_out), (B, m, width).

        Two fixed-shape paths: gather the chosen experts' weights per sample (cheap when tokens per
        sample m amortise the copy), or run every expert and keep the chosen output (small m).
        Either way an expert gets exactly zero gradient from samples not routed to it.
        """
        B, m, _ = x.shape
        per_sample = self.in_dim * self.width + self.width * self.out_dim
        if m * (self.num_experts - 1) > self.gather_threshold and B * per_sample <= 2 ** 26:
            pick = lambda p: p.index_select(0, idx)  # noqa: E731  (backward: a fast index_add)
            h = self.act_(torch.baddbmm(pick(self.b1), x, pick(self.w1)))
            return torch.baddbmm(pick(self.b2), h, pick(self.w2)), h
        return run_all_keep_routed(self, x, idx)

    def describe(self) -> str:
        return f"{self.num_experts} x MLP {self.in_dim}->{self.width}->{self.out_dim}"


class ExpertTower(nn.Module):
    """E copies of a whole tower (position 'big'), run batched with torch.func.vmap off a CPU.

    ``make_tower()`` returns a module mapping (N, d_in) -> (out (N, d_out), hidden (N, h)).
    Its parameters are stacked into (E, ...) tensors; a parameter-free template on the meta
    device is called through ``torch.func.functional_call`` under ``vmap`` (convolutions become
    grouped convolutions, linears batched matmuls). On a CPU the towers run one call each: there
    a tower costs its arithmetic, and vmap's grouped convolutions cost ~1.5x more (MinAtar torso,
    1,024 samples, measured); same values.
    """

    def __init__(self, make_tower: Callable[[], nn.Module], num_experts: int):
        super().__init__()
        towers = [make_tower() for _ in range(num_experts)]
        if any(True for _ in towers[0].buffers()):
            raise ValueError("big experts must not have buffers (e.g. batch norm)")
        self.num_experts = num_experts
        self.in_dim, self.out_dim = towers[0].in_dim, towers[0].out_dim
        self._names = [n for n, _ in towers[0].named_parameters()]
        self.params = nn.ParameterDict({
            n.replace(".", "__"): nn.Parameter(torch.stack([dict(t.named_parameters())[n].detach() for t in towers]))
            for n in self._names
        })
        object.__setattr__(self, "_template", copy.deepcopy(towers[0]).to("meta"))  # not a submodule

    def tower_params(self, e: int) -> dict[str, torch.Tensor]:
        """Tower e's parameters, by the template's names (views into the stacked ones)."""
        return {n: self.params[n.replace(".", "__")][e] for n in self._names}

    def forward(self, x: torch.Tensor, need_hidden: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        if x.device.type == "cpu":  # one call per tower: vmap's grouped convolutions cost ~1.5x more on a CPU
            return self.per_tower(x)
        return self.vmapped(x)

    def vmapped(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, N, d_in) -> (E, N, d_out), (E, N, h): all towers in one vmapped call."""
        params = {n: self.params[n.replace(".", "__")] for n in self._names}

        def one(p, xe):
            return torch.func.functional_call(self._template, p, (xe,))

        return torch.func.vmap(one)(params, x)

    def per_tower(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same values as :meth:`vmapped`, one call per tower."""
        outs = [torch.func.functional_call(self._template, self.tower_params(e), (x[e],)) for e in range(self.num_experts)]
        return torch.stack([o for o, _ in outs]), torch.stack([h for _, h in outs])

    def forward_indexed(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sample b's tokens x[b] (B, m, d_in) through tower idx[b] only -> (B, m, d_out), (B, m, h).

        On a CPU each tower runs on its own samples only, one call per tower (a tower costs what
        its arithmetic costs there, so running all E on every sample costs E times as much); on
        other devices every tower runs on every sample and the routed output is kept (fixed
        shapes, no host sync). Same values either way; a tower gets zero gradient from samples
        not routed to it.
        """
        if x.device.type != "cpu":
            return run_all_keep_routed(self, x, idx)
        B, m, d = x.shape
        flat, token_idx = x.reshape(B * m, d), idx.repeat_interleave(m)
        order, outs, hiddens = [], [], []
        for e in range(self.num_experts):
            rows = (token_idx == e).nonzero().squeeze(1)
            if rows.numel():
                out, h = torch.func.functional_call(self._template, self.tower_params(e), (flat.index_select(0, rows),))
                order.append(rows), outs.append(out), hiddens.append(h)
        order = torch.cat(order)
        back = torch.empty_like(order)
        back[order] = torch.arange(order.numel(), device=x.device)  # row i of the result is row back[i]
        return (torch.cat(outs).index_select(0, back).view(B, m, -1),
                torch.cat(hiddens).index_select(0, back).view(B, m, -1))

    def describe(self) -> str:
        return f"{self.num_experts} x tower {self.in_dim}->{self.out_dim}"
