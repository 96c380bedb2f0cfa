"""`mtmoe scaling DIR…`: returns against parameters and compute per placement, intrinsic
performance and its power law (Hilton, Tang & Schulman 2023), from results folders.

A *family* is a placement (plus MoE kind / position when those vary); its *sizes* are the
expert counts / widths of a size sweep (placement none: the width-matched dense twins). Per
suite and family:
- final score against parameter count: IQM of normalized final scores with 95% stratified
  bootstrap CIs per size (rliable, as in `mtmoe compare`), and whether it rises with size;
- return against compute: each size's mean training curve (normalized return averaged over
  tasks, mean over seeds) against counted training FLOPs (``summary.json`` → flops);
- each MoE size against its width-matched dense twin (the same critic parameter count):
  P(MoE > twin) with 95% CIs (rliable's probability of improvement), the comparison of Obando-Ceron
  et al. 2024 (does MoE gain over a dense network of its size, and more so as it grows?);
- intrinsic performance: the compute-efficient frontier over the family's sizes, inverted
  (mtmoe.scaling.intrinsic), for every point of every seed's curve, and the fit of
  I^(-β) = (N_c/N)^α_N + (E_c/E)^α_E with N = parameters, E = env interactions, CIs from a
  bootstrap over seeds' curves.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from mtmoe.compare import _md_table
from mtmoe.compare.load import RunResult, load_runs
from mtmoe.compare.stats import aggregate_table, label_order, score_matrices
from mtmoe.scaling.intrinsic import fit_power_law, identified, intrinsic_performance


def family_of(r: RunResult) -> str:
    return family_of_label(r.label)


def family_of_label(label: str) -> str:
    return label.split("/")[0]


def params_of(r: RunResult) -> int:
    return int(sum(c.get("total", 0) for c in (r.summary.get("param_counts") or {}).values()))


def _task_scales(group: list[RunResult], normalize: str = "reference") -> dict[str, tuple[bool, float]]:
    """How each task's training returns are scaled, as --normalize scales the final scores: {task:
    (on the reference scale first, then divided by)}. reference: the reference scale where the task
    has one, else / the best final training return of any run; best-label: every task / that best
    return; raw: unscaled."""
    scales = {}
    for t in group[0].tasks:
        if normalize == "raw" or (normalize == "reference" and group[0].reference(t)):
            scales[t] = (normalize == "reference", 1.0)
        else:
            best = max((r.summary["final_return"].get(t) or 0.0) for r in group)
            scales[t] = (False, best if best > 0 else 1.0)
    return scales


def mean_curve(r: RunResult, scales: dict[str, tuple[bool, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, scaled training return averaged over tasks) at the steps where every task has one."""
    per_step: dict[int, dict[str, float]] = defaultdict(dict)
    for t, pts in r.train.items():
        on_reference, scale = scales[t]
        for s, v in pts:
            per_step[s][t] = (r.normalize(t, v) if on_reference else v) / scale
    tasks = set(r.tasks)
    steps = sorted(s for s, d in per_step.items() if set(d) == tasks)
    return np.array(steps, float), np.array([np.mean(list(per_step[s].values())) for s in steps])


def analyse_suite(group: list[RunResult], warn, reps: int = 2000, seed: int = 0, bootstrap: int = 200,
                  normalize: str = "reference") -> dict:
    mats, tasks, how = score_matrices(group, "eval", warn, normalize)
    table = aggregate_table(mats, reps=reps, seed=seed)
    scales = _task_scales(group, normalize)
    families: dict[str, dict] = {}
    for fam in label_order({family_of(r) for r in group}):
        runs = [r for r in group if family_of(r) == fam]
        sizes = {}
        for label in label_order({r.label for r in runs}):
            rs = [r for r in runs if r.label == label]
            flops = [(r.summary.get("flops") or {}).get("per_env_step") for r in rs]
            sizes[label] = {"params": params_of(rs[0]), "flops_per_step": flops[0], "runs": rs,
                            "score": table.get(label, {}).get("iqm"),
                            "scored_runs": len(mats[label]) if label in mats else 0}
        families[fam] = {"sizes": dict(sorted(sizes.items(), key=lambda kv: kv[1]["params"]))}
        families[fam]["trend"] = _trend(families[fam]["sizes"])
        families[fam]["fit"] = _fit_family(families[fam]["sizes"], scales, warn, fam, bootstrap, seed)
    return {"families": families, "normalization": how, "tasks": tasks,
            "twins": _against_twins(group, mats, table, reps, seed)}


def _twin_key(r: RunResult) -> tuple:
    """What a dense twin matches, from a run: (backend, MoE kind-position, experts, expert width)."""
    from mtmoe.scaling.sizes import match_kind

    ax = r.axes
    kind = ax["twin_of"] if ax["placement"] == "none" else match_kind(ax["moe"], ax["position"])
    return r.backend, kind, ax["experts"], ax["expert_width"]


