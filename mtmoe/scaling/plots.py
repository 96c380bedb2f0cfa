"""PNG plots of `mtmoe scaling`."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from mtmoe.scaling.intrinsic import predict  # noqa: E402


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


def intrinsic_plot(entry: dict, path: Path, title: str) -> Path | None:
    """Per placement: intrinsic performance against env interactions per size, and the fitted law."""
    fams = [(fam, f["fit"]) for fam, f in entry["families"].items() if f["fit"] and f["fit"]["fit"]]
    if not fams:
        return None
    fig, axes = plt.subplots(1, len(fams), figsize=(4.5 * len(fams), 3.8), squeeze=False)
    for ax, (fam, fit) in zip(axes[0], fams):
        pts = fit["points"]
        for k, n in enumerate(sorted(set(pts["N"]))):
            sel = (pts["N"] == n) & np.isfinite(pts["I"]) & (pts["I"] > 0)
            color = plt.get_cmap("viridis")(k / max(1, len(set(pts["N"])) - 1))
            ax.scatter(pts["E"][sel], pts["I"][sel], s=4, color=color, alpha=0.4)
            e = np.geomspace(max(1.0, pts["E"][sel].min()) if sel.any() else 1.0, pts["E"].max(), 50)
            ax.plot(e, predict(fit["fit"], n, e), color=color, label=f"N = {n / 1e3:.0f}k")
        f = fit["fit"]
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels run into each other
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("env interactions E")
        ax.set_ylabel("intrinsic performance I (FLOPs)")
        ax.set_title(f"{fam}: α_N={f['alpha_N']:.2g}, α_E={f['alpha_E']:.2g}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)
