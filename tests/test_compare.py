"""`mtmoe compare` on synthetic results folders: statistics equal rliable's, bad files warn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rliable import library as rly
from rliable import metrics as rly_metrics

from mtmoe.cli import main
from mtmoe.compare import compare
from mtmoe.compare.load import load_runs
from mtmoe.compare.stats import aggregate_table, nonstationarity_table, score_matrices
from mtmoe.errors import MtmoeError

TASKS = ["task-a", "task-b", "task-c"]
RNG = np.random.default_rng(0)
# (label placement, seed) -> normalized final score per task: known arrays to compare with rliable
SCORES = {p: RNG.uniform(0, 1, (5, 3)) + (0.3 if p == "critic" else 0.0) for p in ("none", "critic")}


def write_run(root, suite, placement, seed, scores, reference=True, steps=1000, phases=None, backend=None):
    """A results folder as `mtmoe run` writes it (the fields compare reads)."""
    path = root / suite / f"{backend or 'ppo'}-{placement}-s{seed}"
    path.mkdir(parents=True)
    net = {"placement": placement, "moe": "softmoe", "position": "penultimate", "num_experts": 4, "expert_width": 0}
    config = {"suite": suite, "algo": "ppo", "seed": seed, "net": net, **({"backend": backend} if backend else {})}
    (path / "config.json").write_text(json.dumps(config))
    norm = {t: {"low": 0.0, "high": 1.0, "source": "test reference" if reference else "none: normalized equals raw"}
            for t in TASKS}
    summary = {"suite": suite, "algo": "ppo", "placement": placement, "seed": seed, "steps": steps,
               "steps_per_s": 100.0, "final_return": dict(zip(TASKS, scores)),
               "final_normalized": dict(zip(TASKS, scores)), "normalization": norm,
               "eval": {t: {"return": s, "normalized": s, "episodes": 8} for t, s in zip(TASKS, scores)},
               "param_counts": {"actor_critic": {"encoder": 0, "actor": 100, "critic": 200 if placement == "none" else 300,
                                                 "total": 300}},
               "nonstationarity": None}
    if phases:
        summary["nonstationarity"] = {
            "phases": phases, "switch_drop": [],
            "forgetting": [{"phase": 1, "task": TASKS[0], "forgetting": 0.5 + seed}],
            "steps_to_recover": [{"phase": 1, "task": TASKS[1], "steps": 100 * (seed + 1)}]}
    (path / "summary.json").write_text(json.dumps(summary))
    lines = [{"global_step": s, "return": {t: float(v) * s / steps for t, v in zip(TASKS, scores)}}
             for s in range(100, steps + 1, 100)]
    lines += [{"global_step": s, "probe": {"tasks": {t: {"critic": {"dormant@0.025": 0.1, "srank": 5}} for t in TASKS}}}
              for s in (500, 1000)]
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


@pytest.fixture
def results(tmp_path):
    for placement, mat in SCORES.items():
        for seed, row in enumerate(mat):
            write_run(tmp_path / "res", "suite-x", placement, seed, [float(v) for v in row])
    return tmp_path / "res"


def test_iqm_and_cis_equal_rliable_on_the_same_arrays(results, tmp_path):
    out = compare([results], tmp_path / "report", reps=500, seed=3, plots=False, warn=pytest.fail)
    table = out["suite-x"]["table"]
    np.random.seed(3)  # mtmoe seeds numpy's global RNG, which rliable 1.2.0 draws from
    func = lambda x: np.array([rly_metrics.aggregate_iqm(x), rly_metrics.aggregate_mean(x),  # noqa: E731
                               rly_metrics.aggregate_median(x)])
    points, cis = rly.get_interval_estimates(SCORES, func, reps=500)
    for label in SCORES:
        for i, metric in enumerate(("iqm", "mean", "median")):
            assert table[label][metric][0] == pytest.approx(points[label][i])
            assert table[label][metric][1:] == pytest.approx((cis[label][0][i], cis[label][1][i]))
    np.random.seed(3)
    poi, poi_ci = rly.get_interval_estimates({"p": [SCORES["critic"], SCORES["none"]]},
                                             rly_metrics.probability_of_improvement, reps=500)
    assert table["critic"]["p_improve"][0] == pytest.approx(float(poi["p"]))
    assert table["critic"]["p_improve"][1] == pytest.approx(float(np.ravel(poi_ci["p"])[0]))
    assert table["none"]["p_improve"] is None
    assert list(table) == ["none", "critic"]  # placements in their natural order


def test_report_and_plots_are_written(results, tmp_path):
    out = compare([results], tmp_path / "report", reps=200, warn=pytest.fail)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## suite-x" in report and "| critic | 5 |" in report and "critic 300" in report
    for name in out["suite-x"]["plots"].values():
        png = (tmp_path / "report" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert set(out["suite-x"]["plots"]) == {"aggregate", "profile", "curves", "plasticity"}


def test_tasks_without_reference_scores_are_scaled_by_the_best_label(tmp_path):
    for seed, (a, b) in enumerate([(2.0, 4.0), (4.0, 8.0)]):
        write_run(tmp_path, "s", "none", seed, [a, 10.0, -1.0], reference=False)
        write_run(tmp_path, "s", "both", seed, [b, 5.0, -2.0], reference=False)
    runs = load_runs([tmp_path], pytest.fail)
    mats, tasks, how = score_matrices(runs, "eval", pytest.fail)
    # task-a: best label mean 6 (both); task-b: 10 (none); task-c: no positive mean -> raw
    np.testing.assert_allclose(mats["both"], [[4 / 6, 0.5, -2.0], [8 / 6, 0.5, -2.0]])
    np.testing.assert_allclose(mats["none"], [[2 / 6, 1.0, -1.0], [4 / 6, 1.0, -1.0]])
    assert "best-label mean" in how["task-a"] and how["task-c"].startswith("raw")


def test_missing_or_corrupt_files_warn_and_do_not_crash(results, tmp_path):
    runs = sorted((results / "suite-x").iterdir())
    (runs[0] / "summary.json").unlink()  # unfinished run
    (runs[1] / "summary.json").write_text("{not json")  # corrupt
    with open(runs[2] / "metrics.jsonl", "a") as f:
        f.write("garbage line\n{\"global_step\": \n")
    (runs[3] / "metrics.jsonl").unlink()
    warnings = []
    out = compare([results], tmp_path / "report", reps=100, plots=True, warn=warnings.append)
    text = "\n".join(warnings)
    assert "no summary.json" in text and "unreadable" in text and "2 unreadable line(s)" in text
    assert "no metrics.jsonl" in text
    assert sum(v["runs"] for v in out["suite-x"]["table"].values()) == 8


def test_nonstationarity_table_averages_seeds(tmp_path):
    phases = [[TASKS[0], 0, 500], [TASKS[1], 500, 1000]]
    for seed in range(2):
        write_run(tmp_path, "seq", "critic", seed, [1.0, 1.0, 1.0], phases=phases)
    runs = load_runs([tmp_path], pytest.fail)
    row = nonstationarity_table(runs)["critic"]["rows"][0]
    assert row["forgetting"] == pytest.approx(1.0)  # mean of 0.5 and 1.5
    assert row["recover_steps"] == pytest.approx(150) and row["recovered"] == "2/2"
    # training curves of a continual run are kept only inside the task's phases
    assert all(0 < s <= 500 for s, _ in runs[0].train[TASKS[0]])
    compare([tmp_path], tmp_path / "report", reps=100, plots=False, warn=lambda m: None)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "normalized evaluation scores" in report and "raw units" not in report
    assert f"| critic | 1 | {TASKS[1]} | 500 | 1 | - | 150 | 2/2 |" in report


def test_a_suite_whose_tasks_never_come_back_has_no_drop_or_recovery_columns(tmp_path):
    phases = [[TASKS[0], 0, 500], [TASKS[1], 500, 1000]]
    run = write_run(tmp_path, "seq", "critic", 0, [1.0, 1.0, 1.0], phases=phases)
    summary = json.loads((run / "summary.json").read_text())
    summary["nonstationarity"]["steps_to_recover"] = []
    (run / "summary.json").write_text(json.dumps(summary))
    compare([tmp_path], tmp_path / "report", reps=100, plots=False, warn=lambda m: None)
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"| critic | 1 | {TASKS[1]} | 500 | 0.5 |" in report and "steps to recover" not in report
    assert "no task comes back in this suite" in report


def test_final_plasticity_and_routing_are_means_over_tasks_then_runs(results, tmp_path):
    # critic seed k: dormant of the three tasks (0.1, 0.2, 0.3) + k/10 -> per-run mean 0.2 + k/10
    for seed in range(5):
        probe = {"tasks": {t: {"critic": {"dormant@0.025": 0.1 * (i + 1) + seed / 10, "srank": 10 + seed},
                               "actor": {"dormant@0.025": 0.0, "srank": 20}} for i, t in enumerate(TASKS)},
                 "moe": {"critic.penultimate": {"load_entropy": 0.5 + seed / 10, "task_mi": 0.1}}}
        _edit_summary(results / "suite-x" / f"ppo-critic-s{seed}", final_probe=probe)
    out = compare([results], tmp_path / "report", reps=50, plots=False, warn=lambda m: None)
    table = out["suite-x"]["plasticity"]
    assert "none" not in table  # its runs recorded no final probe
    critic = table["critic"]
    expect = np.array([0.2 + k / 10 for k in range(5)])
    assert critic["towers"]["critic"]["dormant"] == (pytest.approx(expect.mean()), pytest.approx(expect.std(ddof=1)), 5)
    assert critic["towers"]["critic"]["srank"][0] == pytest.approx(12.0)
    assert critic["towers"]["actor"]["dormant"] == (0.0, 0.0, 5)
    assert critic["moe"]["critic.penultimate"]["load_entropy"][0] == pytest.approx(0.7)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| critic | 5 | 0.000 ± 0.000 | 20.0 ± 0.0 | 0.400 ± 0.158 | 12.0 ± 1.6 | " in report
    assert "critic.penultimate: entropy 0.70 ± 0.16, MI 0.10 ± 0.00" in report


def test_cli_compare_prints_the_table_and_fails_cleanly(results, tmp_path, capsys):
    assert main(["compare", str(results), "--out", str(tmp_path / "r"), "--reps", "100", "--no-plots"]) == 0
    captured = capsys.readouterr()
    assert "suite-x" in captured.out and "critic" in captured.out
    assert main(["compare", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_runs_of_two_backends_are_labelled_apart(tmp_path):
    for backend in (None, "sample-factory"):
        for placement in ("none", "critic"):
            write_run(tmp_path, "suite-x", placement, 0, [0.5, 0.5, 0.5], backend=backend)
    runs = load_runs([tmp_path], warn=pytest.fail)
    assert sorted(r.label for r in runs) == ["critic", "critic [sample-factory]", "none", "none [sample-factory]"]
    mats, _, _ = score_matrices(runs, "eval", pytest.fail)
    assert list(mats) == ["none", "critic", "none [sample-factory]", "critic [sample-factory]"]
    table = aggregate_table(mats, reps=50)
    # each backend's critic is measured against that backend's none (equal scores: P = 0.5)
    assert table["critic"]["p_improve"][0] == table["critic [sample-factory]"]["p_improve"][0] == 0.5
    assert table["none"]["p_improve"] is None and table["none [sample-factory]"]["p_improve"] is None


def test_profile_legend_entries_are_the_labels_drawn(tmp_path):
    from mtmoe.compare.plots import profile_plot
    from mtmoe.compare.stats import performance_profiles

    mats = {k: RNG.uniform(0, 1, (4, 3)) for k in ("none", "actor", "critic", "both")}
    taus, profiles, cis = performance_profiles(mats, reps=50)
    _, fig = profile_plot(taus, profiles, cis, tmp_path / "p.png", "x", keep=True)
    ax = fig.axes[0]
    drawn = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == drawn == list(mats)
    assert [h.get_color() for h in ax.get_legend().legend_handles] == [line.get_color() for line in ax.get_lines()]


def test_vectorized_bands_equal_a_per_point_computation():
    from mtmoe.compare.stats import bootstrap_bands

    vals = np.random.default_rng(1).normal(size=(5, 40)).cumsum(axis=1)
    mean, low, high = bootstrap_bands(vals, reps=300, seed=7)
    idx = np.random.default_rng(7).integers(0, 5, size=(300, 5))  # the same resamples of the runs
    for i in range(vals.shape[1]):
        means = np.array([np.mean(vals[rows, i]) for rows in idx])
        assert mean[i] == pytest.approx(np.mean(vals[:, i]))
        assert (low[i], high[i]) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))


def test_fast_iqm_and_improvement_probability_equal_rliable():
    from mtmoe.metrics.aggregate import improvement_probability, iqm

    rng = np.random.default_rng(2)
    for shape in ((3, 3), (5, 4), (7, 1)):
        x, y = rng.integers(0, 4, shape).astype(float), rng.integers(0, 4, (shape[0] + 1, shape[1])).astype(float)
        assert iqm(x) == rly_metrics.aggregate_iqm(x)
        assert improvement_probability(x, y) == rly_metrics.probability_of_improvement(x, y)
        assert improvement_probability(x, x) == 0.5


def test_fewer_than_five_seeds_warns_once_per_suite(tmp_path):
    for suite in ("s1", "s2"):
        for seed in range(3):
            write_run(tmp_path, suite, "none", seed, [0.5, 0.5, 0.5])
            write_run(tmp_path, suite, "critic", seed, [0.6, 0.6, 0.6])
    warnings = []
    compare([tmp_path], tmp_path / "r", reps=20, plots=False, warn=warnings.append)
    few = [w for w in warnings if "fewer than 5 seeds" in w]
    assert len(few) == 2 and all("none (3)" in w and "critic (3)" in w for w in few)


def _runs_with_reference(tmp_path, low=1.0, high=5.0):
    """none: raw (3, 9, 2) and (5, 9, 4); both: raw (7, 3, 2) and (9, 3, 4); references low/high on every task."""
    for seed, (a, b) in enumerate([((3.0, 9.0, 2.0), (7.0, 3.0, 2.0)), ((5.0, 9.0, 4.0), (9.0, 3.0, 4.0))]):
        for placement, raw in (("none", a), ("both", b)):
            path = write_run(tmp_path, "s", placement, seed, list(raw))
            summary = json.loads((path / "summary.json").read_text())
            summary["normalization"] = {t: {"low": low, "high": high, "source": "test"} for t in TASKS}
            (path / "summary.json").write_text(json.dumps(summary))
    return load_runs([tmp_path], pytest.fail)


def test_reference_best_label_and_raw_normalization_give_known_values(tmp_path):
    runs = _runs_with_reference(tmp_path)
    ref, _, how = score_matrices(runs, "eval", pytest.fail, "reference")
    np.testing.assert_allclose(ref["none"], [[0.5, 2.0, 0.25], [1.0, 2.0, 0.75]])  # (raw - 1) / 4
    np.testing.assert_allclose(ref["both"], [[1.5, 0.5, 0.25], [2.0, 0.5, 0.75]])
    assert how["task-a"].startswith("reference scores")
    best, _, how = score_matrices(runs, "eval", pytest.fail, "best-label")
    # best label means: task-a 8 (both), task-b 9 (none), task-c 3 (tie)
    np.testing.assert_allclose(best["none"], [[3 / 8, 1.0, 2 / 3], [5 / 8, 1.0, 4 / 3]])
    np.testing.assert_allclose(best["both"], [[7 / 8, 1 / 3, 2 / 3], [9 / 8, 1 / 3, 4 / 3]])
    assert "best-label mean" in how["task-a"]
    raw, _, how = score_matrices(runs, "eval", pytest.fail, "raw")
    np.testing.assert_allclose(raw["both"], [[7, 3, 2], [9, 3, 4]]) and how["task-c"] == "raw"


def test_cli_compare_normalize_flag_reaches_the_report(tmp_path, capsys):
    _runs_with_reference(tmp_path)
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "r"), "--reps", "20", "--no-plots",
                 "--normalize", "best-label"]) == 0
    assert "--normalize best-label" in (tmp_path / "r" / "report.md").read_text()
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(tmp_path), "--normalize", "zscore"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_intrinsic_plot_marks_a_fit_at_its_bound_not_identified(tmp_path):
    from mtmoe.scaling.intrinsic import ALPHA_RANGE
    from mtmoe.scaling.plots import intrinsic_plot

    N, E = np.repeat([1e4, 1e5], 5), np.tile(np.geomspace(1e3, 1e6, 5), 2)
    points = {"N": N, "E": E, "I": N * E / 1e3}
    fits = {"good": {"alpha_N": 0.5, "alpha_E": 0.7}, "bad": {"alpha_N": ALPHA_RANGE[1], "alpha_E": 0.7}}
    entry = {"families": {fam: {"fit": {"fit": {**f, "N_c": 1e3, "E_c": 1e3}, "points": points}} for fam, f in fits.items()}}
    _, fig = intrinsic_plot(entry, tmp_path / "i.png", "x", keep=True)
    good, bad = fig.axes
    assert {line.get_linestyle() for line in good.get_lines()} == {"-"} and "α_N=0.5" in good.get_title()
    assert {line.get_linestyle() for line in bad.get_lines()} == {"--"} and "not identified" in bad.get_title()
    assert any("fit bound" in t.get_text() for t in bad.texts)


def _edit_summary(run_dir, **fields):
    path = run_dir / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_diverged_unfinished_and_unstarted_runs_are_listed_and_kept_out_of_the_aggregates(results, tmp_path,
                                                                                           monkeypatch):
    clean = compare([results], tmp_path / "clean", reps=200, plots=False, warn=lambda m: None)["suite-x"]["table"]
    bad = write_run(results, "suite-x", "critic", 7, [50.0, 50.0, 50.0])  # a last evaluation far above the rest
    _edit_summary(bad, stopped="policy_loss became nan at step 500")
    unfinished = write_run(results, "suite-x", "none", 8, [0.5, 0.5, 0.5])
    (unfinished / "summary.json").unlink()
    names = [f"suite-x/{d.name}" for d in sorted((results / "suite-x").iterdir())] + ["suite-x/ppo-none-s9"]
    (results / "sweep.json").write_text(json.dumps([{"command": "old call, no folder list", "runs": 3},
                                                    {"command": "mtmoe sweep …", "run_dirs": names}]))
    warnings = []
    monkeypatch.chdir(results.parent)  # a planned folder is shown as typed from here, not as an absolute path
    out = compare([results], tmp_path / "report", reps=200, plots=False, warn=warnings.append)["suite-x"]
    assert out["table"]["critic"]["runs"] == 5 and out["table"]["none"]["runs"] == 5
    assert out["table"]["critic"]["iqm"] == clean["critic"]["iqm"]  # the diverged run changed nothing
    assert any("diverged (policy_loss became nan at step 500)" in w for w in warnings)
    books = out["accounting"]
    assert books["planned"] == 13 and books["seeds"] == {"none": [0, 1, 2, 3, 4], "critic": [0, 1, 2, 3, 4]}
    assert books["diverged"] == [("critic", 7, "policy_loss became nan at step 500")]
    assert books["unfinished"] == [str(unfinished)]
    assert books["never_started"] == [str(Path(results.name) / "suite-x" / "ppo-none-s9")]
    report = (tmp_path / "report" / "report.md").read_text()
    assert ("Runs: 13 planned by sweep.json; 10 in the aggregates, 1 diverged, 1 unfinished, 1 planned but never "
            "started.") in report
    assert "critic seed 7: policy_loss became nan at step 500" in report and "ppo-none-s9" in report
    assert "Machines: not recorded (11 runs)." in report


def test_every_run_diverged_is_one_error(tmp_path):
    _edit_summary(write_run(tmp_path, "s", "none", 0, [1.0, 1.0, 1.0]), stopped="value_loss became inf")
    with pytest.raises(MtmoeError, match="every finished run diverged"):
        compare([tmp_path], tmp_path / "report", reps=10, plots=False, warn=lambda m: None)


def test_report_gives_flops_per_env_step_and_the_machines(results, tmp_path):
    for d in (results / "suite-x").iterdir():
        critic = "critic" in d.name
        _edit_summary(d, flops={"per_env_step": 2.5e6 if critic else 1.25e6},
                      machine={"description": "Test CPU, 2 cores, 1 torch thread(s)" if critic else "Other CPU"})
    out = compare([results], tmp_path / "report", reps=100, plots=False, warn=pytest.fail)["suite-x"]
    assert out["flops"] == {"none": 1.25e6, "critic": 2.5e6}
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| FLOPs / env step |" in report and "| 2.50M |" in report and "| 1.25M |" in report
    assert "Machines: Other CPU (5 runs); Test CPU, 2 cores, 1 torch thread(s) (5 runs)." in report \
        or "Machines: Test CPU, 2 cores, 1 torch thread(s) (5 runs); Other CPU (5 runs)." in report


def test_labels_of_a_grid_name_the_axes_that_vary_and_omit_the_automatic_width(tmp_path):
    variants = [("none", None, None, 0, 0), ("critic", "softmoe", "penultimate", 4, 0),
                ("both", "task", "big", 3, 0), ("critic", "topk", "penultimate", 4, 0),
                ("critic", "softmoe", "penultimate", 1, 256)]
    for i, (placement, moe, position, experts, width) in enumerate(variants):
        path = write_run(tmp_path, "s", placement, i, [1.0, 1.0, 1.0])
        config = json.loads((path / "config.json").read_text())
        config["net"] = {"placement": placement, "moe": moe, "position": position, "num_experts": experts,
                         "expert_width": width}
        (path / "config.json").write_text(json.dumps(config))
    labels = sorted(r.label for r in load_runs([tmp_path], pytest.fail))
    assert labels == sorted(["none", "critic/softmoe/penultimate/e4", "both/task/big/e3", "critic/topk/penultimate/e4",
                             "critic/softmoe/penultimate/e1/w256"])


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_a_dense_twin_is_never_pooled_with_none(tmp_path):
    """A dense run matched to an MoE size keeps its whole size in its label, whatever varies."""
    write_run(tmp_path, "s", "none", 0, [1.0, 1.0, 1.0])
    _edit_config(write_run(tmp_path, "s", "none", 1, [1.0, 1.0, 1.0]), dense_match="e4-w256")
    _edit_config(write_run(tmp_path, "s", "critic", 2, [1.0, 1.0, 1.0]),
                 net={"placement": "critic", "moe": "softmoe", "position": "penultimate", "num_experts": 4,
                      "expert_width": 256})
    assert sorted(r.label for r in load_runs([tmp_path], pytest.fail)) == ["critic", "none", "none/e4/w256"]
    _edit_config(write_run(tmp_path, "s", "none", 3, [1.0, 1.0, 1.0]), dense_match="softmoe-big-e4-w0")
    assert "none/softmoe-big/e4" in {r.label for r in load_runs([tmp_path], pytest.fail)}  # what it matches
    _edit_config(write_run(tmp_path, "s", "none", 4, [1.0, 1.0, 1.0]), dense_match="my-moe-penultimate-e2-w0")
    _edit_config(write_run(tmp_path, "s", "none", 5, [1.0, 1.0, 1.0]), dense_match="an odd tag")
    labels = {r.label for r in load_runs([tmp_path], pytest.fail)}
    assert {"none/my-moe-penultimate/e2", "none/an odd tag"} <= labels  # never pooled with none


def test_runs_pooled_under_one_label_with_other_settings_are_named(results, tmp_path):
    """A label names only the network; a run of another budget or learning rate is flagged, not hidden."""
    _edit_config(results / "suite-x" / "ppo-critic-s0", steps=2000, ppo={"learning_rate": 0.01},
                 threads=4, command="elsewhere", mtmoe_commit="abc", sac={"tau": 0.5})  # the last four may differ
    warnings = []
    compare([results], tmp_path / "report", reps=50, plots=False, warn=warnings.append)
    assert [w for w in warnings if "differ" in w] == [
        "suite-x: the runs labelled critic differ in ppo.learning_rate, steps; their statistics mix these settings "
        "(see the report)"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "the runs of critic differ in `ppo.learning_rate` (0.01 / absent); `steps` (2000 / absent)" in report


def test_per_task_spread_is_the_sample_standard_deviation(results, tmp_path):
    out = compare([results], tmp_path / "report", reps=50, plots=False, warn=pytest.fail)
    mean, sd, n = out["suite-x"]["per_task"]["critic"]["task-b"]
    assert (mean, sd, n) == (pytest.approx(SCORES["critic"][:, 1].mean()),
                             pytest.approx(np.std(SCORES["critic"][:, 1], ddof=1)), 5)


def test_runs_of_the_old_probe_are_marked_and_re_probed_ones_get_their_own_table(tmp_path):
    from mtmoe.runner.probes import PROBE_VERSION
    current = {"tasks": {t: {"critic": {"dormant@0.025": 0.4, "srank": 9}} for t in TASKS}, "moe": {}}
    run = write_run(tmp_path, "s", "none", 0, [0.5, 0.5, 0.5])  # recorded by the current probe: in both tables
    _edit_summary(run, final_probe=current, probe_version=PROBE_VERSION)
    for seed in range(2):
        run = write_run(tmp_path, "s", "both", seed, [0.5, 0.5, 0.5])
        _edit_config(run, net={"placement": "both", "moe": "task", "position": "big"})
        probe = {"tasks": {t: {"critic": {"dormant@0.025": 0.2, "srank": 9}} for t in TASKS}, "moe": {}}
        _edit_summary(run, final_probe=probe)  # no probe_version: recorded by version 1
        if seed == 0:
            again = {"tasks": {t: {"critic": {"dormant@0.025": 0.6, "srank": 9}} for t in TASKS}, "moe": {}}
            (run / "probe.json").write_text(json.dumps({"probe_version": PROBE_VERSION, "probe": again,
                                                         "global_step": 1000}))
            (run / "probe-1.json").write_text(json.dumps({"probe_version": 1, "probe": probe,  # not current
                                                           "global_step": 1000}))
            (run / "probe-2.json").write_text(json.dumps({"probe_version": PROBE_VERSION, "probe": probe,
                                                           "global_step": 500}))  # not the end of training
    out = compare([tmp_path], tmp_path / "report", reps=50, plots=False, warn=lambda m: None)["s"]
    assert out["plasticity"]["both"]["old_probe"] and out["plasticity"]["both"]["towers"]["critic"]["dormant"][0] == pytest.approx(0.2)
    assert out["reprobed"]["both"]["towers"]["critic"]["dormant"] == (pytest.approx(0.6), 0.0, 1)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| both † | 2 | 0.200 ± 0.000 |" in report and "Labels marked † hold runs recorded by version 1" in report
    assert out["reprobed"]["none"]["towers"]["critic"]["dormant"] == (pytest.approx(0.4), 0.0, 1)
    assert "The same with the current probe only" in report and "| both | 1 | 0.600 ± 0.000 |" in report


def test_no_current_probe_table_when_every_run_recorded_the_current_probe(results, tmp_path):
    assert compare([results], tmp_path / "report", reps=50, plots=False, warn=pytest.fail)["suite-x"]["reprobed"] == {}


@pytest.mark.parametrize("step, label", [(0, "0"), (250_000, "250k"), (1_000_000, "1M"), (1_500_000, "1.5M")])
def test_step_ticks_read_as_people_write_them(step, label):
    from mtmoe.compare.plots import steps_label

    assert steps_label(step) == label


def test_every_two_labels_get_a_probability_of_improvement(results, tmp_path):
    for seed, row in enumerate(SCORES["critic"] + 1.0):  # "both" beats every other run on every task
        write_run(results, "suite-x", "both", seed, [float(v) for v in row])
    out = compare([results], tmp_path / "report", reps=200, plots=False, warn=pytest.fail)["suite-x"]
    pairs, table = out["pairwise"], out["table"]
    assert pairs["both"]["none"] == pairs["both"]["critic"] == (1.0, 1.0, 1.0)
    assert pairs["none"]["both"] == (0.0, 0.0, 0.0) and "none" not in pairs["none"]
    p, lo, hi = pairs["critic"]["none"]
    assert p == pytest.approx(table["critic"]["p_improve"][0]) and lo <= p <= hi
    assert pairs["none"]["critic"] == pytest.approx((1 - p, 1 - hi, 1 - lo))
    report = (tmp_path / "report" / "report.md").read_text()
    assert "P(row > column)" in report and "| both |  | 1.000 [1.000, 1.000] | 1.000 [1.000, 1.000] |" not in report
    assert "| both | 1.000 [1.000, 1.000] | 1.000 [1.000, 1.000] |  |" in report


def test_two_labels_have_no_pairwise_table(results, tmp_path):
    out = compare([results], tmp_path / "report", reps=50, plots=False, warn=pytest.fail)["suite-x"]
    assert out["pairwise"] == {} and "P(row > column)" not in (tmp_path / "report" / "report.md").read_text()
