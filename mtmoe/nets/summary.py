"""Text summary of a network's towers and parameter counts (for ``mtmoe nets show``)."""

from __future__ import annotations

from torch import nn

from .layers import count_params


def render_summary(net: nn.Module) -> str:
    """Towers, their layers with shapes and parameter counts, and per-tower totals."""
    cfg = net.cfg
    lines = [f"{type(net).__name__}  obs {tuple(net.obs_shape)}"
             + (f"  actions {net.action_space}" if hasattr(net, "action_space") else ""),
             f"  torso={cfg.torso} hidden={tuple(cfg.hidden)} placement={cfg.placement} position={cfg.position} "
             f"moe={cfg.moe} experts={cfg.num_experts} expert_width={cfg.expert_width or 'auto'} "
             f"tokenizer={cfg.tokenizer} shared_encoder={cfg.shared_encoder} task_id_input={cfg.task_id_input}"]
    counts = net.param_counts()
    encoder = getattr(net, "encoder", None)
    if encoder is not None:
        desc = encoder.describe() if hasattr(encoder, "describe") else type(encoder).__name__
        lines.append(f"encoder (shared)  {counts['encoder']:>12,d} params")
        lines.append(f"  {'torso':10s} {desc:70s} {count_params(encoder):>12,d}")
    for name, tower in net.towers().items():
        total = counts.get(name, count_params(tower))
        lines.append(f"{name:17s} {total:>12,d} params" + ("  [MoE]" if tower.use_moe else ""))
        for lname, desc, n in tower.summary_rows():
            lines.append(f"  {lname:10s} {desc:70s} {n:>12,d}")
        if name == "actor" and hasattr(net, "log_std"):
            lines.append(f"  {'log_std':10s} {'state-independent':70s} {net.log_std.numel():>12,d}")
    lines.append(f"{'total':17s} {counts['total']:>12,d} params")
    return "\n".join(lines)


def show(nets: dict[str, nn.Module]) -> str:
    """Summary text of several networks (an algorithm's, from mtmoe.agents.registry), one after another."""
    return "\n".join(render_summary(net) for net in nets.values())
