"""`mtmoe evaluate RUN_DIR`: a tiny run trained through the CLI, then evaluated through it: the
table, evaluate.json (never overwritten), the policy mode recorded, mp4s of MinAtar and gym tasks,
and one clear line for each kind of bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mtmoe.cli import main

TINY = ["--set", "num_envs=3", "--set", "ppo.num_steps=8", "--set", "eval_every=-1", "--set", "probe_every=-1",
        "--set", "log_every=1"]
SUITES = {"minatar-multitask": ["minatar-space-invaders", "minatar-breakout", "minatar-asterix"],
          "gym-single": ["gym-cartpole"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One finished two-iteration run per suite (its checkpoint.pt written at the end)."""
    out = tmp_path_factory.mktemp("runs")
    for suite in SUITES:
        assert main(["run", "--suite", suite, "--steps", "48", "--out", str(out), *TINY]) == 0
    return {suite: next((out / suite).iterdir()) for suite in SUITES}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtmoe: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("suite", list(SUITES))
def test_evaluate_prints_every_task_writes_json_and_videos(runs, suite, tmp_path, capsys):
    run_dir = runs[suite]
    videos = tmp_path / "videos"
    assert main(["evaluate", str(run_dir), "--episodes", "2", "--video", str(videos),
                 "--video-max-steps", "300"]) == 0
    out = capsys.readouterr().out
    for task in SUITES[suite]:  # a row per task, with a return mean ± std
        row = next(line for line in out.splitlines() if task in line and "video" not in line)
        assert re.search(r"-?\d+\.\d+ ± \d+\.\d+", row) and "2/2" in row, row
    assert f"wrote {run_dir / 'evaluate.json'}" in out.replace("\n", "")
    result = json.loads((run_dir / "evaluate.json").read_text())
    assert result["config"]["policy"] == "deterministic" and result["global_step"] == 48
    assert set(result["tasks"]) == set(SUITES[suite])
    for task, stats in result["tasks"].items():
        assert stats["finished"] == stats["requested"] == 2 and len(stats["episodes"]) == 2
        assert np.isclose(stats["return_mean"], np.mean([e["return"] for e in stats["episodes"]]))
        assert stats["success_rate"] is None  # neither MinAtar nor CartPole defines success
        (video,) = result["videos"][task]
        mp4 = Path(video["file"])
        assert mp4.is_file() and mp4.suffix == ".mp4" and mp4.stat().st_size > 1000, video
        assert mp4.is_relative_to(videos)


def test_a_second_evaluation_keeps_the_first_and_records_the_policy(runs, capsys):
    run_dir = runs["gym-single"]
    first = run_dir / "evaluate.json"
    if not first.exists():
        assert main(["evaluate", str(run_dir), "--episodes", "2"]) == 0
    before = first.read_text()
    assert main(["evaluate", str(run_dir), "--episodes", "2", "--stochastic"]) == 0
    out = capsys.readouterr().out.replace("\n", "")
    (second,) = [p for p in run_dir.glob("evaluate-*.json")]
    assert second.name == "evaluate-1.json" and f"wrote {second}" in out and "never overwritten" in out
    assert first.read_text() == before
    one, two = json.loads(before), json.loads(second.read_text())
    assert (one["config"]["policy"], two["config"]["policy"]) == ("deterministic", "stochastic")
    assert one["config"]["deterministic"] is True and two["config"]["deterministic"] is False


def test_a_step_cap_says_which_tasks_finished_fewer_episodes(runs, capsys):
    run_dir = runs["gym-single"]
    assert main(["evaluate", str(run_dir), "--episodes", "1", "--max-steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "0/1 (cap)" in out and "gym-cartpole finished fewer than 1 episodes" in out


def _bad_run_dirs(runs, tmp: Path) -> dict[str, tuple[list[str], str]]:
    good = runs["gym-single"]
    no_ckpt, garbage, foreign = tmp / "no-ckpt", tmp / "garbage", tmp / "foreign"
    for d in (no_ckpt, garbage, foreign):
        d.mkdir()
        shutil.copy(good / "config.json", d / "config.json")
    (garbage / "checkpoint.pt").write_bytes(b"not a checkpoint")
    torch.save({"weights": 1}, foreign / "checkpoint.pt")
    (tmp / "a-file").write_text("x")
    other = runs["minatar-multitask"] / "checkpoint.pt"
    return {"missing": ([str(tmp / "nowhere")], "is not a folder"), "file": ([str(tmp / "a-file")], "is not a folder"),
            "no config": ([str(tmp)], "no config.json"), "no checkpoint": ([str(no_ckpt)], "no checkpoint at"),
            "unreadable": ([str(garbage)], "is unreadable"), "foreign": ([str(foreign)], "is not an mtmoe checkpoint"),
            "other run's": ([str(good), "--checkpoint", str(other)], "does not fit the networks")}


def test_bad_inputs_give_one_line_and_a_nonzero_exit(runs, tmp_path, capsys):
    for name, (args, expected) in _bad_run_dirs(runs, tmp_path).items():
        assert main(["evaluate", *args, "--episodes", "1"]) != 0, name
        assert expected in _one_line_error(capsys), name


def test_a_backend_without_a_renderer_is_named(runs, tmp_path, capsys, monkeypatch):
    from mtmoe.tasks import render

    monkeypatch.delitem(render.RENDERERS, "gym")
    assert main(["evaluate", str(runs["gym-single"]), "--episodes", "1", "--video", str(tmp_path)]) != 0
    assert "the gym backend (task gym-cartpole) cannot render videos" in _one_line_error(capsys)


def test_minatar_frames_colour_each_channel():
    from mtmoe.tasks.render import minatar_frame, minatar_palette

    state = np.zeros((4, 10, 10), np.uint8)
    state[1, 2, 3] = state[3, 9, 9] = 1
    frame = minatar_frame(state)
    assert frame.shape == (160, 160, 3) and frame.dtype == np.uint8
    palette = minatar_palette(4)
    assert len({tuple(c) for c in palette}) == 5  # black and four distinct colours
    assert (frame[2 * 16:3 * 16, 3 * 16:4 * 16] == palette[2]).all()
    assert (frame[-16:, -16:] == palette[4]).all() and (frame[:16, :16] == 0).all()


def test_a_continual_run_is_evaluated_on_every_task(tmp_path, capsys):
    assert main(["run", "--suite", "minatar-continual", "--steps", "72", "--out", str(tmp_path), *TINY]) == 0
    (run_dir,) = (tmp_path / "minatar-continual").iterdir()
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    tasks = json.loads((run_dir / "evaluate.json").read_text())["tasks"]
    assert set(tasks) == set(SUITES["minatar-multitask"]) and all(s["finished"] == 1 for s in tasks.values())
    assert all(t in out for t in tasks)


def test_a_gpu_trained_checkpoint_is_evaluated_on_a_cpu(runs, tmp_path, capsys):
    """A CUDA generator's state (16 bytes) does not fit a CPU generator: evaluation keeps a fresh one."""
    run_dir = runs["gym-single"]
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    state["agent"]["generator"] = torch.zeros(16, dtype=torch.uint8)
    torch.save(state, tmp_path / "cuda.pt")
    assert main(["evaluate", str(run_dir), "--episodes", "1", "--stochastic", "--device", "cpu",
                 "--checkpoint", str(tmp_path / "cuda.pt")]) == 0
    assert "gym-cartpole" in capsys.readouterr().out
