"""`mtmoe sweep`: grid parsing, and a sweep of tiny runs that is killed and resumed."""

from __future__ import annotations

import dataclasses

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mtmoe.errors import MtmoeError
from mtmoe.runner.records import run_name
from mtmoe.sweep import Grid, parse_ints, state_of, sweep
from sweep_checks import assert_resumed_once, summary_stamps
from mtmoe.tasks import load_registry

REGISTRY = load_registry()
# tiny PPO iterations (8 envs x 32 steps) so that checkpoints come often
TINY = ["num_envs=8", "ppo.num_steps=32", "ppo.num_minibatches=2", "ppo.update_epochs=1", "log_every=256",
        "eval_every=-1", "probe_every=-1", "checkpoint_every=1024"]


@pytest.mark.parametrize("text,expected", [("0-4", [0, 1, 2, 3, 4]), ("1,2,4", [1, 2, 4]), ("0-2,7,1", [0, 1, 2, 7]),
                                           ("3", [3])])
def test_parse_ints(text, expected):
    assert parse_ints(text, "--seeds") == expected


@pytest.mark.parametrize("text", ["a", "4-2", "1,,x"])
def test_parse_ints_rejects_bad_input_in_one_line(text):
    with pytest.raises(MtmoeError, match="--seeds"):
        parse_ints(text, "--seeds")


def test_grid_runs_placement_none_once_per_seed():
    grid = Grid(suites=["minatar-single"], seeds=[0, 1], placements=["none", "critic"], moes=["softmoe", "topk"],
                steps=1000)
    names = sorted(run_name(c) for c in grid.configs(REGISTRY))
    assert names == ["ppo-critic-softmoe-penultimate-e4-s0", "ppo-critic-softmoe-penultimate-e4-s1",
                     "ppo-critic-topk-penultimate-e4-s0", "ppo-critic-topk-penultimate-e4-s1",
                     "ppo-none-dense-s0", "ppo-none-dense-s1"]


def test_size_family_gives_placement_none_a_growing_dense_twin_per_size():
    grid = Grid(suites=["minatar-single"], seeds=[0], placements=["none", "critic"], experts=[1, 16],
                expert_widths=[256], steps=1000)
    cfgs = {run_name(c): c for c in grid.configs(REGISTRY)}
    small, large = cfgs["ppo-none-dense-match-e1-w256-s0"], cfgs["ppo-none-dense-match-e16-w256-s0"]
    assert small.net.placement == large.net.placement == "none"
    assert large.net.hidden[0] > small.net.hidden[0] and small.dense_match == "e1-w256"
    assert set(cfgs) >= {"ppo-critic-softmoe-penultimate-e1-w256-s0", "ppo-critic-softmoe-penultimate-e16-w256-s0"}


