"""`mtmoe compare DIR…`: compare placements (and MoE kinds) from results folders only.

Per suite: IQM / mean / median of normalized final scores with 95% stratified-bootstrap CIs
and the probability of improvement over placement ``none`` (rliable), performance profiles,
per-task learning curves and plasticity curves with CI bands, forgetting / drop / recovery per
switch for sequential suites, dormant fraction, srank and routing at the end, parameter counts.
Writes ``report.md`` and PNG plots to the report folder (regenerated on every call: they are
derived from the runs, which are never touched) and returns the main table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtmoe.compare.accounting import accounting, accounting_md, diverged
from mtmoe.compare.continual import continual_world_table
from mtmoe.compare.load import RunResult, find_run_dirs, load_runs
from mtmoe.compare.plasticity import (OLD_PROBE_NOTE, PLASTICITY_CAPTION, REPROBED_CAPTION, final_plasticity,
                                     needs_note, plasticity_rows, recorded_probe, reprobed)
from mtmoe.compare.stats import (SUCCESS_SCORES, aggregate_table, label_order, nonstationarity_table,
                                 pairwise_improvement, performance_profiles, score_matrices)
from mtmoe.errors import MtmoeError


MIN_SEEDS = 5


def compare(paths: list[Path], out: Path, score: str = "eval", reps: int = 2000, seed: int = 0,
            plots: bool = True, warn=print, normalize: str = "reference", tasks_dirs=()) -> dict:
    """Returns {suite: {"table": {label: stats}, "tasks": [...], "normalization": {...}, ...}}."""
    from mtmoe.compare.normalize import check_mode, load_registry_quietly, renormalize, renormalized_note
    from mtmoe.results import runs_frame

    check_mode(normalize)
    runs = load_runs(paths, warn)
    books = accounting(paths, find_run_dirs(paths), runs)
    for suite, e in books.items():
        for label, diff in e["pooled_differences"].items():
            warn(f"{suite}: the runs labelled {label} differ in {', '.join(diff)}; their statistics mix these "
                 "settings (see the report)")
    for r in diverged(runs):
        warn(f"{r.path}: diverged ({r.summary['stopped']}); left out of the aggregates, listed in the report")
    runs = [r for r in runs if not r.summary.get("stopped")]
    if not runs:
        raise MtmoeError("compare: every finished run diverged; nothing to compare (see the warnings)")
    renormalized = renormalize(runs, load_registry_quietly(tasks_dirs)) if normalize == "reference" else {}
    frame = runs_frame(runs) if plots else None
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for suite in sorted({r.suite for r in runs}):
        group = [r for r in runs if r.suite == suite]
        _warn_few_seeds(suite, group, warn)
        if renormalized.get(suite):
            warn(renormalized_note(suite, renormalized[suite]))
        entry = _suite_entry(group, score, reps, seed, normalize, warn)
        if entry is None:
            continue
        entry["continual_world"] = continual_world_table(group, runs)
        entry["renormalized"], entry["normalize"] = renormalized.get(suite, []), normalize
        entry["accounting"] = books.get(suite)
        if plots:
            entry["plots"] = _plots(group, frame[frame["suite"] == suite], entry, out, suite, reps, seed)
        result[suite] = entry
    (out / "report.md").write_text(render_report(result, paths, score, reps, seed, normalize))
    return result


def _warn_few_seeds(suite: str, group: list[RunResult], warn) -> None:
    """One line per suite naming the labels with fewer than MIN_SEEDS runs."""
    counts = {label: sum(r.label == label for r in group) for label in label_order(r.label for r in group)}
    few = {k: n for k, n in counts.items() if n < MIN_SEEDS}
    if few:
        warn(f"{suite}: fewer than {MIN_SEEDS} seeds for " + ", ".join(f"{k} ({n})" for k, n in few.items())
             + ": bootstrap CIs from so few runs are unreliable")


def _suite_entry(group: list[RunResult], score: str, reps: int, seed: int, normalize: str, warn) -> dict | None:
    suite = group[0].suite
    mats, tasks, how = score_matrices(group, score, warn, normalize)
    if not mats:
        warn(f"{suite}: no run has a {score} score for every task; suite left out")
        return None
    table = aggregate_table(mats, reps=reps, seed=seed)
    other = {"eval": "train", "train": "eval", "success": "train-success", "train-success": "success"}[score]
    other_mats, _, other_how = score_matrices(group, other, lambda msg: None, normalize)
    return {"other": {"score": other, "table": aggregate_table(other_mats, reps=reps, seed=seed) if other_mats
                      else {}, "normalization": other_how},
            "table": table, "pairwise": pairwise_improvement(mats, reps=reps, seed=seed), "tasks": tasks, "normalization": how, "scores": {k: v.tolist() for k, v in mats.items()},
            "per_task": _per_task(group, tasks, score), "params": _params(group), "flops": _flops(group),
            "steps": _steps(group), "nonstationarity": nonstationarity_table(group),
            "plasticity": final_plasticity(group), "reprobed": _current_probes(group), "plots": {}}


def _current_probes(group: list[RunResult]) -> dict:
    """The plasticity table by the current probe alone, when some runs recorded an older one."""
    from mtmoe.runner.probes import PROBE_VERSION

    old = any(recorded_probe(r)[0] and recorded_probe(r)[1] != PROBE_VERSION for r in group)
    return final_plasticity(group, reprobed) if old else {}


def _plots(group: list[RunResult], frame, entry: dict, out: Path, suite: str, reps: int, seed: int) -> dict[str, str]:
    from mtmoe.compare import plots
    from mtmoe.compare.routing import expert_load_plot

    made = {"aggregate": plots.aggregate_plot(entry["table"], out / f"{suite}-aggregate.png", suite)}
    taus, profiles, cis = performance_profiles({k: np.array(v) for k, v in entry["scores"].items()}, reps=reps, seed=seed)
    made["profile"] = plots.profile_plot(taus, profiles, cis, out / f"{suite}-profile.png", suite)
    made["curves"] = plots.learning_curves(frame, group, out / f"{suite}-curves.png", suite)
    made["plasticity"] = plots.plasticity_curves(frame, group, out / f"{suite}-plasticity.png", suite)
    made["expert_load"] = expert_load_plot(group, out / f"{suite}-expert-load.png", suite)
    return {k: p.name for k, p in made.items() if p is not None}


def _per_task(group: list[RunResult], tasks: list[str], score: str) -> dict[str, dict[str, tuple]]:
    """{label: {task: (mean, sample std, n)}} of raw final scores (success rates for the success scores)."""
    out = {}
    for label in label_order(r.label for r in group):
        out[label] = {}
        for t in tasks:
            if score in SUCCESS_SCORES:
                vals = [r.success_score(t, SUCCESS_SCORES[score]) for r in group if r.label == label]
            else:
                vals = [r.raw_score(t, score) for r in group if r.label == label]
            vals = [v for v in vals if v is not None]
            sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0  # the sample std: n − 1
            out[label][t] = (float(np.mean(vals)), sd, len(vals)) if vals else (None, None, 0)
    return out


def _params(group: list[RunResult]) -> dict[str, dict[str, int]]:
    """{label: {tower: parameters}} (first run of each label; all seeds build the same nets)."""
    out = {}
    for r in group:
        if r.label in out:
            continue
        counts = {}
        for net, c in (r.summary.get("param_counts") or {}).items():
            if net == "actor_critic":
                counts.update({k: v for k, v in c.items() if k in ("encoder", "actor", "critic") and v})
            else:
                counts[net] = c.get("total", 0)
        counts["total"] = sum(counts.values())
        out[r.label] = counts
    return out


def _flops(group: list[RunResult]) -> dict[str, float]:
    """{label: counted training FLOPs per env step} (summary.json's `flops`; runs without it are left out)."""
    out = {}
    for r in group:
        per_step = (r.summary.get("flops") or {}).get("per_env_step")
        if per_step and r.label not in out:
            out[r.label] = float(per_step)
    return out


def _steps(group: list[RunResult]) -> dict[str, tuple[int, float]]:
    """{label: (env steps, mean training steps/s)}."""
    out = {}
    for label in label_order(r.label for r in group):
        rs = [r for r in group if r.label == label]
        out[label] = (int(np.median([r.summary["steps"] for r in rs])),
                      float(np.mean([r.summary.get("steps_per_s", 0) for r in rs])))
    return out


def _ci(v) -> str:
    return "-" if v is None else f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"


def _k(n: float) -> str:
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2f}{unit}" if unit != "k" else f"{n / scale:.1f}k"
    return f"{n:g}"


