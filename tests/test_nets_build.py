"""Assembly tests: every placement x position builds exactly the towers it names.

Parameter counts are computed by hand here (formulas below), independently of the builders.
"""

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from mtmoe.nets import NetConfig, build_actor_critic, build_q_network, build_sac, collect_moe, render_summary, show

torch.set_num_threads(1)

E, W, H = 2, 5, 8  # experts, expert width, hidden size (two hidden layers)
PIX = spaces.Box(0, 255, (3, 6, 6), np.uint8)  # minatar torso with 4 channels -> (4, 4, 4)
VEC = spaces.Box(-np.inf, np.inf, (6,), np.float32)  # mlp torso () -> 6 features
DISC, CONT = spaces.Discrete(3), spaces.Box(-1, 1, (2,), np.float32)


def base_cfg(**kw):
    return NetConfig(torso_channels=(4,), hidden=(H, H), num_experts=E, expert_width=W, num_tokens=2,
                     normalize=True, num_tasks=3, **kw)


# ---------------------------------------------------------------- hand-computed parameter counts
def dense(i, o):
    return i * o + o


def expert_mlp(d, w, o):
    return d * w + w + w * o + o


def moe(kind, d_in, m, d_out):
    """One MoE layer on m tokens of d_in features producing d_out per token (normalize=True)."""
    if kind == "dense":
        return expert_mlp(d_in, E * W, d_out)  # one shared MLP of width E * W
    experts = E * expert_mlp(d_in, W, d_out)
    if kind == "softmoe":
        slots = E * math.ceil(m / E)  # p = ceil(m * 1.0 / E)
        return d_in * slots + 1 + experts  # Phi + learned scale
    if kind == "topk":
        return d_in * E + experts  # router without bias
    if kind == "task":
        return experts
    raise ValueError(kind)


def torso_params(obs):
    return 3 * 4 * 9 + 4 if obs is PIX else 0


def feat(obs):
    return 4 * 4 * 4 if obs is PIX else 6


def tokens0(obs):
    return (16, 4) if obs is PIX else (2, 3)  # per_conv on (4,4,4); split 6 into 2 tokens


def tower(obs, out, position, use_moe, kind, cond=0, with_torso=True):
    T = torso_params(obs) if with_torso else 0
    f = feat(obs)
    if not use_moe:
        return T + dense(f + cond, H) + dense(H, H) + dense(H, out)
    if position == "penultimate":  # hidden1: split H=8 into 2 tokens of 4, keep token size
        return T + dense(f + cond, H) + moe(kind, 4, 2, 4) + dense(2 * 4, out)
    if position == "final":  # head: tokens of hidden1 (2 x 4) -> out, averaged
        return T + dense(f + cond, H) + dense(H, H) + moe(kind, 4, 2, out)
    if position == "all":
        m, d = tokens0(obs)
        return T + moe(kind, d + cond, m, d) + moe(kind, d, m, d) + moe(kind, d, m, out)
    if position == "big":  # one token = whole input; experts = complete dense towers
        D = int(np.prod(obs.shape)) + cond if with_torso else f + cond
        if kind == "dense":
            return T + dense(f + cond, H) + dense(H, H) + dense(H, out)
        router = {"softmoe": D * E * 1 + 1, "topk": D * E, "task": 0}[kind]
        return router + E * (T + dense(f + cond, H) + dense(H, H) + dense(H, out))
    raise ValueError(position)


