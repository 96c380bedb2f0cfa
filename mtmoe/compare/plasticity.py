"""Plasticity and routing at the end of training, as numbers a reader can quote.

The plasticity plot shows the curves; this table gives their end points per label, from each
run's final probe (``summary.json`` ``final_probe``): per tower, the τ-dormant fraction of its
hidden units (τ = 0.025, Sokar et al. 2023) and the srank of its last hidden layer (Kumar et
al. 2021), each the mean over the suite's tasks; per MoE layer, the normalized entropy of the
expert load and the task–expert mutual information. Mean ± sample standard deviation over the
label's runs.
"""

from __future__ import annotations

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


def final_plasticity(group: list[RunResult]) -> dict[str, dict]:
    """{label: {"towers": {tower: {"dormant"|"srank": (mean, sd, n)}},
    "moe": {layer: {"load_entropy"|"task_mi": (mean, sd, n)}}}} over the runs with a final probe;
    labels without any are left out."""
    out = {}
    for label in label_order(r.label for r in group):
        probes = [r.summary.get("final_probe") for r in group if r.label == label]
        probes = [p for p in probes if p]
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
        out[label] = {"towers": {t: {k: _spread(v) for k, v in s.items()} for t, s in towers.items()},
                      "moe": {m: {k: _spread(v) for k, v in s.items()} for m, s in layers.items()}}
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
        rows.append([label, str(runs), *cells, routing])
    return header, rows
