"""Metric functions against hand-computed values."""

import math

import numpy as np
import pytest
import torch
from rliable import library as rly
from rliable import metrics as rly_metrics
from torch import nn

from mtmoe.metrics import (dormant_ratio, dormant_ratio_layers, expert_load_entropy, feature_norm,
                           forgetting, grad_norms, gradient_cosine, interval_estimates, iqm_ci,
                           mean_gradient_cosine, mean_of, min_max_normalize, mutual_information,
                           neuron_scores, per_task_gradients, probability_of_improvement, srank,
                           steps_to_recover, switch_drop, task_expert_mutual_information,
                           weight_norms)

# --- plasticity ---------------------------------------------------------------------------


def test_dormant_ratio_hand_made():
    # batch of 2, neurons with activations [0,0], [1,1], [3,3] -> mean |h| 0, 1, 3; layer mean 4/3
    h = torch.tensor([[0.0, 1.0, 3.0], [0.0, -1.0, 3.0]])  # |h| is used: -1 counts like 1
    assert torch.allclose(neuron_scores(h), torch.tensor([0.0, 0.75, 2.25], dtype=torch.float64))
    r = dormant_ratio(h)
    assert r[0.0] == pytest.approx(1 / 3) and r[0.025] == pytest.approx(1 / 3) and r[0.1] == pytest.approx(1 / 3)
    # τ = 0.75 catches the second neuron (s ≤ τ is inclusive), τ = 0.7 does not
    assert dormant_ratio(h, taus=(0.7, 0.75))[0.7] == pytest.approx(1 / 3)
    assert dormant_ratio(h, taus=(0.75,))[0.75] == pytest.approx(2 / 3)


def test_dormant_ratio_conv_and_token_layouts():
    # conv (B=2, C=4, H=2, W=2): channel means 0, 0.01, 1, 3 -> layer mean 1.0025
    conv = torch.zeros(2, 4, 2, 2)
    conv[0, 1, 0, 0] = 0.08  # mean over 2*2*2 = 8 entries -> 0.01
    conv[:, 2] = 1.0
    conv[:, 3] = -3.0
    s = neuron_scores(conv)
    assert torch.allclose(s, torch.tensor([0, 0.01, 1, 3], dtype=torch.float64) / 1.0025)
    assert dormant_ratio(conv) == pytest.approx({0.0: 0.25, 0.025: 0.5, 0.1: 0.5})
    # tokens (B=2, T=3, D=2): feature 0 is zero except one token; a neuron is a feature, not a token
    tok = torch.ones(2, 3, 2)
    tok[:, :, 0] = 0.0
    tok[1, 2, 0] = 0.6  # feature means 0.1 and 1 -> scores 0.1/0.55, 1/0.55
    assert torch.allclose(neuron_scores(tok), torch.tensor([0.1, 1.0], dtype=torch.float64) / 0.55)
    assert dormant_ratio(tok, taus=(0.1, 0.2)) == pytest.approx({0.1: 0.0, 0.2: 0.5})


def test_dormant_ratio_all_zero_layer_and_overall_weighting():
    r = dormant_ratio(torch.zeros(5, 7))
    assert r == {0.0: 1.0, 0.025: 1.0, 0.1: 1.0}
    with pytest.raises(ValueError):
        dormant_ratio(torch.zeros(5))
    feats = {"a": torch.zeros(4, 3),  # 3 neurons, all dormant
             "b": torch.tensor([[0.0, 1.0, 3.0], [0.0, 1.0, 3.0]]).repeat(1, 3)}  # 9 neurons, 3 dormant
    out = dormant_ratio_layers(feats)
    assert out["per_layer"]["a"][0.1] == 1.0
    assert out["per_layer"]["b"][0.1] == pytest.approx(1 / 3)
    assert out["overall"][0.1] == pytest.approx((3 + 3) / 12)  # neuron-weighted, not (1 + 1/3)/2
    # a layer that saw no rows (an idle expert) has no scores: left out, not counted as active
    idle = dormant_ratio_layers({**feats, "idle": torch.zeros(0, 50)})
    assert idle["overall"] == out["overall"] and "idle" not in idle["per_layer"]


