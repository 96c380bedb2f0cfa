"""The run logger: TensorBoard tags of a tiny sequential run, its W&B offline run, and --wandb
without wandb installed."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from mtmoe.cli import main

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

SUITE = """name: gym-switch
description: CartPole, then Acrobot (a sequential suite of cheap tasks, for the logging tests).
tasks: [gym-cartpole, gym-acrobot]
mode: sequential
order: [gym-cartpole, gym-acrobot]
cycles: 1
num_envs: 4
algo: ppo
preset: ppo-classic
budgets: {default: 512}
"""
STEPS, ENVS, NUM_STEPS = 512, 4, 32  # two PPO iterations per phase; the switch at step 256
SETS = [f"num_envs={ENVS}", f"ppo.num_steps={NUM_STEPS}", "ppo.update_epochs=1", "ppo.num_minibatches=2",
        "eval_every=256", "probe_every=128", "checkpoint_every=-1", "eval_episodes=1", "eval_max_steps=30",
        "probe_per_task=8", "log_every=1"]


def tiny_args(tasks_dir: Path, out: Path) -> list[str]:
    return ["run", "--suite", "gym-switch", "--placement", "critic", "--steps", str(STEPS), "--out", str(out),
            "--tasks-dir", str(tasks_dir), *[a for s in SETS for a in ("--set", s)]]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One tiny run with --wandb (offline): its TensorBoard events and its W&B files."""
    root = tmp_path_factory.mktemp("logging")
    (root / "tasks" / "suites").mkdir(parents=True)
    (root / "tasks" / "suites" / "gym-switch.yaml").write_text(SUITE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(name, str(root / "wandb-home"))
        args = tiny_args(root / "tasks", root / "out") + ["--wandb", "--wandb-project", "mtmoe-test",
                                                          "--wandb-group", "logging"]
        assert main(args) == 0
    (folder,) = (root / "out" / "gym-switch").iterdir()
    return folder


def _events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def _scalars(acc: EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def test_tensorboard_has_the_new_tags(run_dir):
    acc, summary = _events(run_dir), json.loads((run_dir / "summary.json").read_text())
    sps = _scalars(acc, "train/steps_per_s")
    assert sps and all(v > 0 for v in sps.values())
    assert {"train/value_loss", "probe/moe/critic.hidden1/load_entropy"} <= set(acc.Tags()["scalars"])
    raw, norm = _scalars(acc, "return/gym-cartpole"), _scalars(acc, "normalized/gym-cartpole")
    low, high = summary["normalization"]["gym-cartpole"]["low"], summary["normalization"]["gym-cartpole"]["high"]
    assert raw and set(raw) == set(norm)
    for step, value in raw.items():
        assert norm[step] == pytest.approx((value - low) / (high - low), rel=1e-5, abs=1e-6)
    lengths = _scalars(acc, "episode_length/gym-cartpole")
    assert lengths and all(1 <= v <= 500 for v in lengths.values())
    assert max(raw.values()) <= 500 and lengths.keys() == raw.keys()  # CartPole: return = length
    for step, value in raw.items():
        assert lengths[step] == pytest.approx(value, rel=1e-5)


def test_a_task_switch_is_marked(run_dir):
    acc = _events(run_dir)
    assert _scalars(acc, "schedule/task_index") == {0: 0.0, 256: 1.0}
    texts = {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors("schedule/switch/text_summary")}
    assert texts == {0: "step 0: phase 0 starts on gym-cartpole",
                     256: "step 256: phase 1 switches from gym-cartpole to gym-acrobot"}


def test_expert_load_is_a_histogram_per_moe_layer(run_dir):
    acc = _events(run_dir)
    (tag,) = [t for t in acc.Tags()["histograms"] if t.startswith("expert_load/")]
    events = acc.Histograms(tag)
    probes = [json.loads(line)["probe"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if '"probe"' in line]
    assert len(events) == len(probes) >= 4
    layer = tag.split("/", 1)[1]
    for event, probe in zip(events, probes):
        h = event.histogram_value
        assert h.bucket_limit == pytest.approx([0.5, 1.5, 2.5, 3.5])  # four experts, one bucket each
        assert h.bucket == pytest.approx(probe["moe"][layer]["expert_load"], abs=1e-6)
        assert sum(h.bucket) == pytest.approx(1.0, abs=1e-3)  # softmoe: every token's share goes to some expert


def test_success_per_task_where_episodes_report_it(tmp_path):
    """Meta-World episodes carry success (0/1): the mean of the last ones is success/<task>."""
    from mtmoe.runner.logger import RunLogger
    from mtmoe.runner.periodic import EpisodeStats, log_training
    from mtmoe.runner.records import EpisodeLog

    tasks = ["mw-reach", "minatar-breakout"]
    episodes = [{"task": "mw-reach", "return": 1.0, "normalized": 0.1, "length": 500, "success": s}
                for s in (1.0, 0.0, 1.0, 1.0)] + [{"task": "minatar-breakout", "return": 2.0, "normalized": 0.2,
                                                   "length": 30}]
    log, stats = EpisodeLog(tasks), EpisodeStats(tasks)
    log.add(episodes)
    stats.add(episodes)
    logger = RunLogger(tmp_path)
    log_training(logger, 1000, {"global_step": 1000, "value_loss": 0.5}, 123.0, log, stats)
    logger.close()
    acc = _events(tmp_path)
    assert _scalars(acc, "success/mw-reach") == {1000: 0.75}
    assert "success/minatar-breakout" not in acc.Tags()["scalars"]
    assert _scalars(acc, "episode_length/minatar-breakout") == {1000: 30.0}
    assert _scalars(acc, "train/steps_per_s") == {1000: 123.0}


def _wandb_records(path: Path):
    """The records of a W&B offline run file (run-<id>.wandb: a LevelDB-style log of protobufs)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, buf = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768  # records never straddle a block's last 6 bytes
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (length == 0 and kind == 0):
            pos += left
            continue
        buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record or a record's last piece
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def test_wandb_offline_run_lives_in_the_run_folder(run_dir):
    pytest.importorskip("wandb")
    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
    (log,) = wandb_run.glob("run-*.wandb")
    assert log.name == f"run-{(run_dir / 'wandb-id.txt').read_text()}.wandb"
    records = list(_wandb_records(log))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == run_dir.name and run.project == "mtmoe-test" and run.run_group == "logging"
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["suite"] == "gym-switch" and config["steps"] == STEPS
    assert config["ppo"]["num_steps"] == NUM_STEPS
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    keys = set().union(*history)
    assert {"train/steps_per_s", "train/value_loss", "return/gym-cartpole", "normalized/gym-cartpole",
            "episode_length/gym-cartpole", "schedule/task_index", "global_step"} <= keys
    assert any(k.startswith("expert_load/") for k in keys)
    tb = _scalars(_events(run_dir), "train/steps_per_s")
    wb = {h["global_step"]: h["train/steps_per_s"] for h in history if "train/steps_per_s" in h}
    assert wb == pytest.approx(tb)


def test_wandb_flag_without_wandb_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # import wandb raises ImportError
    assert main(["run", "--suite", "gym-single", "--steps", "64", "--out", str(tmp_path), "--wandb"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "wandb" in err and "pip install" in err and "Traceback" not in err
    assert not (tmp_path / "gym-single").exists()  # nothing was started


def test_a_resumed_run_logs_into_the_same_wandb_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from mtmoe.runner.config import compose
    from mtmoe.runner.logger import WandbOptions
    from mtmoe.runner.run import train
    from mtmoe.tasks import load_registry

    (tmp_path / "tasks" / "suites").mkdir(parents=True)
    (tmp_path / "tasks" / "suites" / "gym-switch.yaml").write_text(SUITE)
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    registry = load_registry([str(tmp_path / "tasks")])
    sets = [s for s in SETS if not s.startswith(("checkpoint_every", "probe_every"))]
    cfg, _ = compose(registry, "gym-switch", steps=256, net_flags={"placement": "none"},
                     sets=sets + ["checkpoint_every=128", "probe_every=-1"])
    options = WandbOptions(project="mtmoe-test")
    run_dir = train(cfg, registry, tmp_path / "out", progress=False, stop_at_step=128, wandb=options)
    train(cfg, registry, tmp_path / "out", progress=False, resume=run_dir, wandb=options)
    run_id = (run_dir / "wandb-id.txt").read_text()
    logs = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert logs == [f"run-{run_id}.wandb"] * 2 and (run_dir / "summary.json").is_file()


def test_a_sweep_with_wandb_logs_each_run_in_the_sweeps_group(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    out = tmp_path / "my-sweep"
    assert main(["sweep", "--suite", "gym-single", "--placements", "none,critic", "--seeds", "0", "--steps", "256",
                 "--set", "ppo.num_steps=64", "--out", str(out), "--jobs", "2", "--wandb",
                 "--wandb-project", "mtmoe-test"]) == 0
    runs = sorted((out / "gym-single").iterdir())
    assert [r.name for r in runs] == ["ppo-critic-softmoe-penultimate-e4-s0", "ppo-none-dense-s0"]
    for run_dir in runs:
        (log,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
        (run,) = [r.run for r in _wandb_records(log) if r.WhichOneof("record_type") == "run"]
        assert run.display_name == run_dir.name and run.project == "mtmoe-test" and run.run_group == "my-sweep"
        assert (run_dir / "summary.json").is_file()


def test_sweep_wandb_flags_without_wandb_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "wandb", None)
    base = ["sweep", "--suite", "gym-single", "--seeds", "0", "--steps", "64", "--out", str(tmp_path)]
    assert main(base + ["--wandb"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install" in err and not (tmp_path / "gym-single").exists()
    assert main(base + ["--wandb-group", "g"]) != 0
    assert "give --wandb too" in capsys.readouterr().err