def test_killed_sweep_resumes_and_skips_finished_runs(tmp_path):
    out = tmp_path / "sweep"
    args = ["--suite", "minatar-single", "--placements", "none,critic", "--seeds", "0", "--steps", "8192",
            "--out", str(out), "--jobs", "2"] + [x for s in TINY for x in ("--set", s)]
    proc = subprocess.Popen([sys.executable, "-m", "mtmoe.cli", "sweep", *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("*/*/checkpoint.pt")):
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its runs die at once, mid-run
    proc.wait()
    run_dirs = sorted(out.glob("minatar-single/*"))
    assert len(run_dirs) == 2 and not any(state_of(d) == "done" for d in run_dirs)
    # the sweep started again at once: a killed run's lock may outlive it by a moment (_held waits for it)
    interrupted = [d for d in run_dirs if state_of(d) == "resumable"]
    assert interrupted

    grid = Grid(suites=["minatar-single"], seeds=[0], placements=["none", "critic"], steps=8192, sets=TINY)
    counts = sweep(grid, REGISTRY, out, jobs=2, progress=False, poll=0.1)
    assert counts["done"] == 2 and counts["failed"] == 0 and counts["resumed"] == len(interrupted)
    assert_resumed_once(run_dirs, interrupted, 8192)

    stamps = summary_stamps(run_dirs)
    again = sweep(grid, REGISTRY, out, jobs=2, progress=False, poll=0.1)
    assert again["skipped"] == 2 and again["done"] == 0
    assert summary_stamps(run_dirs) == stamps
    assert len(json.loads((out / "sweep.json").read_text())) == 3  # each invocation recorded


def test_a_failing_run_is_retried_then_reported(tmp_path):
    grid = Grid(suites=["minatar-single"], seeds=[0], placements=["none"], steps=512, sets=TINY)
    cfg = grid.configs(REGISTRY)[0]
    from mtmoe.sweep import run_folder

    run_dir = run_folder(tmp_path, cfg)
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_text("not a checkpoint")  # resuming from it fails
    counts = sweep(grid, REGISTRY, tmp_path, jobs=1, retries=1, progress=False, poll=0.1)
    assert counts["failed"] == 1
    log = (run_dir / "log.txt").read_text()
    assert log.count("# ") == 2  # launched twice: the first try and one retry


# ---------------------------------------------------------------- the outcome of an attempt, shared by both backends


@pytest.mark.parametrize("succeeded,finished,attempts,retries,expected", [
    (True, True, 1, 1, "done"), (True, True, 3, 1, "done"),  # done wins, however many attempts
    (True, False, 1, 1, "queued"), (True, False, 2, 1, "failed"),  # exit 0 without summary.json is no success
    (False, True, 1, 1, "queued"), (False, True, 2, 1, "failed"),  # summary.json with a failed exit neither
    (False, False, 1, 1, "queued"), (False, False, 2, 1, "failed"), (False, False, 1, 0, "failed"),
])
@pytest.mark.parametrize("backend", ["settle", "local", "ray"])
def test_an_attempt_ends_done_queued_or_failed_alike_in_both_backends(tmp_path, backend, succeeded, finished,
                                                                      attempts, retries, expected):
    """settle() is the one rule; each backend's end-of-attempt step must reach the same state through it."""
    assert _end_attempt(tmp_path, backend, 0 if succeeded else 1, finished, attempts, retries) == expected


@pytest.mark.parametrize("backend", ["settle", "local", "ray"])
def test_a_worker_that_found_its_folder_in_use_leaves_the_run_to_that_process(tmp_path, backend):
    from mtmoe.runner.lock import ELSEWHERE_EXIT

    assert _end_attempt(tmp_path, backend, ELSEWHERE_EXIT, False, 1, 1) == "elsewhere"


def _end_attempt(tmp_path, backend, code, finished, attempts, retries) -> str:
    """The state a job reaches when its attempt ends with exit status `code`, through `backend`."""
    from types import SimpleNamespace

    from mtmoe.sweep import jobs, local, ray_backend

    cfg = Grid(suites=["minatar-single"], seeds=[0], placements=["none"], steps=512).configs(REGISTRY)[0]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if finished:
        (run_dir / "summary.json").write_text("{}")
    if backend == "settle":
        job = jobs.Job(cfg, run_dir, state="running", attempts=attempts)
        jobs.settle(job, code, retries)
    elif backend == "local":
        job = local.LocalJob(cfg, run_dir, state="running", attempts=attempts,
                             proc=SimpleNamespace(returncode=code), log=open(run_dir / "log.txt", "a"))
        local._finish(job, retries)
        assert job.proc is None and job.log.closed
    else:
        job = ray_backend.RayJob(cfg, run_dir, state="running", attempts=attempts, ref="attempt")
        ray_backend._finish(SimpleNamespace(get=lambda ref: (code, "fresh")), job, retries)
        assert job.ref is None
    return job.state


# ---------------------------------------------------------------- --runs-per-device: GPUs shared by several runs


def _fake_machine(monkeypatch, gpus: int, cores: int = 16, visible: str | None = None):
    import mtmoe.sweep.local as sweep_mod

    monkeypatch.setattr(sweep_mod, "gpu_count", lambda: gpus)
    monkeypatch.setattr(sweep_mod.os, "cpu_count", lambda: cores)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)


