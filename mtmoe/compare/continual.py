"""Continual World's metrics across runs (`mtmoe compare`): average performance, forgetting
and forward transfer per label of a sequential suite.

Every metric is recomputed here from each run's evaluation curve (metrics.jsonl), normalized
with the same task normalization as the main table, so runs recorded under other reference
scores stay comparable (see mtmoe/metrics/continual_world.py for the definitions).
Forward transfer needs single-task reference runs: runs among the compared folders whose suite
trains just that one task (e.g. ``cw1-hammer`` for ``cw-hammer``), preferably of the same network
(same placement, MoE kind, position, experts and width), else dense ones. A reference's AUC is
taken at the continual run's own evaluation points, counted in steps since its phase started
(reference curves interpolated there), and averaged over the reference runs.
"""

from __future__ import annotations

import numpy as np

from mtmoe.compare.load import RunResult
from mtmoe.compare.stats import label_order
from mtmoe.metrics.continual_world import (continual_world_metrics, forward_transfer, own_phase, phase_auc,
                                           phase_points, resampled)


def _eval_curve(run: RunResult, task: str, score: str) -> list[tuple[int, float]]:
    if score == "success":
        return sorted((step, v) for (kind, t, step), v in run.success.items() if kind == "eval" and t == task)
    return [(step, run.normalize(task, v)) for step, v in run.evals.get(task, [])]


def _references(run: RunResult, task: str, all_runs: list[RunResult]) -> tuple[list[RunResult], str]:
    """The single-task runs of `task` to measure `run`'s transfer against, and which kind they are:
    'same' (the run's own network), 'dense' (no MoE), or '' (none found)."""
    single = [r for r in all_runs if r.tasks == [task] and r.backend == run.backend]
    same = [r for r in single if r.axes == run.axes]
    if same:
        return same, "same"
    dense = [r for r in single if r.axes["placement"] == "none"]
    return dense, "dense" if dense else ""


def _reference_auc(refs: list[RunResult], task: str, score: str, offsets: list[int]) -> float | None:
    """Mean over the reference runs of their AUC at `offsets` (steps since training started)."""
    aucs = [phase_auc(resampled(_eval_curve(r, task, score), offsets), 0, max(offsets)) for r in refs]
    aucs = [a for a in aucs if a is not None]
    return float(np.mean(aucs)) if aucs else None


def _mean(values) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _run_metrics(run: RunResult, phases: list, tasks: list[str], score: str, all_runs: list[RunResult]) -> dict:
    """One run's Continual World metrics, with forward transfer and the kind of reference per task."""
    curves = {t: _eval_curve(run, t, score) for t in tasks}
    m = continual_world_metrics(curves, phases, run.summary["steps"])
    m["ft"], m["ref_kind"], m["end_gap"] = {}, {}, {}
    for t in tasks:
        start, end = own_phase(phases, t)
        offsets = [s - start for s, _ in phase_points(curves[t], start, end)]
        m["end_gap"][t] = end - start - max(offsets) if offsets else None
        refs, kind = _references(run, t, all_runs)
        ref_auc = _reference_auc(refs, t, score, offsets) if offsets and refs else None
        m["ft"][t] = forward_transfer(m["auc"].get(t), ref_auc)
        m["ref_kind"][t] = kind if ref_auc is not None else ""
    return m


def _references_text(kinds: list[str], n_tasks: int) -> str:
    """'3/3 (dense)', '2/3 (1 same, 1 dense)': tasks with references, and of which kind."""
    found = [k for k in kinds if k]
    counts = {k: found.count(k) for k in ("same", "dense") if k in found}
    detail = next(iter(counts)) if len(counts) == 1 else ", ".join(f"{n} {k}" for k, n in counts.items())
    return f"{len(found)}/{n_tasks}" + (f" ({detail})" if found else "")


def continual_world_table(group: list[RunResult], all_runs: list[RunResult]) -> dict[str, dict]:
    """{label: {score, runs, average_performance, forgetting, forward_transfer, references, end_gap}} for
    the sequential runs of one suite (empty when none carries Continual World's metrics); end_gap: the
    most env steps between a phase's end and its last evaluation, where "end of phase" is read."""
    cw_runs = [r for r in group if ((r.summary.get("nonstationarity") or {}).get("continual_world"))]
    if not cw_runs:
        return {}
    ns = cw_runs[0].summary["nonstationarity"]
    score, phases = ns["continual_world"]["score"], [tuple(p) for p in ns["phases"]]
    tasks = list(dict.fromkeys(t for t, _, _ in phases))
    out = {}
    for label in label_order(r.label for r in cw_runs):
        metrics = [_run_metrics(r, phases, tasks, score, all_runs) for r in cw_runs if r.label == label]
        out[label] = {"score": score, "runs": len(metrics),
                      "average_performance": _mean(m["average_performance"] for m in metrics),
                      "forgetting": _mean(v for m in metrics for v in m["forgetting"].values()),
                      "forward_transfer": _mean(v for m in metrics for v in m["ft"].values()),
                      "references": _references_text([metrics[0]["ref_kind"][t] for t in tasks], len(tasks)),
                      "end_gap": max((v for m in metrics for v in m["end_gap"].values() if v is not None), default=None)}
    return out