def test_srank_known_singular_values():
    assert srank(torch.diag(torch.tensor([10.0, 1.0, 0.001]))) == 2  # 11/11.001 ≥ 0.99, 10/11.001 not
    assert srank(torch.diag(torch.tensor([10.0, 1.0, 0.001])), delta=0.0) == 3
    assert srank(torch.diag(torch.tensor([10.0, 1.0, 0.001])), delta=0.1) == 1  # 10/11.001 ≥ 0.9
    assert srank(torch.eye(5)) == 5
    assert srank(torch.eye(150)) == 149  # 148/150 < 0.99 ≤ 149/150
    assert srank(torch.eye(4), delta=0.25) == 3  # 3/4 = 0.75 exactly: reaching 1 - δ counts
    # rotations do not change singular values; extra dims are flattened into features
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0)))
    m = q[:, :3] @ torch.diag(torch.tensor([10.0, 1.0, 0.001])) @ q[:3, :3].T
    assert srank(m) == 2
    assert srank(torch.eye(4).reshape(4, 2, 2)) == 4
    assert srank(torch.zeros(3, 3)) == 0


def test_norms():
    assert feature_norm(torch.tensor([[3.0, 4.0], [0.0, 1.0]])) == pytest.approx(3.0)  # (5 + 1) / 2
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4.0]]))
        lin.bias.fill_(12.0)
    per, total = weight_norms(lin)
    assert per == pytest.approx({"weight": 5.0, "bias": 12.0}) and total == pytest.approx(13.0)
    assert grad_norms(lin) == ({}, 0.0)  # no backward yet
    lin(torch.tensor([[1.0, 2.0]])).sum().backward()  # d/dw = x = [1, 2], d/db = 1
    per, total = grad_norms(lin)
    assert per == pytest.approx({"weight": math.sqrt(5), "bias": 1.0}) and total == pytest.approx(math.sqrt(6))


# --- routing ------------------------------------------------------------------------------


def test_expert_load_entropy():
    assert expert_load_entropy(torch.tensor([1.0, 1.0, 1.0, 1.0])) == pytest.approx(math.log(4))
    assert expert_load_entropy(torch.tensor([5.0, 5.0, 5.0, 5.0]), normalize=True) == pytest.approx(1.0)
    assert expert_load_entropy(torch.tensor([0.0, 2.0, 0.0])) == pytest.approx(0.0)
    p = torch.tensor([0.5, 0.25, 0.25, 0.0])  # H = 1.5 log 2
    assert expert_load_entropy(p) == pytest.approx(1.5 * math.log(2))
    assert expert_load_entropy(p, normalize=True) == pytest.approx(0.75)
    assert expert_load_entropy(torch.tensor([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(math.log(2))  # summed
    assert math.isnan(expert_load_entropy(torch.zeros(3)))


def test_task_expert_mutual_information():
    T, E = 3, 3
    task = torch.tensor([0, 0, 1, 1, 2, 2])
    ignore = torch.tensor([0.2, 0.3, 0.5]).repeat(6, 1)  # same gates whatever the task
    assert task_expert_mutual_information(ignore, task, T) == pytest.approx(0.0, abs=1e-12)
    own = torch.nn.functional.one_hot(task, E).float()  # each task its own expert
    assert task_expert_mutual_information(own, task, T) == pytest.approx(math.log(3))
    # token layout (N, m, E) averages tokens per sample
    assert task_expert_mutual_information(own.unsqueeze(1).repeat(1, 4, 1), task, T) == pytest.approx(math.log(3))
    # hand case: 2 tasks (3 and 1 samples), p(e|0) = (1, 0), p(e|1) = (0.5, 0.5)
    g = torch.tensor([[1.0, 0.0]] * 3 + [[0.5, 0.5]])
    t = torch.tensor([0, 0, 0, 1])
    # p(e) = (0.875, 0.125); I = 0.75 log(1/0.875) + 0.25 (0.5 log(0.5/0.875) + 0.5 log(0.5/0.125))
    want = 0.75 * math.log(1 / 0.875) + 0.25 * (0.5 * math.log(0.5 / 0.875) + 0.5 * math.log(4))
    assert task_expert_mutual_information(g, t, 2) == pytest.approx(want)
    # same from a per-task table (telemetry form), absent task 2 ignored
    table = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]])
    assert mutual_information(table, torch.tensor([3.0, 1.0, 0.0])) == pytest.approx(want)
    with pytest.raises(ValueError):
        task_expert_mutual_information(own, torch.tensor([0, 0, 1, 1, 2, 3]), T)


# --- non-stationarity ---------------------------------------------------------------------

# phases A, B, A, B of 100 steps each; every task evaluated every 25 steps
PHASES = [("A", 0, 100), ("B", 100, 200), ("A", 200, 300), ("B", 300, 400)]
STEPS = list(range(0, 401, 25))
A = [0, 4, 7, 9, 10, 8, 6, 5, 4, 6, 9.6, 11, 12, 11, 10, 9, 8]
B = [0, 0, 0, 0, 0, 2, 4, 5, 6, 5, 4, 3, 3, 4, 5, 6, 7]
EVALS = {"A": list(zip(STEPS, A)), "B": list(zip(STEPS, B))}


