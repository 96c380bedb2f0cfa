"""Intrinsic performance (Hilton et al. 2023) on synthetic curves, and the power-law fit."""

import numpy as np
import pytest

from mtmoe.scaling.intrinsic import (first_crossing, fit_power_law, frontier,
                                     intrinsic_performance, predict)


# --- first_crossing -----------------------------------------------------------------------

def test_first_crossing_interpolates():
    c, r = [0, 10, 20, 30], [0.0, 1.0, 3.0, 2.0]
    assert first_crossing(c, r, 0.5) == pytest.approx(5.0)
    assert first_crossing(c, r, 2.0) == pytest.approx(15.0)
    assert first_crossing(c, r, 3.0) == pytest.approx(20.0)  # exactly at a point
    assert first_crossing(c, r, 1.0) == pytest.approx(10.0)


def test_first_crossing_uses_first_time_not_last():
    # reaches 2 between 10 and 20, dips, and reaches it again later: the first time counts
    c, r = [0, 10, 20, 30, 40], [0.0, 1.0, 3.0, 0.0, 4.0]
    assert first_crossing(c, r, 2.0) == pytest.approx(15.0)


def test_first_crossing_never_reached_is_nan():
    assert np.isnan(first_crossing([0, 1, 2], [0.0, 0.5, 0.9], 1.0))
    assert np.isnan(first_crossing([], [], 1.0))


def test_first_crossing_starts_above():
    assert first_crossing([5, 6, 7], [2.0, 1.0, 3.0], 1.5) == 5.0
    assert first_crossing([5, 6, 7], [2.0, 1.0, 3.0], 2.0) == 5.0


def test_first_crossing_rejects_decreasing_compute():
    with pytest.raises(ValueError):
        first_crossing([0, 2, 1], [0, 1, 2], 0.5)


# --- frontier and intrinsic performance on a known frontier --------------------------------

def _two_models():
    ca = np.linspace(0, 10, 11)
    cb = np.linspace(0, 40, 41)
    # model A (size 100): return = compute on [0, 10]; model B (size 1000): compute / 2 on [0, 40]
    return {100: (ca, ca.copy()), 1000: (cb, cb / 2)}


def test_frontier_known_answer():
    levels = np.array([0.5, 3.0, 7.25, 10.0, 10.5, 15.0, 20.0, 20.5, 30.0])
    intrinsic, best = frontier(_two_models(), levels)
    expected = np.where(levels <= 10, levels, np.where(levels <= 20, 2 * levels, np.nan))
    np.testing.assert_allclose(intrinsic, expected, equal_nan=True)
    expected_best = np.where(levels <= 10, 100.0, np.where(levels <= 20, 1000.0, np.nan))
    np.testing.assert_array_equal(best, expected_best)


def test_frontier_tie_goes_to_smallest_and_dict_curves():
    curves = {size: {"compute": c, "return": r} for size, (c, r) in _two_models().items()}
    intrinsic, best = frontier(curves, [0.0])  # both start at return 0 with compute 0
    assert intrinsic[0] == 0.0 and best[0] == 100.0


def test_intrinsic_performance_maps_points():
    curves = {}
    for size, (c, r) in _two_models().items():
        curves[size] = {"compute": c, "interactions": 7 * c, "return": r}
    out = intrinsic_performance(curves)
    assert set(out) >= {"size", "compute", "interactions", "return", "level", "intrinsic"}
    assert len(out["intrinsic"]) == 11 + 41
    a = out["size"] == 100
    np.testing.assert_allclose(out["intrinsic"][a], out["compute"][a])  # A is the frontier
    b = out["size"] == 1000
    rb, ib = out["return"][b], out["intrinsic"][b]
    np.testing.assert_allclose(ib, np.where(rb <= 10, rb, 2 * rb))
    np.testing.assert_allclose(out["interactions"], 7 * out["compute"])
    assert np.all(out["intrinsic"] <= out["compute"] + 1e-12)


