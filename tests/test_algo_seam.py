"""The algorithm seam: algorithms come from the registry; nothing outside mtmoe/agents/ names one."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtmoe.agents.common import to_device
from mtmoe.agents.registry import ALGOS, register_algo
from mtmoe.cli import main
from mtmoe.metrics.flops import forward_flops, train_flops

PACKAGE = Path(__file__).resolve().parents[1] / "mtmoe"
# a string literal naming a registered algorithm, e.g. == "ppo" or ("ppo", "sac")
NAME_LITERAL = re.compile(r"""["'](ppo|sac|dqn)["']""")


def test_no_module_outside_the_agents_names_an_algorithm():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.is_relative_to(PACKAGE / "agents"):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if NAME_LITERAL.search(code):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@dataclass
class ToyConfig:
    learning_rate: float = 1e-2
    """Adam step size."""
    num_steps: int = 32
    """Env steps per slot between updates."""
    gamma: float = 0.99
    """Discount of the returns-to-go."""


class Reinforce:
    """REINFORCE with a baseline-free return-to-go, on mtmoe's actor-critic network (actor only)."""

    def __init__(self, env, net, cfg: ToyConfig, device, seed: int):
        self.env, self.net, self.cfg, self.device = env, net, cfg, device
        self.opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
        self.global_step, self.next_obs, self.next_info = 0, None, None

    def steps_per_iteration(self) -> int:
        return self.cfg.num_steps * self.env.num_envs

    def planned_steps(self, total_steps: int) -> int:
        return max(1, total_steps // self.steps_per_iteration()) * self.steps_per_iteration()

    def _logits(self, obs, info):
        logits = self.net.actor(to_device(obs, self.device), to_device(info["task_id"], self.device))
        return logits.masked_fill(~to_device(info["action_mask"], self.device), -1e9)

    def act(self, obs, info, deterministic: bool = False) -> np.ndarray:
        with torch.no_grad():
            logits = self._logits(obs, info)
            return (logits.argmax(-1) if deterministic else torch.distributions.Categorical(logits=logits).sample()).numpy()

    def iterate(self, total_steps: int, log_every: int):
        if self.next_obs is None:
            self.restart_episodes(*self.env.reset(seed=0))
        while self.global_step < self.planned_steps(total_steps):
            logps, rewards, dones, episodes = [], [], [], []
            for _ in range(self.cfg.num_steps):
                dist = torch.distributions.Categorical(logits=self._logits(self.next_obs, self.next_info))
                action = dist.sample()
                logps.append(dist.log_prob(action))
                self.next_obs, reward, term, trunc, self.next_info = self.env.step(action.numpy())
                rewards.append(torch.as_tensor(reward)), dones.append(torch.as_tensor(term | trunc))
                episodes += self.next_info.get("episodes", [])
            ret, returns = torch.zeros(self.env.num_envs), []
            for r, d in zip(reversed(rewards), reversed(dones)):
                ret = r + self.cfg.gamma * ret * (~d)
                returns.insert(0, ret)
            loss = -(torch.stack(logps) * torch.stack(returns)).mean()
            self.opt.zero_grad(), loss.backward(), self.opt.step()
            self.global_step += self.steps_per_iteration()
            yield {"global_step": self.global_step, "loss": float(loss.detach()), "episodes": episodes, "switches": []}

    def networks(self):
        return {"actor_critic": self.net}

    def probe_networks(self):
        return {"actor_critic": self.net}

    def flops_per_env_step(self, obs, task):
        n = obs.shape[0]
        return {"per_env_step": (forward_flops(self.net, obs, task) + train_flops(self.net, obs, task)) / n}

    def restart_episodes(self, obs, info):
        self.next_obs, self.next_info = obs, info

    def state_dict(self):
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "global_step": self.global_step}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"]), self.opt.load_state_dict(state["opt"])
        self.global_step = state["global_step"]


def _build(run_cfg, env, device):
    from mtmoe.nets import build_actor_critic

    net = build_actor_critic(env.single_observation_space, env.single_action_space, run_cfg.net)
    return Reinforce(env, net, run_cfg.toy, device, run_cfg.seed)


def _networks(obs_space, action_space, net_cfg):
    from mtmoe.nets import build_actor_critic

    return {"actor_critic": build_actor_critic(obs_space, action_space, net_cfg)}


def test_a_toy_algorithm_registered_from_a_test_trains_through_mtmoe_run(tmp_path, capsys):
    register_algo("toy", ToyConfig, _build, _networks, critic="actor_critic")
    try:
        code = main(["run", "--suite", "gym-single", "--algo", "toy", "--placement", "critic", "--steps", "2048",
                     "--out", str(tmp_path), "--set", "toy.learning_rate=0.02", "--set", "eval_episodes=2",
                     "--set", "probe_per_task=16"])
        assert code == 0, capsys.readouterr().err
        (run_dir,) = (tmp_path / "gym-single").iterdir()
        assert run_dir.name.startswith("toy-critic-")
        config = json.loads((run_dir / "config.json").read_text())
        assert config["algo"] == "toy" and config["toy"]["learning_rate"] == 0.02 and "ppo" in config
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["steps"] == 2048 and summary["flops"]["per_env_step"] > 0 and summary["final_probe"]
        assert main(["nets", "show", "--suite", "gym-single", "--algo", "toy"]) == 0
    finally:
        ALGOS.pop("toy", None)


def test_an_unknown_algorithm_is_one_line(capsys):
    assert main(["run", "--suite", "gym-single", "--algo", "dqm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown algorithm 'dqm'" in err and "ppo" in err
