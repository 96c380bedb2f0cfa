"""Score matrices and the statistics of a comparison (all aggregate statistics are rliable's,
through mtmoe.metrics.aggregate, seeded).

Scores (see mtmoe.compare.normalize): by default a task with reference scores (Atari
human/random, Procgen min/max, MinAtar random/reference) is normalized against them; a task
without is divided by the best mean score any label reached on it in this comparison, so every
task weighs the same in the aggregate; the report says which tasks were scaled that way.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from mtmoe.compare.load import RunResult, backend_suffix
from mtmoe.metrics.aggregate import interval_estimates, probability_of_improvement

BASELINE = "none"


def baseline_of(label: str) -> str:
    """The label a label's P(improvement) is measured against: placement none of the same backend."""
    return BASELINE + backend_suffix(label)


def label_order(labels) -> list[str]:
    rank = {"none": 0, "actor": 1, "critic": 2, "both": 3}
    def key(label: str):  # mtmoe's labels first, then each other backend's; placements in order
        suffix = backend_suffix(label)
        return suffix, rank.get(label.split("/")[0].removesuffix(suffix), 9), label

    return sorted(set(labels), key=key)


# --score values that aggregate success rates, and where each reads them from
SUCCESS_SCORES = {"success": "eval", "train-success": "train"}


def score_matrices(runs: list[RunResult], kind: str, warn, normalize: str = "reference"
                   ) -> tuple[dict[str, np.ndarray], list[str], dict]:
    """{label: (runs × tasks) scores}, task order, {task: how it was normalized}; `normalize` is a
    mode of mtmoe.compare.normalize (reference | best-label | raw), applied to raw final returns."""
    tasks = runs[0].tasks
    if kind in SUCCESS_SCORES:  # success rates are on one scale already
        normalize = "raw"
    raw: dict[str, list[list[float]]] = defaultdict(list)
    for r in runs:
        row = [r.success_score(t, SUCCESS_SCORES[kind]) if kind in SUCCESS_SCORES else r.raw_score(t, kind)
               for t in tasks]
        if any(v is None for v in row):
            warn(f"{r.path}: no {kind} score for {[t for t, v in zip(tasks, row) if v is None]}; left out of the {kind} table")
            continue
        if normalize == "reference":
            row = [r.normalize(t, v) for t, v in zip(tasks, row)]
        raw[r.label].append(row)
    scale, how = {}, {}
    for j, t in enumerate(tasks):
        if normalize == "raw":
            scale[t], how[t] = 1.0, "success rate" if kind in SUCCESS_SCORES else "raw"
            continue
        if normalize == "reference" and runs[0].reference(t):
            scale[t], how[t] = 1.0, f"reference scores ({_reference_text(runs[0], t)})"
            continue
        best = max((np.mean([row[j] for row in rows]) for rows in raw.values()), default=0.0)
        scale[t] = best if best > 0 else 1.0
        why = "; no reference scores" if normalize == "reference" else ""
        how[t] = (f"raw / {scale[t]:.4g} (best-label mean{why})" if best > 0
                  else f"raw (no positive mean to scale by{why})")
    mats = {label: np.array(rows, dtype=float) / np.array([scale[t] for t in tasks])
            for label, rows in raw.items()}
    return {k: mats[k] for k in label_order(mats)}, tasks, how


def _reference_text(run: RunResult, task: str) -> str:
    n = run.summary["normalization"][task]
    where = ", from the current task registry" if task in run.renormalized else ""
    return f"(raw − {n['low']:.4g}) / ({n['high']:.4g} − {n['low']:.4g}){where}"


def aggregate_table(mats: dict[str, np.ndarray], reps: int = 2000, seed: int = 0) -> dict[str, dict]:
    """{label: {iqm, mean, median: (point, low, high), p_improve: (P(label > none of its backend), low, high) | None, runs}}."""
    est = interval_estimates(mats, ("iqm", "mean", "median"), reps=reps, seed=seed)
    poi = {}
    pairs = [(k, baseline_of(k)) for k in mats if k != baseline_of(k) and baseline_of(k) in mats]
    if pairs:
        poi = probability_of_improvement(mats, pairs, reps=reps, seed=seed)
    return {k: {**est[k], "p_improve": poi.get((k, baseline_of(k))), "runs": int(mats[k].shape[0])} for k in mats}


def pairwise_improvement(mats: dict[str, np.ndarray], reps: int = 2000, seed: int = 0) -> dict[str, dict]:
    """{x: {y: (P(x > y), CI low, CI high)}} for every two labels (rliable's probability of
    improvement; P(y > x) = 1 − P(x > y), ties counting one half, so each pair is bootstrapped once)."""
    if len(mats) < 3:  # two labels: the main table's P(> none) says it all
        return {}
    out: dict[str, dict] = {k: {} for k in mats}
    for (x, y), (p, lo, hi) in probability_of_improvement(mats, reps=reps, seed=seed).items():
        out[x][y], out[y][x] = (p, lo, hi), (1 - p, 1 - hi, 1 - lo)
    return out