def _against_twins(group: list[RunResult], mats: dict, table: dict, reps: int, seed: int) -> list[dict]:
    """Each MoE label with a width-matched dense twin among the runs (of its backend): both IQMs and
    P(MoE > twin). Only critic and both: a twin matches an MoE critic's parameters, which an
    actor-only MoE network does not have."""
    from mtmoe.metrics.aggregate import probability_of_improvement

    twin_of = {_twin_key(r): r.label for r in group if r.axes["placement"] == "none" and r.axes["experts"]}
    found = {r.label: (r.label, twin_of[_twin_key(r)], _twin_key(r)) for r in group
             if r.axes["placement"] in ("critic", "both") and _twin_key(r) in twin_of}
    found = {k: v for k, v in found.items() if v[0] in mats and v[1] in mats}
    rank = {fam: i for i, fam in enumerate(label_order({family_of_label(k) for k in found}))}
    pairs = [(m, t) for m, t, _ in sorted(found.values(), key=lambda v: (rank[family_of_label(v[0])], v[2]))]
    if not pairs:
        return []
    poi = probability_of_improvement(mats, pairs, reps=reps, seed=seed)
    return [{"moe": m, "twin": t, "moe_iqm": table[m]["iqm"], "twin_iqm": table[t]["iqm"], "p": poi[(m, t)],
             "runs": (len(mats[m]), len(mats[t]))} for m, t in pairs]


def _trend(sizes: dict) -> str:
    scored = [v for v in sizes.values() if v["score"] is not None]
    if len(scored) < 2:
        return "one size only"
    if min(scored[0]["scored_runs"], scored[-1]["scored_runs"]) < 2:  # the bootstrap has one run to draw: a point
        return "no CI to compare: the smallest or largest size has one run (a CI needs 2 or more seeds)"
    small, large = scored[0]["score"], scored[-1]["score"]
    if large[1] > small[2]:
        return "rises with parameters (largest size's CI above the smallest's)"
    if large[2] < small[1]:
        return "falls with parameters (largest size's CI below the smallest's)"
    return "no clear trend: the CIs of the smallest and largest sizes overlap"


def _fit_family(sizes: dict, scales, warn, fam: str, bootstrap: int, seed: int) -> dict | None:
    """Frontier over the sizes' seed-mean curves; I for every point of every seed's curve; the law's fit."""
    if len(sizes) < 2 or any(v["flops_per_step"] is None for v in sizes.values()):
        if len(sizes) >= 2:
            warn(f"{fam}: runs without counted FLOPs (summary.json from an older mtmoe): no intrinsic-performance fit")
        return None
    curves, seed_curves = {}, []
    for label, v in sizes.items():
        per_run = [mean_curve(r, scales) for r in v["runs"]]
        per_run = [(s, y) for s, y in per_run if len(s) >= 2]
        if not per_run:
            continue
        end = min(s[-1] for s, _ in per_run)
        grid = np.unique(np.concatenate([s[s <= end] for s, _ in per_run]))
        mean = np.mean([np.interp(grid, s, y) for s, y in per_run], axis=0)
        n, f = float(v["params"]), float(v["flops_per_step"])
        curves[n] = {"compute": grid * f, "interactions": grid, "return": mean, "label": label}
        seed_curves += [(n, {"compute": s * f, "interactions": s, "return": y}) for s, y in per_run]
    if len(curves) < 2:
        return None
    frontier_curves = {n: {k: c[k] for k in ("compute", "interactions", "return")} for n, c in curves.items()}
    N, E, I, group = [], [], [], []
    for gid, (n, c) in enumerate(seed_curves):
        m = intrinsic_performance(frontier_curves, points={n: c})
        N += list(m["size"])
        E += list(m["interactions"])
        I += list(m["intrinsic"])
        group += [gid] * len(m["size"])
    points = {"N": np.array(N), "E": np.array(E), "I": np.array(I)}
    try:
        fit = fit_power_law(points["N"], points["E"], points["I"], bootstrap=bootstrap, seed=seed, groups=group)
    except ValueError as e:
        warn(f"{fam}: power-law fit skipped ({e})")
        fit = None
    return {"fit": fit, "curves": curves, "points": points}


def scaling(paths: list[Path], out: Path, reps: int = 2000, seed: int = 0, bootstrap: int = 200,
            plots: bool = True, warn=print, tasks_dirs=(), normalize: str = "reference") -> dict:
    """Returns {suite: analyse_suite(...) + plots}. Scores are normalized as `mtmoe compare
    --normalize` does: with `reference`, runs that recorded other reference scores (or none) are
    re-normalized with the current task registry (plus ``tasks_dirs``)."""
    from mtmoe.compare.normalize import check_mode, load_registry_quietly, renormalize, renormalized_note

    check_mode(normalize)
    runs = load_runs(paths, warn)
    changed = renormalize(runs, load_registry_quietly(tasks_dirs)) if normalize == "reference" else {}
    for suite, tasks in changed.items():
        warn(renormalized_note(suite, tasks))
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for suite in sorted({r.suite for r in runs}):
        entry = analyse_suite([r for r in runs if r.suite == suite], warn, reps, seed, bootstrap, normalize)
        entry["plots"] = {}
        if plots:
            from mtmoe.scaling import plots as P

            entry["plots"] = {k: p.name for k, p in {
                "score_vs_params": P.score_vs_params(entry, out / f"{suite}-score-vs-params.png", suite),
                "return_vs_compute": P.return_vs_compute(entry, out / f"{suite}-return-vs-compute.png", suite),
                "intrinsic": P.intrinsic_plot(entry, out / f"{suite}-intrinsic.png", suite)}.items() if p}
        result[suite] = entry
    (out / "scaling.md").write_text(render(result, paths, reps, seed, normalize))
    return result


