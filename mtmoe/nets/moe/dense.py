"""'dense' kind: the routing-free baseline at an MoE position.

Same tokens in and out as the MoE kinds, but one shared MLP applied to every token, with hidden
width num_experts * expert_width: the parameters of the E experts, without routing. (A tower
with placement 'none' is the plain baseline with no tokenization at all.)
"""

from __future__ import annotations

import torch

from ..config import NetConfig
from .base import MakeExperts, MoELayer


class DenseMoE(MoELayer):
    def __init__(self, make_experts: MakeExperts, token_dim: int, num_tokens: int, cfg: NetConfig):
        super().__init__(cfg)
        self.num_experts = 1
        self.width_scale = cfg.experts_for("dense")
        self.num_tokens, self.token_dim = num_tokens, token_dim
        self.experts = make_experts(1, self.width_scale)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor | None = None) -> torch.Tensor:
        B, m, d = x.shape
        y, hidden = self.experts(x.reshape(1, B * m, d), need_hidden=self.capture)
        self.emit(task_id=task_id, shape=(B, m), device=x.device)  # no routing, no aux loss
        if self.capture:
            self.keep_hidden(hidden, torch.zeros(B * m, dtype=torch.long, device=x.device), inputs=x)
        return y.view(B, m, -1)

    def routing_summary(self, shape, device):
        ones = torch.ones(*shape, 1, device=device)
        return ones, ones, torch.zeros(*shape, device=device), {}

    def describe(self) -> str:
        return f"dense    {self.num_tokens} tok x {self.token_dim}, shared {self.experts.describe()}"
