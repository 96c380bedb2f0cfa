"""The run's logger: every log point goes to each sink — TensorBoard (``<run>/tb``) always,
Weights & Biases when asked for (``mtmoe run --wandb``; the optional extra ``.[wandb]``).

W&B gets the same scalars and histograms as TensorBoard, with ``global_step`` as their x axis
(so a resumed run may log a step again), the run's config.json as its config, the run folder's
name as its name and the run folder as its directory. Text entries are TensorBoard's only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtmoe.errors import MtmoeError

WANDB_ID = "wandb-id.txt"  # the W&B run id, so a resumed run logs into the same W&B run


@dataclass(frozen=True)
class WandbOptions:
    project: str = "mtmoe"
    group: str | None = None


def import_wandb():
    """The wandb module, or one line saying how to get it."""
    try:
        import wandb
    except ImportError:
        raise MtmoeError('--wandb: the wandb package is not installed (pip install -e ".[wandb]")') from None
    return wandb


class TensorBoardSink:
    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def histogram(self, name: str, values: np.ndarray, weights: np.ndarray, edges: np.ndarray, step: int) -> None:
        counts, _ = np.histogram(values, bins=edges, weights=weights)
        self.writer.add_histogram_raw(name, min=float(values.min()), max=float(values.max()), num=float(weights.sum()),
                                      sum=float((values * weights).sum()),
                                      sum_squares=float((values ** 2 * weights).sum()),
                                      bucket_limits=edges[1:].tolist(), bucket_counts=counts.tolist(), global_step=step)

    def text(self, name: str, text: str, step: int) -> None:
        self.writer.add_text(name, text, step)

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, options: WandbOptions, run_dir: Path, config: dict):
        self.wandb = import_wandb()
        id_file = run_dir / WANDB_ID
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        try:
            self.run = self.wandb.init(project=options.project, group=options.group, name=run_dir.name,
                                       dir=str(run_dir), config=config, id=run_id,
                                       resume="allow" if run_id else None)
        except Exception as e:  # not logged in, no network, a bad project name: wandb raises many kinds
            reason = (str(e).splitlines() or [""])[0][:160]
            raise MtmoeError(f"--wandb: W&B did not start ({type(e).__name__}: {reason}); run `wandb login`, "
                             "or set WANDB_MODE=offline to keep the run on disk") from None
        id_file.write_text(self.run.id)
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**values, "global_step": step})

    def histogram(self, name: str, values: np.ndarray, weights: np.ndarray, edges: np.ndarray, step: int) -> None:
        counts, _ = np.histogram(values, bins=edges, weights=weights)
        self.run.log({name: self.wandb.Histogram(np_histogram=(counts.tolist(), edges.tolist())), "global_step": step})

    def text(self, name: str, text: str, step: int) -> None:
        pass  # the scalars beside each text entry (e.g. schedule/task_index) carry the same event

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class RunLogger:
    """One logger per run: ``scalars``, ``histogram``, ``text`` go to every sink."""

    def __init__(self, run_dir: Path, config: dict | None = None, wandb: WandbOptions | None = None):
        self.sinks = [TensorBoardSink(run_dir / "tb")]
        if wandb is not None:
            try:
                self.sinks.append(WandbSink(wandb, run_dir, config or {}))
            except BaseException:
                self.close(failed=True)
                raise

    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        """Log the numbers of `values` (others, and None, are left out) as `<prefix><key>`."""
        numbers = {f"{prefix}{k}": float(v) for k, v in values.items() if isinstance(v, (int, float))}
        if numbers:
            for sink in self.sinks:
                sink.scalars(step, numbers)

    def histogram(self, name: str, values, step: int, weights=None, bins=None) -> None:
        """The distribution of `values` (each counted `weights` times, default once) over `bins`
        (edges; default 30 between their min and max)."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        if not values.size:
            return
        edges = np.histogram_bin_edges(values, bins=30) if bins is None else np.asarray(bins, dtype=np.float64)
        for sink in self.sinks:
            sink.histogram(name, values, weights, edges, step)

    def text(self, name: str, text: str, step: int) -> None:
        for sink in self.sinks:
            sink.text(name, text, step)

    def close(self, failed: bool = False) -> None:
        for sink in self.sinks:
            sink.close(failed)
