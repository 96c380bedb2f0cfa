"""Read results folders (what `mtmoe run` and `mtmoe sweep` write) for comparison.

A run folder is any folder holding ``config.json``. A folder without ``summary.json`` (a run
still going, or killed) is skipped with a warning; an unreadable ``config.json`` or
``summary.json`` too; unreadable lines of ``metrics.jsonl`` are skipped and counted. Nothing in
a results folder makes loading crash: every problem becomes one warning line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mtmoe.errors import MtmoeError

AXES = ("placement", "moe", "position", "experts", "expert_width")


@dataclass
class RunResult:
    path: Path
    config: dict
    summary: dict
    train: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # task -> (step, return)
    evals: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # task -> (step, eval return)
    probes: list[tuple[int, dict]] = field(default_factory=list)  # (step, probe dict)
    success: dict[tuple[str, str, int], float] = field(default_factory=dict)  # (train|eval, task, step) -> rate
    label: str = ""
    renormalized: list[str] = field(default_factory=list)  # tasks whose normalization came from the registry

    @property
    def suite(self) -> str:
        return self.summary["suite"]

    @property
    def backend(self) -> str:
        return self.config.get("backend", "mtmoe")

    @property
    def tasks(self) -> list[str]:
        return list(self.summary["final_return"])

    @property
    def axes(self) -> dict:
        net = self.config.get("net", {})
        placement = net.get("placement", self.summary.get("placement"))
        if placement == "none":
            from mtmoe.scaling.sizes import parse_size_tag

            # e.g. 'e4-w256' or 'softmoe-big-e4-w0': the MoE network a dense twin matches
            kind, experts, width = parse_size_tag(self.config.get("dense_match") or "")
            return {"placement": "none", "moe": "-", "position": "-", "experts": experts, "expert_width": width,
                    "twin_of": kind}
        experts = net.get("num_experts", 0) or (net.get("num_tasks", 1) if net.get("moe") == "task" else 4)
        return {"placement": placement, "moe": net.get("moe"), "position": net.get("position"),
                "experts": experts, "expert_width": net.get("expert_width", 0)}

    def reference(self, task: str) -> bool:
        """Whether the task's scores are normalized against published reference scores."""
        norm = self.summary.get("normalization", {}).get(task)
        if norm is not None:
            return not str(norm.get("source", "")).startswith("none")
        return self.summary["final_normalized"].get(task) != self.summary["final_return"].get(task)

    def normalize(self, task: str, raw: float) -> float:
        """A raw return on the task's reference scale (unchanged for tasks without references)."""
        norm = self.summary.get("normalization", {}).get(task)
        if norm is None or not self.reference(task):
            return raw
        return (raw - norm["low"]) / (norm["high"] - norm["low"])

    def raw_score(self, task: str, kind: str = "eval") -> float | None:
        """Final raw return of a task ('eval' or 'train', as in `score`)."""
        if kind == "eval":
            return ((self.summary.get("eval") or {}).get(task) or {}).get("return")
        return self.summary["final_return"].get(task)

    def success_score(self, task: str, kind: str = "eval") -> float | None:
        """Final success rate of a task that reports success (Meta-World): 'eval' = the last
        evaluation's, 'train' = the last training episodes'; None for tasks without success."""
        if kind == "eval":
            return ((self.summary.get("eval") or {}).get(task) or {}).get("success")
        return (self.summary.get("final_success") or {}).get(task)

    def score(self, task: str, kind: str = "eval") -> float | None:
        """Final score of a task: 'eval' = last evaluation (deterministic policy, all tasks at
        the end), 'train' = mean of the last training episodes (for a continual suite: at the
        end of the task's own phase). Normalized when the task has reference scores, raw otherwise."""
        key = "normalized" if self.reference(task) else "return"
        if kind == "eval":
            return ((self.summary.get("eval") or {}).get(task) or {}).get(key)
        return self.summary["final_normalized" if key == "normalized" else "final_return"].get(task)


def find_run_dirs(paths: list[Path]) -> list[Path]:
    out = []
    for root in paths:
        if not root.exists():
            raise MtmoeError(f"compare: {root} does not exist")
        if (root / "config.json").is_file():
            out.append(root)
            continue
        for cfg in sorted(root.rglob("config.json")):
            if ".incomplete-" not in str(cfg.parent) and "tb" not in cfg.parent.parts:
                out.append(cfg.parent)
    return out


def _read_json(path: Path, warn) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        warn(f"{path}: unreadable ({type(e).__name__}); run skipped")
        return None


