"""Property tests of the MoE layers, parametrized over kinds, tokenizers and placements."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from mtmoe.nets import (ExpertMLP, MoELayer, NetConfig, SoftMoE, TaskMoE, TopKMoE, build_actor_critic, collect_moe,
                        register_moe, register_torso, routing_stats)
from mtmoe.nets.experts import _ChunkedMLP
from mtmoe.nets.torsos import MLPTorso

torch.set_num_threads(1)


def mlp_experts(d_in, width, d_out):
    return lambda n, scale=1: ExpertMLP(n, d_in, width * scale, d_out)


def softmoe(m=6, d=5, E=3, normalize=False, cf=1.0, d_out=4, slots=0):
    cfg = NetConfig(num_experts=E, normalize=normalize, capacity_factor=cf, slots_per_expert=slots, num_tasks=3)
    return SoftMoE(mlp_experts(d, 7, d_out), d, m, cfg)


# ---------------------------------------------------------------- SoftMoE
@pytest.mark.parametrize("m,E,cf,normalize", [(1, 4, 1.0, False), (6, 3, 1.0, True), (9, 2, 2.0, False),
                                              (16, 4, 0.5, True)])
def test_softmoe_dispatch_and_combine_are_distributions(m, E, cf, normalize):
    layer = softmoe(m=m, E=E, cf=cf, normalize=normalize)
    x = torch.randn(4, m, 5) * 3
    _, dispatch, combine = layer.routing(x)
    S = E * layer.slots
    assert dispatch.shape == combine.shape == (4, m, S)
    assert torch.allclose(dispatch.sum(1), torch.ones(4, S), atol=1e-5)  # over tokens, per slot
    assert torch.allclose(combine.sum(2), torch.ones(4, m), atol=1e-5)  # over slots, per token
    assert layer(x).shape == (4, m, 4)


@pytest.mark.parametrize("normalize", [False, True])
def test_softmoe_token_permutation_equivariance(normalize):
    torch.manual_seed(0)
    layer = softmoe(m=8, normalize=normalize)
    x = torch.randn(3, 8, 5)
    perm = torch.randperm(8)
    assert torch.allclose(layer(x[:, perm]), layer(x)[:, perm], atol=1e-5)


@pytest.mark.parametrize("scale", [1e-2, 0.5, 30.0])
def test_softmoe_normalized_routing_is_scale_invariant(scale):
    torch.manual_seed(0)
    layer = softmoe(m=6, normalize=True)
    with torch.no_grad():
        layer.scale.fill_(3.0)  # any learned scale
    x = torch.randn(2, 6, 5)
    _, d1, c1 = layer.routing(x)
    _, d2, c2 = layer.routing(x * scale)
    assert torch.allclose(d1, d2, atol=1e-5) and torch.allclose(c1, c2, atol=1e-5)
    # without normalisation routing does depend on the scale
    plain = softmoe(m=6, normalize=False)
    assert not torch.allclose(plain.routing(x)[1], plain.routing(x * 30.0)[1], atol=1e-3)


PIXELS = spaces.Box(0, 1, (3, 6, 6), np.uint8)
VECTOR = spaces.Box(-1, 1, (6,), np.float32)


@pytest.mark.parametrize("obs,tokenizer,num_tokens", [
    (PIXELS, "per_conv", 16), (PIXELS, "per_feature", 4), (PIXELS, "per_sample", 1), (PIXELS, "per_patch", 4),
    (VECTOR, "split", 3), (VECTOR, "per_sample", 1), (VECTOR, "per_feature", 6)])
@pytest.mark.parametrize("placement", ["actor", "critic", "both"])
def test_gradients_reach_every_softmoe_expert(obs, tokenizer, num_tokens, placement):
    torch.manual_seed(0)
    cfg = NetConfig(placement=placement, moe="softmoe", tokenizer=tokenizer, torso_channels=(4,), hidden=(8,),
                    num_experts=3, expert_width=6, patch_size=2, num_tokens=3)
    net = build_actor_critic(obs, spaces.Discrete(3), cfg)
    x = torch.as_tensor(np.stack([obs.sample() for _ in range(5)]))
    logits, v = net(x)
    (logits.square().sum() + v.square().sum()).backward()
    layers = net.moe_layers()
    assert len(layers) == (2 if placement == "both" else 1)
    for layer in layers.values():
        assert layer.num_tokens == num_tokens
        for p in (layer.experts.w1, layer.experts.b1, layer.experts.w2, layer.experts.b2):
            assert (p.grad.flatten(1).abs().sum(1) > 0).all()  # every expert gets gradient
        assert layer.phi.grad.abs().sum() > 0


def test_softmoe_is_batch_independent():
    torch.manual_seed(0)
    layer = softmoe(m=6)
    x = torch.randn(5, 6, 5)
    assert torch.allclose(layer(x)[2:3], layer(x[2:3]), atol=1e-5)


# ---------------------------------------------------------------- top-k
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("cf", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("group", ["sample", "batch"])
@pytest.mark.parametrize("skew", [False, True])
def test_topk_respects_capacity_and_counts_drops(k, cf, group, skew):
    torch.manual_seed(1)
    E, m, B, d = 4, 10, 3, 5
    cfg = NetConfig(moe="topk", num_experts=E, top_k=k, capacity_factor=cf, topk_group=group)
    layer = TopKMoE(mlp_experts(d, 6, d), d, m, cfg)
    if skew:  # every token prefers expert 0 (then 1): heavy overflow
        with torch.no_grad():
            layer.router.weight.zero_()
            layer.router.weight[0] = 10.0
            layer.router.weight[1] = 5.0
    x = torch.randn(B, m, d).abs() + 0.1
    G, n = (1, B * m) if group == "batch" else (B, m)
    r = layer.route(x.reshape(G, n, d))
    C = r.capacity
    assert C == min(n, int(np.ceil(k * n * cf / E)))
    onehot = torch.nn.functional.one_hot(r.expert, E)  # (G, kn, E)
    wanted = onehot.sum(1)
    kept = (onehot * r.keep.unsqueeze(-1)).sum(1)
    assert (kept <= C).all()  # never over capacity
    assert torch.equal(kept, wanted.clamp(max=C))  # fills to capacity before dropping
    n_dropped = (~r.keep).sum()
    assert n_dropped == (wanted - kept).sum()
    if skew and cf <= 1.0:
        assert n_dropped > 0
    with collect_moe(telemetry=True) as moe:
        y = layer(x)
    tele = moe.telemetry_of(layer)
    assert torch.isclose(tele["dropped"], n_dropped.float() / (G * k * n), atol=1e-6)
    assert torch.isclose(tele["load"].sum() + tele["dropped"], torch.tensor(1.0), atol=1e-5)
    # a token whose every assignment was dropped gets a zero output
    all_dropped = (~r.keep).view(G, k, n).all(1).reshape(B, m)
    assert torch.all(y[all_dropped] == 0)
    # load-balancing loss reaches the router
    moe.aux_loss().backward()
    assert layer.router.weight.grad.abs().sum() > 0


def test_topk_router_noise_only_in_training():
    torch.manual_seed(0)
    cfg = NetConfig(moe="topk", num_experts=4, router_noise=5.0)
    layer = TopKMoE(mlp_experts(5, 6, 5), 5, 8, cfg)
    x = torch.randn(2, 8, 5)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    assert not torch.equal(layer.route(x).probs, layer.route(x).probs)


# ---------------------------------------------------------------- task routing
@pytest.mark.parametrize("gather", [True, False], ids=["gather-weights", "all-experts"])
@pytest.mark.parametrize("m", [1, 6])
def test_task_routing_sends_a_task_only_to_its_expert(gather, m, monkeypatch):
    monkeypatch.setattr(ExpertMLP, "gather_threshold", -1.0 if gather else 1e9)
    torch.manual_seed(0)
    T, d = 3, 5
    layer = TaskMoE(mlp_experts(d, 6, 4), d, m, NetConfig(moe="task", num_tasks=T))
    x = torch.randn(6, m, d)
    task = torch.tensor([0, 2, 2, 0, 2, 0])
    with collect_moe(telemetry=True) as moe:
        y = layer(x, task)
    # the output of a task-2 sample is exactly expert 2 applied to it
    w1, b1, w2, b2 = (p[2] for p in (layer.experts.w1, layer.experts.b1, layer.experts.w2, layer.experts.b2))
    ref = torch.relu(x[1] @ w1 + b1) @ w2 + b2
    assert torch.allclose(y[1], ref, atol=1e-5)
    # the loss of task-2 samples gives gradient to expert 2 only
    y[task == 2].square().sum().backward()
    for p in (layer.experts.w1, layer.experts.b1, layer.experts.w2, layer.experts.b2):
        g = p.grad.flatten(1).abs().sum(1)
        assert g[2] > 0 and g[0] == 0 and g[1] == 0
    tele = moe.telemetry_of(layer)
    assert torch.allclose(tele["gate_probs_per_task"][2], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(tele["task_count"], torch.tensor([3.0, 0.0, 3.0]))


def test_task_routing_big_towers():
    torch.manual_seed(0)
    obs = spaces.Box(-1, 1, (4,), np.float32)
    net = build_actor_critic(obs, spaces.Discrete(2), NetConfig(placement="both", position="big", moe="task",
                                                               num_tasks=3, hidden=(8,)))
    x, task = torch.randn(4, 4), torch.tensor([1, 1, 1, 1])
    logits, v = net(x, task)
    (logits.sum() + v.sum()).backward()
    for layer in net.moe_layers().values():
        for p in layer.experts.params.values():
            g = p.grad.flatten(1).abs().sum(1)
            assert g[1] > 0 and g[0] == 0 and g[2] == 0


def _conv_towers(E=4):
    from mtmoe.nets.experts import ExpertTower
    from mtmoe.nets.torsos import build_torso
    from mtmoe.nets.tower import FlatTower

    cfg = NetConfig(hidden=(16, 8), torso="minatar")
    shape = (4, 10, 10)  # + 2 conditioning inputs: 402 per sample
    return ExpertTower(lambda: FlatTower(shape, 3, cfg, lambda: build_torso("minatar", shape, cfg), 2, 1.0), E)


def _values_and_grads(towers, paths, *args):
    results = []
    for path in paths:
        towers.zero_grad()
        out, hidden = path(*args)
        (out.square().sum() + hidden.sum()).backward()
        results.append((out, hidden, {n: p.grad.clone() for n, p in towers.params.items()}))
    return results


def test_big_towers_one_call_per_tower_equal_the_vmapped_call():
    """On a CPU ExpertTower runs one call per tower; the values and gradients are vmap's."""
    torch.manual_seed(0)
    towers = _conv_towers()
    x = torch.randn(4, 5, 402)
    (out, hidden, grads), (ref_out, ref_hidden, ref_grads) = _values_and_grads(
        towers, (towers, towers.vmapped), x)
    assert out.shape == (4, 5, 3)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hidden, ref_hidden, rtol=1e-5, atol=1e-5)
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("m", [1, 3])
def test_big_towers_routed_per_tower_equal_running_all_and_keeping_the_routed(m):
    """ExpertTower.forward_indexed on a CPU (each tower on its own samples, one absent) gives the
    values and parameter gradients of running every tower on every sample (the path off a CPU)."""
    from mtmoe.nets.experts import run_all_keep_routed

    torch.manual_seed(0)
    towers = _conv_towers()
    x = torch.randn(7, m, 402)
    idx = torch.tensor([2, 0, 2, 3, 0, 0, 2])  # tower 1 gets no sample
    (out, hidden, grads), (ref_out, ref_hidden, ref_grads) = _values_and_grads(
        towers, (towers.forward_indexed, lambda x, i: run_all_keep_routed(towers, x, i)), x, idx)
    assert out.shape == (7, m, 3) and hidden.shape == ref_hidden.shape
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hidden, ref_hidden, rtol=1e-5, atol=1e-5)
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-4, atol=1e-5)
        assert grads[n][1].abs().sum() == 0 and grads[n][0].abs().sum() > 0


