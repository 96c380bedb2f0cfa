"""What MoE layers hand back from a forward: auxiliary losses and routing telemetry, as values.

MoE layers keep no side state between a forward and whoever builds the loss. Inside

    with collect_moe(telemetry=False) as moe:
        out, value = net(obs, task_id)
    loss = ... + aux_coef * moe.aux_loss()   # the load-balancing losses of the forwards above

every MoE layer's forward emits into the innermost active collector (an :class:`MoEOutputs`):
its auxiliary loss (with its graph) and, with ``telemetry=True``, detached references to its
routing tensors. Outside any collector a layer emits nothing and keeps nothing, so a forward
that is not part of a loss (acting, a target, a probe, a FLOP count) can never leak a term into
a later one. Nesting: the innermost collector receives; an enclosing one sees nothing of the
inner block. Statistics are computed only when ``telemetry()`` is read (no extra work in
forward; no host sync either: they stay tensors on the routing tensors' device).

The active collectors are a per-thread stack (``threading.local``), not a ``ContextVar``:
``torch.compile(fullgraph=True)`` traces the former and breaks the graph on the latter.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import torch

if TYPE_CHECKING:
    from .base import MoELayer

_local = threading.local()


def active_collector() -> MoEOutputs | None:
    """The innermost collector of this thread, or None outside any ``collect_moe`` block."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def layer_name(layer: MoELayer) -> str:
    """The layer's qualified name ('critic.hidden0', set by its tower), else its class name."""
    return getattr(layer, "name", None) or type(layer).__name__


class MoEOutputs:
    """Aux losses and (when asked) routing telemetry emitted by MoE layers inside one block.

    aux_loss()          the sum of every aux loss emitted (each forward of each layer), with its graph
    telemetry()         {layer name: stats as routing_stats returns} of each layer's last forward
    telemetry_of(layer) that layer's stats ({} when it did not run or records no telemetry)
    """

    def __init__(self, telemetry: bool = False, device: torch.device | str | None = None):
        self.records_telemetry = telemetry
        self.device = device
        self._aux: list[torch.Tensor] = []
        self._raw: list[tuple] = []  # (layer, raw routing tensors, task ids), in forward order
        self._stats: dict[int, dict[str, torch.Tensor]] = {}  # cache: entry index -> stats

    # -- written by MoELayer.emit (kept trivial: torch.compile traces it)
    def add(self, layer: MoELayer, aux_loss: torch.Tensor | None, task_id: torch.Tensor | None,
            raw: dict | None) -> None:
        if aux_loss is not None:
            self._aux.append(aux_loss)
        if raw is not None and self.records_telemetry:
            raw = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in raw.items()}
            self._raw.append((layer, raw, None if task_id is None else task_id.detach()))

    # -- read by whoever builds the loss or logs the routing
    def aux_loss(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Sum of the aux losses emitted in the block, in forward order; a zero scalar when none.

        The zero is on ``device`` (else the collector's, else the CPU) when nothing was emitted.
        """
        if self._aux:
            device = self._aux[0].device
        total = torch.zeros((), device=device if device is not None else (self.device or "cpu"))
        for loss in self._aux:
            total = total + loss
        return total

    def _last(self) -> dict[int, int]:
        """id(layer) -> index of its last entry, ordered by each layer's first forward."""
        last: dict[int, int] = {}
        for i, (layer, _, _) in enumerate(self._raw):
            last[id(layer)] = i
        return last

    def _entry_stats(self, i: int) -> dict[str, torch.Tensor]:
        if i not in self._stats:
            layer, raw, task_id = self._raw[i]
            self._stats[i] = layer.summarize(raw, task_id)
        return self._stats[i]

    def telemetry(self) -> dict[str, dict[str, torch.Tensor]]:
        """Layer name -> statistics of its last forward in the block (see routing_stats); {} when none.

        Computed on the first read (detached tensors, no host sync), then cached. Two layers of
        one name (e.g. twin Q networks run in one block) share an entry: the later one's.
        """
        return {layer_name(self._raw[i][0]): dict(self._entry_stats(i)) for i in self._last().values()}

    def telemetry_of(self, layer: MoELayer) -> dict[str, torch.Tensor]:
        """Statistics of this layer's last forward in the block; {} when none."""
        i = self._last().get(id(layer))
        return {} if i is None else dict(self._entry_stats(i))

    def __repr__(self) -> str:
        return f"MoEOutputs(aux_losses={len(self._aux)}, telemetry_entries={len(self._raw)})"


@contextmanager
def collect_moe(telemetry: bool = False, device: torch.device | str | None = None) -> Iterator[MoEOutputs]:
    """Collect what MoE layers emit during the forwards inside the block (see the module docstring).

    telemetry: also keep each layer's routing tensors for ``telemetry()`` (layers built with
    ``NetConfig(telemetry=False)`` never record any). device: where ``aux_loss()`` puts its zero
    when no layer emitted a loss (the network's device, so the loss adds up on any net).
    """
    out = MoEOutputs(telemetry, device)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(out)
    try:
        yield out
    finally:
        if stack and stack[-1] is out:
            stack.pop()
        else:  # blocks left out of order (generators): drop this one only
            stack.remove(out)