@pytest.mark.parametrize("gpus,per_device", [(1, 16), (2, 3), (4, 1)])
def test_plan_puts_runs_per_device_runs_on_each_gpu(monkeypatch, gpus, per_device):
    from collections import Counter

    from mtmoe.sweep import plan

    _fake_machine(monkeypatch, gpus)
    shape = plan(0, per_device)
    assert shape.jobs == gpus * per_device
    assert Counter(shape.gpu_of) == {str(g): per_device for g in range(gpus)}
    assert shape.gpu_of[:gpus] == [str(g) for g in range(gpus)]  # round-robin: the first runs spread out
    assert shape.threads == max(1, 16 // (gpus * per_device)) and not shape.note


def test_plan_keeps_jobs_and_the_callers_visible_gpus(monkeypatch):
    from mtmoe.sweep import plan

    _fake_machine(monkeypatch, gpus=2, visible="3,5")
    shape = plan(jobs=5, runs_per_device=8)  # --jobs wins over N x GPUs
    assert shape.jobs == 5 and shape.gpu_of == ["3", "5", "3", "5", "3"] and shape.threads == 3


def test_plan_without_gpu_ignores_runs_per_device_with_a_note(monkeypatch):
    from mtmoe.sweep import plan

    _fake_machine(monkeypatch, gpus=0, cores=6)
    shape = plan(0, 16)
    assert shape.jobs == 6 and shape.gpu_of == [] and shape.threads == 1
    assert "no effect" in shape.note and "\n" not in shape.note
    assert plan(0, 1).note == ""
    with pytest.raises(MtmoeError, match="--runs-per-device"):
        plan(0, 0)


def test_sweep_runs_at_most_runs_per_device_runs_on_each_gpu_at_once(monkeypatch, tmp_path):
    """The scheduler with fake workers: 8 runs, 2 fake GPUs, 2 runs per GPU."""
    from pathlib import Path

    import mtmoe.sweep.local as sweep_mod

    _fake_machine(monkeypatch, gpus=2, cores=8)
    live: list = []
    peak: dict[str, int] = {}
    seen_env: list[tuple[str, str]] = []

    class FakeProc:
        def __init__(self, cmd, stdout=None, stderr=None, env=None):
            self.gpu, self.run_dir, self.polls, self.returncode = env["CUDA_VISIBLE_DEVICES"], Path(cmd[3]), 0, None
            live.append(self)
            on_gpu = sum(p.gpu == self.gpu for p in live)
            peak[self.gpu] = max(peak.get(self.gpu, 0), on_gpu)
            cfg = json.loads((self.run_dir / "config.json").read_text())
            seen_env.append((self.gpu, str(cfg["threads"])))

        def poll(self):
            self.polls += 1
            if self.polls < 3:
                return None
            if self.returncode is None:
                (self.run_dir / "summary.json").write_text("{}")
                self.returncode = 0
                live.remove(self)
            return 0

        def terminate(self):
            pass

        def wait(self, timeout=None):
            return self.returncode

    monkeypatch.setattr(sweep_mod.subprocess, "Popen", FakeProc)
    grid = Grid(suites=["minatar-single"], seeds=[0, 1], placements=["none", "actor", "critic", "both"], steps=512,
                sets=TINY)
    counts = sweep(grid, REGISTRY, tmp_path, progress=False, poll=0.0, runs_per_device=2)
    assert counts["done"] == 8 and counts["failed"] == 0
    assert peak == {"0": 2, "1": 2}  # both GPUs full, never more than 2 runs on one
    assert {t for _, t in seen_env} == {"2"}  # 8 cores / 4 runs at once


def test_cli_passes_runs_per_device_to_both_backends(monkeypatch, tmp_path, capsys):
    import mtmoe.sweep as sweep_mod
    import mtmoe.sweep.ray_backend as sweep_ray_mod
    from mtmoe.cli import build_parser, main

    got = {}

    def fake(name):
        def run(grid, registry, out, **kw):
            got[name] = kw["runs_per_device"]
            return {"done": 0, "failed": 0, "skipped": 0, "elsewhere": 0, "resumed": 0}
        return run

    monkeypatch.setattr(sweep_mod, "sweep", fake("local"))
    monkeypatch.setattr(sweep_ray_mod, "sweep_ray", fake("ray"))
    base = ["sweep", "--suite", "minatar-single", "--seeds", "0", "--steps", "512", "--out", str(tmp_path)]
    assert main(base + ["--runs-per-device", "16"]) == 0
    assert main(base + ["--runs-per-device", "4", "--backend", "ray"]) == 0
    assert got == {"local": 16, "ray": 4}
    assert build_parser().parse_args(base).runs_per_device == 1
    with pytest.raises(SystemExit):
        build_parser().parse_args(base + ["--runs-per-device", "0"])
    assert "--runs-per-device" in capsys.readouterr().err


def test_ray_shares_a_gpu_between_runs_per_device_runs():
    from types import SimpleNamespace

    from mtmoe.sweep.ray_backend import _shape, gpu_share

    fake_ray = SimpleNamespace(nodes=lambda: [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 1.0}}])
    assert _shape(fake_ray, 0, 1) == (16, 1)
    assert _shape(fake_ray, 0, 4) == (4, 1)
    assert _shape(fake_ray, 0, 16) == (1, 1)
    assert gpu_share(1) == 1 and gpu_share(16) == 0.0625
    assert 0.33 < gpu_share(3) and 3 * gpu_share(3) <= 1