def _ci(v) -> str:
    return "-" if v is None else f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"


def _fit_ci(fit: dict, key: str) -> str:
    lo, hi = fit.get(f"{key}_ci", (np.nan, np.nan))
    return f"{fit[key]:.3g} [{lo:.3g}, {hi:.3g}]"


def size_rows(entry: dict) -> list[list[str]]:
    rows = []
    for fam, f in entry["families"].items():
        for label, v in f["sizes"].items():
            fl = v["flops_per_step"]
            rows.append([fam, label, f"{v['params']:,}", f"{fl:,.0f}" if fl else "-", str(len(v["runs"])), _ci(v["score"])])
    return rows


TWIN_HEADER = ["MoE", "dense twin", "runs", "MoE IQM", "twin IQM", "P(MoE > twin) [95% CI]"]


def twin_rows(entry: dict) -> list[list[str]]:
    return [[t["moe"], t["twin"], "{} / {}".format(*t["runs"]), _ci(t["moe_iqm"]), _ci(t["twin_iqm"]), _ci(t["p"])]
            for t in entry.get("twins", [])]


def fit_rows(entry: dict) -> list[list[str]]:
    rows = []
    for fam, f in entry["families"].items():
        fit = (f["fit"] or {}).get("fit")
        if fit:
            rows.append([fam, _fit_ci(fit, "alpha_N"), _fit_ci(fit, "alpha_E"), _fit_ci(fit, "beta"),
                         f"{fit['rmse_log']:.3f}", str(fit["n"]),
                         "yes" if identified(fit) else "no: an exponent sits at its bound"])
    return rows


FIT_HEADER = ["placement", "α_N [95% CI]", "α_E [95% CI]", "β [95% CI]", "RMSE log I", "points", "identified"]


def render(result: dict, paths, reps: int, seed: int, normalize: str = "reference") -> str:
    md = ["# mtmoe parameter scaling", "",
          f"Runs from: {', '.join(map(str, paths))}. Score: final evaluation return, normalized per task as in "
          f"`mtmoe compare --normalize {normalize}` (each suite's line below says how); IQM with 95% stratified-bootstrap CIs ({reps} resamples, seed {seed}, rliable). "
          "Parameters: all networks of the run. FLOPs: counted per env step (mtmoe.metrics.flops: matrix "
          "products and convolutions of the rollout forward passes and the update's forward and backward passes).", ""]
    for suite, e in result.items():
        md += [f"## {suite}", "", _md_table(["placement", "size", "parameters", "FLOPs / env step", "runs",
                                             "IQM [95% CI]"], size_rows(e)), "",
               "Normalization: " + "; ".join(f"{t}: {h}" for t, h in e["normalization"].items()) + ".", ""]
        md += [f"- **{fam}**: final score {f['trend']}." for fam, f in e["families"].items()] + [""]
        if e.get("twins"):
            md += ["Each MoE size against its width-matched dense twin (the same critic parameter count): "
                   "P(MoE > twin) is the chance that a run of the MoE size beats a run of the twin on a task "
                   "(0.5: no difference; a CI that leaves out 0.5 is a difference at this confidence). MoE "
                   "ahead of its twin, and more so as both grow, is the pattern Obando-Ceron et al. (2024) "
                   "report for SoftMoE in value-based agents.", "", _md_table(TWIN_HEADER, twin_rows(e)), ""]
        rows = fit_rows(e)
        if rows:
            md += ["Intrinsic performance I (Hilton et al. 2023: the least training compute at which any size of "
                   "the family reaches a return) fitted as I^(-β) = (N_c/N)^α_N + (E_c/E)^α_E with "
                   "β = α_N·α_E/(α_N+α_E); N parameters, E env interactions; 95% CIs from a bootstrap over "
                   "seeds' curves (training returns, scaled per task as --normalize says: with reference, on the "
                   "task's reference scale where it has one, else divided by the best final training return of "
                   "any run; with best-label, every task divided by that best return; raw: unscaled). With few "
                   "sizes and short runs the frontier is coarse: read the exponents as a description of these "
                   "runs, not as a law.", "",
                   _md_table(FIT_HEADER, rows), ""]
        for kind, caption in (("score_vs_params", "Final score against parameters"),
                              ("return_vs_compute", "Return against compute per size"),
                              ("intrinsic", "Intrinsic performance and the fitted law")):
            if kind in e["plots"]:
                md += [f"![{caption}]({e['plots'][kind]})", ""]
    return "\n".join(md) + "\n"
