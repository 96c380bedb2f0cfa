"""Continual World's metrics across runs (`mtmoe compare`): average performance, forgetting
and forward transfer per label of a sequential suite.

Average performance and forgetting come from each run's summary
(``nonstationarity.continual_world``, see mtmoe/metrics/continual_world.py). Forward transfer
needs single-task reference runs: any run among the compared folders whose suite trains just
that one task (e.g. ``cw1-hammer`` for ``cw-hammer``); its reference AUC is the mean over those
runs of the area under their evaluation curve over the first Δ steps (Δ: the task's phase
length in the sequence), on the same score (success rate, or normalized return).
"""

from __future__ import annotations

import numpy as np

from mtmoe.compare.load import RunResult
from mtmoe.compare.stats import label_order
from mtmoe.metrics.continual_world import forward_transfer, phase_auc


def _eval_curve(run: RunResult, task: str, score: str) -> list[tuple[int, float]]:
    if score == "success":
        return sorted((step, v) for (kind, t, step), v in run.success.items() if kind == "eval" and t == task)
    return [(step, run.normalize(task, v)) for step, v in run.evals.get(task, [])]


def reference_aucs(runs: list[RunResult], tasks: list[str], lengths: dict[str, int], score: str) -> dict[str, float]:
    """{task: AUC^b} for the tasks that have single-task runs among `runs`."""
    out = {}
    for t in tasks:
        aucs = [phase_auc(_eval_curve(r, t, score), 0, lengths[t]) for r in runs if r.tasks == [t]]
        aucs = [a for a in aucs if a is not None]
        if aucs:
            out[t] = float(np.mean(aucs))
    return out


def _mean(values) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def continual_world_table(group: list[RunResult], all_runs: list[RunResult]) -> dict[str, dict]:
    """{label: {score, runs, average_performance, forgetting, forward_transfer, references}} for the
    sequential runs of one suite (empty when none carries Continual World's metrics)."""
    cw_runs = [r for r in group if ((r.summary.get("nonstationarity") or {}).get("continual_world"))]
    if not cw_runs:
        return {}
    ns = cw_runs[0].summary["nonstationarity"]
    score = ns["continual_world"]["score"]
    lengths = {}
    for task, start, end in ns["phases"]:
        lengths.setdefault(task, end - start)
    refs = reference_aucs(all_runs, list(lengths), lengths, score)
    out = {}
    for label in label_order(r.label for r in cw_runs):
        runs = [r for r in cw_runs if r.label == label]
        metrics = [r.summary["nonstationarity"]["continual_world"] for r in runs]
        ft = [forward_transfer(m["auc"].get(t), refs.get(t)) for m in metrics for t in lengths]
        out[label] = {"score": score, "runs": len(runs),
                      "average_performance": _mean(m["average_performance"] for m in metrics),
                      "forgetting": _mean(v for m in metrics for v in m["forgetting"].values()),
                      "forward_transfer": _mean(ft), "references": f"{len(refs)}/{len(lengths)}"}
    return out