def load_run(path: Path, warn) -> RunResult | None:
    config = _read_json(path / "config.json", warn)
    if config is None:
        return None
    if not (path / "summary.json").is_file():
        warn(f"{path}: no summary.json (unfinished or killed run; resume it with `mtmoe run --resume`); skipped")
        return None
    summary = _read_json(path / "summary.json", warn)
    if summary is None:
        return None
    if not {"suite", "final_return", "final_normalized"} <= set(summary):
        warn(f"{path}/summary.json: missing fields; run skipped")
        return None
    run = RunResult(path, config, summary)
    bad = 0
    try:
        lines = (path / "metrics.jsonl").read_text(errors="replace").splitlines()
    except FileNotFoundError:
        warn(f"{path}: no metrics.jsonl: learning and plasticity curves of this run are left out")
        lines = []
    for line in lines:
        try:
            rec = json.loads(line)
            step = int(rec["global_step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            bad += 1
            continue
        try:
            _add_record(run, rec, step)
        except (AttributeError, TypeError, ValueError):
            bad += 1
    if bad:
        warn(f"{path}/metrics.jsonl: {bad} unreadable line(s) skipped")
    phases = (summary.get("nonstationarity") or {}).get("phases")
    if phases:  # continual: a task's training return is only measured in its own phases
        run.train = {t: [(s, v) for s, v in pts if any(p[0] == t and p[1] < s <= p[2] for p in phases)]
                     for t, pts in run.train.items()}
    return run


def _add_record(run: RunResult, rec: dict, step: int) -> None:
    """One metrics.jsonl line into the run's curves: training returns (and success rates, for
    tasks that report success), evaluation returns (and success), probes."""
    if "return" in rec:
        success = rec.get("success") or {}
        for t, v in (rec["return"] or {}).items():
            if v is not None:
                run.train.setdefault(t, []).append((step, float(v)))
                if success.get(t) is not None:
                    run.success[("train", t, step)] = float(success[t])
    elif "eval" in rec:
        for t, v in (rec["eval"] or {}).items():
            if v and v.get("return") is not None:
                run.evals.setdefault(t, []).append((step, float(v["return"])))
                if v.get("success") is not None:
                    run.success[("eval", t, step)] = float(v["success"])
    elif "probe" in rec and isinstance(rec["probe"], dict):
        run.probes.append((step, rec["probe"]))


def load_runs(paths: list[Path], warn) -> list[RunResult]:
    runs = [r for r in (load_run(p, warn) for p in find_run_dirs(paths)) if r is not None]
    if not runs:
        raise MtmoeError("compare: no finished runs found under " + ", ".join(map(str, paths)))
    assign_labels(runs)
    return runs


def assign_labels(runs: list[RunResult]) -> None:
    """Label = placement, plus the axes (MoE kind, position, experts, width) that vary in the suite
    (a dense twin: always the MoE network it matches, e.g. none/e4/w256, none/softmoe-big/e4), plus
    the training backend when runs of one suite come from more than one."""
    by_suite: dict[str, list[RunResult]] = {}
    for r in runs:
        by_suite.setdefault(r.suite, []).append(r)
    for group in by_suite.values():
        moe_runs = [r for r in group if r.axes["placement"] != "none"]
        varying = [a for a in AXES[1:] if len({r.axes[a] for r in moe_runs}) > 1]
        for r in group:
            ax = r.axes
            parts = [ax["placement"]]
            if ax["placement"] == "none" and (ax["experts"] or ax["twin_of"]):  # a dense twin: what it matches
                parts += [ax["twin_of"], _axis_part("experts", ax["experts"]) if ax["experts"] else "",
                          _axis_part("expert_width", ax["expert_width"])]
            elif ax["placement"] != "none":  # never pooled with `none`, whatever varies
                parts += [_axis_part(a, ax[a]) for a in varying]
            parts = [p for p in parts if p]
            r.label = "/".join(parts)
        if len({r.backend for r in group}) > 1:  # never pool mtmoe's PPO with Sample Factory's APPO
            for r in group:
                r.label += f" [{r.backend}]" if r.backend != "mtmoe" else ""


def _axis_part(axis: str, value) -> str:
    """A label's part for one axis: e4, w256 (no part for the automatic expert width, 0)."""
    if axis == "experts":
        return f"e{value}"
    if axis == "expert_width":
        return f"w{value}" if value else ""
    return str(value)


def backend_suffix(label: str) -> str:
    """' [sample-factory]' for a label of another backend's runs (see assign_labels), else ''."""
    i = label.find(" [")
    return label[i:] if i >= 0 else ""
