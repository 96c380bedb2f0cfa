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
SWITCH_LABEL = "task switch (continual suite)"


def _colors(labels: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def aggregate_plot(table: dict[str, dict], path: Path, title: str) -> Path:
    """IQM, mean and median with 95% CIs per label (rliable's interval plot), titled, with at most
    three x ticks per panel so their labels never run into each other."""
    from matplotlib.ticker import MaxNLocator
    from rliable import plot_utils

    labels = list(table)
    metrics = ["iqm", "mean", "median"]
    points = {k: np.array([table[k][m][0] for m in metrics]) for k in labels}
    cis = {k: np.array([[table[k][m][1] for m in metrics], [table[k][m][2] for m in metrics]]) for k in labels}
    height = 0.45 * len(labels)  # rliable's figure height in inches: the title's offset in inches, not a share
    fig, axes = plot_utils.plot_interval_estimates(points, cis, metric_names=["IQM", "Mean", "Median"],
                                                   algorithms=labels, colors=_colors(labels),
                                                   xlabel="", subfigure_width=3.6, row_height=0.45,
                                                   max_ticks=3)
    axes = np.atleast_1d(axes)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=3))
        ax.tick_params(axis="x", labelsize=9)
    axes[len(axes) // 2].set_xlabel("normalized score")  # under the ticks at any height (rliable's sits a share away)
    fig.suptitle(f"{title}: aggregate normalized final score (95% CIs)", y=1 + 0.45 / height)
    fig.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(fig)
    return path


def draw_profiles(ax, taus, profiles: dict, cis: dict) -> None:
    """One labelled line per label and its (unlabelled) 95% band: legend entries = labels drawn."""
    colors = _colors(list(profiles))
    for label, profile in profiles.items():
        ax.plot(taus, profile, color=colors[label], lw=2, label=label)
        if label in cis:
            ax.fill_between(taus, cis[label][0], cis[label][1], color=colors[label], alpha=0.2, lw=0)
    ax.set_xlabel(r"normalized score $\tau$")
    ax.set_ylabel(r"fraction of runs with score $> \tau$")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def profile_plot(taus, profiles, cis, path: Path, title: str, keep: bool = False):
    """Performance profiles (rliable's score distributions); returns the path, or (path, fig) with `keep`."""
    fig, ax = plt.subplots(figsize=(6, 4))
    draw_profiles(ax, taus, profiles, cis)
    ax.set_title(title)
    fig.savefig(path, bbox_inches="tight", dpi=110)
    if keep:
        return path, fig
    plt.close(fig)
    return path


LEGEND_COLUMNS = 4  # entries per legend row: long grid labels (e.g. critic/softmoe/penultimate/e1/w256) fit


def _legend(fig, axes) -> int:
    """One legend for the figure (under the title, at most LEGEND_COLUMNS entries a row), from
    whichever panel has all the lines; the dotted task-switch marker gets its own entry when a
    panel draws one. Returns its number of rows."""
    best = max((ax.get_legend_handles_labels() for ax in axes.flat), key=lambda hl: len(hl[0]))
    handles, labels = list(best[0]), list(best[1])
    if any(getattr(line, "_mtmoe_switch", False) for ax in axes.flat for line in ax.get_lines()):
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="gray", ls=":", lw=0.8))
        labels.append(SWITCH_LABEL)
    if not handles:
        return 0
    ncol = min(len(handles), LEGEND_COLUMNS)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.975), fontsize=8, ncol=ncol,
               frameon=False)
    return -(-len(handles) // ncol)


def steps_label(v: float, _pos=None) -> str:
    """An env-step tick: 0, 250k, 1.5M."""
    if v == 0:
        return "0"
    return f"{v / 1e6:g}M" if abs(v) >= 1e6 else f"{v / 1e3:g}k"


def _steps_axis(ax) -> None:
    """Env steps as 250k / 1.5M instead of raw integers that run into each other."""
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(steps_label))
    ax.set_xlabel("env steps")