# ---------------------------------------------------------------- telemetry, all kinds
@pytest.mark.parametrize("kind", ["softmoe", "topk", "task", "dense"])
@pytest.mark.parametrize("position", ["penultimate", "final", "all", "big"])
def test_telemetry_per_layer_and_per_task(kind, position):
    torch.manual_seed(0)
    obs = spaces.Box(0, 1, (3, 6, 6), np.uint8)
    cfg = NetConfig(placement="critic", position=position, moe=kind, torso_channels=(4,), hidden=(8,),
                    num_experts=3, expert_width=6, num_tasks=3, load_balance_coef=0.1)
    net = build_actor_critic(obs, spaces.Discrete(3), cfg)
    x = torch.randint(0, 2, (6, 3, 6, 6), dtype=torch.uint8)
    task = torch.tensor([0, 1, 2, 0, 1, 1])
    with collect_moe(telemetry=True) as moe:
        net.critic(x, task)
    tele = moe.telemetry()
    assert tele and all(name.startswith("critic.") for name in tele)
    for t in tele.values():
        E = t["gate_probs"].shape[0]
        assert torch.isclose(t["gate_probs"].sum(), torch.tensor(1.0), atol=1e-5)
        assert t["load"].shape == (E,) and t["entropy"].dim() == 0 and t["dropped"].dim() == 0
        assert t["gate_probs_per_task"].shape == (3, E) and t["task_count"].tolist() == [2, 3, 1]
        assert torch.allclose(t["gate_probs_per_task"].sum(1), torch.ones(3), atol=1e-5)
        assert not t["gate_probs"].requires_grad
    # per-task split = the telemetry of that task's samples alone (routing is per observation)
    full = {n: t["gate_probs_per_task"][1].clone() for n, t in tele.items()}
    with collect_moe(telemetry=True) as moe:
        net.critic(x[task == 1], task[task == 1])
    for n, t in moe.telemetry().items():
        assert torch.allclose(t["gate_probs"], full[n], atol=1e-5)
    with collect_moe() as moe:
        net.critic(x, task)
    aux = moe.aux_loss()
    assert aux.dim() == 0 and (aux > 0) == (kind == "topk")
    assert moe.telemetry() == {}  # not asked for
    with collect_moe() as later:
        pass
    assert later.aux_loss() == 0  # a later loss never re-adds a backpropagated graph


