"""YAML validation, the search path, collisions and Python registration."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import scripted  # noqa: F401  (registers the `scripted` backend)
from mtmoe.errors import ConfigError
from mtmoe.tasks import registry as registry_mod
from mtmoe.tasks.registry import load_registry, read_task_file, register_suite, register_task

GOOD_TASK = {"id": "my-task", "backend": "scripted", "env": "x"}

# (yaml text, key named in the error, words the message must contain)
MALFORMED = [
    ("id: My Task\nbackend: scripted\nenv: x\n", "id", "lowercase id"),
    ("backend: scripted\nenv: x\n", "id", "is required"),
    ("id: a\nbackend: atri\nenv: x\n", "backend", "expected one of"),
    ("id: a\nbackend: scripted\nenv: x\nbudjet: 10\n", "budjet", "unknown key"),
    ("id: a\nbackend: scripted\nenv: x\noptions: {lenght: 3}\n", "options.lenght", "unknown key"),
    ("id: a\nbackend: scripted\nenv: x\noptions: {length: three}\n", "options.length", "expected int"),
    ("id: a\nbackend: scripted\nenv: x\nmax_episode_steps: -5\n", "max_episode_steps", "positive integer"),
    ("id: a\nbackend: scripted\nenv: x\nreward: {clip: maybe}\n", "reward.clip", "expected bool"),
    ("id: a\nbackend: scripted\nenv: x\nreward: {scale: 2, shift: 1}\n", "reward.shift", "unknown key"),
    ("id: a\nbackend: scripted\nenv: x\nnormalization: {low: 1, high: 1}\n", "normalization.high", "must differ"),
    ("id: a\nbackend: scripted\nenv: x\nnormalization: {low: 0, hi: 1}\n", "normalization.hi", "unknown key"),
    ("id: a\nbackend: scripted\nenv: x\nbudget: 1e6\n", "budget", "expected int"),
    ("- just\n- a list\n", "<top>", "expected a mapping"),
    ("id: a\nbackend: [scripted\n", "", "not valid YAML"),
    ("defaults: {backend: scripted}\ntasks:\n  - {id: a, env: x}\n  - {id: b, env: y, colour: red}\n", "tasks[1].colour", "unknown key"),
    ("defaults: {backend: scripted}\ntasks: []\n", "tasks", "non-empty"),
    ("defaults: {backend: scripted}\ntasks: [{id: a, env: x}]\nsuite: oops\n", "suite", "unknown key"),
]


@pytest.mark.parametrize("text,key,words", MALFORMED)
def test_malformed_task_file_gives_one_line_naming_file_and_key(tmp_path, text, key, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_task_file(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(str(path) + ":")
    assert err.value.key == key
    assert words in msg


SUITE = {"name": "s", "tasks": ["my-task"], "budgets": {"default": 100}}

MALFORMED_SUITES = [
    ({"mode": "paralel"}, "mode", "expected one of"),
    ({"tasks": []}, "tasks", "non-empty"),
    ({"tasks": ["my-task", "my-task"]}, "tasks", "twice"),
    ({"mode": "sequential", "order": ["other"]}, "order", "not in the suite"),
    ({"switch_every": 100}, "switch_every", "only for sequential"),
    ({"mode": "sequential", "num_envs": 8, "switch_every": 100}, "switch_every", "multiple"),
    ({"num_envs": 4, "envs_per_task": 2}, "envs_per_task", "not both"),
    ({"budgets": {"small": 10}}, "budgets", "'default'"),
    ({"budgets": {"default": "lots"}}, "budgets.default", "positive integer"),
    ({"swich_every": 10}, "swich_every", "unknown key"),
    ({"task_id_input": "yes"}, "task_id_input", "expected bool"),
]


@pytest.mark.parametrize("change,key,words", MALFORMED_SUITES)
def test_malformed_suite(tmp_path, change, key, words):
    import yaml

    (tmp_path / "t.yaml").write_text(yaml.safe_dump(GOOD_TASK))
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "s.yaml").write_text(yaml.safe_dump({**SUITE, **change}))
    with pytest.raises(ConfigError) as err:
        load_registry([tmp_path])
    assert err.value.key == key and words in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "suites" / "s.yaml"))


def test_suite_naming_unknown_task(tmp_path):
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "s.yaml").write_text("name: s\ntasks: [nope]\nbudgets: {default: 1}\n")
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        load_registry([tmp_path])


def test_builtin_registry_loads_every_suite_named_in_the_issue():
    reg = load_registry()
    expected = {"atari-multitask", "atari-continual", "minatar-multitask", "minatar-continual",
                "minatar5-multitask", "mujoco-multitask", "mujoco-continual", "procgen-multitask",
                "atari-single", "minatar-single", "mujoco-single", "procgen-single", "gym-single"}
    assert expected <= set(reg.suites)
    assert reg.suite("minatar-continual").tasks == ("minatar-space-invaders", "minatar-breakout", "minatar-asterix")
    assert reg.suite("minatar-continual").mode == "sequential"
    assert {reg.task(t).backend for t in reg.suite("atari-multitask").tasks} == {"ale"}


def test_user_task_colliding_with_builtin_is_an_error_unless_override(tmp_path):
    (tmp_path / "mine.yaml").write_text("id: minatar-breakout\nbackend: scripted\nenv: x\n")
    with pytest.raises(ConfigError) as err:
        load_registry([tmp_path])
    assert "already defined in" in str(err.value) and "minatar.yaml" in str(err.value)
    (tmp_path / "mine.yaml").write_text("id: minatar-breakout\nbackend: scripted\nenv: x\noverride: true\n")
    reg = load_registry([tmp_path])
    assert reg.task("minatar-breakout").backend == "scripted"
    assert "minatar-breakout" in reg.overridden


def test_env_var_path_then_tasks_dir(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "t.yaml").write_text("id: shared-task\nbackend: scripted\nenv: from-a\n")
    (b / "t.yaml").write_text("id: shared-task\nbackend: scripted\nenv: from-b\noverride: true\n")
    monkeypatch.setenv("MTMOE_TASKS_PATH", str(a))
    assert load_registry().task("shared-task").env == "from-a"
    assert load_registry([b]).task("shared-task").env == "from-b"  # --tasks-dir comes last


def test_missing_tasks_dir_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_registry([tmp_path / "nope"])


def test_register_task_and_suite_from_python(monkeypatch):
    monkeypatch.setattr(registry_mod, "_PY_TASKS", [])
    monkeypatch.setattr(registry_mod, "_PY_SUITES", [])
    register_task({**GOOD_TASK, "options": {"length": 4}})
    register_suite({**SUITE, "name": "py-suite"})
    reg = load_registry()
    assert reg.task("my-task").options.length == 4
    assert reg.suite("py-suite").tasks == ("my-task",)
    with pytest.raises(ConfigError, match="lowercase id"):
        register_task({**GOOD_TASK, "id": "Bad Id"})


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mtmoe.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=Path(__file__).parents[1])


def test_cli_bad_tasks_dir_exits_nonzero_with_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("id: a\nbackend: minatar\nenv: Breakout\noptions: {stiky: 0.1}\n")
    out = _cli("tasks", "--tasks-dir", str(tmp_path))
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.yaml" in lines[0] and "options.stiky" in lines[0]
    assert "Traceback" not in out.stderr


def test_cli_lists_suites_and_tasks():
    out = _cli("suites")
    assert out.returncode == 0
    for name in ("minatar-continual", "atari-multitask", "procgen-multitask", "mujoco-continual"):
        assert name in out.stdout
    out = _cli("tasks", "--backend", "minatar")
    assert out.returncode == 0 and out.stdout.count("minatar-") >= 5


def test_cli_unknown_suite_is_one_line():
    out = _cli("suites", "show", "minatar-contnual")
    assert out.returncode == 2 and "unknown suite" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("cmd", [[], ["tasks"], ["suites"], ["suites", "show"], ["run"], ["nets", "show"]])
def test_help_on_every_command(cmd):
    out = _cli(*cmd, "--help")
    assert out.returncode == 0 and "usage: mtmoe" in out.stdout


@pytest.mark.parametrize("placement,moe_towers", [("none", []), ("critic", ["critic"]), ("both", ["actor", "critic"])])
def test_cli_nets_show_marks_the_moe_towers(placement, moe_towers):
    out = _cli("nets", "show", "--suite", "minatar-multitask", "--placement", placement)
    assert out.returncode == 0, out.stderr
    marked = [line.split()[0] for line in out.stdout.splitlines() if line.rstrip().endswith("[MoE]")]
    assert marked == moe_towers


def test_cli_run_rejects_bad_flags_in_one_line():
    out = _cli("run", "--suite", "minatar-single", "--set", "ppo.lerning_rate=1")
    assert out.returncode == 2 and "ppo.lerning_rate" in out.stderr and "Traceback" not in out.stderr
    out = _cli("run", "--suite", "minatar-single", "--set", "ppo.num_steps=many")
    assert out.returncode == 2 and "ppo.num_steps" in out.stderr and "expected int" in out.stderr
