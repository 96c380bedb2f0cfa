"""PNG plots of `mtmoe scaling`."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from mtmoe.scaling.intrinsic import identified, predict  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def score_vs_params(entry: dict, path: Path, title: str) -> Path | None:
    """IQM of the final score (95% CI bars) against parameters, a line per placement."""
    fig, ax = plt.subplots(figsize=(6, 4))
    drew = False
    for fam, f in entry["families"].items():
        pts = [(v["params"], *v["score"]) for v in f["sizes"].values() if v["score"] is not None]
        if not pts:
            continue
        x, y, lo, hi = map(np.array, zip(*pts))
        ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", capsize=3, label=fam)
        drew = True
    if not drew:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("parameters (all networks)")
    ax.set_ylabel("IQM normalized final score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def return_vs_compute(entry: dict, path: Path, title: str) -> Path | None:
    """Per placement: each size's seed-mean training curve against counted FLOPs."""
    fams = [(fam, f["fit"]["curves"]) for fam, f in entry["families"].items() if f["fit"]]
    if not fams:
        return None
    fig, axes = plt.subplots(1, len(fams), figsize=(4.5 * len(fams), 3.8), squeeze=False)
    for ax, (fam, curves) in zip(axes[0], fams):
        for n, c in sorted(curves.items()):
            ax.plot(c["compute"], c["return"], label=f"{c['label']} ({n / 1e3:.0f}k params)")
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel("normalized training return (task mean)")
        ax.set_title(f"{title}: {fam}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def intrinsic_plot(entry: dict, path: Path, title: str, keep: bool = False):
    """Per placement: intrinsic performance against env interactions per size, and the fitted law.
    A fit whose exponent sits at its bound is not identified by the runs: its curves are dashed
    and the panel says so. Returns the path (or (path, fig) with `keep`), None without fits."""
    fams = [(fam, f["fit"]) for fam, f in entry["families"].items() if f["fit"] and f["fit"]["fit"]]
    if not fams:
        return None
    fig, axes = plt.subplots(1, len(fams), figsize=(4.5 * len(fams), 3.8), squeeze=False)
    for ax, (fam, fit) in zip(axes[0], fams):
        _intrinsic_panel(ax, fam, fit)
    fig.suptitle(title)
    if keep:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        return path, fig
    return _save(fig, path)


def _intrinsic_panel(ax, fam: str, fit: dict) -> None:
    pts, f = fit["points"], fit["fit"]
    ok = identified(f)
    sizes = sorted(set(pts["N"]))
    for k, n in enumerate(sizes):
        sel = (pts["N"] == n) & np.isfinite(pts["I"]) & (pts["I"] > 0)
        color = plt.get_cmap("viridis")(k / max(1, len(sizes) - 1))
        ax.scatter(pts["E"][sel], pts["I"][sel], s=4, color=color, alpha=0.4)
        e = np.geomspace(max(1.0, pts["E"][sel].min()) if sel.any() else 1.0, pts["E"].max(), 50)
        ax.plot(e, predict(f, n, e), color=color, ls="-" if ok else "--", alpha=1.0 if ok else 0.6,
                label=f"N = {n / 1e3:.0f}k" + ("" if ok else " (fit not identified)"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels run into each other
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("env interactions E")
    ax.set_ylabel("intrinsic performance I (FLOPs)")
    if ok:
        ax.set_title(f"{fam}: α_N={f['alpha_N']:.2g}, α_E={f['alpha_E']:.2g}", fontsize=9)
    else:
        ax.set_title(f"{fam}: power law not identified", fontsize=9, color="firebrick")
        ax.text(0.02, 0.98, "an exponent sits at its fit bound:\nthe runs do not pin the law down\n(dashed: not a result)",
                transform=ax.transAxes, va="top", fontsize=7, color="firebrick")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
