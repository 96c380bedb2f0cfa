"""mtmoe.results.load_runs and `mtmoe export`: the documented columns from a tiny sweep, csv and
parquet round trips, success rates, re-normalization of runs that predate a task's reference."""

from __future__ import annotations

import builtins
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtmoe.cli import main
from mtmoe.errors import MtmoeError
from mtmoe.results import BASE_COLUMNS, export, load_runs
from mtmoe.sweep import Grid, sweep
from mtmoe.tasks import load_registry
from test_compare import TASKS, write_run

REGISTRY = load_registry()
TINY = ["num_envs=8", "ppo.num_steps=32", "ppo.num_minibatches=2", "ppo.update_epochs=1", "log_every=256",
        "eval_every=1024", "eval_episodes=1", "eval_max_steps=200", "probe_every=1024", "probe_per_task=16",
        "checkpoint_every=-1"]
README = Path(__file__).parents[1] / "README.md"


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    grid = Grid(suites=["minatar-single"], seeds=[0], placements=["none", "critic"], steps=2048, sets=TINY)
    counts = sweep(grid, REGISTRY, out, jobs=1, progress=False, poll=0.1)
    assert counts["done"] == 2 and counts["failed"] == 0
    return out


def test_load_runs_has_the_documented_columns(tiny_sweep):
    df = load_runs([tiny_sweep], warn=pytest.fail)
    assert list(df.columns[:len(BASE_COLUMNS)]) == list(BASE_COLUMNS)
    assert set(df["kind"]) <= {"train", "eval", "probe"} and {"train", "eval"} <= set(df["kind"])
    assert set(df["placement"]) == {"none", "critic"} and set(df["suite"]) == {"minatar-single"}
    assert set(df["task"]) == {"minatar-breakout"} and df["step"].max() >= 2048
    assert df.groupby("run")["label"].nunique().eq(1).all() and df["seed"].eq(0).all()
    assert df["success"].isna().all()  # MinAtar defines no success
    norm = REGISTRY.task("minatar-breakout").normalization
    rows = df[df["kind"] != "probe"]
    np.testing.assert_allclose(rows["normalized"], (rows["raw"] - norm.low) / (norm.high - norm.low))
    probe_cols = [c for c in df.columns if c.startswith("probe/")]
    assert {"probe/actor/srank", "probe/critic/dormant@0.025", "probe/weight_norm/actor_critic"} <= set(probe_cols)
    critic = df[df["placement"] == "critic"]
    assert critic[[c for c in probe_cols if c.startswith("probe/moe/")]].notna().any().any()
    assert df[probe_cols].notna().any(axis=1).sum() >= 2  # probes at 1,024 and 2,048 steps


def test_readme_documents_every_column():
    text = README.read_text()
    section = text[text.index("### Results as a DataFrame"):]
    for col in BASE_COLUMNS:
        assert re.search(rf"\| `{re.escape(col)}` \|", section), col


def test_export_round_trips_csv_and_parquet(tiny_sweep, tmp_path):
    df = load_runs([tiny_sweep])
    path, rows = export([tiny_sweep], tmp_path / "runs.csv")
    assert rows == len(df)
    pd.testing.assert_frame_equal(pd.read_csv(path), df, check_dtype=False)
    path, _ = export([tiny_sweep], tmp_path / "runs.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(path), df)
    with pytest.raises(MtmoeError, match="exists; pass --force"):
        export([tiny_sweep], tmp_path / "runs.csv")
    export([tiny_sweep], tmp_path / "runs.csv", force=True)


def test_cli_export_refuses_to_overwrite_and_bad_suffixes(tiny_sweep, tmp_path, capsys):
    out = tmp_path / "runs.csv"
    assert main(["export", str(tiny_sweep), "--out", str(out)]) == 0
    assert main(["export", str(tiny_sweep), "--out", str(out)]) == 2
    assert main(["export", str(tiny_sweep), "--out", str(tmp_path / "runs.xlsx")]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and ".csv or .parquet" in err and "Traceback" not in err
    assert main(["export", str(tiny_sweep), "--out", str(out), "--force"]) == 0


def test_parquet_without_pyarrow_is_one_line(tmp_path, monkeypatch, capsys):
    real = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "r.parquet")]) == 2
    err = capsys.readouterr().err
    assert "needs pyarrow" in err and len(err.strip().splitlines()) == 1


def _add_lines(run: Path, lines: list[dict]) -> None:
    with open(run / "metrics.jsonl", "a") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines))


def test_success_where_logged_nan_elsewhere(tmp_path):
    run = write_run(tmp_path, "mt", "none", 0, [0.5, 0.5, 0.5])
    _add_lines(run, [{"global_step": 1100, "return": {t: 1.0 for t in TASKS}, "success": {TASKS[0]: 0.25}},
                     {"global_step": 1200, "eval": {t: {"return": 2.0, "normalized": 2.0, "episodes": 4,
                                                        "success": 0.75} for t in TASKS}}])
    df = load_runs([tmp_path], warn=pytest.fail).set_index(["kind", "task", "step"]).sort_index()
    assert df.loc[("train", TASKS[0], 1100), "success"] == 0.25
    assert np.isnan(df.loc[("train", TASKS[1], 1100), "success"]) and np.isnan(df.loc[("train", TASKS[0], 100), "success"])
    assert (df.loc["eval", "success"] == 0.75).all()
    probe = df.loc[("train", TASKS[0], 500)]
    assert probe["probe/critic/srank"] == 5 and probe["probe/critic/dormant@0.025"] == 0.1
    assert np.isnan(df.loc[("train", TASKS[0], 100), "probe/critic/srank"])


def test_runs_that_predate_a_reference_are_renormalized(tmp_path):
    run = write_run(tmp_path, "old", "none", 0, [5.0, 5.0, 5.0], reference=False)
    _add_lines(run, [{"global_step": 1100, "return": {"minatar-breakout": 14.0}}])
    df = load_runs([tmp_path], warn=pytest.fail)
    norm = REGISTRY.task("minatar-breakout").normalization
    row = df[df["task"] == "minatar-breakout"].iloc[0]
    assert row["normalized"] == pytest.approx((14.0 - norm.low) / (norm.high - norm.low))
    assert (df[df["task"] == TASKS[0]]["normalized"] == df[df["task"] == TASKS[0]]["raw"]).all()  # unknown task: raw
    kept = load_runs([tmp_path], renormalize=False)
    assert (kept["normalized"] == kept["raw"]).all()
