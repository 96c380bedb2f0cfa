r"""Intrinsic performance and its power law (Hilton, Tang & Schulman 2023, arXiv:2301.13442).

Pure numpy/scipy, no I/O.

A *learning curve* of a model of size N is a sequence of (compute C, return R) points with C
non-decreasing. Its first crossing of a return level R is

    C_N(R) = min { C : curve of N reaches R }        (linear interpolation between points)

and the *intrinsic performance* of R over a family of sizes is the compute-efficient frontier

    I(R) = min_N C_N(R)                              (nan where no size reaches R).

I is non-decreasing in R (reaching R implies having reached every R' < R first), and on the
frontier I equals the training compute. Hilton et al. find that I follows

    I^(-β) = (N_c / N)^α_N + (E_c / E)^α_E,   β = α_N·α_E / (α_N + α_E),

with E the environment interactions. ``fit_power_law`` fits it; its docstring derives β.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

ALPHA_RANGE = (1e-3, 10.0)  # bounds of the fitted exponents α_N, α_E

__all__ = ["first_crossing", "frontier", "intrinsic_performance", "fit_power_law", "predict", "identified"]


def identified(fit: dict) -> bool:
    """False when an exponent ends at (within 1% of) a bound of the fit: the runs do not pin it down."""
    lo, hi = ALPHA_RANGE
    return all(lo * 1.01 < fit[k] < hi * 0.99 for k in ("alpha_N", "alpha_E"))


def _curve(value):
    """(compute, return, interactions|None) from a (compute, return) pair or a dict."""
    if isinstance(value, dict):
        inter = value.get("interactions")
        return (np.asarray(value["compute"], float), np.asarray(value["return"], float),
                None if inter is None else np.asarray(inter, float))
    c, r = value
    return np.asarray(c, float), np.asarray(r, float), None


def _crossings(compute, returns, levels):
    """First-crossing compute of each level (vectorised ``first_crossing``)."""
    c, r = np.asarray(compute, float).ravel(), np.asarray(returns, float).ravel()
    if c.shape != r.shape:
        raise ValueError(f"compute and returns differ in length: {c.size} vs {r.size}")
    keep = np.isfinite(c) & np.isfinite(r)
    c, r = c[keep], r[keep]
    if np.any(np.diff(c) < 0):
        raise ValueError("compute must be non-decreasing along a learning curve")
    levels = np.asarray(levels, float)
    out = np.full(levels.shape, np.nan)
    if c.size == 0:
        return out
    best = np.maximum.accumulate(r)
    # first index j with r[j] >= level == first index where the running max reaches it
    j = np.searchsorted(best, levels, side="left")
    ok = np.isfinite(levels) & (j < c.size)
    start = ok & (j == 0)
    out[start] = c[0]
    mid = ok & (j > 0)
    jm = j[mid]
    r0, r1, c0, c1 = r[jm - 1], r[jm], c[jm - 1], c[jm]  # r0 < level <= r1
    out[mid] = c0 + (levels[mid] - r0) / (r1 - r0) * (c1 - c0)
    return out


def first_crossing(compute, returns, level) -> float:
    """Least compute at which a learning curve first reaches ``level`` (return >= level).

    Linear interpolation between the last point below ``level`` and the first at/above it:
    ``C = C_{j-1} + (level - R_{j-1}) / (R_j - R_{j-1}) · (C_j - C_{j-1})``. The first
    point's compute if the curve starts at/above ``level``; nan if it never gets there.
    Non-finite points are ignored; compute must be non-decreasing.
    """
    return float(_crossings(compute, returns, np.array([level], float))[0])


def frontier(curves: dict, levels, monotone: bool = False):
    """Compute-efficient frontier ``I(R) = min_N C_N(R)`` over a family of model sizes.

    ``curves``: size -> (compute, return) arrays, or size -> dict with "compute", "return".
    ``monotone``: first replace each curve's returns by their running maximum (this only
    changes the interpolation inside the crossing segment, never which segment crosses).
    Returns ``(intrinsic, best_size)``, float arrays shaped like ``levels`` (at least 1-d):
    the least compute reaching each level and the size achieving it (ties go to the smallest
    size); both nan where no size reaches the level.
    """
    levels = np.atleast_1d(np.asarray(levels, float))
    sizes = sorted(curves)
    if not sizes:
        raise ValueError("frontier needs at least one curve")
    table = []
    for size in sizes:
        c, r, _ = _curve(curves[size])
        if monotone:
            r = np.fmax.accumulate(r)
        table.append(_crossings(c, r, levels))
    table = np.stack(table)  # (sizes, *levels.shape)
    reached = np.isfinite(table)
    idx = np.argmin(np.where(reached, table, np.inf), axis=0)
    intrinsic = np.take_along_axis(table, idx[None], axis=0)[0]
    best = np.asarray(sizes, float)[idx]
    none = ~reached.any(axis=0)
    intrinsic[none], best[none] = np.nan, np.nan
    return intrinsic, best


def intrinsic_performance(curves: dict, points: dict | None = None, monotone: bool = True):
    """Map every point (N, E, C, R) of every curve to its intrinsic performance I(R).

    ``curves``: size N -> dict with arrays "compute", "return" and optionally
    "interactions" (E, needed by ``fit_power_law``), or size -> (compute, return).
    ``points``: the curves whose points are mapped, same form (default: ``curves``); the
    frontier is always built from ``curves``. Because each point lies on its own curve,
    I <= its compute, with equality exactly on the frontier.

    ``monotone=True`` (default, as Hilton et al. use smoothed monotone curves) replaces each
    curve's returns by their running maximum, for the frontier and for the mapped levels.
    First-crossing already makes I(R) monotone in R, but a noisy curve that dips after a
    lucky evaluation would map to an I that goes *down* as training goes on; with the running
    max, I is non-decreasing along each curve (the best return seen so far at that compute).

    Returns a dict of equal-length float arrays: "size", "compute", "interactions" (nan where
    not given), "return" (raw), "level" (the return mapped: running max if ``monotone``) and
    "intrinsic" (I(level); nan where no size reaches it).
    """
    points = curves if points is None else points
    cols = {k: [] for k in ("size", "compute", "interactions", "return", "level")}
    for size in sorted(points):
        c, r, e = _curve(points[size])
        if e is not None and e.shape != c.shape:
            raise ValueError(f"size {size}: interactions and compute differ in length")
        cols["size"].append(np.full(c.size, float(size)))
        cols["compute"].append(c)
        cols["interactions"].append(np.full(c.size, np.nan) if e is None else e)
        cols["return"].append(r)
        cols["level"].append(np.fmax.accumulate(r) if monotone else r)
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    out["intrinsic"] = frontier(curves, out["level"], monotone=monotone)[0]
    return out


def _log_model(p, lN, lE):
    """log I = -(1/β) · log((N_c/N)^α_N + (E_c/E)^α_E), p = (log N_c, log E_c, log α_N, log α_E)."""
    lNc, lEc, la, lb = p
    a, b = np.exp(la), np.exp(lb)
    return -np.logaddexp(a * (lNc - lN), b * (lEc - lE)) * (a + b) / (a * b)


def predict(fit: dict, N, E):
    """Intrinsic performance the fitted law predicts at (N, E)."""
    p = np.log([fit["N_c"], fit["E_c"], fit["alpha_N"], fit["alpha_E"]])
    return np.exp(_log_model(p, np.log(np.asarray(N, float)), np.log(np.asarray(E, float))))


def _solve(starts, lN, lE, lI, bounds):
    best = None
    for p0 in starts:
        p0 = np.clip(p0, bounds[0] + 1e-9, bounds[1] - 1e-9)
        res = least_squares(lambda p: _log_model(p, lN, lE) - lI, p0, bounds=bounds,
                            x_scale="jac", ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=2000)
        if best is None or res.cost < best.cost:
            best = res
    return best


def _exponents(q) -> tuple[float, float, float, float]:
    """(α_N, α_E, β, size exponent) from fitted parameters (log N_c, log E_c, log α_N, log α_E)."""
    a, b = np.exp(q[2]), np.exp(q[3])
    return a, b, a * b / (a + b), b / (a + b)


def _bootstrap(p, logs, g, bounds, reps: int, seed: int) -> np.ndarray:
    """Exponents refitted from ``p`` on ``reps`` resamples of the points (of whole groups when
    ``g`` labels them); resamples with fewer than 5 distinct points or a failed fit are dropped."""
    lN, lE, lI = logs
    rng = np.random.default_rng(seed)
    labels = np.unique(g) if g is not None else None
    draws = []
    for _ in range(int(reps)):
        if labels is None:
            idx = rng.integers(0, lI.size, lI.size)
        else:
            pick = rng.choice(labels, labels.size, replace=True)
            idx = np.concatenate([np.flatnonzero(g == lab) for lab in pick])
        if np.unique(idx).size < 5:
            continue
        r = _solve([p], lN[idx], lE[idx], lI[idx], bounds)
        if r.success:
            draws.append(_exponents(r.x))
    return np.asarray(draws).reshape(-1, 4)


def fit_power_law(N, E, I, bootstrap: int = 200, seed: int = 0, groups=None) -> dict:
    r"""Fit ``I^(-β) = (N_c/N)^α_N + (E_c/E)^α_E`` with ``β = α_N·α_E/(α_N+α_E)``.

    Why β is fixed: on the compute-efficient frontier I equals the compute C = k·N·E. At fixed
    C, put E = C/(kN) and minimise f(N) = (N_c/N)^α_N + (E_c·k·N/C)^α_E over N:
    f'(N) = 0 gives N* ∝ C^(α_E/(α_N+α_E)), hence f(N*) ∝ N*^(-α_N) ∝ C^(-α_N·α_E/(α_N+α_E)).
    The frontier is where I^(-β) = f(N*) and I = C, so C^(-β) ∝ C^(-α_Nα_E/(α_N+α_E)), i.e.
    β = α_N·α_E/(α_N+α_E). (The constants are then tied to k too; they are fitted freely.)
    The compute-optimal size grows as N* ∝ C^(α_E/(α_N+α_E)) ("size_exponent").

    Least squares on residuals of log I over (log N_c, log E_c, log α_N, log α_E), from a few
    starts (each start puts both terms equal at the median point), keeping the best. Points
    with non-finite or non-positive N, E or I are skipped. 95% CIs are percentile intervals
    from ``bootstrap`` resamples (numpy Generator seeded with ``seed``) of the points, or of
    whole groups when ``groups`` (one label per point, e.g. a curve id) is given: points
    along one curve are correlated, so resampling curves is the more honest choice.

    Returns a dict: alpha_N, alpha_E, beta, size_exponent, N_c, E_c, rmse_log (RMSE of
    natural log I), n (points used), bootstrap (successful resamples) and
    alpha_N_ci, alpha_E_ci, beta_ci, size_exponent_ci as (low, high) tuples.
    """
    N, E, I = (np.asarray(x, float).ravel() for x in (N, E, I))
    if not (N.shape == E.shape == I.shape):
        raise ValueError("N, E and I must have the same length")
    keep = np.isfinite(N) & np.isfinite(E) & np.isfinite(I) & (N > 0) & (E > 0) & (I > 0)
    lN, lE, lI = np.log(N[keep]), np.log(E[keep]), np.log(I[keep])
    g = None if groups is None else np.asarray(groups).ravel()[keep]
    n = lI.size
    if n < 5:
        raise ValueError(f"fit_power_law needs at least 5 usable points, got {n}")
    span = 30.0  # log-units of slack for N_c, E_c beyond the data
    a_lo, a_hi = np.log(ALPHA_RANGE[0]), np.log(ALPHA_RANGE[1])
    bounds = (np.array([lN.min() - span, lE.min() - span, a_lo, a_lo]),
              np.array([lN.max() + span, lE.max() + span, a_hi, a_hi]))
    mN, mE, mI = np.median(lN), np.median(lE), np.median(lI)
    starts = []
    for a, b in [(0.5, 0.5), (0.3, 0.8), (0.8, 0.3), (0.2, 0.2), (1.0, 1.0)]:
        half = -a * b / (a + b) * mI - np.log(2.0)  # log of each term at the median point
        starts.append(np.array([mN + half / a, mE + half / b, np.log(a), np.log(b)]))
    res = _solve(starts, lN, lE, lI, bounds)
    p = res.x
    a, b, beta, sexp = _exponents(p)
    draws = _bootstrap(p, (lN, lE, lI), g, bounds, bootstrap, seed)

    def ci(k):
        if not len(draws):
            return (np.nan, np.nan)
        lo, hi = np.percentile(draws[:, k], [2.5, 97.5])
        return (float(lo), float(hi))

    return {
        "alpha_N": float(a), "alpha_E": float(b), "beta": float(beta),
        "size_exponent": float(sexp), "N_c": float(np.exp(p[0])), "E_c": float(np.exp(p[1])),
        "rmse_log": float(np.sqrt(np.mean(res.fun ** 2))), "n": int(n),
        "bootstrap": int(len(draws)),
        "alpha_N_ci": ci(0), "alpha_E_ci": ci(1), "beta_ci": ci(2), "size_exponent_ci": ci(3),
    }