def test_forgetting_synthetic():
    recs = forgetting(EVALS, PHASES)
    got = [(r["phase"], r["task"], r["trained_phase"], r["score_trained"], r["score_now"], r["forgetting"])
           for r in recs]
    # A: 10 at end of phase 0 -> 4 at end of phase 1; B: 6 (step 200) -> 3 (step 300);
    # A: 12 (step 300) -> 8 (step 400). The phase's own task is never counted.
    assert got == [(1, "A", 0, 10, 4, 6), (2, "B", 1, 6, 3, 3), (3, "A", 2, 12, 8, 4)]
    assert mean_of(recs, "forgetting") == pytest.approx(13 / 3)
    # the point at step 200 belongs to phase 1, not phase 2: drop it and B's end of phase 1 is 175
    ev = {"A": EVALS["A"], "B": [p for p in EVALS["B"] if p[0] != 200]}
    assert forgetting(ev, PHASES)[1]["score_trained"] == 5
    # no eval inside a phase -> None
    sparse = {"A": [(100, 10.0), (400, 8.0)], "B": []}
    recs = forgetting(sparse, PHASES)
    assert recs[0]["score_now"] is None and recs[0]["forgetting"] is None  # no A eval in (100, 200]
    assert recs[2]["score_trained"] is None  # no A eval in (200, 300]
    assert recs[1]["forgetting"] is None and mean_of(recs, "forgetting") is None


def test_switch_drop_synthetic():
    recs = switch_drop(EVALS, PHASES)
    got = [(r["task"], r["initial_step"], r["initial_score"], r["returning"], r["previous_score"], r["drop"])
           for r in recs]
    assert got == [("A", 25, 4, False, None, None), ("B", 125, 2, False, None, None),
                   ("A", 225, 6, True, 10, 4), ("B", 325, 4, True, 6, 2)]
    # training curves (points only while the task trains) work the same way
    train = {"A": [(50, 3.0), (100, 5.0), (250, 1.0), (300, 6.0)], "B": [(150, 2.0), (200, 2.5)]}
    recs = switch_drop(train, PHASES)
    assert recs[2]["drop"] == pytest.approx(4.0) and recs[3]["drop"] is None  # B has no point in (300, 400]


def test_steps_to_recover_synthetic():
    recs = steps_to_recover(EVALS, PHASES)  # tolerance 0.05
    assert [(r["phase"], r["level"], r["target"], r["recovered_step"], r["steps"]) for r in recs] == [
        (2, 10, pytest.approx(9.5), 250, 50), (3, 6, pytest.approx(5.7), 375, 75)]
    # exact level: A needs 10 -> 11 at step 275
    assert [r["steps"] for r in steps_to_recover(EVALS, PHASES, tolerance=0.0)] == [75, 75]
    # never recovers within the phase -> None
    ev = {"A": EVALS["A"], "B": [(s, v if s <= 300 else 1.0) for s, v in EVALS["B"]]}
    assert steps_to_recover(ev, PHASES)[1]["steps"] is None
    # negative scores: the tolerance widens the target downward (level -10 -> target -10.5)
    neg = {"A": [(100, -10.0), (250, -10.4), (300, -11.0)]}
    r = steps_to_recover(neg, [("A", 0, 100), ("B", 100, 200), ("A", 200, 300)])[0]
    assert r["target"] == pytest.approx(-10.5) and r["steps"] == 50
    with pytest.raises(ValueError):
        steps_to_recover(EVALS, [("A", 100, 100)])


def test_gradient_cosine():
    g = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([2.0, 4.0]),
         "c": torch.tensor([-2.0, 1.0]), "d": torch.tensor([-1.0, -2.0])}
    cos = gradient_cosine(g)
    assert list(cos) == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]
    assert cos[("a", "b")] == pytest.approx(1.0)
    assert cos[("a", "c")] == pytest.approx(0.0)
    assert cos[("a", "d")] == pytest.approx(-1.0)
    assert cos[("c", "d")] == pytest.approx(0.0)
    assert mean_gradient_cosine(g) == pytest.approx((1 + 0 - 1 + 0 - 1 + 0) / 6)
    assert gradient_cosine({"a": torch.zeros(2), "b": torch.ones(2)}) == {("a", "b"): 0.0}
    assert math.isnan(mean_gradient_cosine({"a": torch.ones(2)}))