def expected(obs, act, placement, position, kind="softmoe", shared=False, cond=0):
    n_out = act.n if isinstance(act, spaces.Discrete) else act.shape[0]
    in_actor = placement in ("actor", "both")
    in_critic = placement in ("critic", "both")
    actor = tower(obs, n_out, position, in_actor, kind, cond, not shared)
    if isinstance(act, spaces.Box):
        actor += act.shape[0]  # state-independent log std
    critic = tower(obs, 1, position, in_critic, kind, cond, not shared)
    enc = torso_params(obs) if shared else 0
    return {"encoder": enc, "actor": actor, "critic": critic, "total": enc + actor + critic}


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("obs", [PIX, VEC], ids=["pixels", "vector"])
@pytest.mark.parametrize("act", [DISC, CONT], ids=["discrete", "continuous"])
@pytest.mark.parametrize("position", ["penultimate", "final", "all", "big"])
@pytest.mark.parametrize("placement", ["none", "actor", "critic", "both"])
def test_placement_position_param_counts(obs, act, placement, position):
    net = build_actor_critic(obs, act, base_cfg(placement=placement, position=position))
    assert net.param_counts() == expected(obs, act, placement, position)
    moe_towers = {name.split(".")[0] for name in net.moe_layers()}
    assert moe_towers == {t for t in ("actor", "critic") if placement in (t, "both")}
    B = 3
    o = torch.as_tensor(np.stack([obs.sample() for _ in range(B)]))
    out, v = net(o, torch.zeros(B, dtype=torch.long))
    assert v.shape == (B,)
    if isinstance(act, spaces.Discrete):
        assert out.shape == (B, act.n)
    else:
        assert out[0].shape == out[1].shape == (B, act.shape[0])


@pytest.mark.parametrize("kind", ["softmoe", "topk", "task", "dense"])
@pytest.mark.parametrize("position", ["penultimate", "final", "all", "big"])
def test_kinds_param_counts(kind, position):
    net = build_actor_critic(PIX, DISC, base_cfg(placement="both", position=position, moe=kind))
    assert net.param_counts() == expected(PIX, DISC, "both", position, kind)


@pytest.mark.parametrize("position", ["penultimate", "final", "all", "big"])
def test_shared_encoder_and_task_input_param_counts(position):
    cfg = base_cfg(placement="critic", position=position, shared_encoder=True, task_id_input=True)
    net = build_actor_critic(PIX, DISC, cfg)
    # with a shared encoder the towers (and the 'big' experts) start from the encoder's features
    assert net.param_counts() == expected(PIX, DISC, "critic", position, shared=True, cond=3)
    o = torch.as_tensor(np.stack([PIX.sample() for _ in range(4)]))
    logits, v = net(o, torch.tensor([0, 1, 2, 1]))
    assert logits.shape == (4, 3) and v.shape == (4,)
    assert torch.allclose(net.actor(o, torch.tensor([0, 1, 2, 1])), logits, atol=1e-6)
    assert torch.allclose(net.critic(o, torch.tensor([0, 1, 2, 1])), v, atol=1e-6)


@pytest.mark.parametrize("shape,torso,out", [((4, 84, 84), "nature", (64, 7, 7)), ((3, 64, 64), "impala", (32, 8, 8)),
                                             ((7, 10, 10), "minatar", (16, 8, 8)), ((11,), "mlp", (11,))])
def test_auto_torso(shape, torso, out):
    obs = spaces.Box(0, 255, shape, np.uint8) if len(shape) == 3 else spaces.Box(-1, 1, shape, np.float32)
    net = build_actor_critic(obs, DISC, NetConfig(shared_encoder=True))
    assert net.cfg.torso == torso and tuple(net.encoder.out_shape) == out
    o = torch.as_tensor(np.stack([obs.sample() for _ in range(2)]))
    logits, v = net(o)
    assert logits.shape == (2, 3) and torch.isfinite(v).all()


def test_pixel_scaling_uses_observation_high():
    a = build_actor_critic(spaces.Box(0, 255, (3, 6, 6), np.uint8), DISC, base_cfg())
    b = build_actor_critic(spaces.Box(0, 1, (3, 6, 6), np.uint8), DISC, base_cfg())
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 2, (4, 3, 6, 6), dtype=torch.uint8)
    assert torch.allclose(a.actor(x * 255), b.actor(x), atol=1e-5)


