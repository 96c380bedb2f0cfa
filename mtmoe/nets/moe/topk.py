"""Top-k MoE with expert capacity (Shazeer et al. 2017; GShard; Switch; Dopamine labs/moes).

Router: logits = X W_r (no bias), + Gaussian noise of std router_noise / E in training (V-MoE);
probs = softmax over experts; each token goes to its top-k experts, scaled by its gate prob.
Capacity per expert and routing group: C = min(n, ceil(k * n * capacity_factor / E)), n tokens
in the group (one observation by default, or the whole batch with topk_group='batch'). Places
are filled first by every token's 1st choice, then by 2nd choices, in token order; assignments
past C are dropped (contribute zero) and counted. Fixed shapes throughout: assignments fill the
rows of an expert-major buffer (E, G*C, d) (each row gathers its token; an empty row holds any
token and nobody reads it back), experts run batched on the buffer, and each assignment reads
its row back, weighted by its gate (0 when dropped).
Load-balancing loss (Switch, extended to k): E * sum_e f_e * P_e, with f_e the share of
assignments routed to e (before dropping) and P_e the mean router probability of e; times
load_balance_coef, it is emitted to the active collector (``collect_moe``) with the routing.

Speed (CPU; same values as the plain formulation): the router softmax runs over experts laid
out as the leading dim (over a tiny last dim it is several times slower); dispatch and combine
are gathers both ways (_Gather, _Combine: index_select's backward is a slower scatter); the
buffer is built in the experts' layout (no transposes); telemetry is computed when read. Small
layers with ExpertMLP experts run as one autograd node (_FusedTopKMLP): there per-op framework
time, not arithmetic, is most of the cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import NetConfig
from ..experts import _ACT_BACKWARD, _ACT_INPLACE, ExpertMLP
from .base import MakeExperts, MoELayer


class _Gather(torch.autograd.Function):
    """out = src[fwd] for row indices fwd (R,), with a gather (not a scatter) in backward too.

    ``bwd`` (S, q) lists for each source row the q output rows that read it (R = none): the
    gradient of src is sum_j grad_out[bwd[:, j]]. Output rows that read a source row without
    being listed there pass it no gradient: callers list every output row whose gradient may be
    nonzero (here: every kept assignment; empty buffer rows and dropped assignments get zero
    gradient by construction). index_select's own backward is an index_add, a scatter, several
    times slower than a gather on CPU.
    """

    @staticmethod
    def forward(ctx, src, fwd, bwd):
        ctx.save_for_backward(bwd)
        return src.index_select(0, fwd)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (bwd,) = ctx.saved_tensors
        S, q = bwd.shape
        grad = torch.cat([grad, grad.new_zeros(1, grad.shape[1])]).index_select(0, bwd.view(-1))
        return grad if q == 1 else grad.view(S, q, -1).sum(1), None, None


class _Combine(torch.autograd.Function):
    """y[g, t] = sum_j w[g, j, t] * out[read[g, j, t]]: each token's k assignments, gate-weighted.

    out (R, d) expert outputs by buffer row, w (G, k, n) gate weights (0 when dropped), read
    (G*k*n,) the row of each assignment, owner (R,) the assignment of each row (G*k*n = none).
    Both directions are gathers (see _Gather); returns (G, n, d).
    """

    @staticmethod
    def forward(ctx, out, w, read, owner):
        G, k, n = w.shape
        picked = out.index_select(0, read).view(G, k, n, -1)
        ctx.save_for_backward(picked, w, owner)
        return (picked * w.unsqueeze(-1)).sum(1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        picked, w, owner = ctx.saved_tensors
        G, k, n, d = picked.shape
        grad = grad.unsqueeze(1)  # (G, 1, n, d)
        grad_w = (picked * grad).sum(-1)
        grad_picked = (grad * w.unsqueeze(-1)).reshape(G * k * n, d)
        grad_out = torch.cat([grad_picked, grad_picked.new_zeros(1, d)]).index_select(0, owner)
        return grad_out, grad_w, None, None


def _assign(idx: torch.Tensor, G: int, n: int, E: int, C: int):
    """Top-k choices idx (G*n, k) -> which buffer row each assignment fills (no gradient).

    -> expert (G, k*n) in priority order (all 1st choices, then 2nd), onehot (G, k*n, E) bool,
    keep (G, k*n) bool, slot (G, k*n) buffer row (e*G + g)*C + place, or E*G*C when dropped,
    counts (E,) assignments per expert before dropping.
    """
    k = idx.shape[1]
    expert = idx.view(G, n) if k == 1 else idx.view(G, n, k).transpose(1, 2).reshape(G, k * n)
    onehot = expert.unsqueeze(-1) == torch.arange(E, device=idx.device)
    cum = onehot.cumsum(1)  # assignments so far per expert, this one included
    pos1 = cum.gather(2, expert.unsqueeze(-1)).view(G, k * n)  # 1 + place in the expert's buffer
    keep = pos1 <= C
    base = torch.arange(-1, G * C - 1, C, device=idx.device).view(G, 1)  # g*C - 1
    slot = torch.where(keep, expert * (G * C) + base + pos1, E * G * C)
    return expert, onehot, keep, slot, cum[:, -1].sum(0)


def _maps(slot: torch.Tensor, G: int, n: int, k: int, rows: int):
    """Gather maps between assignments (G, k, n) and buffer rows, both ways (no gradient).

    -> owner (rows,) the assignment filling each row (k*G*n: none), token (rows,) its token (an
    empty row: any token, nothing reads it back), read (k*G*n,) the row each assignment reads (a
    dropped one: any, its weight is 0), tok_rows (G*n, k) each token's rows (rows: none).
    """
    N = G * n
    owner = torch.full((rows + 1,), k * N, dtype=torch.long, device=slot.device)
    owner = owner.scatter_(0, slot.view(-1), torch.arange(k * N, device=slot.device))[:rows]
    token = (owner if k == 1 else (owner // (k * n)) * n + owner % n).clamp(max=N - 1)
    read = slot.view(-1).clamp(max=rows - 1)
    tok_rows = slot.view(N, 1) if k == 1 else slot.view(G, k, n).transpose(1, 2).reshape(N, k)
    return owner, token, read, tok_rows


class _FusedTopKMLP(torch.autograd.Function):
    """The whole layer as one autograd node, for ExpertMLP experts on small inputs.

    Same values as the general path of TopKMoE.forward (router, bookkeeping, dispatch, experts,
    combine, load-balancing loss); only the overhead differs. On CPU a small layer (a few tokens
    per observation) costs mostly per-op framework time, and this node with its hand-written
    backward runs about a fifth less of it. Returns y (G*n, d_out), aux (), and the routing
    probs_t (E, G*n), onehot, keep (no gradient) for telemetry.
    """

    @staticmethod
    def forward(ctx, x, wr, w1, b1, w2, b2, noise, G: int, n: int, k: int, C: int, act: str, coef: float):
        N, d = x.shape
        E = wr.shape[0]
        rows = E * G * C
        logits_t = wr @ x.t()
        if noise is not None:
            logits_t = logits_t + noise
        probs_t = logits_t.softmax(0)
        gate, idx = probs_t.t().topk(k, -1)  # (N, k)
        _, onehot, keep, slot, counts = _assign(idx, G, n, E, C)
        owner, token, read, tok_rows = _maps(slot, G, n, k, rows)
        buf = x.index_select(0, token).view(E, G * C, d)
        h = _ACT_INPLACE[act](torch.baddbmm(b1, buf, w1))
        picked = torch.baddbmm(b2, h, w2).view(rows, -1).index_select(0, read).view(G, k, n, -1)
        keepf = keep.to(x.dtype).view(G, k, n)
        w = (gate.view(G, 1, n) if k == 1 else gate.view(G, n, k).transpose(1, 2)) * keepf
        y = picked * w.unsqueeze(-1)
        y = y.view(N, -1) if k == 1 else y.sum(1).view(N, -1)
        aux_w = counts.to(x.dtype) * (coef * E / (k * N * N))
        aux = probs_t.sum(1) @ aux_w
        ctx.save_for_backward(x, wr, probs_t, idx, keepf, w, buf, h, picked, w1, w2, owner, tok_rows, aux_w)
        ctx.act = act
        ctx.mark_non_differentiable(probs_t)
        ctx.set_materialize_grads(False)  # no zero tensors for the routing outputs' (absent) gradients
        return y, aux, probs_t, onehot, keep

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, grad_aux, *_):
        x, wr, probs_t, idx, keepf, w, buf, h, picked, w1, w2, owner, tok_rows, aux_w = ctx.saved_tensors
        G, k, n, o = picked.shape
        N, d = x.shape
        gy = grad_y.reshape(G, 1, n, o) if grad_y is not None else picked.new_zeros(G, 1, n, o)
        # combine: gates and the rows read; a row's gradient comes from the assignment that read it
        grad_gate = (picked * gy).sum(-1) * keepf  # (G, k, n)
        grad_picked = (gy * w.unsqueeze(-1)).reshape(G * k * n, o)
        grad_out = torch.cat([grad_picked, grad_picked.new_zeros(1, o)]).index_select(0, owner).view(h.shape[0], -1, o)
        # experts
        grad_w2, grad_b2 = torch.bmm(h.transpose(1, 2), grad_out), grad_out.sum(1, keepdim=True)
        gh = _ACT_BACKWARD[ctx.act](torch.bmm(grad_out, w2.transpose(1, 2)), h)
        grad_w1, grad_b1 = torch.bmm(buf.transpose(1, 2), gh), gh.sum(1, keepdim=True)
        # router: softmax over experts, its input the tokens
        grad_gate = grad_gate.view(N, 1) if k == 1 else grad_gate.transpose(1, 2).reshape(N, k)
        grad_probs = torch.zeros_like(probs_t.t()).scatter_(1, idx, grad_gate).t()
        if grad_aux is not None:
            grad_probs = grad_probs + grad_aux * aux_w.unsqueeze(1)
        grad_logits = torch._softmax_backward_data(grad_probs.contiguous(), probs_t, 0, probs_t.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:  # dispatch: each token's rows (a dropped one: the zero row)
            grad_buf = torch.bmm(gh, w1.transpose(1, 2)).view(-1, d)
            grad_x = torch.cat([grad_buf, grad_buf.new_zeros(1, d)]).index_select(0, tok_rows.view(-1))
            grad_x = (grad_x if k == 1 else grad_x.view(N, k, d).sum(1)).addmm_(grad_logits.t(), wr)
        return (grad_x, grad_logits @ x, grad_w1, grad_b1, grad_w2, grad_b2) + (None,) * 7


@dataclass
class Route:
    probs: torch.Tensor  # (G, n, E) router probabilities (a transposed view of probs_t)
    expert: torch.Tensor  # (G, k*n) chosen expert of each assignment (1st choices first)
    gate: torch.Tensor  # (G, n, k) gate prob of each token's 1st, 2nd choice
    keep: torch.Tensor  # (G, k*n) bool, False when dropped for capacity
    slot: torch.Tensor  # (G, k*n) buffer row (e*G + g)*C + position; E*G*C (the spare row) when dropped
    onehot: torch.Tensor  # (G, k*n, E) bool, the chosen expert of each assignment
    capacity: int
    probs_t: torch.Tensor  # (E, G*n) router probabilities, experts leading (the computed layout)
    counts: torch.Tensor  # (E,) assignments routed to each expert (before dropping)


class TopKMoE(MoELayer):
    def __init__(self, make_experts: MakeExperts, token_dim: int, num_tokens: int, cfg: NetConfig):
        super().__init__(cfg)
        self.num_experts = cfg.experts_for("topk")
        self.k = min(cfg.top_k, self.num_experts)
        self.capacity_factor, self.group = cfg.capacity_factor, cfg.topk_group
        self.noise, self.coef = cfg.router_noise, cfg.load_balance_coef
        self.num_tokens, self.token_dim = num_tokens, token_dim
        self.router = nn.Linear(token_dim, self.num_experts, bias=False)
        nn.init.normal_(self.router.weight, std=token_dim ** -0.5)
        self.experts = make_experts(self.num_experts)

    def capacity(self, n: int) -> int:
        return max(1, min(n, math.ceil(self.k * n * self.capacity_factor / self.num_experts)))

    def router_noise(self, G: int, n: int, x: torch.Tensor) -> torch.Tensor | None:
        """Training noise on the router logits, (E, G*n) (drawn in (G, n, E) order), or None."""
        if not (self.training and self.noise > 0):
            return None
        E = self.num_experts
        return torch.randn(G, n, E, dtype=x.dtype, device=x.device).view(G * n, E).t() * (self.noise / E)

    def route(self, x: torch.Tensor) -> Route:
        """Routing for grouped tokens x (G, n, d)."""
        G, n, d = x.shape
        E, k, C = self.num_experts, self.k, self.capacity(n)
        logits_t = self.router.weight @ x.reshape(G * n, d).t()  # (E, G*n): experts leading
        noise = self.router_noise(G, n, x)
        if noise is not None:
            logits_t = logits_t + noise
        probs_t = logits_t.softmax(0)
        probs = probs_t.t().view(G, n, E)
        gate, idx = probs.topk(k, dim=-1)  # (G, n, k)
        with torch.no_grad():  # integer bookkeeping: which buffer row each assignment fills
            expert, onehot, keep, slot, counts = _assign(idx.view(G * n, k), G, n, E, C)
        return Route(probs, expert, gate, keep, slot, onehot, C, probs_t, counts)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor | None = None) -> torch.Tensor:
        B, m, d = x.shape
        E, k = self.num_experts, self.k
        G, n = (1, B * m) if self.group == "batch" else (B, m)
        N = G * n
        C = self.capacity(n)
        rows = E * G * C
        ex = self.experts
        if isinstance(ex, ExpertMLP) and not self.capture and rows * ex.width <= ex.chunk_above:
            y, aux, probs_t, onehot, keep = _FusedTopKMLP.apply(
                x.reshape(N, d), self.router.weight, ex.w1, ex.b1, ex.w2, ex.b2, self.router_noise(G, n, x),
                G, n, k, C, ex.act, self.coef)
            self.emit(task_id=task_id, aux_loss=aux, probs_t=probs_t, onehot=onehot, keep=keep, shape=(B, m),
                      capacity=C)
            return y.view(B, m, -1)

        r = self.route(x.reshape(G, n, d))
        with torch.no_grad():
            owner, token, read, tok_rows = _maps(r.slot, G, n, k, rows)
            keep = r.keep.to(x.dtype).view(G, k, n)

        # dispatch: each buffer row gathers its token; experts run batched on the buffer
        buf = _Gather.apply(x.reshape(N, d), token, tok_rows)
        out, hidden = self.experts(buf.view(E, G * C, d), need_hidden=self.capture)
        # combine: each token sums its assignments' rows, times their gates (0 when dropped)
        w = (r.gate.view(G, 1, n) if k == 1 else r.gate.transpose(1, 2)) * keep
        y = _Combine.apply(out.view(rows, -1), w, read, owner).view(B, m, -1)

        # load balancing: coef * E * sum_e f_e P_e, f_e = counts_e / (k N) (no gradient), P_e = mean prob
        aux = r.probs_t.sum(1) @ (r.counts.to(x.dtype) * (self.coef * E / (k * N * N)))

        self.emit(task_id=task_id, aux_loss=aux, probs_t=r.probs_t, onehot=r.onehot, keep=r.keep, shape=(B, m),
                  capacity=C)
        if self.capture:
            self.keep_hidden(hidden, torch.arange(E, device=x.device).repeat_interleave(G * C), owner < k * N,
                             inputs=buf)
        return y

    def routing_summary(self, probs_t, onehot, keep, shape, capacity):
        (B, m), (G, kn, E) = shape, onehot.shape
        probs = probs_t.t().reshape(B, m, E)
        k = kn // (B * m // G)
        kept = (onehot * keep.unsqueeze(-1)).view(G, k, -1, E).sum(1).float() / k  # share processed
        dropped = 1.0 - keep.view(G, k, -1).float().mean(1)
        f = onehot.sum((0, 1)).float() / (G * kn)  # share of assignments routed to each expert
        lb = E * (f * probs_t.float().mean(1)).sum()  # the load-balancing loss (before its coefficient)
        extras = {"capacity": torch.tensor(capacity), "lb_loss": lb}
        return probs, kept.reshape(B, m, E), dropped.reshape(B, m), extras

    def describe(self) -> str:
        return (f"topk     {self.num_tokens} tok x {self.token_dim} -> top-{self.k} of {self.num_experts} "
                f"experts, cf {self.capacity_factor:g} ({self.group}); {self.experts.describe()}")
