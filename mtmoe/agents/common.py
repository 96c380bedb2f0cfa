"""Small pieces the agents share."""

from __future__ import annotations

import numpy as np
import torch


def to_device(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """numpy -> tensor on `device`; on CUDA through pinned memory, without blocking the host.
    A tensor (from a device mixture) is moved only if it is elsewhere."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    x = np.ascontiguousarray(x)
    t = torch.from_numpy(x if x.flags.writeable else x.copy())  # the mixture's slot tables are read-only
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


class StatMeans:
    """Means of the per-update stats (scalar tensors or floats) between two log lines."""

    def __init__(self):
        self.sums: dict = {}
        self.counts: dict[str, int] = {}

    def add(self, stats: dict) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: float(v) / self.counts[k] for k, v in self.sums.items()}


class RunningMeanStd:
    """Running mean/variance per task (Chan et al. parallel update)."""

    def __init__(self, num_tasks: int = 1):
        self.mean = np.zeros(num_tasks)
        self.var = np.ones(num_tasks)
        self.count = np.full(num_tasks, 1e-4)

    def update(self, x: np.ndarray, task: int = 0) -> None:
        n, mean, var = len(x), x.mean(), x.var()
        delta = mean - self.mean[task]
        total = self.count[task] + n
        self.mean[task] += delta * n / total
        m2 = self.var[task] * self.count[task] + var * n + delta**2 * self.count[task] * n / total
        self.var[task], self.count[task] = m2 / total, total

    def update_per_task(self, x: np.ndarray, task_id: np.ndarray) -> None:
        for k in np.unique(task_id):
            self.update(x[task_id == k], int(k))


def task_interference(losses: dict, task: torch.Tensor, names: list[str] | None) -> dict:
    """Gradient interference between tasks: for each tower, the cosine between the per-task
    gradients of its loss, per pair of tasks and their mean. `losses` maps a tower name to
    (module, loss_of(mask) -> scalar over the samples the mask selects)."""
    from mtmoe.metrics import gradient_cosine, per_task_gradients

    tasks = sorted(set(task.tolist()))
    label = (lambda k: names[k]) if names else str
    out = {}
    for tower, (module, loss_of) in losses.items():
        params = [p for p in module.parameters() if p.requires_grad]
        pairs = gradient_cosine(per_task_gradients(loss_of, params, task, tasks))
        if pairs:
            out[tower] = {"mean": sum(pairs.values()) / len(pairs),
                          "pairs": {f"{label(a)}|{label(b)}": c for (a, b), c in pairs.items()}}
    return out