def test_no_moe_means_no_telemetry_and_zero_aux():
    net = build_actor_critic(spaces.Box(-1, 1, (4,), np.float32), spaces.Discrete(2), NetConfig())
    with collect_moe(telemetry=True) as moe:
        net(torch.randn(3, 4))
    assert moe.telemetry() == {} and moe.aux_loss().item() == 0.0


# ---------------------------------------------------------------- registry
class _MeanOfExperts(MoELayer):
    """A toy kind: uniform average over all experts (for the registry test)."""

    def __init__(self, make_experts, token_dim, num_tokens, cfg):
        super().__init__(cfg)
        self.num_experts = cfg.num_experts
        self.experts = make_experts(self.num_experts)

    def forward(self, x, task_id=None):
        B, m, d = x.shape
        out, _ = self.experts(x.reshape(1, B * m, d).expand(self.num_experts, -1, -1))
        self.emit(task_id=task_id, gate=x.new_full((B, m, self.num_experts), 1.0 / self.num_experts))
        return out.mean(0).view(B, m, -1)


def test_registry_adds_kind_and_torso_without_core_changes():
    register_moe("mean_of_experts_test", _MeanOfExperts, overwrite=True)
    register_torso("tiny_test", lambda shape, cfg: MLPTorso(shape, (5,)), overwrite=True)
    obs = spaces.Box(-1, 1, (4,), np.float32)
    cfg = NetConfig(torso="tiny_test", placement="actor", moe="mean_of_experts_test", hidden=(6,), num_experts=2)
    net = build_actor_critic(obs, spaces.Discrete(2), cfg)
    with collect_moe(telemetry=True) as moe:
        logits = net.actor(torch.randn(3, 4))
    assert logits.shape == (3, 2)
    assert torch.allclose(moe.telemetry()["actor.hidden0"]["gate_probs"], torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError):
        register_moe("softmoe", _MeanOfExperts)  # no silent replacement
    with pytest.raises(TypeError):
        register_moe("bad", object)