def test_per_task_gradients_linear_closed_form():
    # y_hat = w·x + b with w = [1, 0], b = 0; loss_t = mean over task t of (y_hat - y)^2
    # grad_w = 2/n Σ r_i x_i, grad_b = 2/n Σ r_i (r = residual)
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0]]))
        lin.bias.zero_()
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    y = torch.tensor([0.0, 0.0, 3.0, 0.0])
    task = torch.tensor([0, 0, 1, 1])
    pred = lin(x).squeeze(-1)  # one forward shared by both tasks (needs retain_graph)

    def loss_fn(mask):
        return ((pred[mask] - y[mask]) ** 2).mean()

    grads = per_task_gradients(loss_fn, lin.parameters(), task, tasks=[0, 1, 2])
    assert set(grads) == {0, 1}  # task 2 has no samples
    # task 0: residuals 1, 2 -> grad_w = (1·[1,0] + 2·[2,0]) = [5, 0], grad_b = 3
    assert torch.allclose(grads[0], torch.tensor([5.0, 0.0, 3.0]))
    # task 1: residuals -3, 0 -> grad_w = -3·[0,1] = [0, -3], grad_b = -3
    assert torch.allclose(grads[1], torch.tensor([0.0, -3.0, -3.0]))
    assert lin.weight.grad is None and lin.bias.grad is None  # nothing accumulated
    assert gradient_cosine(grads)[(0, 1)] == pytest.approx(-9 / math.sqrt(34 * 18))
    # a parameter the loss does not reach gets zeros
    extra = nn.Parameter(torch.ones(3))
    g = per_task_gradients(loss_fn, [lin.bias, extra], task, tasks=[0])
    assert torch.allclose(g[0], torch.tensor([3.0, 0.0, 0.0, 0.0]))


# --- aggregates ---------------------------------------------------------------------------


def test_min_max_normalize():
    assert min_max_normalize(5.0, 0.0, 10.0) == pytest.approx(0.5)
    assert min_max_normalize(-2.0, -2.0, 6.0) == 0.0
    out = min_max_normalize(np.array([[1.0, 30.0]]), np.array([0.0, 10.0]), np.array([2.0, 50.0]))
    assert np.allclose(out, [[0.5, 0.5]])
    with pytest.raises(ValueError):
        min_max_normalize(1.0, 3.0, 3.0)


def _scores():
    rs = np.random.RandomState(0)
    return {"none": rs.normal(0.0, 1.0, (5, 4)), "critic": rs.normal(1.0, 1.0, (6, 4))}


def test_iqm_ci_matches_rliable():
    scores = _scores()
    ours = iqm_ci(scores, reps=200, seed=7)
    np.random.seed(7)
    points, cis = rly.get_interval_estimates(
        scores, lambda x: np.array([rly_metrics.aggregate_iqm(x)]), reps=200)
    for k in scores:
        assert ours[k][0] == pytest.approx(float(points[k][0]))
        assert ours[k][1] == pytest.approx(float(cis[k][0][0]))
        assert ours[k][2] == pytest.approx(float(cis[k][1][0]))
        assert ours[k][1] <= ours[k][0] <= ours[k][2]
    # the IQM itself: 25%-trimmed mean over all runs and tasks
    flat = np.sort(scores["none"].ravel())
    assert ours["none"][0] == pytest.approx(flat[5:15].mean())
    # reproducible, and the caller's global RNG is left as it was
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    assert iqm_ci(scores, reps=200, seed=7) == ours
    assert np.array_equal(np.random.get_state()[1], before)
    # several metrics in one call share the bootstrap draws
    both = interval_estimates(scores, ("mean", "iqm"), reps=200, seed=7)
    assert both["critic"]["iqm"] == pytest.approx(ours["critic"])
    assert both["critic"]["mean"][0] == pytest.approx(scores["critic"].mean())


def test_probability_of_improvement_matches_rliable():
    scores = _scores()
    ours = probability_of_improvement(scores, reps=100, seed=1)
    assert list(ours) == [("none", "critic")]
    np.random.seed(1)
    points, cis = rly.get_interval_estimates(
        {"p": [scores["none"], scores["critic"]]}, rly_metrics.probability_of_improvement, reps=100)
    assert ours[("none", "critic")][0] == pytest.approx(float(points["p"]))
    assert ours[("none", "critic")][1:] == pytest.approx(tuple(np.ravel(cis["p"])))
    # a clearly better algorithm: every run beats every run on every task
    sure = probability_of_improvement({"x": np.full((3, 2), 2.0) + np.arange(3)[:, None],
                                       "y": np.zeros((3, 2))}, reps=50, seed=0)
    assert sure[("x", "y")] == pytest.approx((1.0, 1.0, 1.0))
