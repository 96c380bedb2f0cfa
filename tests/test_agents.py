"""Agents must learn within fixed step budgets (not time limits), and be reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtmoe.agents.ppo import PPO, PPOConfig
from mtmoe.agents.sac import SAC, SACConfig
from mtmoe.nets import NetConfig, build_actor_critic, build_q_network, build_sac
from mtmoe.tasks import load_registry, make_mixture
from mtmoe.tasks.schema import parse_suite, parse_task

REGISTRY = load_registry()
REGISTRY.add_task(parse_task({"id": "inverted-pendulum", "backend": "mujoco", "env": "InvertedPendulum-v5"}, "test")[0])


def single_task_env(task_id: str, num_envs: int):
    suite = parse_suite({"name": f"t-{task_id}", "tasks": [task_id], "num_envs": num_envs,
                         "budgets": {"default": 1}}, "test")[0]
    return make_mixture(suite, REGISTRY)


def run_ppo(task_id, num_envs, steps, ppo_cfg, net_cfg, seed=0):
    torch.manual_seed(seed)
    env = single_task_env(task_id, num_envs)
    net = build_actor_critic(env.single_observation_space, env.single_action_space, net_cfg)
    agent = PPO(env, net, ppo_cfg, seed=seed)
    returns, losses = [], []
    for stats in agent.iterate(steps):
        returns += [e["return"] for e in stats["episodes"]]
        losses.append((stats["policy_loss"], stats["value_loss"]))
    env.close()
    return returns, losses


CARTPOLE_PPO = PPOConfig(num_steps=128, learning_rate=2.5e-3, num_minibatches=4, update_epochs=4, clip_coef=0.2,
                         ent_coef=0.0)


@pytest.mark.parametrize("placement", ["none", "both"])
def test_ppo_discrete_solves_cartpole(placement):
    net = NetConfig(hidden=(64, 64), activation="tanh", placement=placement, moe="softmoe", num_experts=4)
    returns, _ = run_ppo("gym-cartpole", 8, 150_000, CARTPOLE_PPO, net)
    assert np.mean(returns[-20:]) >= 475, np.mean(returns[-20:])


def test_ppo_continuous_learns_inverted_pendulum():
    cfg = PPOConfig(num_steps=256, learning_rate=1e-3, num_minibatches=8, update_epochs=10, clip_coef=0.2,
                    ent_coef=0.0, anneal_lr=True)
    net = NetConfig(hidden=(64, 64), activation="tanh")
    returns, _ = run_ppo("inverted-pendulum", 4, 50_000, cfg, net)
    assert np.mean(returns[:10]) < 50  # a random policy drops the pole within a few steps
    assert np.mean(returns[-10:]) >= 500, np.mean(returns[-10:])


def run_sac(task_id, steps, sac_cfg, net_cfg, seed=0, num_envs=1):
    torch.manual_seed(seed)
    env = single_task_env(task_id, num_envs)
    actor, q1 = build_sac(env.single_observation_space, env.single_action_space, net_cfg)
    q2 = build_q_network(env.single_observation_space, env.single_action_space, net_cfg)
    agent = SAC(env, actor, q1, q2, sac_cfg, seed=seed)
    returns = []
    for stats in agent.iterate(steps, log_every=1000):
        returns += [e["return"] for e in stats["episodes"]]
    env.close()
    return returns


def test_sac_continuous_learns_pendulum():
    net = NetConfig(hidden=(128, 128), log_std="state_dependent")
    returns = run_sac("gym-pendulum", 5000, SACConfig(learning_starts=500, batch_size=256), net)
    assert np.mean(returns[:2]) < -900
    assert np.mean(returns[-5:]) > -400, returns[-5:]


def test_sac_discrete_learns_cartpole():
    net = NetConfig(hidden=(64, 64))
    cfg = SACConfig(learning_starts=1000, batch_size=64, q_lr=1e-3, policy_lr=3e-4, target_entropy_scale=0.5,
                    tau=0.01)
    returns = run_sac("gym-cartpole", 12000, cfg, net)
    assert np.mean(returns[:10]) < 40
    assert np.mean(returns[-10:]) > 150, returns[-10:]


def test_same_seed_same_losses_on_cpu():
    net = NetConfig(torso="minatar", hidden=(32,), placement="critic", moe="softmoe", num_experts=2)
    cfg = PPOConfig(num_steps=16, num_minibatches=2, update_epochs=2)
    _, a = run_ppo("minatar-breakout", 4, 4 * 16 * 3, cfg, net, seed=3)
    _, b = run_ppo("minatar-breakout", 4, 4 * 16 * 3, cfg, net, seed=3)
    _, c = run_ppo("minatar-breakout", 4, 4 * 16 * 3, cfg, net, seed=4)
    assert a == b
    assert a != c