def test_fullgraph_compile():
    """No graph breaks (host syncs, data-dependent shapes) in forward, telemetry included."""
    torch.manual_seed(0)
    cfg = NetConfig(placement="critic", moe="topk", top_k=2, torso_channels=(4,), hidden=(8,), num_experts=3,
                    num_tasks=2, router_noise=1.0)
    net = build_actor_critic(PIXELS, spaces.Discrete(3), cfg).eval()
    x, task = torch.randint(0, 2, (4, 3, 6, 6), dtype=torch.uint8), torch.tensor([0, 1, 1, 0])
    with collect_moe(telemetry=True) as eager:
        ref = net(x, task)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    out = compiled(x, task)  # outside a collector: emits nothing
    assert torch.allclose(out[0], ref[0], atol=1e-5) and torch.allclose(out[1], ref[1], atol=1e-5)
    with collect_moe(telemetry=True) as moe:  # inside one: the aux loss and the telemetry
        out = compiled(x, task)
    assert torch.allclose(out[1], ref[1], atol=1e-5)
    assert torch.allclose(moe.aux_loss(), eager.aux_loss(), atol=1e-6) and moe.aux_loss() > 0
    tele, tele_eager = moe.telemetry(), eager.telemetry()
    assert list(tele) == ["critic.hidden0"]
    for k, v in tele_eager["critic.hidden0"].items():
        assert torch.allclose(tele["critic.hidden0"][k].float(), v.float(), atol=1e-6), k


