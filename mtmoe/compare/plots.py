"""PNG plots of a comparison (matplotlib, Agg; rliable's plot helpers for the aggregates)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mtmoe.compare.load import RunResult  # noqa: E402
from mtmoe.compare.stats import curve_bands, label_order  # noqa: E402

DORMANT_TAU = "dormant@0.025"


def _colors(labels: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def aggregate_plot(table: dict[str, dict], path: Path, title: str) -> Path:
    from rliable import plot_utils

    labels = list(table)
    metrics = ["iqm", "mean", "median"]
    points = {k: np.array([table[k][m][0] for m in metrics]) for k in labels}
    cis = {k: np.array([[table[k][m][1] for m in metrics], [table[k][m][2] for m in metrics]]) for k in labels}
    fig, _ = plot_utils.plot_interval_estimates(points, cis, metric_names=["IQM", "Mean", "Median"],
                                                algorithms=labels, colors=_colors(labels),
                                                xlabel="normalized score", subfigure_width=3.4,
                                                row_height=0.45)
    fig.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(fig)
    return path


def profile_plot(taus, profiles, cis, path: Path, title: str) -> Path:
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(6, 4))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=cis, ax=ax,
                                         colors=_colors(list(profiles)), xlabel=r"normalized score $\tau$",
                                         ylabel=r"fraction of runs with score $> \tau$")
    ax.legend(list(profiles), fontsize=8)
    ax.set_title(title)
    fig.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(fig)
    return path


def _legend(fig, axes) -> None:
    """One legend for the figure (top left, one row), from whichever panel has all the lines."""
    best = max((ax.get_legend_handles_labels() for ax in axes.flat), key=lambda hl: len(hl[0]))
    if best[0]:
        fig.legend(*best, loc="upper left", fontsize=8, ncol=len(best[0]), frameon=False)


def _steps_axis(ax) -> None:
    """Env steps as 250k / 1.5M instead of raw integers that run into each other."""
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k"))
    ax.set_xlabel("env steps")


def _switch_lines(ax, runs: list[RunResult]) -> None:
    ns = next((r.summary.get("nonstationarity") for r in runs if r.summary.get("nonstationarity")), None)
    for _, start, _ in (ns or {}).get("phases", [])[1:]:
        ax.axvline(start, color="gray", ls=":", lw=0.8)


def _band_panel(ax, bands: dict, colors: dict, runs: list[RunResult], title: str) -> bool:
    """Mean lines with 95% bands, one per label, task switches dotted; whether it drew any."""
    for label, (x, mean, lo, hi) in bands.items():
        ax.plot(x, mean, color=colors[label], label=label, lw=1.4)
        ax.fill_between(x, lo, hi, color=colors[label], alpha=0.2, lw=0)
    _switch_lines(ax, runs)
    ax.set_title(title, fontsize=9)
    _steps_axis(ax)
    ax.grid(alpha=0.3)
    return bool(bands)


def _finish(fig, axes, title: str, path: Path) -> Path:
    _legend(fig, axes)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curves(runs: list[RunResult], path: Path, title: str) -> Path | None:
    """Per task: training return (last-20-episode mean) and evaluation return against env steps,
    mean over seeds with a 95% bootstrap band, one line per label; dotted lines mark task switches."""
    tasks = runs[0].tasks
    labels = label_order(r.label for r in runs)
    colors = _colors(labels)
    fig, axes = plt.subplots(2, len(tasks), figsize=(4 * len(tasks), 6.4), squeeze=False)
    drew = False
    for row, (attr, what) in enumerate((("train", "training return"), ("evals", "evaluation return"))):
        for j, task in enumerate(tasks):
            ax = axes[row][j]
            bands = curve_bands({label: [getattr(r, attr).get(task, []) for r in runs if r.label == label]
                                 for label in labels})
            drew |= _band_panel(ax, bands, colors, runs, f"{task}: {what}")
    if not drew:
        plt.close(fig)
        return None
    return _finish(fig, axes, title, path)


def probe_series(run: RunResult, tower: str, key: str) -> list[tuple[int, float]]:
    """(step, value of key for the tower, averaged over the probed tasks)."""
    out = []
    for step, probe in run.probes:
        vals = [t[tower][key] for t in probe.get("tasks", {}).values() if tower in t and key in t[tower]]
        if vals:
            out.append((step, float(np.mean(vals))))
    return out


def towers_of(runs: list[RunResult]) -> list[str]:
    names = set()
    for r in runs:
        for _, probe in r.probes[:1]:
            for per_task in probe.get("tasks", {}).values():
                names |= set(per_task)
    return sorted(names)


def plasticity_curves(runs: list[RunResult], path: Path, title: str) -> Path | None:
    """Per tower: dormant-neuron fraction (τ = 0.025) and srank of the last hidden layer over
    training, averaged over tasks, mean over seeds with a 95% bootstrap band."""
    towers = towers_of(runs)
    if not towers:
        return None
    labels = label_order(r.label for r in runs)
    colors = _colors(labels)
    fig, axes = plt.subplots(2, len(towers), figsize=(4.2 * len(towers), 6.4), squeeze=False)
    for row, (key, name) in enumerate(((DORMANT_TAU, "dormant fraction (τ=0.025)"), ("srank", "srank"))):
        for j, tower in enumerate(towers):
            ax = axes[row][j]
            bands = curve_bands({label: [probe_series(r, tower, key) for r in runs if r.label == label]
                                 for label in labels})
            _band_panel(ax, bands, colors, runs, f"{tower}: {name}")
    return _finish(fig, axes, title, path)
