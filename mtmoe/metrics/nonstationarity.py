"""Non-stationarity metrics: forgetting, switch drop and recovery in continual runs, and
gradient interference between tasks.

A sequential (continual) run is a list of phases ``(task, start_step, end_step)``: the run
trains ``task`` from env step ``start`` to ``end``. Curves are ``{task: [(step, score), ...]}``:
per-task evaluation scores taken at every eval point whether or not the task is active (the
metrics below also accept a training-return curve of the same form, which only has points
while the task is active).

The score of a task *in* a phase is looked up in the window ``start < step <= end``: a point at
exactly ``start`` shows the network before it trained on the phase's task, so it belongs to the
previous phase. Any lookup that finds no point in its window gives ``None``, and so does every
quantity computed from it. Scores are used as they are (normalize them beforehand if tasks
with different scales are averaged).

- end score of task t in phase p: the last point of t in p's window.
- forgetting (phase p, task t ≠ task of p, whose last training phase before p is q):
      end score of t in q − end score of t in p           (> 0: forgot)
- switch drop (phase p trains t, which was last trained in phase q < p):
      end score of t in q − initial score of t in p       (> 0: dropped on return)
  where the initial score is the first point of t in p's window; every phase also reports its
  initial score, with drop None for a task's first phase.
- steps to recover (same p, t, q): first step s in p's window with score ≥ target, minus start,
  target = level − tolerance·|level|, level = end score of t in q; None if never in p.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Hashable, Iterable, Mapping, Sequence

import torch

Phase = tuple[Hashable, int, int]  # (task, start_step, end_step)
Curves = Mapping[Hashable, Sequence[tuple[int, float]]]


def _check_phases(phases: Sequence[Phase]) -> list[Phase]:
    phases = [tuple(p) for p in phases]
    for i, (task, start, end) in enumerate(phases):
        if not start < end:
            raise ValueError(f"phase {i} ({task!r}): start {start} must be < end {end}")
    return phases


def _curve(curves: Curves, task: Hashable) -> list[tuple[int, float]]:
    return sorted((int(s), float(v)) for s, v in curves.get(task, ()))


def _in_window(curve, start: int, end: int) -> list[tuple[int, float]]:
    return [(s, v) for s, v in curve if start < s <= end]


def _end_score(curve, start: int, end: int) -> float | None:
    pts = _in_window(curve, start, end)
    return pts[-1][1] if pts else None


def _first_point(curve, start: int, end: int) -> tuple[int, float] | None:
    pts = _in_window(curve, start, end)
    return pts[0] if pts else None


def _last_phase_before(phases: Sequence[Phase], task: Hashable, p: int) -> int | None:
    for q in range(p - 1, -1, -1):
        if phases[q][0] == task:
            return q
    return None


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def forgetting(evals: Curves, phases: Sequence[Phase]) -> list[dict]:
    """One record per (phase p, task t) where t is not p's task and was trained before p.

    forgetting = end score of t in q − end score of t in p, q = t's last training phase before p.
    Records: phase, task, trained_phase (q), step (end of p), score_trained, score_now, forgetting.
    """
    phases = _check_phases(phases)
    tasks = list(dict.fromkeys(task for task, _, _ in phases))  # order of first appearance
    out = []
    for p, (task_p, start_p, end_p) in enumerate(phases):
        for t in tasks:
            q = _last_phase_before(phases, t, p)
            if t == task_p or q is None:
                continue
            curve = _curve(evals, t)
            before = _end_score(curve, phases[q][1], phases[q][2])
            now = _end_score(curve, start_p, end_p)
            out.append(dict(phase=p, task=t, trained_phase=q, step=end_p, score_trained=before,
                            score_now=now, forgetting=_sub(before, now)))
    return out


def switch_drop(curves: Curves, phases: Sequence[Phase]) -> list[dict]:
    """One record per phase: its initial score and, for a returning task, the drop on return.

    initial = first point of the phase's task in (start, end]; drop = end score of the task in
    its previous phase q − initial (None when the task had no earlier phase).
    Records: phase, task, start, initial_step, initial_score, returning, previous_phase,
    previous_score, drop.
    """
    phases = _check_phases(phases)
    out = []
    for p, (task, start, end) in enumerate(phases):
        curve = _curve(curves, task)
        first = _first_point(curve, start, end)
        q = _last_phase_before(phases, task, p)
        prev = None if q is None else _end_score(curve, phases[q][1], phases[q][2])
        initial = None if first is None else first[1]
        out.append(dict(phase=p, task=task, start=start,
                        initial_step=None if first is None else first[0], initial_score=initial,
                        returning=q is not None, previous_phase=q, previous_score=prev,
                        drop=_sub(prev, initial)))
    return out


def steps_to_recover(evals: Curves, phases: Sequence[Phase], tolerance: float = 0.05) -> list[dict]:
    """One record per phase whose task comes back: env steps after the phase start until the
    task's score first reaches its level at the end of its previous phase.

    target = level − tolerance·|level| (tolerance is relative, so it works for negative scores);
    steps = first step s in (start, end] with score(s) ≥ target, minus start; None if it never
    gets there within the phase or if the level is unknown.
    Records: phase, task, start, previous_phase, level, target, recovered_step, steps.
    """
    phases = _check_phases(phases)
    out = []
    for p, (task, start, end) in enumerate(phases):
        q = _last_phase_before(phases, task, p)
        if q is None:
            continue
        curve = _curve(evals, task)
        level = _end_score(curve, phases[q][1], phases[q][2])
        target = None if level is None else level - tolerance * abs(level)
        hit = None
        if target is not None:
            hit = next((s for s, v in _in_window(curve, start, end) if v >= target), None)
        out.append(dict(phase=p, task=task, start=start, previous_phase=q, level=level,
                        target=target, recovered_step=hit,
                        steps=None if hit is None else hit - start))
    return out


def mean_of(records: Iterable[dict], key: str) -> float | None:
    """Mean of ``record[key]`` over records where it is not None (None if there are none)."""
    vals = [r[key] for r in records if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


# --- gradient interference between tasks -------------------------------------------------


def gradient_cosine(grads: Mapping[Hashable, torch.Tensor]) -> dict[tuple, float]:
    """cos(g_a, g_b) = <g_a, g_b> / (||g_a|| ||g_b||) for every pair a before b (dict order).

    A zero gradient has no direction; its cosines are reported as 0 (no interference).
    """
    flat = {k: g.detach().reshape(-1).double() for k, g in grads.items()}
    out = {}
    for a, b in itertools.combinations(flat, 2):
        na, nb = flat[a].norm(), flat[b].norm()
        out[(a, b)] = 0.0 if na == 0 or nb == 0 else float(flat[a] @ flat[b] / (na * nb))
    return out


def mean_gradient_cosine(grads: Mapping[Hashable, torch.Tensor]) -> float:
    """Mean of :func:`gradient_cosine` over all task pairs (NaN with fewer than two tasks)."""
    cos = gradient_cosine(grads)
    return sum(cos.values()) / len(cos) if cos else math.nan


def per_task_gradients(loss_fn: Callable[[torch.Tensor], torch.Tensor],
                       params: Iterable[torch.Tensor], task_ids: torch.Tensor,
                       tasks: Iterable[int]) -> dict[int, torch.Tensor]:
    """{task: flat gradient of loss_fn(task_ids == task) w.r.t. params}, via torch.autograd.grad.

    ``loss_fn(mask)`` returns the scalar loss over the samples selected by the bool mask. Nothing
    is written to ``.grad`` (optimizer state untouched); params the loss does not reach get zero
    gradients; tasks with no sample in ``task_ids`` are left out.
    """
    params = list(params)
    out = {}
    for t in tasks:
        mask = task_ids == t
        if not bool(mask.any()):
            continue
        loss = loss_fn(mask)
        # retain_graph: loss_fn may reuse one forward graph for every task
        gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        out[t] = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).detach()
                            for g, p in zip(gs, params)])
    return out