STUDY_GRID = "configs/sweeps/reference-study.yaml"


def test_the_reference_study_grid_gives_its_eight_variants_with_a_matched_single_expert():
    from mtmoe.nets import build_actor_critic
    from mtmoe.sweep import load_variants
    from mtmoe.tasks import make_mixture

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    grid = Grid(suites=["minatar-multitask", "minatar-continual"], seeds=[0, 1],
                variants=load_variants(os.path.join(root, STUDY_GRID)))
    configs = grid.configs(REGISTRY)
    assert len(configs) == 2 * 8 * 2 and len({(c.suite, run_name(c)) for c in configs}) == len(configs)
    mine = {run_name(c): c for c in configs if c.suite == "minatar-multitask" and c.seed == 0}
    assert set(mine) == {f"ppo-{n}-s0" for n in (
        "none-dense", "actor-softmoe-penultimate-e4", "critic-softmoe-penultimate-e4", "both-softmoe-penultimate-e4",
        "both-softmoe-big-e4", "both-task-big-e3", "critic-topk-penultimate-e4", "critic-softmoe-penultimate-e1-w256")}
    assert mine["ppo-critic-topk-penultimate-e4-s0"].net.top_k == 1
    env = make_mixture("minatar-multitask", REGISTRY, num_envs=3)
    try:
        critic = {n: build_actor_critic(env.single_observation_space, env.single_action_space,
                                        mine[n].net).param_counts()["critic"]
                  for n in ("ppo-critic-softmoe-penultimate-e4-s0", "ppo-critic-softmoe-penultimate-e1-w256-s0")}
    finally:
        env.close()
    four, one = critic.values()
    assert abs(four - one) / four < 0.01  # the tokenization control: one expert, the same parameters


def test_a_twin_of_variant_is_a_dense_network_with_the_moe_networks_critic_parameters():
    """`twin_of: {...}` in a grid file: placement none, hidden widths grown until the critic has the
    named MoE network's parameter count (here whole-tower SoftMoE, 4 experts, and task routing)."""
    from mtmoe.nets import build_actor_critic
    from mtmoe.tasks import make_mixture

    big = {"placement": "both", "moe": "softmoe", "position": "big"}
    task = {"placement": "both", "moe": "task", "position": "big"}
    grid = Grid(suites=["minatar-multitask"], seeds=[0], steps=1000,
                variants=[{"placement": "none"}, big, {"twin_of": big}, {"twin_of": task}])
    cfgs = {run_name(c): c for c in grid.configs(REGISTRY)}
    assert list(cfgs) == ["ppo-none-dense-s0", "ppo-both-softmoe-big-e4-s0", "ppo-none-dense-match-softmoe-big-e4-w0-s0",
                          "ppo-none-dense-match-task-big-e3-w0-s0"]
    twin = cfgs["ppo-none-dense-match-softmoe-big-e4-w0-s0"]
    assert twin.net.placement == "none" and twin.dense_match == "softmoe-big-e4-w0"
    env = make_mixture("minatar-multitask", REGISTRY, num_envs=3)
    try:
        count = lambda net: build_actor_critic(env.single_observation_space, env.single_action_space,  # noqa: E731
                                               net).param_counts()["critic"]
        dense, moe, matched = (count(cfgs[n].net) for n in ("ppo-none-dense-s0", "ppo-both-softmoe-big-e4-s0",
                                                            "ppo-none-dense-match-softmoe-big-e4-w0-s0"))
        narrower = count(dataclasses.replace(twin.net, hidden=tuple(w - 1 for w in twin.net.hidden)))
    finally:
        env.close()
    assert moe > 3 * dense and abs(matched - moe) / moe < 0.01 and abs(narrower - moe) >= abs(matched - moe)
    from mtmoe.sweep import load_variants

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    twins = Grid(suites=["minatar-continual"], seeds=[0], steps=1000,
                 variants=load_variants(os.path.join(root, "configs/sweeps/reference-study-twins.yaml")))
    assert [(c.net.hidden, c.dense_match) for c in twins.configs(REGISTRY)] == [
        ((227, 227), "softmoe-big-e4-w0"), ((176, 176), "task-big-e3-w0")]  # as its comment and the README say