@pytest.mark.parametrize("obs", [PIX, VEC], ids=["pixels", "vector"])
@pytest.mark.parametrize("placement", ["none", "actor", "critic", "both"])
def test_sac_builder(obs, placement):
    cfg = base_cfg(placement=placement, position="penultimate")
    B = 4
    o = torch.as_tensor(np.stack([obs.sample() for _ in range(B)]))
    # discrete: Q(s, .) over all actions
    actor, q = build_sac(obs, DISC, cfg)
    assert actor(o).shape == (B, 3) and q(o).shape == (B, 3)
    assert q(o, torch.tensor([0, 1, 2, 0])).shape == (B,)
    assert bool(actor.moe_layers()) == (placement in ("actor", "both"))
    assert bool(q.moe_layers()) == (placement in ("critic", "both"))
    # continuous: Q(s, a); the action joins the first layer
    actor, q = build_sac(obs, CONT, cfg)
    mean, log_std = actor(o)
    lo, hi = cfg.log_std_bounds
    assert mean.shape == (B, 2) and ((log_std >= lo) & (log_std <= hi)).all()
    assert q(o, torch.zeros(B, 2)).shape == (B,)
    in_critic = placement in ("critic", "both")
    assert q.param_counts()["critic"] == tower(obs, 1, "penultimate", in_critic, "softmoe", cond=2)
    q2 = build_q_network(obs, CONT, cfg)  # twin
    assert q2.param_counts() == q.param_counts()


def test_features_for_probes():
    cfg = base_cfg(placement="critic", position="penultimate", moe="topk")
    net = build_actor_critic(PIX, DISC, cfg)
    o = torch.as_tensor(np.stack([PIX.sample() for _ in range(5)]))
    with collect_moe(telemetry=True) as moe:
        net(o)
        tele_before, aux_before = moe.telemetry(), moe.aux_loss()
        f = net.features(o)  # a probe: its forward emits into a collector of its own, not this one
    assert f["actor.torso.conv0"].shape == (5, 4, 4, 4)
    assert f["actor.hidden0"].shape == (5, H) and f["actor.head"].shape == (5, 3)
    assert f["critic.hidden1"].shape == (5, 8)  # MoE output tokens, flattened
    experts = [k for k in f if k.startswith("critic.hidden1.expert")]
    assert sorted(experts) == ["critic.hidden1.expert0", "critic.hidden1.expert1"]
    assert sum(f[k].shape[0] for k in experts) <= 5 * 2  # rows = tokens actually processed
    assert all(f[k].shape[1] == W for k in experts)
    tele = moe.telemetry()
    assert tele.keys() == tele_before.keys() == {"critic.hidden1"}
    assert all(torch.equal(tele[n][k], v) for n, t in tele_before.items() for k, v in t.items())
    assert aux_before > 0 and torch.equal(moe.aux_loss(), aux_before)


def test_task_id_required():
    net = build_actor_critic(VEC, DISC, base_cfg(placement="actor", moe="task"))
    with pytest.raises(ValueError, match="task_id"):
        net.actor(torch.zeros(2, 6))
    net = build_actor_critic(VEC, DISC, base_cfg(task_id_input=True))
    with pytest.raises(ValueError, match="task_id"):
        net.critic(torch.zeros(2, 6))


def test_summary_and_cli_names():
    cfg = base_cfg(placement="critic", position="final", moe="topk")
    net = build_actor_critic(PIX, DISC, cfg)
    text = render_summary(net)
    counts = net.param_counts()
    assert f"{counts['total']:,d}" in text and f"{counts['critic']:,d}" in text and "topk" in text
    actor, q = build_sac(VEC, CONT, cfg)
    sac_text = show({"actor": actor, "q1": q})
    assert "SACActor" in sac_text and "QNetwork" in sac_text
    assert set(NetConfig.cli_flags()) == {"--placement", "--position", "--moe", "--experts", "--expert-width",
                                          "--tokenizer"}
    assert all(NetConfig.help().values())


