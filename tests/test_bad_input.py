"""Bad input gets one line naming the file or flag and what was expected, a non-zero exit, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mtmoe.cli import main

TINY = ["--set", "num_envs=2", "--set", "ppo.num_steps=8", "--set", "ppo.num_minibatches=2", "--set", "eval_episodes=1",
        "--set", "eval_max_steps=20", "--set", "probe_per_task=4"]


def one_line_error(argv: list[str], capsys) -> str:
    """Run the CLI in-process; assert a non-zero exit and exactly one line on stderr; return it."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    progress = ("mtmoe: training", "mtmoe: note", "step ")  # what a run prints before it fails
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith(progress)]
    assert code not in (0, None), err
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    return lines[0]


def _task_dir(tmp_path: Path, text: bytes, suite: str | None = None) -> Path:
    d = tmp_path / "mytasks"
    (d / "suites").mkdir(parents=True)
    (d / "task.yaml").write_bytes(text)
    if suite:
        (d / "suites" / "s.yaml").write_text(suite)
    return d


def test_task_yaml_that_is_not_utf8(tmp_path, capsys):
    d = _task_dir(tmp_path, b"id: caf\xe9\nbackend: gym\nenv: CartPole-v1\n")
    line = one_line_error(["tasks", "--tasks-dir", str(d)], capsys)
    assert "task.yaml" in line and "not UTF-8" in line and "line 1" in line


@pytest.mark.parametrize("command", [["tasks"], ["suites", "show", "my-suite"], ["run", "--suite", "my-suite"]])
def test_gym_task_whose_env_id_does_not_exist(tmp_path, capsys, command):
    d = _task_dir(tmp_path, b"id: my-cart\nbackend: gym\nenv: CartPol-v1\n",
                  "name: my-suite\ntasks: [my-cart]\npreset: ppo-classic\nbudgets: {default: 1000}\n")
    line = one_line_error([*command, "--tasks-dir", str(d)], capsys)
    assert "task.yaml" in line and "key 'env'" in line and "CartPol-v1" in line


@pytest.mark.parametrize("command", [["suites", "show", "my-suite"], ["run", "--suite", "my-suite"]])
def test_suite_whose_preset_is_a_typo(tmp_path, capsys, command):
    d = _task_dir(tmp_path, b"id: my-cart\nbackend: gym\nenv: CartPole-v1\n",
                  "name: my-suite\ntasks: [my-cart]\npreset: ppo-clasic\nbudgets: {default: 1000}\n")
    line = one_line_error([*command, "--tasks-dir", str(d)], capsys)
    assert "s.yaml" in line and "key 'preset'" in line and "ppo-clasic" in line and "ppo-classic" in line


@pytest.mark.parametrize("steps", ["-5", "0", "1e3"])
def test_steps_must_be_a_positive_whole_number(capsys, steps):
    line = one_line_error(["run", "--suite", "minatar-single", "--steps", steps], capsys)
    assert "--steps" in line and repr(steps) in line


def test_invalid_choice_is_one_line_as_a_user_sees_it():
    done = subprocess.run([str(Path(sys.executable).with_name("mtmoe")), "run", "--suite", "minatar-single",
                           "--placement", "middle"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "--placement" in done.stderr and "'middle'" in done.stderr
    assert "critic" in done.stderr


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    """A finished run shorter than its checkpoint interval (20 rounds down to 16 env steps)."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "--suite", "minatar-single", "--steps", "20", "--out", str(out), *TINY,
                 "--set", "checkpoint_every=1000000"]) == 0
    (run_dir,) = (out / "minatar-single").iterdir()
    return run_dir


def test_a_short_run_still_writes_its_checkpoint_and_says_how_steps_were_rounded(short_run, capsys):
    assert (short_run / "checkpoint.pt").is_file()
    assert json.loads((short_run / "summary.json").read_text())["steps"] == 16
    lines = [json.loads(x) for x in (short_run / "metrics.jsonl").read_text().splitlines()]
    assert [x["global_step"] for x in lines if "sps" in x] == [16]  # the last iteration is logged
    assert json.loads((short_run / "config.json").read_text())["env_device"] == "host"  # what ran, for --resume
    out = short_run.parent.parent
    assert main(["run", "--suite", "minatar-single", "--steps", "20", "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    assert "note: 20 env steps round to 16 (whole iterations of 16 env steps)" in err
    assert err.index("mtmoe: training ppo on minatar-single") < err.index("step ")  # before the first update ends


def test_resume_of_a_finished_run(short_run, capsys):
    before = (short_run / "summary.json").read_text()
    line = one_line_error(["run", "--resume", str(short_run)], capsys)
    assert str(short_run) in line and "finished" in line
    assert (short_run / "summary.json").read_text() == before


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_resume_of_an_unreadable_checkpoint(short_run, tmp_path, capsys, damage):
    import shutil

    run_dir = tmp_path / "killed"
    shutil.copytree(short_run, run_dir)
    (run_dir / "summary.json").unlink()  # as if killed before the end
    ckpt = run_dir / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    line = one_line_error(["run", "--resume", str(run_dir)], capsys)
    assert str(ckpt) in line and "unreadable" in line


def test_non_finite_loss_before_the_first_checkpoint_names_no_missing_file(tmp_path, capsys):
    line = one_line_error(["run", "--suite", "minatar-single", "--steps", "800", "--out", str(tmp_path), *TINY,
                           "--set", "ppo.learning_rate=1e30", "--set", "ppo.max_grad_norm=1e30",
                           "--set", "ppo.anneal_lr=false", "--set", "checkpoint_every=1000000"], capsys)
    assert "non-finite loss" in line and "before its first checkpoint" in line
    (run_dir,) = (tmp_path / "minatar-single").iterdir()
    assert not (run_dir / "checkpoint.pt").exists()


@pytest.mark.parametrize("argv,expected", [
    (["run", "--suite", "minatar-single", "--seed", "-1"], "--seed"),
    (["run", "--suite", "minatar-single", "--set", "num_envs=-3"], "num_envs"),
    (["run", "--suite", "minatar-single", "--set", "ppo=1", "--set", "ppo.num_steps=2"], "ppo"),
    (["run", "--suite", "minatar-single", "--set", "ppo.num_minibatches=0"], "ppo.num_minibatches"),
    (["run", "--suite", "minatar-single", "--set", "algos=1"], "algos"),
    (["run", "--suite", "mujoco-single", "--set", "env_device=tensor"], "env_device"),
    (["run", "--suite", "gym-single", "--set", "env_device=tensor"], "env_device"),
    (["sweep", "--suite", "minatar-single", "--jobs", "-1"], "--jobs"),
])
def test_more_bad_flags_are_one_line(capsys, argv, expected):
    assert expected in one_line_error(argv, capsys)


@pytest.mark.parametrize("text", ["{}", "[1]", "not json"])
def test_resume_of_a_folder_whose_config_is_not_a_run_config(tmp_path, capsys, text):
    (tmp_path / "config.json").write_text(text)
    assert "config.json" in one_line_error(["run", "--resume", str(tmp_path)], capsys)
