"""Top-k MoE with expert capacity (Shazeer et al. 2017; GShard; Switch; Dopamine labs/moes).

Router: logits = X W_r (no bias), + Gaussian noise of std router_noise / E in training (V-MoE);
probs = softmax over experts; each token goes to its top-k experts, scaled by its gate prob.
Capacity per expert and routing group: C = min(n, ceil(k * n * capacity_factor / E)), n tokens
in the group (one observation by default, or the whole batch with topk_group='batch'). Places
are filled first by every token's 1st choice, then by 2nd choices, in token order; assignments
past C are dropped (contribute zero) and counted. Fixed shapes throughout: kept assignments are
scatter-added into an (E*C) buffer (a dropped one adds zeros), experts run batched on the
buffer, and each assignment gathers its row back, weighted by its gate (0 when dropped).
Load-balancing loss (Switch, extended to k): E * sum_e f_e * P_e, with f_e the share of
assignments routed to e (before dropping) and P_e the mean router probability of e.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import NetConfig
from .base import MakeExperts, MoELayer


@dataclass
class Route:
    probs: torch.Tensor  # (G, n, E) router probabilities
    expert: torch.Tensor  # (G, k*n) chosen expert of each assignment (1st choices first)
    gate: torch.Tensor  # (G, k*n) gate prob of each assignment
    keep: torch.Tensor  # (G, k*n) bool, False when dropped for capacity
    slot: torch.Tensor  # (G, k*n) buffer row e*C + position (clamped into range when dropped)
    onehot: torch.Tensor  # (G, k*n, E) long, the chosen expert of each assignment
    capacity: int


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

    def route(self, x: torch.Tensor) -> Route:
        """Routing for grouped tokens x (G, n, d)."""
        G, n, _ = x.shape
        E, k, C = self.num_experts, self.k, self.capacity(n)
        logits = self.router(x)
        if self.training and self.noise > 0:
            logits = logits + torch.randn_like(logits) * (self.noise / E)
        probs = logits.softmax(-1)
        gate, idx = probs.topk(k, dim=-1)  # (G, n, k)
        expert = idx.transpose(1, 2).reshape(G, k * n)  # priority order: all 1st choices, then 2nd
        gate = gate.transpose(1, 2).reshape(G, k * n)
        onehot = (expert.unsqueeze(-1) == torch.arange(E, device=x.device)).long()  # (G, kn, E)
        pos = (onehot.cumsum(1) * onehot).sum(-1) - 1  # place in the chosen expert's buffer
        keep = pos < C
        slot = expert * C + pos.clamp(max=C - 1)
        return Route(probs, expert, gate, keep, slot, onehot, C)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor | None = None) -> torch.Tensor:
        B, m, d = x.shape
        E, k = self.num_experts, self.k
        G, n = (1, B * m) if self.group == "batch" else (B, m)
        xg = x.reshape(G, n, d)
        r = self.route(xg)
        C = r.capacity

        # dispatch: each kept assignment's token into its buffer row; a dropped one adds zeros
        src = xg if k == 1 else xg.repeat(1, k, 1)  # assignment order: all 1st choices, then 2nd
        src = src * r.keep.unsqueeze(-1).to(x.dtype)
        buf = xg.new_zeros(G, E * C, d).scatter_add_(1, r.slot.unsqueeze(-1).expand(-1, -1, d), src)
        out, hidden = self.experts(buf.view(G, E, C, d).transpose(0, 1).reshape(E, G * C, d))

        # combine: each assignment reads its row back, times its gate (0 when dropped)
        out = out.view(E, G, C, -1).transpose(0, 1).reshape(G, E * C, -1)
        y = out.gather(1, r.slot.unsqueeze(-1).expand(-1, -1, out.shape[-1]))  # (G, k*n, d_out)
        w = r.gate * r.keep
        y = (y * w.unsqueeze(-1)).view(G, k, n, -1).sum(1).reshape(B, m, -1)

        f = r.onehot.sum((0, 1)).to(x.dtype) / (G * k * n)  # share of assignments routed to each expert
        P = r.probs.mean((0, 1))  # mean router probability
        lb = E * (f * P).sum()
        self.last_aux_loss = self.coef * lb

        self.record(task_id, probs=r.probs, onehot=r.onehot, keep=r.keep, shape=(B, m), capacity=C, lb_loss=lb)
        if self.capture:
            filled = torch.zeros(G, E * C, device=x.device).scatter_add_(1, r.slot, r.keep.float()) > 0
            filled = filled.view(G, E, C).transpose(0, 1)
            self.keep_hidden(hidden, torch.arange(E, device=x.device).repeat_interleave(G * C), filled)
        return y

    def routing_summary(self, probs, onehot, keep, shape, capacity, lb_loss):
        (B, m), (G, kn, E) = shape, onehot.shape
        k = kn // probs.shape[1]
        kept = (onehot * keep.unsqueeze(-1)).view(G, k, -1, E).sum(1).float() / k  # share processed
        dropped = 1.0 - keep.view(G, k, -1).float().mean(1)
        extras = {"capacity": torch.tensor(capacity), "lb_loss": lb_loss}
        return probs.reshape(B, m, E), kept.reshape(B, m, E), dropped.reshape(B, m), extras

    def describe(self) -> str:
        return (f"topk     {self.num_tokens} tok x {self.token_dim} -> top-{self.k} of {self.num_experts} "
                f"experts, cf {self.capacity_factor:g} ({self.group}); {self.experts.describe()}")