def test_invalid_config():
    with pytest.raises(ValueError):
        build_actor_critic(VEC, DISC, NetConfig(placement="middle"))
    with pytest.raises(ValueError):
        build_actor_critic(VEC, DISC, NetConfig(placement="both", hidden=()))
    with pytest.raises(ValueError):
        build_actor_critic(VEC, DISC, NetConfig(moe="nope"))


def test_features_of_big_experts():
    net = build_actor_critic(VEC, DISC, base_cfg(placement="both", position="big", moe="softmoe"))
    f = net.features(torch.randn(5, 6))
    for tower in ("actor", "critic"):
        assert f[f"{tower}.big"].shape[0] == 5
        for e in range(E):  # each expert tower, layer by layer, on the rows it read (one slot per sample here)
            assert f[f"{tower}.big.expert{e}.hidden0"].shape == (5, H)
            assert f[f"{tower}.big.expert{e}.hidden1"].shape == (5, H)


def _copy_dense_into_experts(big_tower, dense_tower):
    """Every expert tower of a 'big' MoE gets the dense tower's weights."""
    experts = big_tower.layers[0].moe.experts
    dense = dict(dense_tower.named_parameters())
    with torch.no_grad():
        for name in experts._names:  # 'tower.<name in a dense tower>'
            experts.params[name.replace(".", "__")].copy_(dense[name.removeprefix("tower.")].expand_as(
                experts.params[name.replace(".", "__")]))


def test_big_experts_equal_to_a_dense_tower_probe_like_it():
    # SoftMoE big with one token per sample dispatches each sample whole to every expert: with every
    # expert a copy of the dense tower, dormant fraction and srank must equal the dense tower's
    from mtmoe.runner.probes import probe
    cfg = base_cfg(placement="none")
    dense = build_actor_critic(PIX, DISC, cfg)
    big = build_actor_critic(PIX, DISC, base_cfg(placement="both", position="big", moe="softmoe"))
    for tower in ("actor", "critic"):
        _copy_dense_into_experts(big.towers()[tower], dense.towers()[tower])
    obs = torch.as_tensor(np.stack([PIX.sample() for _ in range(64)]))
    task = torch.arange(64) % 3
    names = ["a", "b", "c"]
    want, got = probe({"actor_critic": dense}, obs, task, names), probe({"actor_critic": big}, obs, task, names)
    for t in names:
        for tower in ("actor", "critic"):
            w, g = want["tasks"][t][tower], got["tasks"][t][tower]
            assert g["dormant@0.025"] == pytest.approx(w["dormant@0.025"]) and g["dormant@0.0"] == pytest.approx(w["dormant@0.0"])
            assert g["srank"] == pytest.approx(w["srank"]) and g["feature_norm"] == pytest.approx(w["feature_norm"])


def test_task_routed_experts_count_only_the_expert_a_task_uses():
    # per task, the dormant fraction is the routed expert's: idle experts (no rows) are not counted as active
    from mtmoe.runner.probes import probe
    dense = build_actor_critic(PIX, DISC, base_cfg(placement="none"))
    routed = build_actor_critic(PIX, DISC, base_cfg(placement="both", position="big", moe="task"))
    for tower in ("actor", "critic"):
        _copy_dense_into_experts(routed.towers()[tower], dense.towers()[tower])
    obs = torch.as_tensor(np.stack([PIX.sample() for _ in range(60)]))
    task = torch.arange(60) % 3
    want = probe({"actor_critic": dense}, obs, task, ["a", "b", "c"])
    got = probe({"actor_critic": routed}, obs, task, ["a", "b", "c"])
    for t in ("a", "b", "c"):
        assert got["tasks"][t]["critic"]["dormant@0.025"] == pytest.approx(want["tasks"][t]["critic"]["dormant@0.025"])
        assert got["tasks"][t]["critic"]["srank"] == want["tasks"][t]["critic"]["srank"]