def main_rows(entry: dict) -> list[list[str]]:
    rows = []
    for label, st in entry["table"].items():
        params = entry["params"].get(label, {})
        towers = " · ".join(f"{k} {_k(v)}" for k, v in params.items() if k != "total")
        rows.append([label, str(st["runs"]), _ci(st["iqm"]), _ci(st["mean"]), _ci(st["median"]),
                     _ci(st["p_improve"]) if st["p_improve"] is not None else "-", towers,
                     _k(entry["flops"][label]) if label in entry.get("flops", {}) else "-",
                     f"{entry['steps'][label][1]:,.0f}"])
    return rows


MAIN_HEADER = ["label", "runs", "IQM [95% CI]", "mean [95% CI]", "median [95% CI]", "P(> none) [95% CI]",
               "parameters", "FLOPs / env step", "steps/s"]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


NORMALIZE_TEXT = {
    "reference": "each task's reference normalization, (raw − low) / (high − low), low/high from the current task "
                 "registry (runs that predate a task's reference scores are re-normalized from their raw returns); "
                 "tasks without reference scores are divided by the best label's mean (best-label), so a task that no "
                 "label learns contributes mostly noise",
    "best-label": "best-label scaling: every task's raw return divided by the best label's mean return on it in this "
                  "comparison (the scale moves with the labels compared)",
    "raw": "raw returns, unscaled (tasks with large returns dominate the aggregates)"}