def test_intrinsic_performance_points_and_monotone():
    curves = _two_models()
    # a noisy extra curve: 6 at compute 12, then a dip to 4 at compute 14
    pts = {1000: {"compute": np.array([12.0, 14.0]), "return": np.array([6.0, 4.0])}}
    raw = intrinsic_performance(curves, points=pts, monotone=False)
    np.testing.assert_allclose(raw["intrinsic"], [6.0, 4.0])  # I goes down along the curve
    mono = intrinsic_performance(curves, points=pts, monotone=True)
    np.testing.assert_allclose(mono["level"], [6.0, 6.0])
    np.testing.assert_allclose(mono["intrinsic"], [6.0, 6.0])
    np.testing.assert_allclose(mono["return"], [6.0, 4.0])
    assert np.isnan(np.asarray(mono["interactions"])).all()  # not given


# --- power-law fit --------------------------------------------------------------------------

A_N, A_E, N_C, E_C = 0.6, 0.4, 3e4, 2e5
BETA = A_N * A_E / (A_N + A_E)


def _synthetic(noise, seed=1):
    N, E = np.meshgrid(np.logspace(3, 6, 6), np.logspace(4, 7, 20), indexing="ij")
    N, E = N.ravel(), E.ravel()
    I = ((N_C / N) ** A_N + (E_C / E) ** A_E) ** (-1 / BETA)
    rng = np.random.default_rng(seed)
    return N, E, I * np.exp(noise * rng.standard_normal(I.size))


def test_fit_recovers_exponents_noiseless():
    N, E, I = _synthetic(0.0)
    fit = fit_power_law(N, E, I, bootstrap=0)
    assert fit["alpha_N"] == pytest.approx(A_N, rel=1e-3)
    assert fit["alpha_E"] == pytest.approx(A_E, rel=1e-3)
    assert fit["beta"] == pytest.approx(BETA, rel=1e-3)
    assert fit["N_c"] == pytest.approx(N_C, rel=1e-2)
    assert fit["E_c"] == pytest.approx(E_C, rel=1e-2)
    assert fit["size_exponent"] == pytest.approx(A_E / (A_N + A_E), rel=1e-3)
    assert fit["rmse_log"] < 1e-6 and fit["n"] == 120
    assert np.isnan(fit["alpha_N_ci"]).all()
    np.testing.assert_allclose(predict(fit, N, E), I, rtol=1e-5)


def test_fit_recovers_exponents_with_noise_and_cis():
    N, E, I = _synthetic(0.01)
    I[:3] = [np.nan, 0.0, -1.0]  # skipped
    fit = fit_power_law(N, E, I, bootstrap=50, seed=0)
    assert fit["n"] == 117 and fit["bootstrap"] == 50
    assert fit["alpha_N"] == pytest.approx(A_N, rel=0.05)
    assert fit["alpha_E"] == pytest.approx(A_E, rel=0.05)
    for key, true in [("alpha_N", A_N), ("alpha_E", A_E), ("beta", BETA)]:
        lo, hi = fit[f"{key}_ci"]
        assert lo <= true <= hi, (key, lo, hi)
    assert fit["rmse_log"] == pytest.approx(0.01, rel=0.3)
    again = fit_power_law(N, E, I, bootstrap=50, seed=0)
    assert again["alpha_N_ci"] == fit["alpha_N_ci"]  # seeded


def test_fit_group_bootstrap_and_too_few_points():
    N, E, I = _synthetic(0.01)
    groups = np.arange(120) // 4  # 30 blocks of 4 consecutive points along one size's curve
    fit = fit_power_law(N, E, I, bootstrap=20, seed=3, groups=groups)
    assert fit["bootstrap"] == 20 and fit["alpha_N_ci"][0] < fit["alpha_N_ci"][1]
    with pytest.raises(ValueError):
        fit_power_law(N[:4], E[:4], I[:4])
