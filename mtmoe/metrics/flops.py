"""Training compute, counted: FLOPs of the networks' actual forward and backward passes.

Counting uses ``torch.utils.flop_counter.FlopCounterMode``, which records the FLOPs of every
matrix product and convolution the network runs (mm/addmm/bmm/baddbmm/conv, forward and
backward, 2 FLOPs per multiply-add); elementwise ops, softmaxes and normalizations are not
counted (they are a small share of a network's arithmetic, and the counter does not model them).
Networks are counted on the CPU (a copy, when they live elsewhere): the count is of the network's
arithmetic, not of one device's kernels (on a GPU, whole-tower experts run every tower on every
sample and keep the routed one — fixed shapes, E times the work — where the CPU runs each tower
on its own samples).

Per env step, each agent composes its use of the networks from these counted pieces
(``Agent.flops_per_env_step``: PPO and SAC write out their composition in their own files).
"""

from __future__ import annotations

import copy
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


def on_cpu(net: torch.nn.Module, args: tuple, kwargs: dict, copy_always: bool = False):
    """(net, args, kwargs) as they are when all on the CPU, else a CPU copy of the network and of the
    tensor arguments (the network itself is left alone)."""
    tensors = [*args, *kwargs.values(), *net.parameters(), *net.buffers()]
    if not copy_always and all(t.device.type == "cpu" for t in tensors if isinstance(t, torch.Tensor)):
        return net, args, kwargs
    cpu = lambda v: v.cpu() if isinstance(v, torch.Tensor) else v  # noqa: E731
    return copy.deepcopy(net).cpu(), tuple(cpu(a) for a in args), {k: cpu(v) for k, v in kwargs.items()}


def forward_flops(net: torch.nn.Module, *args, **kwargs) -> int:
    # grad mode on: FlopCounterMode's module tracker fails on no-grad outputs of some heads;
    # the graph is dropped at once and forward FLOPs do not depend on it
    net, args, kwargs = on_cpu(net, args, kwargs)
    return count_flops(lambda: net(*args, **kwargs))  # outside collect_moe: MoE layers keep nothing


def train_flops(net: torch.nn.Module, *args, **kwargs) -> int:
    """Forward + backward (to every parameter) of the sum of the network's float outputs."""
    net, args, kwargs = on_cpu(net, args, kwargs)

    def step():
        loss = sum(o.float().sum() for o in _outputs(net(*args, **kwargs)) if o.is_floating_point())
        loss.backward()

    flops = count_flops(step)
    net.zero_grad(set_to_none=True)
    return flops