def test_a_sweep_runs_seed_by_seed():
    """Every suite and variant of a seed before the next seed: a sweep stopped partway is balanced."""
    grid = Grid(suites=["minatar-multitask", "minatar-continual"], seeds=[3, 0], placements=["none", "critic"])
    order = [(c.seed, c.suite, c.net.placement) for c in grid.configs(REGISTRY)]
    assert order == [(s, suite, p) for s in (3, 0) for suite in ("minatar-multitask", "minatar-continual")
                     for p in ("none", "critic")]
    variants = Grid(suites=["minatar-single"], seeds=[0, 1], variants=[{"placement": "none"}, {"placement": "actor"}])
    assert [(c.seed, c.net.placement) for c in variants.configs(REGISTRY)] == [
        (0, "none"), (0, "actor"), (1, "none"), (1, "actor")]


@pytest.mark.parametrize("text, expected", [
    ("variants: []", "non-empty list under 'variants:'"), ("- a\n- b", "non-empty list under 'variants:'"),
    ("variants: [{placement: critic, tokenizer: per_conv}]", "unknown key(s) tokenizer"),
    ("variants: [3]", "variant 1 is not a mapping"), ("variants: [{placement: [}", "not valid YAML"),
    ("variants: [{placement: critic, moe: softmoe}, {placement: critic, moe: softmoe}]",
     "variants 1 and 2 give the same run"),
    ("variants: [{twin_of: {placement: none}}]", "twin_of needs an MoE network"),
    ("variants: [{twin_of: {position: big}, placement: both}]", "twin_of stands alone"),
    ("variants: [{twin_of: {position: big, tokenizer: per_conv}}]", "twin_of stands alone"),
])
def test_a_bad_grid_file_is_one_line(tmp_path, capsys, text, expected):
    from mtmoe.cli import main

    path = tmp_path / "grid.yaml"
    path.write_text(text)
    assert main(["sweep", "--suite", "minatar-single", "--grid", str(path), "--steps", "512",
                 "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]
    assert main(["sweep", "--suite", "minatar-single", "--grid", str(path), "--placements", "none",
                 "--out", str(tmp_path / "out")]) != 0
    assert "--grid replaces --placements" in capsys.readouterr().err


def test_a_grid_file_sweep_trains_each_variant_once_per_seed(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("variants:\n  - {placement: none}\n  - {placement: critic, moe: topk, experts: 2}\n")
    proc = subprocess.run([sys.executable, "-m", "mtmoe.cli", "sweep", "--suite", "gym-single", "--grid", str(path),
                           "--seeds", "0", "--steps", "1024", "--out", str(tmp_path / "out"), "--jobs", "2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = sorted(p.name for p in (tmp_path / "out" / "gym-single").iterdir())
    assert runs == ["ppo-critic-topk-penultimate-e2-s0", "ppo-none-dense-s0"]
    for name in runs:
        summary = json.loads((tmp_path / "out" / "gym-single" / name / "summary.json").read_text())
        assert summary["steps"] >= 1024 and summary["placement"] == name.split("-")[1]
    call = json.loads((tmp_path / "out" / "sweep.json").read_text())[-1]
    assert call["grid"]["variants"][1]["moe"] == "topk" and sorted(call["run_dirs"]) == [f"gym-single/{n}" for n in runs]
    machine = summary["machine"]  # where the run ran, for the report
    assert machine["cores"] == os.cpu_count() and machine["torch_threads"] >= 1 and machine["gpu"] is None
    assert machine["cpu"] and machine["description"].startswith(machine["cpu"])


ZEN5 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse2 avx2 avx512f avx512bw", "family 26 model 2, AVX-512"),
    ("fpu sse2 avx2 fma", "family 26 model 2, AVX2"),
    ("fpu avx2 avx512f amx_tile amx_bf16", "family 26 model 2, AMX"),
    ("fpu sse2", "family 26 model 2"),
])
def test_the_machine_record_tells_cpu_generations_apart(flags, expected):
    """Runs on two "AMD EPYC" VMs ran 3.1k and 7.5k env steps/s: the record names family, model and
    the widest vector extension, of the first processor (not a later one's)."""
    from mtmoe.runner.records import cpu_fields, cpu_generation, cpu_model

    text = ZEN5 + f"flags\t\t: {flags}\n\nprocessor\t: 1\ncpu family\t: 25\nflags\t\t: fpu\n"
    assert cpu_generation(cpu_fields(text)) == expected
    assert cpu_model(cpu_fields(text)) == "AMD EPYC"
    assert cpu_generation(cpu_fields("")) is None


def test_dry_run_says_what_the_sweep_would_do_and_touches_nothing(tmp_path, capsys):
    from mtmoe.cli import main
    from mtmoe.sweep import run_folder

    out = tmp_path / "sweep"
    args = ["sweep", "--suite", "minatar-single", "--placements", "none,critic", "--seeds", "0-1", "--steps", "4096",
            "--out", str(out)]
    grid = Grid(suites=["minatar-single"], seeds=[0, 1], placements=["none", "critic"], steps=4096)
    done, resumable, started, new = (run_folder(out, c) for c in grid.configs(REGISTRY))
    for d in (done, resumable, started):
        d.mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({"steps": 4096}))
    (resumable / "checkpoint.pt").write_bytes(b"x")
    (resumable / "metrics.jsonl").write_text(json.dumps({"global_step": 1024, "return": {"minatar-breakout": 1.0}}) + "\n")
    (started / "log.txt").write_text("started\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(args + ["--dry-run"]) == 0
    text = capsys.readouterr().out
    rows = {line.split("│")[2].strip(): line for line in text.splitlines() if line.count("│") == 5}
    assert "skip (done)" in rows[done.name] and "4,096/4,096" in rows[done.name]
    assert "resume from its checkpoint" in rows[resumable.name] and "1,024/4,096" in rows[resumable.name]
    assert "was written 0 min ago" in rows[resumable.name]  # just now: maybe a sweep is running it
    assert "move the folder aside" in rows[started.name] and rows[new.name].rstrip(" │").endswith("start")
    assert "1 skip · 1 resume from its checkpoint · 1 move the folder aside and start again · 1 start" in text
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no sweep.json, nothing moved


def _append_invocations(out, n):
    from mtmoe.sweep.jobs import record_invocation

    grid = Grid(suites=["minatar-single"], seeds=[0], placements=["none"], steps=1000)
    for _ in range(n):
        record_invocation(out, grid, grid.configs(REGISTRY))


def test_sweeps_started_at_once_keep_every_entry_of_sweep_json(tmp_path, capsys):
    """Two processes appending at once (two sweeps started in the same second once wiped a study's
    record): every entry is kept; an unreadable file is kept aside with a warning."""
    import multiprocessing

    out = tmp_path / "sweep"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_invocations, args=(out, 15)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(json.loads((out / "sweep.json").read_text())) == 30
    (out / "sweep.json").write_text('[{"time": "x"}]]')  # as a torn write leaves it
    _append_invocations(out, 1)
    kept = list(out.glob("sweep.json.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_text() == '[{"time": "x"}]]'
    assert len(json.loads((out / "sweep.json").read_text())) == 1 and "could not be read" in capsys.readouterr().err



def test_a_run_folder_another_process_trains_is_left_to_it(tmp_path, capsys):
    """One process per run folder: a sweep leaves a held folder alone (and says so), `--dry-run`
    names its holder, `mtmoe run --resume` of it is one line; the lock goes with its holder."""
    from mtmoe.cli import main
    from mtmoe.runner.lock import hold
    from mtmoe.sweep import run_folder

    out = tmp_path / "sweep"
    grid = Grid(suites=["minatar-single"], seeds=[0], placements=["none", "critic"], steps=512, sets=TINY)
    configs = grid.configs(REGISTRY)
    held, free = (run_folder(out, c) for c in configs)
    args = ["sweep", "--suite", "minatar-single", "--placements", "none,critic", "--seeds", "0", "--steps", "512",
            "--out", str(out), "--jobs", "1"] + [x for s in TINY for x in ("--set", s)]
    with hold(held):
        assert main(args + ["--dry-run"]) == 0
        assert f"leave it: pid {os.getpid()}" in capsys.readouterr().out
        assert main(args) == 0
        assert "1 left to another process training them" in capsys.readouterr().err
        assert (free / "summary.json").is_file() and not (held / "summary.json").exists()
        (held / "checkpoint.pt").write_bytes(b"x")
        (held / "config.json").write_text(json.dumps(configs[0].to_dict()))
        assert main(["run", "--resume", str(held)]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"is being trained by pid {os.getpid()}" in err[0]
    for name in ("checkpoint.pt", "config.json"):
        (held / name).unlink()
    assert main(args) == 0 and (held / "summary.json").is_file()  # released: the next sweep trains it