SCORE_TEXT = {
    "eval": "final evaluation return (deterministic policy, every task, at the end of training)",
    "train": "final training return (mean of the last 20 episodes; continual suites: at the end of each task's phase)",
    "success": "final evaluation success rate (Meta-World's info['success'] at any step of an episode)",
    "train-success": "success rate of the last 20 training episodes (continual suites: at the end of each task's phase)"}


def _continual_world_md(table: dict) -> list[str]:
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    score = next(iter(table.values()))["score"]
    rows = [[label, str(m["runs"]), f(m["average_performance"]), f(m["forgetting"]), f(m["forward_transfer"]),
             m["references"]] for label, m in table.items()]
    gaps = [m["end_gap"] for m in table.values() if m.get("end_gap")]
    stale = (f" A task's score at the end of its phase is its last evaluation in the phase, here up to {max(gaps):,} "
             "env steps before the switch (evaluations come every `eval_every` steps)." if gaps else "")
    return [f"Continual World's metrics (Wołczyk et al. 2021) on evaluation {score} scores, recomputed from each "
            "run's evaluation curve with the normalization above: average performance at the end, forgetting (score "
            "at the end of a task's own phase minus at the end; mean over tasks and seeds), forward transfer "
            "against single-task runs found among the compared folders, of the same network where there are such "
            "runs, else dense ones (the last column: tasks with references, and which), their curves taken at the "
            f"run's own evaluation points counted from the start of the task's phase.{stale}", "",
            _md_table(["label", "runs", "average performance", "forgetting", "forward transfer", "references"], rows),
            ""]


def _pairwise_md(pairs: dict[str, dict]) -> list[str]:
    """Every label against every other: P(row > column) [95% CI]."""
    labels = list(pairs)
    cells = [[x, *("" if x == y else _ci(pairs[x][y]) for y in labels)] for x in labels]
    return ["Probability of improvement between every two labels, P(row > column) [95% CI]: the chance that a run "
            "of the row's label beats a run of the column's on a task (0.5: no difference; a CI that leaves out 0.5 "
            "is a difference at this confidence; the main table's P(> none) is the column none, from other bootstrap resamples):", "",
            _md_table(["label", *labels], cells), ""]


def _plasticity_md(e: dict) -> list[str]:
    """The end-of-training plasticity table as recorded, and as re-probed where runs have probe.json."""
    md = []
    if e.get("plasticity"):
        note = [OLD_PROBE_NOTE, ""] if needs_note(e["plasticity"]) else []
        md += [PLASTICITY_CAPTION, "", *note, _md_table(*plasticity_rows(e["plasticity"])), ""]
    if e.get("reprobed"):
        md += [REPROBED_CAPTION, "", _md_table(*plasticity_rows(e["reprobed"])), ""]
    return md


