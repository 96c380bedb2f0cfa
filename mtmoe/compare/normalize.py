"""How a comparison turns raw returns into the scores it aggregates (`--normalize`).

- ``reference`` (default): each task's own reference normalization, (raw − low) / (high − low),
  with low/high taken from the *current* task registry. Runs written before a task had a
  reference (e.g. MinAtar before ``minatar_reference``) are re-normalized from their raw
  returns, and the report says which tasks were. A task without reference scores (Seaquest,
  Humanoid, classic control) falls back to ``best-label`` scaling, and the report says so.
- ``best-label``: every task's raw return divided by the best label's mean return on it in this
  comparison (per-comparison scaling: it makes every task weigh the same, but the scale moves
  with the labels compared).
- ``raw``: raw returns, unscaled.
"""

from __future__ import annotations

from mtmoe.compare.load import RunResult
from mtmoe.errors import MtmoeError

MODES = ("reference", "best-label", "raw")


def registry_normalization(registry, task: str) -> dict | None:
    """{low, high, source} of a task in the registry, None if the registry does not know it."""
    spec = registry.tasks.get(task) if registry is not None else None
    if spec is None:
        return None
    n = spec.normalization
    return {"low": float(n.low), "high": float(n.high), "source": n.source}


def renormalize(runs: list[RunResult], registry) -> dict[str, list[str]]:
    """Give every run the current registry's normalization of its tasks (in memory: the results
    folders are never touched). Returns {suite: tasks whose recorded normalization was missing or
    differed}; each run lists them in `run.renormalized`."""
    changed: dict[str, list[str]] = {}
    for r in runs:
        norms = r.summary.setdefault("normalization", {})
        for t in dict.fromkeys([*r.tasks, *r.train, *r.evals]):
            new = registry_normalization(registry, t)
            if new is None or _same(norms.get(t), new):
                continue
            norms[t] = new
            r.renormalized.append(t)
            if t not in changed.setdefault(r.suite, []):
                changed[r.suite].append(t)
    return changed


def renormalized_note(suite: str, tasks: list[str]) -> str:
    """The warning for a suite whose runs `renormalize` gave the current registry's references."""
    return (f"{suite}: {', '.join(tasks)}: normalized with the current task registry's reference scores "
            "(the runs recorded none, or other ones)")


def _same(old: dict | None, new: dict) -> bool:
    if not old:
        return False
    return (abs(float(old.get("low", 0.0)) - new["low"]) < 1e-12 and abs(float(old.get("high", 1.0)) - new["high"]) < 1e-12
            and str(old.get("source", "")).startswith("none") == new["source"].startswith("none"))


def load_registry_quietly(tasks_dirs=()):
    """The task registry, for re-normalization; a broken task file is an error of its own."""
    from mtmoe.tasks.registry import load_registry

    try:
        return load_registry(tasks_dirs)
    except MtmoeError:
        raise
    except Exception as e:  # noqa: BLE001 — one line, not a traceback
        raise MtmoeError(f"compare: could not read the task registry ({type(e).__name__}: {e})") from None


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise MtmoeError(f"--normalize: expected one of {', '.join(MODES)}, got {mode!r}")
    return mode
