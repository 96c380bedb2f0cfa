"""Plasticity and routing at the end of training, as numbers a reader can quote.

The plasticity plot shows the curves; this table gives their end points per label, from each
run's final probe (``summary.json`` ``final_probe``): per tower, the τ-dormant fraction of its
hidden units (τ = 0.025, Sokar et al. 2023) and the srank of its last hidden layer (Kumar et
al. 2021), each the mean over the suite's tasks; per MoE layer, the normalized entropy of the
expert load and the task–expert mutual information. Mean ± sample standard deviation over the
label's runs.

Two sources: what each run recorded while it trained (its probe's version in ``probe_version``;
runs without it: version 1), and ``probe.json`` files that `mtmoe probe` wrote by probing a run's
final checkpoint again with the current probe (the newest such file of each run).
"""

from __future__ import annotations

import json

import numpy as np

from mtmoe.compare.load import RunResult
from mtmoe.compare.stats import label_order

DORMANT_KEY = "dormant@0.025"
ROUTING_KEYS = ("load_entropy", "task_mi")


def _spread(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample std, n); std 0 for a single value."""
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), sd, len(values)


def _tower_means(probe: dict) -> dict[str, dict[str, float]]:
    """{tower: {dormant, srank}} of one probe, each the mean over the tasks that recorded it."""
    found: dict[str, dict[str, list[float]]] = {}
    for towers in (probe.get("tasks") or {}).values():
        for tower, stats in towers.items():
            for key, name in ((DORMANT_KEY, "dormant"), ("srank", "srank")):
                if stats.get(key) is not None:
                    found.setdefault(tower, {}).setdefault(name, []).append(float(stats[key]))
    return {tower: {name: float(np.mean(v)) for name, v in stats.items()} for tower, stats in found.items()}


def recorded_probe(run: RunResult) -> tuple[dict | None, int]:
    """(the run's final probe as recorded while training, the probe's version)."""
    return run.summary.get("final_probe"), int(run.summary.get("probe_version", 1))


def reprobed(run: RunResult) -> tuple[dict | None, int]:
    """(the run's final probe by the current probe version: its newest probe.json / probe-<i>.json of
    that version taken at the run's last step, else what it recorded while training when that was
    this version; that version)."""
    from mtmoe.runner.probes import PROBE_VERSION

    best, best_time = None, -1.0
    for path in run.path.glob("probe*.json"):
        try:
            record = json.loads(path.read_text())
        except (ValueError, OSError):
            continue
        at_end = record.get("global_step") == run.summary.get("steps")  # the final checkpoint's, not an earlier one
        if record.get("probe_version") == PROBE_VERSION and at_end and path.stat().st_mtime > best_time:
            best, best_time = record.get("probe"), path.stat().st_mtime
    if best is None:
        recorded, version = recorded_probe(run)
        best = recorded if version == PROBE_VERSION else None
    return best, PROBE_VERSION


def final_plasticity(group: list[RunResult], source=recorded_probe) -> dict[str, dict]:
    """{label: {"towers": {tower: {"dormant"|"srank": (mean, sd, n)}},
    "moe": {layer: {"load_entropy"|"task_mi": (mean, sd, n)}}, "versions": [probe versions]}} over
    the runs whose ``source`` (recorded_probe or reprobed) gives a probe; labels without any are
    left out."""
    out = {}
    for label in label_order(r.label for r in group):
        found = [source(r) for r in group if r.label == label]
        probes = [p for p, _ in found if p]
        if not probes:
            continue
        towers: dict[str, dict[str, list[float]]] = {}
        for p in probes:
            for tower, stats in _tower_means(p).items():
                for name, v in stats.items():
                    towers.setdefault(tower, {}).setdefault(name, []).append(v)
        layers: dict[str, dict[str, list[float]]] = {}
        for p in probes:
            for layer, stats in (p.get("moe") or {}).items():
                for key in ROUTING_KEYS:
                    if stats.get(key) is not None:
                        layers.setdefault(layer, {}).setdefault(key, []).append(float(stats[key]))
        runs = [r for r in group if r.label == label]
        out[label] = {"towers": {t: {k: _spread(v) for k, v in s.items()} for t, s in towers.items()},
                      "moe": {m: {k: _spread(v) for k, v in s.items()} for m, s in layers.items()},
                      "old_probe": any(p and v == 1 and measured_apart(r) for r, (p, v) in zip(runs, found))}
    return out


def _cell(v: tuple[float, float, int] | None, digits: int) -> str:
    return "-" if v is None else f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"


PLASTICITY_CAPTION = (
    "Plasticity and routing at the end of training (each run's final probe on a fixed batch of every task's "
    "observations; mean ± sample standard deviation over runs): per tower, the fraction of its hidden units that "
    "are τ-dormant (τ = 0.025; Sokar et al. 2023) and the srank of its last hidden layer (Kumar et al. 2021), each "
    "the mean over tasks; per MoE layer, the expert load's normalized entropy (1: tokens spread evenly over the "
    "experts) and the mutual information between task and expert, in nats (0: every task routed alike). The "
    "plasticity plot below draws them over training.")

OLD_PROBE_NOTE = (
    "Labels marked † hold runs recorded by version 1 of the probe (their summary.json has no probe_version), which measured "
    "whole-tower experts (position big) by their last hidden layer only, took their srank over the experts' "
    "features stacked, and counted experts that no input of a task reached (task routing, top-k) as active: "
    "their dormant fraction and srank are not comparable with a dense network's (dense and SoftMoE "
    "penultimate layers were measured as now). `mtmoe probe DIR` measures a run's final checkpoint again with the current probe; the "
    "current-probe table below, when there is one, has those numbers.")

REPROBED_CAPTION = (
    "The same with the current probe only, over the runs that have it: each run's final checkpoint measured "
    "again by `mtmoe probe` (its newest probe.json; the probe batch is the one the run drew), else the final "
    "probe it recorded while training when that was by the current probe.")


def measured_apart(run: RunResult) -> bool:
    """Whether probe version 1 measured this run's network unlike version 2: whole-tower experts,
    or a routing that can leave an expert without a task's inputs (task-routed, top-k)."""
    axes = run.axes
    return axes["position"] == "big" or axes["moe"] in ("task", "topk")


def needs_note(table: dict[str, dict]) -> bool:
    return any(e["old_probe"] for e in table.values())


def plasticity_rows(table: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the report's table: one row per label, dormant and srank per tower, its MoE layers."""
    towers = sorted({t for e in table.values() for t in e["towers"]})
    header = ["label", "runs"] + [f"{t} {what}" for t in towers for what in ("dormant", "srank")] + ["routing at the end"]
    rows = []
    for label, e in table.items():
        runs = max((v[2] for s in e["towers"].values() for v in s.values()), default=0)
        cells = [_cell(e["towers"].get(t, {}).get(k), 3 if k == "dormant" else 1) for t in towers
                 for k in ("dormant", "srank")]
        routing = "; ".join(f"{layer}: entropy {_cell(s.get('load_entropy'), 2)}, MI {_cell(s.get('task_mi'), 2)}"
                            for layer, s in sorted(e["moe"].items())) or "-"
        rows.append([label + (" †" if e["old_probe"] else ""), str(runs), *cells, routing])
    return header, rows
