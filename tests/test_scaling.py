"""Parameter and FLOP counts against hand counts; dense twins; `mtmoe scaling` on synthetic results."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from mtmoe.agents.ppo import ppo_flops
from mtmoe.metrics.flops import forward_flops, train_flops
from mtmoe.nets import NetConfig, build_actor_critic
from mtmoe.scaling.report import scaling
from mtmoe.scaling.sizes import matched_hidden

OBS, ACT = gym.spaces.Box(-1, 1, (8,), np.float32), gym.spaces.Discrete(3)
B = 5


def _net(cfg):
    torch.manual_seed(0)
    return build_actor_critic(OBS, ACT, cfg), torch.randn(B, 8), torch.zeros(B, dtype=torch.long)


def test_dense_counts_match_hand_counts():
    net, x, t = _net(NetConfig(hidden=(16,), placement="none"))
    # actor 8->16->3, critic 8->16->1 (weights + biases)
    assert net.param_counts() == {"encoder": 0, "actor": 8 * 16 + 16 + 16 * 3 + 3, "critic": 8 * 16 + 16 + 16 + 1,
                                  "total": 195 + 161}
    fwd = 2 * B * (8 * 16 + 16 * 3) + 2 * B * (8 * 16 + 16 * 1)  # 2 FLOPs per multiply-add
    assert forward_flops(net, x, t) == fwd
    # backward: every weight gradient (= forward FLOPs) + input gradients of all but the first layers
    assert train_flops(net, x, t) == 2 * fwd + 2 * B * (16 * 3) + 2 * B * 16
    per_step = ppo_flops(net, x, t, update_epochs=4)
    assert per_step["per_env_step"] == pytest.approx(fwd / B + 4 * train_flops(net, x, t) / B)


def test_softmoe_counts_match_hand_counts():
    # critic: obs split into m=4 tokens of d=2; 2 experts 2->8->2 with p = ceil(4/2) = 2 slots each
    net, x, t = _net(NetConfig(hidden=(16,), placement="critic", num_experts=2, expert_width=8, tokenizer="split",
                               num_tokens=4))
    m, d, E, p, w = 4, 2, 2, 2, 8
    phi = d * E * p
    experts = E * (d * w + w + w * d + d)
    head = m * d * 1 + 1
    assert net.param_counts()["critic"] == phi + experts + head
    moe = (2 * B * m * d * E * p  # logits L = X Phi
           + 2 * B * E * p * m * d  # slot inputs D^T X
           + 2 * B * E * p * (d * w + w * d)  # experts on their slots
           + 2 * B * m * E * p * d)  # outputs C Y~
    actor = 2 * B * (8 * 16 + 16 * 3)
    assert forward_flops(net, x, t) == actor + moe + 2 * B * m * d


def test_dense_twin_matches_the_moe_critic_parameters():
    cfg = NetConfig(hidden=(16, 16), placement="critic", num_experts=8, expert_width=64, tokenizer="split")
    target = build_actor_critic(OBS, ACT, cfg.replace(placement="both")).param_counts()["critic"]
    hidden = matched_hidden(cfg, "ppo", OBS, ACT)
    assert len(hidden) == 2 and hidden[0] == hidden[1]
    count = lambda h: build_actor_critic(OBS, ACT, cfg.replace(placement="none", hidden=h)).param_counts()["critic"]  # noqa: E731
    w = hidden[0]
    assert abs(count(hidden) - target) <= min(abs(count((w - 1,) * 2) - target), abs(count((w + 1,) * 2) - target))


def _write(root, placement, experts, seed, score, params, flops):
    path = root / "s" / f"ppo-{placement}-e{experts}-s{seed}"
    path.mkdir(parents=True)
    net = {"placement": placement, "moe": "softmoe", "position": "penultimate", "num_experts": experts,
           "expert_width": 0}
    cfg = {"suite": "s", "algo": "ppo", "seed": seed, "net": net,
           "dense_match": f"e{experts}-w0" if placement == "none" else ""}
    (path / "config.json").write_text(json.dumps(cfg))
    tasks = ["a", "b"]
    norm = {t: {"low": 0.0, "high": 1.0, "source": "test"} for t in tasks}
    steps = np.arange(1, 41) * 1000
    summary = {"suite": "s", "algo": "ppo", "seed": seed, "steps": int(steps[-1]), "steps_per_s": 1.0,
               "final_return": {t: score for t in tasks}, "final_normalized": {t: score for t in tasks},
               "normalization": norm, "eval": {t: {"return": score, "normalized": score} for t in tasks},
               "param_counts": {"actor_critic": {"actor": params // 2, "critic": params - params // 2,
                                                 "total": params}},
               "flops": {"per_env_step": flops}}
    (path / "summary.json").write_text(json.dumps(summary))
    # learning curves: bigger models learn faster and higher (return = score * (1 - exp(-s / tau)))
    tau = 2e4 / (params / 1e3)
    lines = [{"global_step": int(s), "return": {t: score * (1 - np.exp(-s / tau)) for t in tasks}} for s in steps]
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_scaling_report_on_synthetic_size_family(tmp_path):
    rng = np.random.default_rng(0)
    for experts, params in ((1, 1000), (4, 4000), (16, 16000)):
        for seed in range(3):
            # critic: score rises with size; none: flat
            _write(tmp_path, "critic", experts, seed, 0.2 * np.log2(experts) + 0.5 + 0.01 * rng.normal(), params, 3 * params)
            _write(tmp_path, "none", experts, seed, 0.5 + 0.01 * seed, params, 3 * params)
    out = scaling([tmp_path], tmp_path / "report", reps=200, bootstrap=20, warn=pytest.fail)
    fams = out["s"]["families"]
    assert set(fams) == {"none", "critic"}
    assert fams["critic"]["trend"].startswith("rises") and fams["none"]["trend"].startswith("no clear trend")
    assert [v["params"] for v in fams["critic"]["sizes"].values()] == [1000, 4000, 16000]
    fit = fams["critic"]["fit"]["fit"]
    assert fit is not None and fit["alpha_N"] > 0 and fit["alpha_E"] > 0
    md = (tmp_path / "report" / "scaling.md").read_text()
    assert "critic/e16" in md and "α_N" in md
    # each MoE size against its twin: at 16 experts every critic run (1.3) beats every twin run (0.50-0.52)
    twins = out["s"]["twins"]
    assert [(t["moe"], t["twin"]) for t in twins] == [(f"critic/e{e}", f"none/e{e}") for e in (1, 4, 16)]
    assert twins[-1]["p"] == pytest.approx((1.0, 1.0, 1.0)) and twins[-1]["runs"] == (3, 3)
    assert "| critic/e16 | none/e16 | 3 / 3 |" in md and "P(MoE > twin)" in md
    for name in out["s"]["plots"].values():
        assert (tmp_path / "report" / name).read_bytes()[:4] == b"\x89PNG"
    # one seed per size: the same scores give point "CIs", and no trend is claimed from them
    one = scaling([tmp_path / "s" / f"ppo-critic-e{e}-s0" for e in (1, 4, 16)], tmp_path / "one", reps=200,
                  bootstrap=20, warn=lambda *_: None)
    assert one["s"]["families"]["critic"]["trend"].startswith("no CI to compare")


def test_task_routed_towers_count_one_tower_per_sample_like_dense():
    """FLOPs count the routed work: each sample runs through one task tower, so task-routed `big`
    costs what the dense network costs (a GPU runs every tower on every sample; the count is
    taken on a CPU copy and does not follow it). A copy counts the same and leaves the net alone."""
    from mtmoe.metrics.flops import on_cpu

    torch.manual_seed(0)
    dense = build_actor_critic(OBS, ACT, NetConfig(hidden=(16,), placement="none", num_tasks=3))
    routed = build_actor_critic(OBS, ACT, NetConfig(hidden=(16,), placement="both", position="big", moe="task",
                                                    num_experts=3, num_tasks=3))
    x, t = torch.randn(6, 8), torch.arange(6) % 3
    assert forward_flops(routed, x, t) == forward_flops(dense, x, t) > 0
    copy_, args, kwargs = on_cpu(routed, (x, t), {}, copy_always=True)
    assert copy_ is not routed and train_flops(copy_, *args, **kwargs) == train_flops(routed, x, t)
    assert all(p.grad is None for p in routed.parameters())


def test_an_moe_size_meets_only_its_own_backends_twin_and_actor_only_moe_none(tmp_path):
    """The twin matches an MoE critic's parameters: actor-only MoE gets no twin row, and a Sample
    Factory run is not set against mtmoe's twin."""
    for seed in range(2):
        _write(tmp_path, "none", 4, seed, 0.5, 4000, 12000)
        _write(tmp_path, "critic", 4, seed, 0.6, 4000, 12000)
        _write(tmp_path, "actor", 4, seed, 0.7, 4000, 12000)
    sf = tmp_path / "s" / "ppo-critic-e4-s0"
    sf_copy = tmp_path / "s" / "sf-critic-e4-s0"
    sf_copy.mkdir()
    for name in ("summary.json", "metrics.jsonl"):
        (sf_copy / name).write_text((sf / name).read_text())
    cfg = json.loads((sf / "config.json").read_text())
    (sf_copy / "config.json").write_text(json.dumps({**cfg, "backend": "sample-factory"}))
    out = scaling([tmp_path], tmp_path / "r", reps=50, bootstrap=5, plots=False, warn=lambda *_: None)
    assert [(t["moe"], t["twin"]) for t in out["s"]["twins"]] == [("critic", "none/e4")]


