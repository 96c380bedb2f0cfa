"""Continual World's metrics (Wołczyk et al., NeurIPS 2021, section 3 "Metrics").

A sequence trains tasks 1..N one after another, task i during its phase [start_i, end_i]
(Δ = end_i − start_i steps; CW10: 1M each). p_i(t) is task i's score at step t: the success
rate of evaluation episodes (Continual World's choice; any score in [0, 1] works). Curves are
``{task: [(step, score), ...]}`` taken at every evaluation point, whether or not the task trains.

- average performance at the end:  P(T) = (1/N) Σ_i p_i(T)
- forgetting of task i:             F_i = p_i(end_i) − p_i(T)       (> 0: forgot)
  (a task that comes back, as in CW20, is taken at the end of its last own phase)
- area under task i's curve in its own phase, normalized by its length:
      AUC_i = (1/Δ) ∫_{start_i}^{end_i} p_i(t) dt
  by the trapezoid rule over the evaluation points in [start_i, end_i], divided by the span
  those points cover (with a single point: its value);
- forward transfer against a single-task reference run of task i over its first Δ steps:
      FT_i = (AUC_i − AUC_i^b) / (1 − AUC_i^b)      (undefined when AUC_i^b = 1)
  where AUC_i^b is taken at the same steps since the start as AUC_i (`resampled`): runs that
  evaluate on other schedules would otherwise average different stretches of learning.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import numpy as np

Curve = Sequence[tuple[int, float]]
Phase = tuple[Hashable, int, int]


def phase_points(curve: Curve, start: int, end: int) -> list[tuple[int, float]]:
    """The curve's points in [start, end], in step order."""
    return sorted((int(s), float(v)) for s, v in curve if start <= s <= end)


def value_at(curve: Curve, step: int) -> float | None:
    """The last score at or before `step` (None if there is none)."""
    before = [(s, v) for s, v in sorted(curve) if s <= step]
    return float(before[-1][1]) if before else None


def phase_auc(curve: Curve, start: int, end: int) -> float | None:
    """AUC_i: the mean level of the curve over [start, end] by the trapezoid rule (None: no point)."""
    pts = phase_points(curve, start, end)
    if not pts:
        return None
    if len(pts) == 1 or pts[-1][0] == pts[0][0]:
        return pts[-1][1]
    area = sum((s1 - s0) * (v0 + v1) / 2 for (s0, v0), (s1, v1) in zip(pts, pts[1:]))
    return area / (pts[-1][0] - pts[0][0])


def resampled(curve: Curve, steps: Sequence[int]) -> list[tuple[int, float]]:
    """The curve at `steps`, linearly interpolated between its points (held flat before the first
    and after the last); empty when the curve has no point."""
    pts = sorted((int(s), float(v)) for s, v in curve)
    if not pts:
        return []
    xs, ys = [s for s, _ in pts], [v for _, v in pts]
    return [(int(s), float(np.interp(s, xs, ys))) for s in steps]


def forward_transfer(auc: float | None, reference_auc: float | None) -> float | None:
    """FT_i = (AUC_i − AUC_i^b) / (1 − AUC_i^b); None when either is unknown or AUC_i^b = 1."""
    if auc is None or reference_auc is None or reference_auc >= 1.0:
        return None
    return (auc - reference_auc) / (1.0 - reference_auc)


def own_phase(phases: Sequence[Phase], task: Hashable) -> tuple[int, int] | None:
    """(start, end) of the task's last own phase (None: it never trains)."""
    own = [(s, e) for t, s, e in phases if t == task]
    return own[-1] if own else None


def continual_world_metrics(curves: Mapping[Hashable, Curve], phases: Sequence[Phase], end_step: int) -> dict:
    """{average_performance, forgetting: {task: F_i}, auc: {task: AUC_i}, final: {task: p_i(T)},
    end_of_phase: {task: p_i(end_i)}} for the tasks of the phases (first-appearance order)."""
    tasks = list(dict.fromkeys(t for t, _, _ in phases))
    final = {t: value_at(curves.get(t, ()), end_step) for t in tasks}
    end_of_phase, auc, forgetting = {}, {}, {}
    for t in tasks:
        start, end = own_phase(phases, t)
        curve = curves.get(t, ())
        own = phase_points(curve, start, end)
        end_of_phase[t] = own[-1][1] if own else None
        auc[t] = phase_auc(curve, start, end)
        forgetting[t] = None if end_of_phase[t] is None or final[t] is None else end_of_phase[t] - final[t]
    known = [v for v in final.values() if v is not None]
    return {"average_performance": sum(known) / len(known) if len(known) == len(tasks) else None,
            "forgetting": forgetting, "auc": auc, "final": final, "end_of_phase": end_of_phase}