def score_distribution(scores: np.ndarray, taus) -> np.ndarray:
    """Fraction of (run, task) scores above each τ: rliable's score_distributions, all τ at once."""
    return np.mean(np.asarray(scores, dtype=float).reshape(-1)[:, None] > np.asarray(taus)[None, :], axis=0)


def performance_profiles(mats: dict[str, np.ndarray], reps: int = 2000, seed: int = 0):
    """rliable run-score distributions on a grid of thresholds τ: (taus, profiles, CIs); rliable's
    stratified bootstrap, with the profile of a resample computed for every τ in one step."""
    from rliable import library as rly

    from mtmoe.metrics.aggregate import _seeded_global_numpy

    hi = max(1.0, max(float(m.max()) for m in mats.values()))
    lo = min(0.0, min(float(m.min()) for m in mats.values()))
    taus = np.linspace(lo, hi, 81)
    with _seeded_global_numpy(seed):
        profiles, cis = rly.create_performance_profile(mats, taus, reps=reps, custom_profile_func=score_distribution)
    return taus, profiles, cis


def bootstrap_bands(vals: np.ndarray, reps: int = 2000, seed: int = 0, confidence: float = 0.95
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) over runs at every point of (runs × points) curves: `reps` resamples of
    the runs with replacement (one resample covers the whole curve), the mean of each at every
    point in one array operation, percentile CIs."""
    vals = np.asarray(vals, dtype=float)
    idx = np.random.default_rng(seed).integers(0, vals.shape[0], size=(reps, vals.shape[0]))
    means = vals[idx].mean(axis=1)  # reps × points
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return vals.mean(axis=0), low, high


def curve_bands(curves: dict[str, list[list[tuple[int, float]]]], points: int = 60, reps: int = 2000,
                seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """{label: [(step, value) series per run]} -> {label: (steps, mean, low, high)}: the runs'
    curves on a common step grid (linear interpolation, no extrapolation past a run's last
    point), mean and 95% bootstrap CI at every point (`bootstrap_bands`)."""
    out = {}
    for label, series in curves.items():
        series = [sorted(s) for s in series if len(s) >= 2]
        if not series:
            continue
        end = min(s[-1][0] for s in series)
        start = max(s[0][0] for s in series)
        if end <= start:
            continue
        grid = np.linspace(start, end, points)
        vals = np.stack([np.interp(grid, [p[0] for p in s], [p[1] for p in s]) for s in series])  # runs × points
        if len(series) == 1:
            out[label] = (grid, vals[0], vals[0], vals[0])
            continue
        out[label] = (grid, *bootstrap_bands(vals, reps=reps, seed=seed))
    return out


def nonstationarity_table(runs: list[RunResult]) -> dict[str, dict]:
    """Per label, per phase p ≥ 1: mean forgetting of earlier tasks at the end of p (over
    tasks and seeds), mean drop on return and mean steps to recover (with how many recovered)."""
    out: dict[str, dict] = {}
    for label in label_order(r.label for r in runs):
        forget, drop, recover = defaultdict(list), defaultdict(list), defaultdict(list)
        phases = None
        for r in runs:
            ns = r.summary.get("nonstationarity")
            if r.label != label or not ns:
                continue
            phases = phases or ns["phases"]
            for rec in ns["forgetting"]:
                if rec.get("forgetting") is not None:
                    forget[rec["phase"]].append(rec["forgetting"])
            for rec in ns["switch_drop"]:
                if rec.get("drop") is not None:
                    drop[rec["phase"]].append(rec["drop"])
            for rec in ns["steps_to_recover"]:
                recover[rec["phase"]].append(rec["steps"])
        if phases is None:
            continue
        rows = []
        for p in range(1, len(phases)):
            rec = [s for s in recover.get(p, [])]
            done = [s for s in rec if s is not None]
            rows.append({"phase": p, "task": phases[p][0], "start": phases[p][1],
                         "forgetting": float(np.mean(forget[p])) if forget.get(p) else None,
                         "drop": float(np.mean(drop[p])) if drop.get(p) else None,
                         "recover_steps": float(np.mean(done)) if done else None,
                         "recovered": f"{len(done)}/{len(rec)}" if rec else None})
        out[label] = {"rows": rows, "mean_forgetting": float(np.mean([v for p in forget for v in forget[p]]))
                      if forget else None}
    return out