def test_scaling_renormalizes_with_the_current_registry_and_takes_tasks_dir(tmp_path, capsys):
    """Runs that recorded other references are scored with the registry's (here a --tasks-dir that
    defines tasks a and b with high 2): 0.5 recorded on a 0..1 scale becomes 0.25, as in compare."""
    for experts, params in ((1, 1000), (4, 4000)):
        for seed in range(2):
            _write(tmp_path / "res", "critic", experts, seed, 0.5, params, 3 * params)
    tasks = tmp_path / "mytasks"
    tasks.mkdir()
    for t in ("a", "b"):
        (tasks / f"{t}.yaml").write_text(f"id: {t}\nbackend: minatar\nenv: breakout\n"
                                         "normalization: {low: 0.0, high: 2.0, source: test}\n")
    warned = []
    out = scaling([tmp_path / "res"], tmp_path / "r", reps=50, bootstrap=5, plots=False, warn=warned.append,
                  tasks_dirs=[tasks])
    scores = [v["score"] for v in out["s"]["families"]["critic"]["sizes"].values()]
    assert [s[0] for s in scores] == pytest.approx([0.25, 0.25])  # (IQM, CI low, CI high)
    assert any("a, b: normalized with the current task registry" in w for w in warned), warned
    from mtmoe.cli import main

    assert main(["scaling", str(tmp_path / "res"), "--tasks-dir", str(tasks), "--out", str(tmp_path / "cli"),
                 "--reps", "50", "--bootstrap", "5", "--no-plots"]) == 0
    assert "0.250" in (tmp_path / "cli" / "scaling.md").read_text()
    best = scaling([tmp_path / "res"], tmp_path / "b", reps=50, bootstrap=5, plots=False, warn=pytest.fail,
                   tasks_dirs=[tasks], normalize="best-label")  # each task / the best size's mean: 0.5 / 0.5
    assert [v["score"][0] for v in best["s"]["families"]["critic"]["sizes"].values()] == pytest.approx([1.0, 1.0])
    assert "--normalize best-label" in (tmp_path / "b" / "scaling.md").read_text()


@pytest.mark.parametrize("mode,expected", [("reference", (8.0 - 2.0) / 4.0), ("best-label", 8.0 / 10.0), ("raw", 8.0)])
def test_training_curves_follow_normalize(tmp_path, mode, expected):
    """The curves behind return-against-compute and intrinsic performance are scaled as --normalize
    scales the final scores (reference scale (raw - 2) / 4 recorded here; best final return 10)."""
    from mtmoe.compare.load import load_runs
    from mtmoe.scaling.report import _task_scales, mean_curve

    _write(tmp_path, "critic", 1, 0, 10.0, 1000, 3000)  # return = 10 (1 - exp(-s / tau)) per task
    path = tmp_path / "s" / "ppo-critic-e1-s0"
    summary = json.loads((path / "summary.json").read_text())
    summary["normalization"] = {t: {"low": 2.0, "high": 6.0, "source": "test"} for t in ("a", "b")}
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "metrics.jsonl").write_text(json.dumps({"global_step": 100, "return": {"a": 8.0, "b": 8.0}}) + "\n")
    runs = load_runs([tmp_path], pytest.fail)
    steps, curve = mean_curve(runs[0], _task_scales(runs, mode))
    assert list(steps) == [100] and curve[0] == pytest.approx(expected)
