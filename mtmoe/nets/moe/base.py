"""The contract every MoE kind follows, and the routing telemetry they share.

An MoE kind is a subclass of :class:`MoELayer`:

    class MyMoE(MoELayer):
        def __init__(self, make_experts, token_dim, num_tokens, cfg):
            super().__init__(cfg)
            self.experts = make_experts(num_experts)          # batched: (E, N, d) -> (E, N, d_out), hidden
            ...
        def forward(self, tokens, task_id=None):             # (B, m, token_dim) -> (B, m, d_out)
            ...
            self.emit(task_id=task_id, aux_loss=lb, gate=gate)  # the aux loss (optional) and the
            return y                                            # routing tensors, e.g. gate (B, m, E)

A forward hands what it has for the loss and the logs to :meth:`MoELayer.emit`, which passes
it to the innermost active collector (``with collect_moe() as moe``, see ``collect.py``) and to
nobody outside one: a layer keeps no aux loss and no telemetry of its own. The keyword
arguments besides ``task_id`` and ``aux_loss`` are the routing tensors, kept (as detached
references, only when the collector asks for telemetry) until the collector's ``telemetry()``
is read; then :meth:`MoELayer.routing_summary` turns them into gate / assign / dropped (the
default reads ``gate=`` [, ``assign=``, ``dropped=``]; kinds that emit something else override
it) and :func:`routing_stats` into statistics. So forward does no telemetry work.

``make_experts(num_experts, width_scale=1)`` builds the experts the assembly wants at this
position (expert MLPs of the configured expert width times ``width_scale``, or whole towers for
position 'big', which ignore the scale). Register with ``mtmoe.nets.register_moe(name, MyMoE)``.
The tower sets each layer's ``name`` ('critic.hidden0'), the key of its telemetry.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..config import NetConfig
from .collect import active_collector

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
    """Base class of MoE kinds: emitting aux loss and telemetry, probe capture plumbing."""

    #: whether forward needs task ids (task-routed kinds)
    uses_task_id: bool = False

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.num_tasks = cfg.num_tasks
        self.telemetry_enabled = cfg.telemetry  # whether forwards hand routing tensors to a collector
        self.name: str | None = None  # qualified name, set by the tower ('actor.hidden0')
        self.capture = False  # set by features(): keep expert hidden activations of the next forward
        self.captured: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.captured_inputs: torch.Tensor | None = None  # the rows each expert read, aligned with captured

    # -- what a forward hands back: to the active collector, or to nobody
    def emit(self, *, task_id: torch.Tensor | None = None, aux_loss: torch.Tensor | None = None, **raw) -> None:
        """Give this forward's aux loss and routing tensors to the innermost ``collect_moe`` block.

        Outside any block nothing is kept. The routing tensors are kept (detached references,
        no work in forward) only when the collector records telemetry and the layer's
        ``telemetry_enabled`` (``NetConfig.telemetry``) is on; see :meth:`routing_summary`.
        """
        out = active_collector()
        if out is not None:
            out.add(self, aux_loss, task_id, raw if self.telemetry_enabled else None)

    def routing_summary(self, **raw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Emitted tensors -> (gate (B,m,E), assign (B,m,E), dropped (B,m), extras); see routing_stats.

        Default: ``emit(task_id=..., gate=..., [assign=...], [dropped=...])``; kinds override it to
        derive these from whatever they emitted.
        """
        gate = raw["gate"]
        assign = raw.get("assign", gate)
        dropped = raw.get("dropped", gate.new_zeros(gate.shape[:2]))
        return gate, assign, dropped, {}

    @torch.no_grad()
    def summarize(self, raw: dict, task_id: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Statistics of one emitted forward (called by the collector when its telemetry is read)."""
        gate, assign, dropped, extras = self.routing_summary(**raw)
        stats = routing_stats(gate, assign, dropped, task_id, self.num_tasks)
        stats.update({k: v.detach() for k, v in extras.items()})
        return stats

    def keep_hidden(self, hidden: torch.Tensor, expert: torch.Tensor, valid: torch.Tensor | None = None,
                    inputs: torch.Tensor | None = None) -> None:
        """In capture mode, keep expert hidden rows (R, h), the expert of each row (R,), validity (R,)
        and the rows the experts read (R, d): whole-tower experts are probed layer by layer on them."""
        if self.capture:
            hidden = hidden.detach().reshape(-1, hidden.shape[-1])
            if valid is None:
                valid = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
            self.captured = (hidden, expert.reshape(-1), valid.reshape(-1))
            self.captured_inputs = None if inputs is None else inputs.detach().reshape(hidden.shape[0], -1)

    def captured_per_expert(self) -> dict[int, torch.Tensor]:
        """Expert index -> (rows, h) hidden activations from the captured forward (probe only; syncs)."""
        if self.captured is None:
            return {}
        hidden, expert, valid = self.captured
        return {e: hidden[(expert == e) & valid] for e in range(self.num_experts)}

    def captured_inputs_per_expert(self) -> dict[int, torch.Tensor]:
        """Expert index -> (rows, d) the rows it read in the captured forward (probe only)."""
        if self.captured is None or self.captured_inputs is None:
            return {}
        _, expert, valid = self.captured
        return {e: self.captured_inputs[(expert == e) & valid] for e in range(self.num_experts)}

    def describe(self) -> str:
        return f"{type(self).__name__}"
