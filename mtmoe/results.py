"""Results folders as one pandas DataFrame (`mtmoe export`), read through mtmoe.compare.load.

One row per run × task × log point. Columns (in this order; README "Results as a DataFrame"):

- run axes: ``suite, algo, placement, moe, position, experts, expert_width, seed, run`` (the run
  folder), ``label`` (as `mtmoe compare` labels it);
- ``task, step`` (env steps), ``kind``: ``train`` (mean of the last 20 training episodes; in a
  continual suite only inside the task's own phases), ``eval`` (deterministic-policy evaluation)
  or ``probe`` (a probe logged at a step with no train/eval row of that task);
- ``raw`` (return), ``normalized`` (reference normalization of the *current* task registry,
  so runs that predate a task's reference scores are re-normalized; raw where the task has none),
  ``success`` (0–1 success rate; NaN where the task reports none);
- ``probe/…``: the probe logged at that step, flattened like mtmoe.runner.probes.flatten: the
  row's task's per-tower values (``probe/<tower>/<stat>``) and the run-wide ones
  (``probe/weight_norm/…``, ``probe/moe/<layer>/…``, ``probe/interference/…``); NaN elsewhere.

Bad folders never crash loading: they become warnings (see mtmoe.compare.load).
"""

from __future__ import annotations

import math
from pathlib import Path

from mtmoe.compare.load import RunResult
from mtmoe.errors import MtmoeError
from mtmoe.runner.probes import flatten

BASE_COLUMNS = ("suite", "algo", "placement", "moe", "position", "experts", "expert_width", "seed", "run", "label",
                "task", "step", "kind", "raw", "normalized", "success")
KINDS = ("train", "eval", "probe")


def load_runs(dirs, warn=None, tasks_dirs=(), renormalize: bool = True):
    """The runs under `dirs` (searched recursively) as a DataFrame; see the module docstring."""
    from mtmoe.compare.load import load_runs as load_results
    from mtmoe.compare.normalize import load_registry_quietly
    from mtmoe.compare.normalize import renormalize as renorm

    warn = warn or (lambda msg: None)
    runs = load_results([Path(d) for d in dirs], warn)
    if renormalize:
        renorm(runs, load_registry_quietly(tasks_dirs))
    return runs_frame(runs)


def runs_frame(runs: list[RunResult]):
    """The DataFrame of already loaded (and labelled) runs."""
    import pandas as pd

    rows = [row for r in runs for row in run_rows(r)]
    df = pd.DataFrame(rows)
    for col in BASE_COLUMNS:
        if col not in df:
            df[col] = pd.Series(dtype=float)
    probe_cols = sorted(c for c in df.columns if c not in BASE_COLUMNS)
    df = df[list(BASE_COLUMNS) + probe_cols]
    order = {k: i for i, k in enumerate(KINDS)}
    df = df.sort_values(["suite", "run", "task", "step", "kind"], key=lambda c: c.map(order) if c.name == "kind" else c,
                        kind="stable").reset_index(drop=True)
    return df.astype({"step": "int64", "seed": "int64", "experts": "int64", "expert_width": "int64"}) if len(df) else df


def _axes(r: RunResult) -> dict:
    ax = r.axes
    return {"suite": r.suite, "algo": r.config.get("algo", r.summary.get("algo")), "placement": ax["placement"],
            "moe": ax["moe"], "position": ax["position"], "experts": int(ax["experts"] or 0),
            "expert_width": int(ax["expert_width"] or 0), "seed": int(r.config.get("seed", r.summary.get("seed", 0))),
            "run": str(r.path), "label": r.label}


def probe_columns(probe: dict | None, task: str) -> dict[str, float]:
    """{'probe/<tower>/<stat>': …} of the task, plus the run-wide parts of the probe."""
    if not probe:
        return {}
    out = flatten((probe.get("tasks") or {}).get(task) or {}, "probe")
    out.update(flatten({k: v for k, v in probe.items() if k != "tasks"}, "probe"))
    return {k: v for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_rows(r: RunResult) -> list[dict]:
    base = _axes(r)
    probes = {step: probe for step, probe in r.probes}
    rows, seen = [], set()
    for kind, series in (("train", r.train), ("eval", r.evals)):
        for task, points in series.items():
            for step, raw in points:
                seen.add((task, step))
                rows.append({**base, "task": task, "step": step, "kind": kind, "raw": raw,
                             "normalized": r.normalize(task, raw),
                             "success": r.success.get((kind, task, step), math.nan),
                             **probe_columns(probes.get(step), task)})
    for step, probe in probes.items():
        for task in (probe.get("tasks") or {}):
            if (task, step) not in seen:
                rows.append({**base, "task": task, "step": step, "kind": "probe", "raw": math.nan,
                             "normalized": math.nan, "success": math.nan, **probe_columns(probe, task)})
    return rows


def export(dirs, out: Path, force: bool = False, warn=None, tasks_dirs=()) -> tuple[Path, int]:
    """Write the DataFrame to `out` (.csv or .parquet); (path, rows). Never overwrites without `force`."""
    out = Path(out)
    fmt = out.suffix.lower()
    if fmt not in (".csv", ".parquet"):
        raise MtmoeError(f"export: --out must end in .csv or .parquet, got {out}")
    if out.exists() and not force:
        raise MtmoeError(f"export: {out} exists; pass --force to overwrite it")
    if fmt == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise MtmoeError("export: writing .parquet needs pyarrow (pip install -e \".[parquet]\"); "
                             "or write --out runs.csv") from None
    df = load_runs(dirs, warn, tasks_dirs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    if fmt == ".csv":
        df.to_csv(tmp, index=False)
    else:
        df.to_parquet(tmp, index=False)
    tmp.replace(out)
    return out, len(df)
