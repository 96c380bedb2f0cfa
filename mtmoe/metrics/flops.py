"""Training compute, counted: FLOPs of the networks' actual forward and backward passes.

Counting uses ``torch.utils.flop_counter.FlopCounterMode``, which records the FLOPs of every
matrix product and convolution the network runs (mm/addmm/bmm/baddbmm/conv, forward and
backward, 2 FLOPs per multiply-add); elementwise ops, softmaxes and normalizations are not
counted (they are a small share of a network's arithmetic, and the counter does not model them).

Per env step, each agent composes its use of the networks from these counted pieces
(``Agent.flops_per_env_step``: PPO and SAC write out their composition in their own files).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products and convolutions that fn() runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _outputs(o)]
    return []


def forward_flops(net: torch.nn.Module, *args, **kwargs) -> int:
    # grad mode on: FlopCounterMode's module tracker fails on no-grad outputs of some heads;
    # the graph is dropped at once and forward FLOPs do not depend on it
    return count_flops(lambda: net(*args, **kwargs))  # outside collect_moe: MoE layers keep nothing


def train_flops(net: torch.nn.Module, *args, **kwargs) -> int:
    """Forward + backward (to every parameter) of the sum of the network's float outputs."""
    def step():
        loss = sum(o.float().sum() for o in _outputs(net(*args, **kwargs)) if o.is_floating_point())
        loss.backward()

    flops = count_flops(step)
    net.zero_grad(set_to_none=True)
    return flops
