"""Assertions shared by the sweep tests of both backends (local processes and Ray)."""

from __future__ import annotations

import json


def assert_resumed_once(run_dirs, interrupted, steps: int) -> None:
    """Every run finished at `steps`; exactly the interrupted ones say they were resumed, and a
    resumed run logged no env step twice."""
    for d in run_dirs:
        summary = json.loads((d / "summary.json").read_text())
        assert summary["steps"] == steps and summary["resumed"] == (d in interrupted)
        logged = [json.loads(line)["global_step"] for line in (d / "metrics.jsonl").read_text().splitlines()]
        assert logged == sorted(set(logged))


def summary_stamps(run_dirs) -> dict:
    """summary.json modification times: a skipped run must leave them unchanged."""
    return {d: (d / "summary.json").stat().st_mtime_ns for d in run_dirs}
