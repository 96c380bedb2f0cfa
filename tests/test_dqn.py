"""DQN: n-step returns read from the replay ring, targets, masks, the target network, learning
within fixed step budgets, and `--algo dqn` through the CLI (placements, compare, size sweeps)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from mtmoe.agents.dqn import DQN, DQNConfig, masked_argmax, q_network, td_target
from mtmoe.agents.replay import ReplayBuffer
from mtmoe.cli import main
from mtmoe.nets import NetConfig
from test_agents import single_task_env
from test_bad_input import one_line_error

# ---------------------------------------------------------------- n-step returns from the ring


def _episodic_buffer(capacity: int, rows: int, ends: dict[int, bool]):
    """One slot; row t holds obs t, reward t + 1; `ends` maps a row to terminated (True) or
    truncated (False); the final observation of an ended row t is 1000 + t."""
    buf = ReplayBuffer(capacity, 1, (1,), np.float32, (), np.int64, (3,), torch.device("cpu"), seed=0)
    for t in range(rows):
        ended = t in ends
        buf.add(np.array([[t]], np.float32), np.array([t % 3]), np.array([t + 1.0]), np.array([float(ends.get(t, False))]),
                np.array([ended]), np.array([0]), np.ones((1, 3), bool), np.array([[1000.0 + t]], np.float32))
    return buf


def _expected(t: int, n: int, gamma: float, ends: dict[int, bool]):
    """The n-step transition from row t, written out by walking the episode."""
    ret, m = 0.0, 0
    for j in range(n):
        ret += gamma**j * (t + j + 1.0)
        m += 1
        if t + j in ends:
            return ret, gamma**m, float(ends[t + j]), 1000.0 + t + j
    return ret, gamma**m, 0.0, float(t + n)


@pytest.mark.parametrize("capacity,rows", [(64, 20), (12, 40)])  # filling, and wrapped around several times
@pytest.mark.parametrize("n", [1, 3])
def test_nstep_samples_equal_the_returns_written_out(capacity, rows, n):
    ends = {4: True, 9: False, 10: True, 17: False, 25: True, 33: False}
    buf = _episodic_buffer(capacity, rows, ends)
    assert buf.can_sample_nstep(n)
    b = buf.sample_nstep(512, n, 0.9)
    starts = b["obs"][:, 0].long().tolist()
    oldest = max(0, rows - capacity)
    assert min(starts) >= oldest and max(starts) <= rows - 1 - n  # its next n rows are stored
    assert len(set(starts)) > min(5, rows - oldest - n)
    for k, t in enumerate(starts):
        ret, disc, term, nxt = _expected(t, n, 0.9, ends)
        assert b["rewards"][k].item() == pytest.approx(ret, rel=1e-6)
        assert b["discount"][k].item() == pytest.approx(disc, rel=1e-6)
        assert b["terminated"][k].item() == term and b["next_obs"][k, 0].item() == nxt
        assert b["actions"][k].item() == t % 3


def test_nstep_needs_n_stored_rows():
    buf = _episodic_buffer(64, 3, {})
    assert buf.can_sample_nstep(2) and not buf.can_sample_nstep(3)


# ---------------------------------------------------------------- targets and masks


def test_td_target_double_and_nature():
    q_target = torch.tensor([[1.0, 5.0, 3.0], [2.0, 0.0, 9.0]])
    q_online = torch.tensor([[0.0, 1.0, 2.0], [7.0, 0.0, 1.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])  # row 1: action 2 is not this task's
    r, disc, term = torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.25]), torch.tensor([0.0, 1.0])
    nature = td_target(r, disc, term, q_target, None, mask, double=False)
    double = td_target(r, disc, term, q_target, q_online, mask, double=True)
    assert nature.tolist() == [1.0 + 0.5 * 5.0, 1.0]  # max of the target net; a termination cuts it
    assert double.tolist() == [1.0 + 0.5 * 3.0, 1.0]  # the online net picks action 2, the target values it
    term0 = torch.zeros(2)
    assert td_target(r, disc, term0, q_target, None, mask, False)[1].item() == 1.0 + 0.25 * 2.0  # 9.0 is masked


def test_masked_argmax_and_random_actions_stay_valid():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(500, 6, generator=g) * 10
    mask = torch.rand(500, 6, generator=g) < 0.5
    mask[:, 0] = True
    best = masked_argmax(q, mask)
    assert mask[torch.arange(500), best].all()
    assert (q.masked_fill(~mask, -1e9).max(1).values == q[torch.arange(500), best]).all()
    agent = _agent(DQNConfig(learning_starts=0, epsilon_start=1.0, epsilon_end=1.0))
    picks = agent._random_valid(mask.numpy())
    assert mask.numpy()[np.arange(500), picks].all()
    assert set(picks.tolist()) == set(range(6))  # every action gets picked where it is valid


def _agent(cfg: DQNConfig, net: NetConfig | None = None, task: str = "gym-cartpole") -> DQN:
    env = single_task_env(task, 2)
    net = net or NetConfig(hidden=(16,))
    return DQN(env, q_network(env.single_observation_space, env.single_action_space, net, cfg.dueling), cfg)


def test_dueling_q_is_value_plus_centred_valid_advantages():
    agent = _agent(DQNConfig(dueling=True))
    obs, task = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)), torch.zeros(4, dtype=torch.long)
    mask = torch.tensor([[True, True], [True, False], [True, True], [False, True]])
    out = agent.q(obs, task_id=task)
    assert out.shape == (4, 3)  # V(s), then A(s, .)
    q = agent.q_values(agent.q, obs, task, mask)
    adv = out[:, 1:]
    mean_valid = (adv * mask).sum(1) / mask.sum(1)
    assert torch.allclose(q, out[:, :1] + adv - mean_valid[:, None])
    assert torch.allclose(q[1, 0], out[1, 0], atol=1e-6)  # one valid action: Q = V (up to rounding)


def test_target_network_is_copied_on_schedule_and_polyak_moves_part_way():
    cfg = DQNConfig(learning_starts=50, batch_size=8, train_freq=1, target_update_every=40)
    agent = _agent(cfg)
    seen = []
    for stats in agent.iterate(120, log_every=2):
        same = all(torch.equal(a, b) for a, b in zip(agent.q.parameters(), agent.q_target.parameters()))
        seen.append((stats["global_step"], same))
    # copied at 80 and 120 (the first updates come at 52): equal exactly then, apart in between
    assert dict(seen)[80] and dict(seen)[120] and not dict(seen)[100] and not dict(seen)[60]
    soft = _agent(DQNConfig(tau=0.25))
    before = [p.clone() for p in soft.q_target.parameters()]
    with torch.no_grad():
        for p in soft.q.parameters():
            p.add_(1.0)
    soft.update_target()
    for b, t, o in zip(before, soft.q_target.parameters(), soft.q.parameters()):
        assert torch.allclose(t, 0.75 * b + 0.25 * o)


def test_epsilon_decays_linearly_after_the_warm_up():
    agent = _agent(DQNConfig(learning_starts=100, epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=200))
    values = {}
    for step in (0, 100, 200, 300, 1000):
        agent.global_step = step
        values[step] = agent.epsilon()
    assert values == pytest.approx({0: 1.0, 100: 1.0, 200: 0.55, 300: 0.1, 1000: 0.1})


# ---------------------------------------------------------------- learning within step budgets


def _train(task, steps, cfg, net, seed=0, num_envs=1, learned=None, check_every=5000):
    """Train up to `steps` env steps; with `learned(agent, returns)`, stop at the first check (every
    `check_every` steps) where it holds — the budget stays the bound, a fast learner ends early
    (the checks leave the agent's random stream alone)."""
    torch.manual_seed(seed)
    env = single_task_env(task, num_envs)
    agent = DQN(env, q_network(env.single_observation_space, env.single_action_space, net, cfg.dueling), cfg, seed=seed)
    returns, next_check = [], check_every
    for stats in agent.iterate(steps, log_every=1000):
        returns += [e["return"] for e in stats["episodes"]]
        if learned is not None and agent.global_step >= next_check:
            next_check += check_every
            if learned(agent, returns):
                break
    env.close()
    return agent, returns


def _greedy_cartpole_returns(agent, episodes=5):
    env, out = gym.make("CartPole-v1"), []
    info = {"action_mask": np.ones((1, 2), bool), "task_id": np.zeros(1, np.int64)}
    for k in range(episodes):
        obs, _ = env.reset(seed=100 + k)
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(int(agent.act(obs[None].astype(np.float32), info, True)[0]))
            total, done = total + r, term or trunc
        out.append(total)
    return out


CARTPOLE = DQNConfig(buffer_size=50_000, learning_starts=1000, batch_size=128, learning_rate=1e-3, eps=1e-8, n_step=3,
                     train_freq=2, target_update_every=200, epsilon_end=0.01, epsilon_decay_steps=8000)


@pytest.mark.parametrize("placement", ["none", "critic"])
def test_dqn_solves_cartpole(placement):
    """Measured (3 seeds, 50k steps): greedy returns 500/500/492 dense, 500/500/500 SoftMoE critic.
    Within that budget the test stops at the first 5k-step check where the greedy policy holds."""
    net = NetConfig(hidden=(128, 128), placement=placement, moe="softmoe", num_experts=4)
    agent, returns = _train("gym-cartpole", 50_000, CARTPOLE, net,
                            learned=lambda a, _: np.mean(_greedy_cartpole_returns(a)) >= 400)
    assert np.mean(returns[:10]) < 40
    assert np.mean(_greedy_cartpole_returns(agent)) >= 400


def test_dqn_learns_minatar_breakout():
    """Measured (seeds 0-2, 60k steps, 4 slots): mean of the last 30 training episodes 5.1 / 6.8 /
    6.8, against ~0.44 for the first 50 (epsilon 1: a random policy). Within that budget the test
    stops at the first 5k-step check where the last 30 reach 3.0."""
    cfg = DQNConfig(buffer_size=100_000, learning_starts=2000, batch_size=64, learning_rate=1e-3, eps=1e-8, n_step=3,
                    train_freq=4, target_update_every=1000, epsilon_end=0.05, epsilon_decay_steps=20_000)
    net = NetConfig(torso="minatar", hidden=(128,))
    _, returns = _train("minatar-breakout", 60_000, cfg, net, num_envs=4,
                        learned=lambda _, r: len(r) >= 80 and np.mean(r[-30:]) >= 3.0)
    assert np.mean(returns[:50]) < 1.0
    assert np.mean(returns[-30:]) >= 3.0, np.mean(returns[-30:])


# ---------------------------------------------------------------- through the CLI

TINY = ["dqn.learning_starts=64", "dqn.batch_size=16", "dqn.buffer_size=2000", "log_every=64", "eval_episodes=1",
        "eval_max_steps=30", "probe_per_task=8"]


def _run(tmp_path, capsys, *extra, steps=300, suite="minatar-multitask", placement="critic"):
    before = set((tmp_path / suite).iterdir()) if (tmp_path / suite).is_dir() else set()
    argv = ["run", "--suite", suite, "--algo", "dqn", "--placement", placement, "--steps", str(steps),
            "--out", str(tmp_path), *extra, *[a for s in TINY for a in ("--set", s)]]
    assert main(argv) == 0, capsys.readouterr().err
    (run_dir,) = set((tmp_path / suite).iterdir()) - before
    return run_dir


@pytest.mark.parametrize("placement", ["actor", "both"])
def test_placements_without_a_q_network_are_one_line(capsys, placement):
    line = one_line_error(["run", "--suite", "minatar-single", "--algo", "dqn", "--placement", placement,
                           "--steps", "100"], capsys)
    assert "--placement" in line and "critic or none" in line


def test_continuous_actions_are_one_line(capsys):
    line = one_line_error(["run", "--suite", "mujoco-single", "--algo", "dqn", "--steps", "100"], capsys)
    assert "discrete actions" in line


def test_softmoe_q_network_is_probed_and_routed(tmp_path, capsys):
    run_dir = _run(tmp_path, capsys, "--moe", "softmoe", "--experts", "4",
                   "--set", "probe_every=150", "--set", "eval_every=150")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algo"] == "dqn" and config["preset"] == "dqn-minatar"
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    probes = [r["probe"] for r in records if "probe" in r]
    assert len(probes) >= 2
    towers = probes[-1]["tasks"]["minatar-breakout"]
    assert set(towers) == {"q.critic"} and 0.0 <= towers["q.critic"]["dormant@0.1"] <= 1.0
    assert set(probes[-1]["moe"]) == {"q.critic.hidden0"}
    assert set(probes[-1]["interference"]) == {"critic"}
    losses = [r["q_loss"] for r in records if "q_loss" in r]
    assert losses and all(np.isfinite(losses))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["flops"]["per_env_step"] > summary["flops"]["forward_per_obs"] > 0
    assert set(summary["param_counts"]) == {"q"}


def test_compare_reads_dqn_runs(tmp_path, capsys):
    for placement in ("none", "critic"):
        for seed in ("0", "1"):
            _run(tmp_path, capsys, "--seed", seed, steps=150, suite="minatar-single", placement=placement)
    assert main(["compare", str(tmp_path), "--no-plots", "--reps", "50"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "dqn" in out and "critic" in out and "none" in out


def test_size_sweep_gives_dqn_a_width_matched_dense_twin():
    from mtmoe.agents.registry import critic_params
    from mtmoe.runner.records import run_name
    from mtmoe.sweep import Grid
    from mtmoe.tasks import load_registry, make_mixture

    registry = load_registry()
    grid = Grid(suites=["minatar-single"], seeds=[0], placements=["none", "critic"], experts=[1, 8], algo="dqn",
                steps=1000)
    cfgs = {run_name(c): c for c in grid.configs(registry)}
    env = make_mixture("minatar-single", registry, num_envs=1, steps=1000)
    obs, act = env.single_observation_space, env.single_action_space
    for e in (1, 8):
        moe = cfgs[f"dqn-critic-softmoe-penultimate-e{e}-s0"]
        twin = cfgs[f"dqn-none-dense-match-e{e}-w0-s0"]
        target, got = critic_params("dqn", obs, act, moe.net), critic_params("dqn", obs, act, twin.net)
        assert abs(got - target) / target < 0.02, (e, got, target)
    env.close()