# ---------------------------------------------------------------- fast paths = plain formulas
def _grads(fn, params, gy):
    y = fn()
    return [y] + list(torch.autograd.grad(y, params, gy))


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_chunked_experts_equal_the_plain_mlp(act, monkeypatch):
    torch.manual_seed(0)
    experts = ExpertMLP(3, 5, 7, 4, act)
    x = torch.randn(3, 150, 5, requires_grad=True)
    params, gy = [x, *experts.parameters()], torch.randn(3, 150, 4)
    plain = _grads(lambda: experts(x)[0], params, gy)  # probes ask for the hidden layer: never chunked
    monkeypatch.setattr(ExpertMLP, "chunk_above", 0)
    monkeypatch.setattr(ExpertMLP, "chunk_elems", 1)  # chunks of 64 rows (the minimum): 64 + 64 + 22
    out, hidden = experts(x, need_hidden=False)
    assert hidden is None
    chunked = _grads(lambda: experts(x, need_hidden=False)[0], params, gy)
    for a, b in zip(chunked, plain):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("cf", [0.5, 1.0])
def test_fused_topk_equals_the_general_path(k, cf, monkeypatch):
    """Small layers run as one autograd node; large ones as gathers around the experts module."""
    torch.manual_seed(0)
    cfg = NetConfig(moe="topk", num_experts=4, top_k=k, capacity_factor=cf, load_balance_coef=0.5)
    layer = TopKMoE(mlp_experts(5, 6, 5), 5, 8, cfg)
    x = torch.randn(6, 8, 5).relu()
    x[:2, :3] = 0.0  # zero tokens: ties in the router
    x.requires_grad_()
    params, gy = [x, *layer.parameters()], torch.randn(6, 8, 5)

    def run():  # outputs and gradients of y . gy + aux loss, the aux loss, the telemetry
        with collect_moe(telemetry=True) as moe:
            y = layer(x)
        aux, tele = moe.aux_loss(), moe.telemetry_of(layer)
        grads = torch.autograd.grad((y * gy).sum() + aux, params)
        return [y, aux, *grads, tele["load"], tele["lb_loss"]]

    fused = run()
    monkeypatch.setattr(ExpertMLP, "chunk_above", -1)  # too big for the fused node: the general path
    general = run()
    for a, b in zip(fused, general):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    assert fused[3].abs().sum() > 0  # the router gets gradient


