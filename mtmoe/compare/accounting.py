"""Which runs a comparison holds and which it lacks, so none is dropped silently.

Per suite: the runs in the aggregates (seeds per label), runs that diverged (a non-finite loss
stopped them: summary.json's ``stopped``; left out of the aggregates, their last evaluation is
not a final score), runs without summary.json (unfinished or killed), and runs that a
``sweep.json`` among the compared folders planned but that have no folder at all. Also the
machines the runs ran on (summary.json's ``machine``), and the settings in which runs pooled
under one label differ (a label names only the network's axes; nothing else may vary silently).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from mtmoe.compare.load import RunResult
from mtmoe.compare.stats import label_order


def diverged(runs: list[RunResult]) -> list[RunResult]:
    """The runs a non-finite loss stopped."""
    return [r for r in runs if r.summary.get("stopped")]


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# config.json keys that may differ between the seeds of one label: the seed itself, where and how
# fast it ran, how it was started, and bookkeeping that does not touch what is learned
_IGNORED = {"seed", "command", "mtmoe_commit", "device", "device_resolved", "threads", "checkpoint_every",
            "log_every"}


def _settings(config: dict) -> dict[str, str]:
    """A run's config as flat 'section.key' → JSON text, without the ignored keys and the sections of
    algorithms other than its own."""
    from mtmoe.agents.registry import algo_names

    other_algos = set(algo_names()) - {config.get("algo")}
    out = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if prefix == "" and (k in _IGNORED or (k in other_algos and isinstance(v, dict))):
                continue
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = json.dumps(v, sort_keys=True)

    walk(config, "")
    return out


def pooled_differences(runs: list[RunResult]) -> dict[str, dict[str, list[str]]]:
    """{label: {setting: [its values, sorted]}} for the settings in which the runs of one label differ
    ('absent' where a run's config lacks the key)."""
    out = {}
    for label in label_order(r.label for r in runs):
        settings = [_settings(r.config) for r in runs if r.label == label]
        keys = sorted(set().union(*settings))
        diff = {k: sorted({s.get(k, "absent") for s in settings}) for k in keys}
        diff = {k: v for k, v in diff.items() if len(v) > 1}
        if diff:
            out[label] = diff
    return out


def planned_runs(paths: list[Path]) -> set[Path]:
    """Run folders that the sweep.json files in (or just above) the compared folders planned
    (invocations recorded before sweeps listed their folders add nothing)."""
    files = set()
    for p in paths:
        files.update(p.rglob("sweep.json") if p.is_dir() else [])
        if (p.parent / "sweep.json").is_file():
            files.add(p.parent / "sweep.json")
    planned = set()
    for f in files:
        history = _json(f)
        for call in history if isinstance(history, list) else []:
            for name in (call.get("run_dirs") or []) if isinstance(call, dict) else []:
                planned.add((f.parent / name).resolve())
    roots = [p.resolve() for p in paths]
    return {d for d in planned if any(d == r or r in d.parents for r in roots)}


def _shown(folder: Path) -> str:
    """A resolved folder as the user would type it: relative to the working directory when inside it."""
    try:
        return str(folder.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(folder)


def accounting(paths: list[Path], run_dirs: list[Path], runs: list[RunResult]) -> dict[str, dict]:
    """{suite: {seeds: {label: [seed…]}, diverged: [(label, seed, why)], unfinished: [folder…],
    never_started: [folder…], planned: n or None, machines: {description: runs},
    pooled_differences: {label: {setting: [values]}}}}."""
    finished = {r.path.resolve() for r in runs}
    out: dict[str, dict] = {}

    def entry(suite: str) -> dict:
        return out.setdefault(suite, {"seeds": {}, "diverged": [], "unfinished": [], "never_started": [],
                                      "planned": None, "machines": Counter()})

    for r in runs:
        e = entry(r.suite)
        if r.summary.get("stopped"):
            e["diverged"].append((r.label, r.summary.get("seed"), str(r.summary["stopped"])))
        else:
            e["seeds"].setdefault(r.label, []).append(r.summary.get("seed"))
        e["machines"][(r.summary.get("machine") or {}).get("description", "not recorded")] += 1
    for d in run_dirs:
        if d.resolve() not in finished and not (d / "summary.json").is_file():
            config = _json(d / "config.json")
            if isinstance(config, dict) and config.get("suite"):
                entry(config["suite"])["unfinished"].append(str(d))
    planned = planned_runs(paths)
    existing = {d.resolve() for d in run_dirs}
    for d in sorted(planned):
        suite = d.parent.name
        entry(suite)["planned"] = (entry(suite)["planned"] or 0) + 1
        if d not in existing:
            entry(suite)["never_started"].append(_shown(d))
    for suite, e in out.items():
        e["pooled_differences"] = pooled_differences([r for r in runs if r.suite == suite and not r.summary.get("stopped")])
        e["seeds"] = {k: sorted(e["seeds"][k], key=str) for k in label_order(e["seeds"])}
        e["machines"] = dict(e["machines"])
    return out


def accounting_md(a: dict) -> list[str]:
    """The report's lines for one suite's accounting."""
    in_aggregates = sum(len(s) for s in a["seeds"].values())
    planned = f"{a['planned']} planned by sweep.json; " if a["planned"] is not None else ""
    md = [f"Runs: {planned}{in_aggregates} in the aggregates, {len(a['diverged'])} diverged, "
          f"{len(a['unfinished'])} unfinished, {len(a['never_started'])} planned but never started. "
          "Seeds per label: " + "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in a["seeds"].items()) + ".", ""]
    if a["diverged"]:
        md += ["Diverged (a non-finite loss stopped them; left out of every table below): "
               + "; ".join(f"{label} seed {seed}: {why}" for label, seed, why in a["diverged"]) + ".", ""]
    for key, what in (("unfinished", "Unfinished (no summary.json; resume them)"),
                      ("never_started", "Planned, never started")):
        if a[key]:
            md += [f"{what}: " + ", ".join(f"`{p}`" for p in a[key]) + ".", ""]
    for label, diff in a.get("pooled_differences", {}).items():
        md += [f"**Pooled runs differ**: the runs of {label} differ in "
               + "; ".join(f"`{k}` ({' / '.join(v)})" for k, v in diff.items())
               + ": the label's statistics mix these settings.", ""]
    md += ["Machines: " + "; ".join(f"{m} ({n} run{'s' * (n != 1)})" for m, n in a["machines"].items()) + ".", ""]
    return md
