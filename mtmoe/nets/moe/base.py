"""The contract every MoE kind follows, and the routing telemetry they share.

An MoE kind is a subclass of :class:`MoELayer`:

    class MyMoE(MoELayer):
        def __init__(self, make_experts, token_dim, num_tokens, cfg):
            super().__init__(cfg)
            self.experts = make_experts(num_experts)          # batched: (E, N, d) -> (E, N, d_out), hidden
            ...
        def forward(self, tokens, task_id=None):             # (B, m, token_dim) -> (B, m, d_out)
            ...
            self.record(task_id, gate=gate)                   # telemetry: (B, m, E) routing probabilities
            self.last_aux_loss = ...                          # optional load-balancing loss
            return y

``make_experts(num_experts, width_scale=1)`` builds the experts the assembly wants at this
position (expert MLPs of the configured expert width times ``width_scale``, or whole towers for
position 'big', which ignore the scale). Register with ``mtmoe.nets.register_moe(name, MyMoE)``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..config import NetConfig

MakeExperts = Callable[[int, int], nn.Module]


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(dim)


def task_one_hot(task_id: torch.Tensor, num_tasks: int, dtype=torch.float32) -> torch.Tensor:
    """(B,) long -> (B, T) one-hot by comparison (no host sync, unlike range checks)."""
    return (task_id.unsqueeze(-1) == torch.arange(num_tasks, device=task_id.device)).to(dtype)


@torch.no_grad()
def routing_stats(gate: torch.Tensor, assign: torch.Tensor, dropped: torch.Tensor,
                  task_id: torch.Tensor | None, num_tasks: int) -> dict[str, torch.Tensor]:
    """Telemetry from per-token routing quantities.

    gate    (B, m, E) routing probability of each token over experts (sums to 1 over E)
    assign  (B, m, E) share of each token that each expert actually processed (sums to 1 - dropped)
    dropped (B, m)    share of each token's assignments dropped for lack of capacity
    Returns detached tensors: gate_probs (E,), load (E,), entropy (), dropped () and, given task
    ids, task_count (T,), gate_probs_per_task (T, E), load_per_task (T, E), entropy_per_task (T,),
    dropped_per_task (T,) (rows of absent tasks are zero).
    """
    gate, assign, dropped = gate.detach().float(), assign.detach().float(), dropped.detach().float()
    g_s, a_s = gate.mean(1), assign.mean(1)  # per sample (B, E)
    h_s, d_s = entropy(gate).mean(1), dropped.mean(1)  # (B,)
    out = {"gate_probs": g_s.mean(0), "load": a_s.mean(0), "entropy": h_s.mean(), "dropped": d_s.mean()}
    if task_id is not None:
        oh = task_one_hot(task_id, num_tasks)  # (B, T)
        count = oh.sum(0)
        w = oh / count.clamp_min(1.0)  # column-normalised weights
        out.update(task_count=count, gate_probs_per_task=w.T @ g_s, load_per_task=w.T @ a_s,
                   entropy_per_task=w.T @ h_s, dropped_per_task=w.T @ d_s)
    return out


class MoELayer(nn.Module):
    """Base class of MoE kinds: telemetry, load-balancing loss and probe capture plumbing."""

    #: whether forward needs task ids (task-routed kinds)
    uses_task_id: bool = False

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.num_tasks = cfg.num_tasks
        self.telemetry_enabled = cfg.telemetry
        self.last_aux_loss: torch.Tensor | None = None
        self.capture = False  # set by features(): keep expert hidden activations of the next forward
        self.captured: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._raw: tuple[dict, torch.Tensor | None] | None = None
        self._stats: dict[str, torch.Tensor] | None = None

    # -- telemetry: forward keeps references, statistics are computed when read
    def record(self, task_id: torch.Tensor | None, **raw) -> None:
        """Keep this forward's routing tensors (detached references: no work in forward).

        ``telemetry`` turns them into statistics with :meth:`routing_summary` when it is read.
        """
        if self.telemetry_enabled:
            raw = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in raw.items()}
            self._raw = (raw, None if task_id is None else task_id.detach())
            self._stats = None

    def routing_summary(self, **raw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Recorded tensors -> (gate (B,m,E), assign (B,m,E), dropped (B,m), extras); see routing_stats.

        Default: ``record(task_id, gate=..., [assign=...], [dropped=...])``; kinds override it to
        derive these from whatever they recorded.
        """
        gate = raw["gate"]
        assign = raw.get("assign", gate)
        dropped = raw.get("dropped", gate.new_zeros(gate.shape[:2]))
        return gate, assign, dropped, {}

    @property
    def telemetry(self) -> dict[str, torch.Tensor]:
        """Statistics of the last forward (computed on first read, then cached); {} when none."""
        if self._stats is None and self._raw is not None:
            raw, task_id = self._raw
            with torch.no_grad():
                gate, assign, dropped, extras = self.routing_summary(**raw)
                stats = routing_stats(gate, assign, dropped, task_id, self.num_tasks)
                stats.update({k: v.detach() for k, v in extras.items()})
            self._stats = stats
        return self._stats or {}

    def clear_telemetry(self) -> None:
        self._raw, self._stats = None, None

    def keep_hidden(self, hidden: torch.Tensor, expert: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """In capture mode, keep expert hidden rows (R, h), the expert of each row (R,), and validity (R,)."""
        if self.capture:
            hidden = hidden.detach().reshape(-1, hidden.shape[-1])
            if valid is None:
                valid = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
            self.captured = (hidden, expert.reshape(-1), valid.reshape(-1))

    def captured_per_expert(self) -> dict[int, torch.Tensor]:
        """Expert index -> (rows, h) hidden activations from the captured forward (probe only; syncs)."""
        if self.captured is None:
            return {}
        hidden, expert, valid = self.captured
        return {e: hidden[(expert == e) & valid] for e in range(self.num_experts)}

    def aux_loss(self) -> torch.Tensor | None:
        return self.last_aux_loss

    def describe(self) -> str:
        return f"{type(self).__name__}"