def _nonstationarity_md(table: dict) -> list[str]:
    """Forgetting, drop and recovery per switch; drop and recovery only where a task comes back
    (a suite whose tasks each train once has neither: the columns are left out and it is said)."""
    f = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    rows = [(label, row) for label, ns in table.items() for row in ns["rows"]]
    revisits = any(row["drop"] is not None or row["recover_steps"] is not None for _, row in rows)
    text = ("Non-stationarity per switch (normalized evaluation scores as each run recorded them, with its tasks' "
            "normalization; forgetting: score of earlier tasks at the end of their phase minus at the end of this "
            "one, averaged over them")
    header = ["label", "phase", "task", "starts at", "forgetting"]
    if revisits:
        text += ("; drop: on a task's return, the score at the end of its last phase minus its first score in this "
                 "one; recovery: env steps until it regains that level; drop and recovery are \"-\" for a task's "
                 "first phase, where it has no earlier level):")
        header += ["drop", "steps to recover", "recovered"]
    else:
        text += "; no task comes back in this suite, so there is no drop or recovery to measure):"
    cells = [[label, str(row["phase"]), row["task"], f"{row['start']:,}", f(row["forgetting"])]
             + ([f(row["drop"]), f(row["recover_steps"]), row["recovered"] or "-"] if revisits else [])
             for label, row in rows]
    return [text, "", _md_table(header, cells), ""]


def render_report(result: dict, paths: list[Path], score: str, reps: int, seed: int,
                  normalize: str = "reference") -> str:
    what = SCORE_TEXT[score]
    md = ["# mtmoe comparison", "",
          f"Runs from: {', '.join(str(p) for p in paths)}. Score: {what}. Aggregates: rliable, "
          f"{reps} stratified-bootstrap resamples (seed {seed}), 95% percentile CIs. "
          f"P(> none): probability that a run of the label beats a run of placement none on a task "
          f"(Agarwal et al. 2021). Normalization (`--normalize {normalize}`): {NORMALIZE_TEXT[normalize]}. "
          "FLOPs / env step: the training FLOPs counted per env step (acting and updates: matrix products and "
          "convolutions, forward and backward). steps/s: the mean over a label's runs of training env steps/s, "
          "which depend on the machine (each suite's \"Machines\" line) and its load while the runs ran.", ""]
    for suite, e in result.items():
        md += [f"## {suite}", ""]
        if e.get("accounting"):
            md += accounting_md(e["accounting"])
        md += [f"Env steps per run: {', '.join(f'{k}: {v[0]:,}' for k, v in e['steps'].items())}.", "",
               _md_table(MAIN_HEADER, main_rows(e)), "",
               "Normalization: " + "; ".join(f"{t}: {h}" for t, h in e["normalization"].items()) + ".", ""]
        if e.get("renormalized"):
            md += [f"Re-normalized: the runs of {', '.join(e['renormalized'])} recorded no reference normalization "
                   "(or another one); their scores here are recomputed from raw returns with the current task "
                   "registry's reference scores.", ""]
        if e["other"]["table"]:
            o = e["other"]
            what_o = ("final training return (last 20 episodes; in a continual suite each task's is taken at the "
                      "end of its own phase, so it shows what the agent learned, without later forgetting)"
                      if o["score"] == "train" else "final evaluation return")
            md += [f"Second view, score = {what_o}:", "",
                   _md_table(["label", "runs", "IQM [95% CI]", "mean [95% CI]", "P(> none) [95% CI]"],
                             [[k, str(v["runs"]), _ci(v["iqm"]), _ci(v["mean"]),
                               _ci(v["p_improve"]) if v["p_improve"] is not None else "-"] for k, v in o["table"].items()]), "",
                   "Normalization: " + "; ".join(f"{t}: {h}" for t, h in o["normalization"].items()) + ".", ""]
        md += ["Raw final scores per task (mean ± sample standard deviation over runs):", "",
               _md_table(["label", *e["tasks"]],
                         [[label, *(f"{m:.2f} ± {s:.2f} (n={n})" if m is not None else "-" for m, s, n in
                                    (per[t] for t in e["tasks"]))] for label, per in e["per_task"].items()]), ""]
        if e.get("pairwise"):
            md += _pairwise_md(e["pairwise"])
        if e.get("continual_world"):
            md += _continual_world_md(e["continual_world"])
        if e["nonstationarity"]:
            md += _nonstationarity_md(e["nonstationarity"])
        md += _plasticity_md(e)
        for kind, caption in (("aggregate", "Aggregate scores"), ("profile", "Performance profiles"),
                              ("curves", "Learning curves (mean, 95% bootstrap band)"),
                              ("plasticity", "Plasticity: dormant neurons and srank per tower"),
                              ("expert_load", "Expert load per task (final probe, mean over seeds)")):
            if kind in e["plots"]:
                md += [f"![{caption}]({e['plots'][kind]})", ""]
    return "\n".join(md) + "\n"
