"""Expert usage from MoE routing telemetry: load balance and task/expert specialization.

Entropies and mutual information are in nats (natural log); 0·log 0 is taken as 0.
"""

from __future__ import annotations

import math

import torch


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)


@torch.no_grad()
def expert_load_entropy(load: torch.Tensor, normalize: bool = False) -> float:
    """H(p) = −Σ_e p_e log p_e with p = load / Σ load (load over E experts, last dim).

    Leading dims (e.g. a per-task (T, E) table) are summed first. With ``normalize`` the result
    is H / log E ∈ [0, 1] (1 = perfectly balanced; a single expert counts as balanced, 1.0).
    A load that sums to 0 (every token dropped) has no distribution: NaN.
    """
    load = load.detach().double().reshape(-1, load.shape[-1]).sum(0)
    if (load < 0).any():
        raise ValueError("expert load must be non-negative")
    total = load.sum()
    if total <= 0:
        return float("nan")
    h = float(_entropy(load / total))
    if not normalize:
        return h
    num_experts = load.numel()
    return 1.0 if num_experts == 1 else h / math.log(num_experts)


@torch.no_grad()
def mutual_information(p_e_given_t: torch.Tensor, p_t: torch.Tensor) -> float:
    """I(T; E) = Σ_t p(t) Σ_e p(e|t) log(p(e|t) / p(e)),  p(e) = Σ_t p(t) p(e|t).

    p_e_given_t (T, E) rows are renormalized to sum to 1 (assignments may drop tokens); p_t (T,)
    is renormalized too, so task counts work. Tasks with p(t) = 0 or an all-zero row add nothing.
    Suits the per-task telemetry tables: ``mutual_information(gate_probs_per_task, task_count)``.
    """
    cond = p_e_given_t.detach().double()
    w = p_t.detach().double().clone()
    row = cond.sum(-1, keepdim=True)
    w[row.squeeze(-1) <= 0] = 0.0  # a task without routing mass has no p(e|t)
    if w.sum() <= 0:
        return 0.0
    cond = cond / row.clamp_min(1e-300)
    w = w / w.sum()
    p_e = w @ cond  # marginal over experts
    # I(T;E) = H(E) − H(E|T); cheaper and exact with the 0·log 0 convention
    mi = _entropy(p_e) - (w * _entropy(cond)).sum()
    return max(float(mi), 0.0)  # clip tiny negative round-off


@torch.no_grad()
def task_expert_mutual_information(gates: torch.Tensor, task_id: torch.Tensor, num_tasks: int) -> float:
    """I(T; E) in nats from per-sample routing.

    gates (N, E) or (N, m, E): gate probabilities or one-hot assignments per sample (token dims
    are averaged per sample); task_id (N,) long in [0, num_tasks).
    p(e|t) = mean gate of task t's samples, p(t) = empirical task frequency.
    0 when routing ignores the task; log(num_tasks) when each task has its own expert and the
    tasks are equally frequent.
    """
    g = gates.detach().double()
    if g.dim() > 2:
        g = g.reshape(g.shape[0], -1, g.shape[-1]).mean(1)
    task_id = task_id.detach().long().reshape(-1)
    if task_id.numel() != g.shape[0]:
        raise ValueError(f"{g.shape[0]} gate rows but {task_id.numel()} task ids")
    if task_id.numel() and (task_id.min() < 0 or task_id.max() >= num_tasks):
        raise ValueError(f"task ids must lie in [0, {num_tasks})")
    one_hot = torch.nn.functional.one_hot(task_id, num_tasks).double()  # (N, T)
    count = one_hot.sum(0)
    cond = (one_hot.T @ g) / count.clamp_min(1.0).unsqueeze(-1)  # (T, E) mean gate per task
    return mutual_information(cond, count)
