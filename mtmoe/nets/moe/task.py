"""Task-routed MoE: hard routing by task id, one expert per task (Willi et al. 2024, "hard-coded").

Every token of an observation from task t goes to expert t mod E only, with weight 1; no router,
no load-balancing loss. Other experts get exactly zero gradient from that observation.
"""

from __future__ import annotations

import torch

from ..config import NetConfig
from ..experts import run_all_keep_routed
from .base import MakeExperts, MoELayer


class TaskMoE(MoELayer):
    uses_task_id = True

    def __init__(self, make_experts: MakeExperts, token_dim: int, num_tokens: int, cfg: NetConfig):
        super().__init__(cfg)
        self.num_experts = cfg.experts_for("task")
        self.num_tokens, self.token_dim = num_tokens, token_dim
        self.experts = make_experts(self.num_experts)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor | None = None) -> torch.Tensor:
        if task_id is None:
            raise ValueError("task-routed MoE needs task_id (a LongTensor of shape (B,))")
        B, m, _ = x.shape
        idx = task_id.long() % self.num_experts
        if hasattr(self.experts, "forward_indexed"):  # the built-in experts route cheaply
            y, hidden = self.experts.forward_indexed(x, idx)
        else:  # other experts: run all, keep the routed one
            y, hidden = run_all_keep_routed(self.experts, x, idx)

        self.emit(task_id=task_id, idx=idx, m=m)  # no aux loss
        self.keep_hidden(hidden, idx.unsqueeze(1).expand(B, m), inputs=x)
        return y

    def routing_summary(self, idx, m):
        gate = (idx.unsqueeze(-1) == torch.arange(self.num_experts, device=idx.device)).float()
        gate = gate.unsqueeze(1).expand(-1, m, -1)
        return gate, gate, gate.new_zeros(gate.shape[:2]), {}

    def describe(self) -> str:
        return (f"task     {self.num_tokens} tok x {self.token_dim} -> expert = task id mod {self.num_experts}; "
                f"{self.experts.describe()}")