def _switch_lines(ax, runs: list[RunResult]) -> None:
    ns = next((r.summary.get("nonstationarity") for r in runs if r.summary.get("nonstationarity")), None)
    for _, start, _ in (ns or {}).get("phases", [])[1:]:
        ax.axvline(start, color="gray", ls=":", lw=0.8)._mtmoe_switch = True


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
    rows = _legend(fig, axes)
    fig.suptitle(title, y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.97 - 0.035 * rows))  # room for the title and the legend's rows
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def frame_series(frame, kind: str, task: str | None, column: str) -> dict[str, list[list[tuple[int, float]]]]:
    """{label: [(step, value) per run]} of one column of the results DataFrame (mtmoe.results), for
    one kind of row and one task (None: averaged over the tasks at each step)."""
    if column not in frame:
        return {}
    sel = frame[frame[column].notna()]
    if kind == "probe":  # a probe's values sit on every row of its step: count each task once
        sel = sel.drop_duplicates(["run", "task", "step"])
    else:
        sel = sel[sel["kind"] == kind]
    if task is not None:
        sel = sel[sel["task"] == task]
    out: dict[str, list] = {}
    for (label, _run), g in sel.groupby(["label", "run"], sort=False):
        pts = g.groupby("step")[column].mean()
        out.setdefault(label, []).append([(int(s), float(v)) for s, v in pts.items()])
    return out


def learning_curves(frame, runs: list[RunResult], path: Path, title: str) -> Path | None:
    """Per task: training return (last-20-episode mean) and evaluation return against env steps,
    mean over seeds with a 95% bootstrap band, one line per label; dotted lines mark task switches."""
    tasks = runs[0].tasks
    labels = label_order(r.label for r in runs)
    colors = _colors(labels)
    fig, axes = plt.subplots(2, len(tasks), figsize=(4 * len(tasks), 6.4), squeeze=False)
    drew = False
    for row, (kind, what) in enumerate((("train", "training return"), ("eval", "evaluation return"))):
        for j, task in enumerate(tasks):
            series = frame_series(frame, kind, task, "raw")
            bands = curve_bands({label: series[label] for label in labels if label in series})
            drew |= _band_panel(axes[row][j], bands, colors, runs, f"{task}: {what}")
    if not drew:
        plt.close(fig)
        return None
    return _finish(fig, axes, title, path)


def towers_of(frame) -> list[str]:
    """Towers with probe columns (probe/<tower>/srank) in the results DataFrame."""
    return sorted(c.split("/")[1] for c in frame.columns if c.startswith("probe/") and c.endswith("/srank")
                  and c.count("/") == 2)


def moe_layers_of(frame) -> list[str]:
    return sorted({c.split("/")[2] for c in frame.columns if c.startswith("probe/moe/") and c.endswith("/load_entropy")})


def plasticity_curves(frame, runs: list[RunResult], path: Path, title: str) -> Path | None:
    """Per tower: dormant-neuron fraction (τ = 0.025) and srank of the last hidden layer over
    training, averaged over tasks, mean over seeds with a 95% bootstrap band. When the runs have
    MoE layers, a routing column beside them: per layer, the normalized entropy of the expert load
    and the task–expert mutual information (what the probes record of routing)."""
    towers = towers_of(frame)
    if not towers:
        return None
    layers = moe_layers_of(frame)
    labels = label_order(r.label for r in runs)
    colors = _colors(labels)
    cols = len(towers) + len(layers)
    fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols, 6.4), squeeze=False)
    panels = [(tower, f"probe/{tower}/{key}", f"{tower}: {name}") for tower in towers
              for key, name in ((DORMANT_TAU, "dormant fraction (τ=0.025)"), ("srank", "srank"))]
    panels += [(layer, f"probe/moe/{layer}/{key}", f"routing {layer}: {name}") for layer in layers
               for key, name in (("load_entropy", "expert-load entropy (normalized)"), ("task_mi", "task–expert MI (nats)"))]
    for k, (_, column, name) in enumerate(panels):
        series = frame_series(frame, "probe", None, column)
        bands = curve_bands({label: series[label] for label in labels if label in series})
        _band_panel(axes[k % 2][k // 2], bands, colors, runs, name)
    return _finish(fig, axes, title, path)