def test_per_patch_tokenizer_equals_its_convolution():
    from mtmoe.nets.tokenizers import PerPatch
    torch.manual_seed(0)
    for c, h, w, p, dim in [(3, 7, 9, 2, 5), (4, 9, 9, 3, 8), (16, 8, 8, 2, 16)]:
        tok = PerPatch(c, h, w, p, dim, ortho=False)
        x = torch.randn(4, c, h, w, requires_grad=True)
        params, gy = [x, *tok.parameters()], torch.randn(4, (h // p) * (w // p), dim)
        ours = _grads(lambda: tok(x), params, gy)
        conv = _grads(lambda: tok.embed(x).flatten(2).transpose(1, 2), params, gy)
        for a, b in zip(ours, conv):
            assert torch.allclose(a, b, atol=1e-5)
        assert ours[1].is_contiguous()  # the torso gets a contiguous gradient


def _naive_topk(layer, x):
    """Top-k MoE written plainly (every expert on every token, a Python loop for capacity), for
    checking the fast paths' outputs and gradients: -> y (G, n, d_out), load-balancing loss."""
    G, n, _ = x.shape
    E, k, C, ex = layer.num_experts, layer.k, layer.capacity(n), layer.experts
    act = torch.relu if ex.act == "relu" else torch.tanh
    probs = torch.softmax(x @ layer.router.weight.t(), -1)  # (G, n, E)
    gate, idx = probs.topk(k, -1)
    keep = torch.zeros(G, n, k, dtype=x.dtype)
    counts = torch.zeros(E, dtype=x.dtype)
    for g in range(G):
        used = [0] * E
        for j in range(k):  # all 1st choices (in token order), then all 2nd choices
            for t in range(n):
                e = int(idx[g, t, j])
                counts[e] += 1
                keep[g, t, j] = float(used[e] < C)
                used[e] += 1
    every = torch.stack([act(x @ ex.w1[e] + ex.b1[e]) @ ex.w2[e] + ex.b2[e] for e in range(E)], 2)  # (G, n, E, o)
    picked = every.gather(2, idx.unsqueeze(-1).expand(-1, -1, -1, every.shape[-1]))  # (G, n, k, o)
    y = (picked * (gate * keep).unsqueeze(-1)).sum(2)
    lb = layer.coef * E * (counts / (k * G * n) * probs.reshape(-1, E).mean(0)).sum()
    return y, lb


@pytest.mark.parametrize("path", ["fused", "gathers", "chunked"])
@pytest.mark.parametrize("k,cf,act", [(1, 1.0, "relu"), (2, 0.5, "tanh"), (2, 1.0, "relu")])
def test_topk_fast_paths_equal_a_plain_formulation_in_float64(path, k, cf, act, monkeypatch):
    torch.manual_seed(1)
    cfg = NetConfig(moe="topk", num_experts=4, top_k=k, capacity_factor=cf, load_balance_coef=0.5)
    layer = TopKMoE(lambda e, scale=1: ExpertMLP(e, 5, 6, 5, act, ortho=False), 5, 64, cfg).double()
    if path != "fused":  # too big for the fused node: gathers around the experts module
        monkeypatch.setattr(ExpertMLP, "chunk_above", -1)
    if path == "chunked":  # ... whose rows run in chunks of 64 (the least): 5 groups x capacity >= 16 rows
        monkeypatch.setattr(ExpertMLP, "chunk_elems", 1)
    x = torch.randn(5, 64, 5, dtype=torch.float64, requires_grad=True)
    params, gy = [x, *layer.parameters()], torch.randn(5, 64, 5, dtype=torch.float64)
    calls = []
    monkeypatch.setattr(_ChunkedMLP, "apply", lambda *a, f=_ChunkedMLP.apply: calls.append(1) or f(*a))
    with collect_moe() as moe:
        y = layer(x)
    assert bool(calls) == (path == "chunked")
    ours = torch.autograd.grad((y * gy).sum() + moe.aux_loss(), params)
    y_ref, lb_ref = _naive_topk(layer, x)
    ref = torch.autograd.grad((y_ref * gy).sum() + lb_ref, params)
    assert torch.allclose(y, y_ref, atol=1e-10)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-9)


# ---------------------------------------------------------------- the collector (collect_moe)
def _topk_net(placement="both", position="all"):
    cfg = NetConfig(placement=placement, position=position, moe="topk", top_k=2, num_experts=3, hidden=(8,),
                    num_tasks=2, load_balance_coef=0.1)
    return build_actor_critic(VECTOR, spaces.Discrete(3), cfg)


def _state(net) -> dict:
    """Every attribute of every MoE layer (values by identity): what a forward could leave behind."""
    return {(n, k): id(v) for n, layer in net.moe_layers().items() for k, v in vars(layer).items()}


def test_an_aux_loss_outside_a_collector_never_reaches_a_later_loss():
    torch.manual_seed(0)
    net = _topk_net()
    x1, x2 = torch.randn(5, 6), torch.randn(7, 6)
    with collect_moe() as alone:
        net(x2)
    before = _state(net)
    net(x1)  # outside any collector (acting, a target, a probe): emits nothing, keeps nothing
    net.critic(x1)
    assert _state(net) == before
    with collect_moe() as moe:
        out, value = net(x2)
    aux = moe.aux_loss()
    assert aux > 0 and torch.equal(aux, alone.aux_loss())
    # and its gradient is that of the collected forward alone
    params = [p for n, p in net.named_parameters() if "router" in n]
    g = torch.autograd.grad(aux, params)
    with collect_moe() as again:
        net(x2)
    assert all(torch.equal(a, b) for a, b in zip(g, torch.autograd.grad(again.aux_loss(), params)))


def test_nested_collectors_the_innermost_receives():
    torch.manual_seed(0)
    net = _topk_net()
    x1, x2, x3 = torch.randn(4, 6), torch.randn(5, 6), torch.randn(3, 6)
    alone = {}
    for name, x in (("x1", x1), ("x2", x2), ("x3", x3)):
        with collect_moe() as c:
            net(x)
        alone[name] = c.aux_loss()
    with collect_moe() as outer:
        net(x1)
        with collect_moe(telemetry=True) as inner:
            net(x2)
        net(x3)
    assert torch.equal(inner.aux_loss(), alone["x2"])
    assert torch.allclose(outer.aux_loss(), alone["x1"] + alone["x3"], atol=1e-6, rtol=0)  # summed in another order
    assert len(outer._aux) == len(inner._aux) * 2 == 2 * len(net.moe_layers())
    assert list(inner.telemetry()) == list(net.moe_layers()) and outer.telemetry() == {}
    from mtmoe.nets.moe.collect import active_collector
    assert active_collector() is None
    # a probe inside a block keeps its forward to itself
    with collect_moe(telemetry=True) as block:
        net.features(x1)
    assert block.aux_loss() == 0 and block.telemetry() == {}


def _topk_reference_stats(layer, x, task):
    """routing_stats of the routing that layer.route computes (eval: no noise), written out."""
    B, m, d = x.shape
    G, n = (1, B * m) if layer.group == "batch" else (B, m)
    E, k = layer.num_experts, layer.k
    r = layer.route(x.reshape(G, n, d))
    gate, idx = r.probs.topk(k, -1)  # (G, n, k)
    keep = r.keep.view(G, k, n).transpose(1, 2).float()  # (G, n, k): each token's choices in order
    assign = (torch.nn.functional.one_hot(idx, E).float() * keep.unsqueeze(-1)).sum(2) / k
    dropped = 1.0 - keep.mean(-1)
    ref = routing_stats(r.probs.reshape(B, m, E), assign.reshape(B, m, E), dropped.reshape(B, m), task,
                        layer.num_tasks)
    f = r.counts.float() / (k * G * n)
    ref.update(capacity=torch.tensor(r.capacity), lb_loss=E * (f * r.probs.reshape(-1, E).mean(0)).sum())
    return ref


@pytest.mark.parametrize("kind", ["topk", "softmoe"])
@pytest.mark.parametrize("path", ["fused", "general"])
def test_collector_telemetry_equals_routing_stats_of_the_recorded_gate(kind, path, monkeypatch):
    if kind == "softmoe" and path == "general":
        pytest.skip("one path")
    if path == "general":
        monkeypatch.setattr(ExpertMLP, "chunk_above", -1)  # too big for the fused node
    torch.manual_seed(0)
    B, m, d, T = 6, 5, 4, 3
    x, task = torch.randn(B, m, d), torch.tensor([0, 2, 2, 1, 0, 2])
    if kind == "topk":
        cfg = NetConfig(moe="topk", num_experts=4, top_k=2, capacity_factor=0.75, num_tasks=T, router_noise=1.0)
        layer = TopKMoE(mlp_experts(d, 6, d), d, m, cfg).eval()
        ref = _topk_reference_stats(layer, x, task)
    else:
        layer = softmoe(m=m, d=d, E=3, cf=2.0)
        combine = layer.routing(x)[2]  # (B, m, E*p)
        gate = combine.reshape(B, m, layer.num_experts, layer.slots).sum(-1)
        ref = routing_stats(gate, gate, torch.zeros(B, m), task, T)
    layer.name = "some.layer"
    with collect_moe(telemetry=True) as moe:
        layer(x, task)
    tele = moe.telemetry()
    assert list(tele) == ["some.layer"] and tele["some.layer"].keys() == ref.keys()
    for key, value in ref.items():
        assert torch.allclose(tele["some.layer"][key].float(), value.float(), atol=1e-6), key
    assert moe.telemetry_of(layer).keys() == ref.keys()
    if kind == "topk":  # the emitted aux loss is the coefficient times the reported lb_loss
        assert torch.allclose(moe.aux_loss(), layer.coef * ref["lb_loss"], atol=1e-7)
    # telemetry is of the last forward of each layer in the block
    with collect_moe(telemetry=True) as moe:
        layer(torch.randn(2, m, d), task[:2])
        layer(x, task)
    assert torch.allclose(moe.telemetry()["some.layer"]["gate_probs"], ref["gate_probs"], atol=1e-6)
    with collect_moe() as moe:  # telemetry not asked for: none kept
        layer(x, task)
    assert moe.telemetry() == {} and moe._raw == []


def test_telemetry_is_not_recorded_when_the_config_turns_it_off():
    net = build_actor_critic(VECTOR, spaces.Discrete(3), NetConfig(placement="both", moe="softmoe", hidden=(8,),
                                                                   telemetry=False))
    with collect_moe(telemetry=True) as moe:
        net(torch.randn(3, 6))
    assert moe.telemetry() == {}
    net.set_telemetry(True)
    with collect_moe(telemetry=True) as moe:
        net(torch.randn(3, 6))
    assert list(moe.telemetry()) == ["actor.hidden0", "critic.hidden0"]


@pytest.mark.parametrize("path", ["fused", "general"])
def test_topk_aux_loss_gradient_flows_through_the_collector(path, monkeypatch):
    if path == "general":
        monkeypatch.setattr(ExpertMLP, "chunk_above", -1)
    torch.manual_seed(1)
    cfg = NetConfig(moe="topk", num_experts=4, top_k=2, capacity_factor=1.0, load_balance_coef=0.5)
    layer = TopKMoE(lambda e, scale=1: ExpertMLP(e, 5, 6, 5, ortho=False), 5, 8, cfg).double()
    x = torch.randn(3, 8, 5, dtype=torch.float64, requires_grad=True)
    with collect_moe() as moe:
        layer(x)
    aux = moe.aux_loss()
    assert aux.requires_grad and aux.dtype == torch.float64
    g_router, g_x = torch.autograd.grad(aux, [layer.router.weight, x])
    _, lb_ref = _naive_topk(layer, x)
    r_router, r_x = torch.autograd.grad(lb_ref, [layer.router.weight, x])
    assert g_router.abs().sum() > 0
    assert torch.allclose(g_router, r_router, atol=1e-10) and torch.allclose(g_x, r_x, atol=1e-10)
    # through a whole network: every router of both towers gets gradient from moe.aux_loss() alone
    net = _topk_net()
    with collect_moe() as moe:
        net(torch.randn(4, 6))
    moe.aux_loss().backward()
    routers = [p for n, p in net.named_parameters() if n.endswith("router.weight")]
    assert len(routers) == 4 and all(p.grad is not None and p.grad.abs().sum() > 0 for p in routers)


def test_an_empty_collector_gives_a_zero_on_the_asked_device():
    with collect_moe(device="cpu") as moe:
        pass
    aux = moe.aux_loss()
    assert aux.dim() == 0 and aux.item() == 0.0 and not aux.requires_grad and aux.device.type == "cpu"
    assert moe.aux_loss("meta").device.type == "meta"
