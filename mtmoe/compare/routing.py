"""Expert load per task: which experts each task's tokens go to, at the end of training.

Read from each run's final probe (``summary.json`` ``final_probe.moe.<layer>.expert_load_per_task``,
recorded by probes since December 2026): for every MoE label and layer, a tasks × experts heatmap
of the load (the share of a task's tokens each expert processed; a row sums to 1 less what was
dropped), the mean over the label's seeds. A task-specialized layer shows a different bright cell
per row; a layer that routes every task alike shows identical rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtmoe.compare.load import RunResult
from mtmoe.compare.stats import label_order


def load_tables(runs: list[RunResult]) -> dict[tuple[str, str], tuple[list[str], np.ndarray, int]]:
    """{(label, layer): (tasks, mean load (tasks, experts), seeds)} over the runs that recorded it."""
    found: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        for layer, stats in ((run.summary.get("final_probe") or {}).get("moe") or {}).items():
            per_task = stats.get("expert_load_per_task")
            if per_task:
                found.setdefault((run.label, layer), []).append(per_task)
    out = {}
    for key, tables in found.items():
        tasks = [t for t in tables[0] if all(t in tab for tab in tables)]
        widths = {len(tab[t]) for tab in tables for t in tasks}
        if not tasks or len(widths) != 1:  # runs of one label must have the same experts
            continue
        out[key] = (tasks, np.mean([[tab[t] for t in tasks] for tab in tables], axis=0), len(tables))
    return out


def expert_load_plot(runs: list[RunResult], path: Path, title: str) -> Path | None:
    """One heatmap per (label, layer); None when no run recorded per-task expert load."""
    import matplotlib.pyplot as plt

    tables = load_tables(runs)
    if not tables:
        return None
    keys = [(label, layer) for label in label_order({k[0] for k in tables})
            for layer in sorted(layer for lab, layer in tables if lab == label)]
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    # constrained layout: long task names and two-line titles would otherwise run into the
    # neighbouring panels (8 grid labels in 3 rows did)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.0 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys):
        tasks, load, seeds = tables[key]
        image = ax.imshow(load, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_yticks(range(len(tasks)), [t.split("-", 1)[-1] for t in tasks], fontsize=7)
        ax.set_xticks(range(load.shape[1]), [str(e) for e in range(load.shape[1])], fontsize=7)
        ax.set_xlabel("expert", fontsize=8)
        ax.set_title(f"{key[0]}\n{key[1]} ({seeds} seed{'s' * (seeds > 1)})", fontsize=8)
        for (i, j), v in np.ndenumerate(load):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.5 else "black")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="share of the task's tokens")
    fig.suptitle(f"{title}: expert load per task (final probe)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
