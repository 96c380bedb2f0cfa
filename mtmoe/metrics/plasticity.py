"""Plasticity probes: dormant neurons, effective rank, feature / weight / gradient norms.

All functions are pure (no state, no grad) and return python floats so the runner can log them
as they are. Activations come from a fixed probe batch; layouts:

    (B, N)        dense layer: neuron = feature
    (B, T, D)     token layer (MoE tokens): neuron = feature d, averaged over batch and tokens
    (B, C, H, W)  conv map: neuron = channel c, averaged over batch and positions
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn

DEFAULT_TAUS = (0.0, 0.025, 0.1)


def _mean_abs_per_neuron(activations: torch.Tensor) -> torch.Tensor:
    """mean_x |h_i(x)| for every neuron i, per the layouts in the module docstring."""
    a = activations.detach().abs().double()
    if a.dim() == 2:
        return a.mean(0)
    if a.dim() == 3:  # (B, T, D): neuron = last dim
        return a.mean((0, 1))
    if a.dim() == 4:  # (B, C, H, W): neuron = channel
        return a.mean((0, 2, 3))
    raise ValueError(f"activations must be (B, N), (B, T, D) or (B, C, H, W), got shape {tuple(a.shape)}")


@torch.no_grad()
def neuron_scores(activations: torch.Tensor) -> torch.Tensor:
    """s_i = mean_x |h_i(x)| / mean_k mean_x |h_k(x)|  (Sokar et al. 2023), float64.

    An all-zero layer has a zero denominator; every score is then 0 (every neuron dormant).
    """
    m = _mean_abs_per_neuron(activations)
    denom = m.mean()
    if denom <= 0:
        return torch.zeros_like(m)
    return m / denom


@torch.no_grad()
def dormant_ratio(activations: torch.Tensor, taus: Sequence[float] = DEFAULT_TAUS) -> dict[float, float]:
    """Fraction of τ-dormant neurons: |{i : s_i ≤ τ}| / N, for each τ in ``taus``.

    Example: neurons with activations [0,0], [1,1], [3,3] over a batch of 2 have mean |h| 0, 1, 3,
    layer mean 4/3, scores 0, 0.75, 2.25, so 1/3 of them are dormant at τ = 0.1.
    """
    s = neuron_scores(activations)
    return {float(tau): float((s <= tau).double().mean()) for tau in taus}


@torch.no_grad()
def dormant_ratio_layers(features: Mapping[str, torch.Tensor],
                         taus: Sequence[float] = DEFAULT_TAUS) -> dict:
    """Per-layer dormant fractions and the overall fraction over all neurons of all layers.

    Returns {"per_layer": {name: {τ: fraction}}, "overall": {τ: fraction}}, where overall is
    the neuron-count-weighted mean: Σ_layers dormant_count / Σ_layers neuron_count. Each layer
    is scored against its own mean (scores are not comparable across layers otherwise). A layer
    that saw no rows (an expert no input was routed to) has no scores: it is left out of both
    (counting its neurons as active would dilute the fraction by the experts that sat idle).
    """
    per_layer: dict[str, dict[float, float]] = {}
    dormant = {float(t): 0 for t in taus}
    total = 0
    for name, act in features.items():
        if act.shape[0] == 0:
            continue
        s = neuron_scores(act)
        per_layer[name] = {float(t): float((s <= t).double().mean()) for t in taus}
        for t in taus:
            dormant[float(t)] += int((s <= t).sum())
        total += s.numel()
    overall = {t: (c / total if total else float("nan")) for t, c in dormant.items()}
    return {"per_layer": per_layer, "overall": overall}


@torch.no_grad()
def srank(features: torch.Tensor, delta: float = 0.01) -> int:
    """Effective rank (Kumar et al. 2021): srank_δ = min{k : Σ_{i≤k} σ_i / Σ_i σ_i ≥ 1 − δ}.

    σ are the singular values (descending) of the (batch × features) matrix; extra dims are
    flattened into features. An all-zero matrix has srank 0.
    """
    phi = features.detach().reshape(features.shape[0], -1).double()
    sv = torch.linalg.svdvals(phi)  # descending
    total = sv.sum()
    if total <= 0:
        return 0
    cum = torch.cumsum(sv, 0) / total
    # number of prefixes still short of the threshold, + 1; capped for round-off at the tail
    k = int((cum < 1.0 - delta).sum()) + 1
    return min(k, sv.numel())


@torch.no_grad()
def feature_norm(features: torch.Tensor) -> float:
    """Mean over samples of the L2 norm of each sample's (flattened) features: mean_x ||φ(x)||₂."""
    phi = features.detach().reshape(features.shape[0], -1).double()
    return float(phi.norm(dim=1).mean())


@torch.no_grad()
def weight_norms(module: nn.Module) -> tuple[dict[str, float], float]:
    """(||w||₂ per named parameter, global norm sqrt(Σ_w ||w||₂²)) over all parameters."""
    norms = {name: float(p.detach().double().norm()) for name, p in module.named_parameters()}
    return norms, math.sqrt(sum(n * n for n in norms.values()))


@torch.no_grad()
def grad_norms(module: nn.Module) -> tuple[dict[str, float], float]:
    """Like :func:`weight_norms` for ``.grad`` after a backward; parameters with no grad are skipped."""
    norms = {name: float(p.grad.detach().double().norm())
             for name, p in module.named_parameters() if p.grad is not None}
    return norms, math.sqrt(sum(n * n for n in norms.values()))
