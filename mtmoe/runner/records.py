"""What a run folder holds and how it is named: the folder, ``config.json``, the training lines of
``metrics.jsonl`` and ``summary.json``. Shared by ``mtmoe run`` (every backend), ``--resume``,
``mtmoe evaluate`` and sweeps.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections import defaultdict, deque
from datetime import datetime
from pathlib import Path

import numpy as np

from mtmoe.errors import MtmoeError
from mtmoe.runner.config import RunConfig


def git_commit() -> str | None:
    """The git commit of the mtmoe checkout (with '+dirty' for local changes), when it is one."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("+dirty" if dirty else "")) if sha else None


def cpu_fields(cpuinfo: str | None = None) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo's text (read when not given; {} off Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():  # setdefault: a later processor's block does not overwrite
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model(fields: dict[str, str] | None = None) -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module says."""
    fields = cpu_fields() if fields is None else fields
    return fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_generation(fields: dict[str, str]) -> str | None:
    """e.g. "family 26 model 2, AVX-512": two CPUs with one model name ("AMD EPYC" on a cloud VM)
    can differ 2x in speed, and the vector extension is most of that difference for torch."""
    flags = set(fields.get("flags", "").split())
    simd = next((name for flag, name in (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))
                 if flag in flags), None)
    parts = [f"family {fields['cpu family']} model {fields.get('model', '?')}"] if "cpu family" in fields else []
    return ", ".join(parts + ([simd] if simd else [])) or None


def machine_info(device) -> dict:
    """summary.json's `machine`: where the run ran (results from different machines are not
    comparable in speed), and a one-line `description` of it."""
    import torch

    gpu = torch.cuda.get_device_name(device) if str(device).startswith("cuda") else None
    fields = cpu_fields()  # /proc/cpuinfo read once for both
    info = {"cpu": cpu_model(fields), "cpu_generation": cpu_generation(fields), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "gpu": gpu}
    cpu = info["cpu"] + (f" ({info['cpu_generation']})" if info["cpu_generation"] else "")
    info["description"] = f"{gpu or cpu}, {info['cores']} cores, {info['torch_threads']} torch thread(s)"
    return info


def run_name(cfg: RunConfig) -> str:
    """e.g. ppo-critic-softmoe-penultimate-e4-s0 (a -w<width> part when the expert width is set)."""
    n = cfg.net
    kind = "dense" if n.placement == "none" else f"{n.moe}-{n.position}-e{n.experts_for()}"
    if n.expert_width and n.placement != "none":
        kind += f"-w{n.expert_width}"
    if n.placement == "none" and cfg.dense_match:
        kind += f"-match-{cfg.dense_match}"
    return f"{cfg.algo}-{n.placement}-{kind}-s{cfg.seed}"


def new_run_dir(out: Path, cfg: RunConfig, name: str | None = None) -> Path:
    """A fresh folder `<out>/<suite>/<name>-<time>` (name: run_name): results are never overwritten."""
    base = out / cfg.suite / f"{name or run_name(cfg)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    path.mkdir(parents=True)
    return path


def write_config(run_dir: Path, cfg: RunConfig, device, **extra) -> None:
    """``config.json``: the effective configuration, what it resolved to, the command and the commit."""
    (run_dir / "config.json").write_text(json.dumps(
        {**cfg.to_dict(), **extra, "device_resolved": str(device), "command": " ".join(sys.argv),
         "mtmoe_commit": git_commit()}, indent=2))


def read_config(run_dir: Path, what: str) -> RunConfig:
    """The RunConfig of a run folder; one clear error (starting with `what`, e.g. '--resume') for
    each way it can be missing or wrong."""
    if not run_dir.is_dir():
        raise MtmoeError(f"{what}: {run_dir} is not a folder (give a run folder made by `mtmoe run`)")
    path = run_dir / "config.json"
    if not path.is_file():
        raise MtmoeError(f"{what}: {run_dir} is not a run folder (no config.json)")
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise MtmoeError(f"{what}: {path} is unreadable ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("suite"), str):
        raise MtmoeError(f"{what}: {path} is not an mtmoe run config (no 'suite')")
    return RunConfig.from_dict(data, str(path))


class EpisodeLog:
    """Per-task returns of finished episodes: the window of the last ones, and everything
    (lengths and successes: periodic.EpisodeStats)."""

    def __init__(self, tasks: list[str], window: int = 20):
        self.tasks = tasks
        self.recent = {t: deque(maxlen=window) for t in tasks}
        self.recent_norm = {t: deque(maxlen=window) for t in tasks}
        self.count = defaultdict(int)

    def add(self, episodes: list[dict]) -> None:
        for e in episodes:
            self.recent[e["task"]].append(e["return"])
            self.recent_norm[e["task"]].append(e["normalized"])
            self.count[e["task"]] += 1

    def means(self) -> dict[str, float | None]:
        return {t: float(np.mean(v)) if v else None for t, v in self.recent.items()}

    def norm_means(self) -> dict[str, float | None]:
        return {t: float(np.mean(v)) if v else None for t, v in self.recent_norm.items()}


def normalization_of(tasks) -> dict:
    """summary.json's `normalization`: each task's (low, high, source)."""
    return {t.id: {"low": t.normalization.low, "high": t.normalization.high, "source": t.normalization.source}
            for t in tasks}


def flops_record(flops: dict | None, steps: int) -> dict | None:
    """summary.json's `flops`: per env step (as counted) and the total over `steps`."""
    return {**flops, "total": flops["per_env_step"] * steps} if flops else None


def write_summary(run_dir: Path, summary: dict) -> None:
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
