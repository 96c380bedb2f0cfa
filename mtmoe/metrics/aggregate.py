"""Score normalization and aggregate statistics across runs (Agarwal et al. 2021, via rliable).

Score matrices are (runs × tasks) numpy arrays, one per algorithm (e.g. per placement). The
statistics themselves are rliable's; this module only picks defaults and makes them
reproducible: rliable 1.2.0 draws its bootstrap indices from numpy's *global* RNG (its
``random_state`` argument does not reach them), so each call seeds that RNG with ``seed`` and
restores the previous global state afterwards. Same seed → same CIs as ``np.random.seed(seed)``
followed by a direct rliable call.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from typing import Hashable, Mapping, Sequence

import numpy as np

AGGREGATES = ("iqm", "mean", "median", "optimality_gap")
"""Names of the aggregates (rliable's aggregate_<name>); rliable itself is imported when first used:
it pulls in `arch` and costs ~2 s, which every `mtmoe run` process would otherwise pay."""


def _aggregate(name: str):
    if name == "iqm":
        return iqm
    from rliable import metrics as rly_metrics

    return getattr(rly_metrics, f"aggregate_{name}")


def iqm(scores) -> float:
    """rliable's aggregate_iqm (scipy.stats.trim_mean(scores, 0.25, axis=None)) without scipy's
    per-call argument handling, which dominates a 2,000-resample bootstrap: the same partition
    and the same slice, so the same value to the last bit."""
    a = np.asarray(scores, dtype=float).ravel()
    low = int(0.25 * a.size)
    high = a.size - low
    return float(np.mean(np.partition(a, (low, high - 1))[low:high]))


def improvement_probability(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """rliable's probability_of_improvement with the Mann-Whitney U counted directly
    (U = #(x > y) + ½ #(x = y), what scipy's rank sums give, exactly) instead of one
    scipy.stats.mannwhitneyu call per task and resample."""
    nx, ny = scores_x.shape[0], scores_y.shape[0]
    probs = []
    for t in range(scores_x.shape[1]):
        x, y = scores_x[:, t], scores_y[:, t]
        if np.array_equal(x, y):
            probs.append(0.5)
            continue
        u = np.sum(x[:, None] > y[None, :]) + 0.5 * np.sum(x[:, None] == y[None, :])
        probs.append(u / (nx * ny))
    return np.mean(probs)


def min_max_normalize(score, low, high):
    """(score − low) / (high − low); e.g. human-normalized: low = random, high = human score.

    Works on floats and (broadcastable) arrays; returns a float for scalar input.
    """
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    if np.any(high == low):
        raise ValueError("min_max_normalize: high must differ from low")
    out = (np.asarray(score, dtype=float) - low) / (high - low)
    return float(out) if out.ndim == 0 else out


@contextmanager
def _seeded_global_numpy(seed: int):
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def interval_estimates(score_dict: Mapping[Hashable, np.ndarray], metrics: Sequence[str] = ("iqm",),
                       reps: int = 2000, seed: int = 0, confidence: float = 0.95,
                       method: str = "percentile", task_bootstrap: bool = False) -> dict:
    """Point estimates and stratified-bootstrap CIs (runs resampled within each task).

    Returns {algorithm: {metric: (point, low, high)}} for metric in AGGREGATES' names.
    """
    unknown = [m for m in metrics if m not in AGGREGATES]
    if unknown:
        raise ValueError(f"unknown aggregate(s) {unknown}; known: {sorted(AGGREGATES)}")
    scores = {k: np.asarray(v, dtype=float) for k, v in score_dict.items()}

    def func(x):
        return np.array([_aggregate(m)(x) for m in metrics])

    from rliable import library as rly  # imported before seeding: importing must not move the RNG

    with _seeded_global_numpy(seed):
        points, cis = rly.get_interval_estimates(scores, func, method=method,
                                                 task_bootstrap=task_bootstrap, reps=reps,
                                                 confidence_interval_size=confidence)
    return {k: {m: (float(points[k][i]), float(cis[k][0][i]), float(cis[k][1][i]))
                for i, m in enumerate(metrics)} for k in scores}


def iqm_ci(score_dict: Mapping[Hashable, np.ndarray], reps: int = 2000, seed: int = 0,
           confidence: float = 0.95) -> dict[Hashable, tuple[float, float, float]]:
    """{algorithm: (IQM, CI low, CI high)}; IQM = 25%-trimmed mean over all (run, task) scores."""
    est = interval_estimates(score_dict, ("iqm",), reps=reps, seed=seed, confidence=confidence)
    return {k: v["iqm"] for k, v in est.items()}


def probability_of_improvement(score_dict: Mapping[Hashable, np.ndarray],
                               pairs: Sequence[tuple[Hashable, Hashable]] | None = None,
                               reps: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """{(x, y): (P(X > Y), CI low, CI high)}: P(X_m > Y_m) averaged over tasks m (Mann-Whitney),
    CIs by independent stratified bootstraps of X's and Y's runs. Default pairs: every (x, y)
    with x listed before y (P(Y > X) = 1 − P(X > Y))."""
    scores = {k: np.asarray(v, dtype=float) for k, v in score_dict.items()}
    pairs = list(itertools.combinations(scores, 2)) if pairs is None else [tuple(p) for p in pairs]
    pair_dict = {(x, y): [scores[x], scores[y]] for x, y in pairs}
    from rliable import library as rly

    with _seeded_global_numpy(seed):
        points, cis = rly.get_interval_estimates(pair_dict, improvement_probability,
                                                 reps=reps, confidence_interval_size=confidence)
    return {k: (float(points[k]), float(np.ravel(cis[k])[0]), float(np.ravel(cis[k])[1]))
            for k in pair_dict}
