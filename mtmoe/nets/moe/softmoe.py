"""Soft MoE (Puigcerver et al. 2023), as used for RL by Obando-Ceron et al. (2024).

Per observation: tokens X (m x d), slot parameters Phi (d x n*p) for n experts with p slots.
    L = X Phi                       logits                      (m x n*p)
    D = softmax over the m tokens   dispatch: each slot a convex mix of tokens
    X~ = D^T X                      slot inputs                 (n*p x d)
    Y~_i = f_i(X~ slots of expert i)
    C = softmax over the n*p slots  combine: each token a convex mix of slots
    Y = C Y~                        output tokens               (m x d_out)
Optional normalisation (Dopamine / vmoe): L = scale * l2norm_rows(X) l2norm_cols(Phi), with a
learned scalar ``scale`` (init 1); it makes routing invariant to the scale of X.
p = ceil(m * capacity_factor / n) unless slots_per_expert is set.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import NetConfig
from .base import MakeExperts, MoELayer


class SoftMoE(MoELayer):
    def __init__(self, make_experts: MakeExperts, token_dim: int, num_tokens: int, cfg: NetConfig):
        super().__init__(cfg)
        self.num_experts = cfg.experts_for("softmoe")
        self.slots = cfg.slots_per_expert or max(1, math.ceil(num_tokens * cfg.capacity_factor / self.num_experts))
        self.num_tokens, self.token_dim = num_tokens, token_dim
        self.normalize = cfg.normalize
        self.phi = nn.Parameter(torch.randn(token_dim, self.num_experts * self.slots) / math.sqrt(token_dim))
        if self.normalize:
            self.scale = nn.Parameter(torch.ones(()))
        self.experts = make_experts(self.num_experts)

    def routing(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (B, m, d) -> logits, dispatch (softmax over tokens), combine (softmax over slots).

        All (B, m, n*p); dispatch or combine may be a transposed view. Each softmax runs where the
        CPU kernel is fast: over the last dim of a contiguous tensor when that dim has >= 16
        entries (whole AVX-512 vectors), else over the middle dim (vectorised along the last);
        over a last dim of 4-12 entries it is 3-5x slower. Same values either way.
        """
        phi = self.phi
        if self.normalize:
            x = F.normalize(x, dim=-1)
            phi = self.scale * F.normalize(phi, dim=0)
        logits = x @ phi  # L = X Phi: (B, m, n*p)
        m, S = logits.shape[1:]
        logits_t = logits.transpose(1, 2).contiguous() if m >= 16 or S < 16 else None  # (B, n*p, m)
        dispatch = logits_t.softmax(2).transpose(1, 2) if m >= 16 else logits.softmax(1)
        combine = logits.softmax(2) if S >= 16 else logits_t.softmax(1).transpose(1, 2)
        return logits, dispatch, combine

    def forward(self, x: torch.Tensor, task_id: torch.Tensor | None = None) -> torch.Tensor:
        B, m, d = x.shape
        E, p = self.num_experts, self.slots
        _, dispatch, combine = self.routing(x)
        slots_in = dispatch.transpose(1, 2) @ x  # X~ = D^T X: (B, n*p, d)
        expert_in = slots_in.view(B, E, p, d).transpose(0, 1).reshape(E, B * p, d)
        expert_out, hidden = self.experts(expert_in, need_hidden=self.capture)  # each expert on its p slots, batched
        slots_out = expert_out.view(E, B, p, -1).transpose(0, 1).reshape(B, E * p, -1)
        y = combine @ slots_out  # Y = C Y~: (B, m, d_out)

        self.emit(task_id=task_id, combine=combine)  # no aux loss
        if self.capture:
            self.keep_hidden(hidden, torch.arange(E, device=x.device).repeat_interleave(B * p), inputs=expert_in)
        return y

    def routing_summary(self, combine):
        B, m, _ = combine.shape
        gate = combine.reshape(B, m, self.num_experts, self.slots).sum(-1)  # each token's weight on each expert
        return gate, gate, gate.new_zeros(B, m), {}

    def describe(self) -> str:
        norm = ", normalized" if self.normalize else ""
        return (f"softmoe  {self.num_tokens} tok x {self.token_dim} -> {self.num_experts} experts x "
                f"{self.slots} slots{norm}; {self.experts.describe()}")
