"""Which runs a comparison holds and which it lacks, so none is dropped silently.

Per suite: the runs in the aggregates (seeds per label), runs that diverged (a non-finite loss
stopped them: summary.json's ``stopped``; left out of the aggregates, their last evaluation is
not a final score), runs without summary.json (unfinished or killed), and runs that a
``sweep.json`` among the compared folders planned but that have no folder at all. Also the
machines the runs ran on (summary.json's ``machine``).
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
    never_started: [folder…], planned: n or None, machines: {description: runs}}}."""
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
    for e in out.values():
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
    md += ["Machines: " + "; ".join(f"{m} ({n} run{'s' * (n != 1)})" for m, n in a["machines"].items()) + ".", ""]
    return md
