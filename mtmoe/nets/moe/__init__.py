"""MoE kinds. Built-ins: softmoe, topk, task, dense (register more with register_moe).

What their forwards emit (aux losses, routing telemetry) goes to ``collect_moe`` blocks.
"""

from ..registry import register_moe
from .base import MoELayer, routing_stats
from .collect import MoEOutputs, collect_moe
from .dense import DenseMoE
from .softmoe import SoftMoE
from .task import TaskMoE
from .topk import TopKMoE

for _name, _cls in (("softmoe", SoftMoE), ("topk", TopKMoE), ("task", TaskMoE), ("dense", DenseMoE)):
    register_moe(_name, _cls, overwrite=True)

__all__ = ["MoELayer", "SoftMoE", "TopKMoE", "TaskMoE", "DenseMoE", "routing_stats", "MoEOutputs", "collect_moe"]
