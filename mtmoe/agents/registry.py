"""The algorithm seam: what an agent promises the runner, and the registry of algorithms.

An algorithm is registered once, in its own module::

    register_algo("ppo", PPOConfig, build=build_ppo, networks=ppo_networks, critic="actor_critic")

and everything outside ``mtmoe/agents/`` reads it from here: the runner builds the agent with
``build(run_config, env, device)`` and drives it through the :class:`Agent` protocol; the config
layer gives each algorithm a ``--set <name>.<field>=...`` section typed by its config dataclass
(and a preset's ``<name>:`` mapping); ``mtmoe nets show`` and the size sweeps build the networks
with ``networks(obs_space, action_space, net_config)``. No module outside ``mtmoe/agents/`` holds an
algorithm's name as a string (a test greps for it); the Sample Factory backend, which maps PPO's
settings onto APPO, is the one place outside that reads a particular algorithm's config (PPOConfig).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch

from mtmoe.errors import ConfigError

BUILTIN_MODULES = ("mtmoe.agents.ppo", "mtmoe.agents.sac", "mtmoe.agents.dqn")
DEFAULT_ALGO = "ppo"
"""The algorithm of a suite that names none."""


class Agent(Protocol):
    """What the runner calls on every agent (PPO, SAC and DQN are the reference implementations)."""

    global_step: int
    """Env steps taken so far (all slots)."""
    env: Any
    """The mixture it trains on (the runner swaps it in after restoring a checkpoint)."""

    def iterate(self, total_steps: int, log_every: int) -> Iterator[dict]:
        """Train until `total_steps`; yield stats dicts with 'global_step', 'episodes' (list of the
        mixture's episode dicts) and 'switches', plus any float losses, about every `log_every` steps."""

    def act(self, obs: np.ndarray, info: dict, deterministic: bool = False) -> np.ndarray:
        """Actions for a batch of observations (evaluation calls it with deterministic=True)."""

    def planned_steps(self, total_steps: int) -> int:
        """The env steps `iterate(total_steps)` will run (whole iterations)."""

    def steps_per_iteration(self) -> int: ...

    def networks(self) -> dict[str, torch.nn.Module]:
        """Every network it trains, by name (parameter counts in summary.json)."""

    def probe_networks(self) -> dict[str, torch.nn.Module]:
        """The networks plasticity probes read (twins left out)."""

    def flops_per_env_step(self, obs: torch.Tensor, task: torch.Tensor) -> dict[str, float]:
        """Counted training FLOPs per env step ({'per_env_step': ..., pieces ...}; mtmoe.metrics.flops)."""

    def restart_episodes(self, obs, info) -> None:
        """Continue from fresh episodes (a resumed run whose envs could not be saved)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass(frozen=True)
class AlgoSpec:
    name: str
    config: type
    """Dataclass of the hyperparameters (one docstring line per field); the run config's `<name>` section."""
    build: Callable[[Any, Any, torch.device], Agent]
    """build(run_config, env, device) -> the agent, its networks built from run_config.net."""
    networks: Callable[[Any, Any, Any], dict[str, torch.nn.Module]]
    """networks(obs_space, action_space, net_config) -> the distinct networks it trains (no twins)."""
    critic: str
    """Which of those networks holds the critic tower (dense twins of a size sweep match its size)."""
    tensor_envs: bool = False
    """Whether its rollout takes a DeviceMixture (tensors in, tensors out)."""
    describe: str = ""


ALGOS: dict[str, AlgoSpec] = {}


def register_algo(name: str, config: type, build: Callable, networks: Callable, critic: str,
                  tensor_envs: bool = False, describe: str = "") -> AlgoSpec:
    """Add an algorithm (a user may register their own from any module imported before the run)."""
    spec = AlgoSpec(name, config, build, networks, critic, tensor_envs, describe)
    ALGOS[name] = spec
    return spec


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def algo_names() -> list[str]:
    _load_builtins()
    return sorted(ALGOS)


def get_algo(name: str, source: str = "--algo") -> AlgoSpec:
    _load_builtins()
    if name not in ALGOS:
        raise ConfigError(source, "algo", f"unknown algorithm {name!r} (have: {', '.join(sorted(ALGOS))})")
    return ALGOS[name]


def critic_params(algo: str, obs_space, action_space, net_config) -> int:
    """Parameters of the critic tower the algorithm builds with this network config."""
    spec = get_algo(algo)
    return spec.networks(obs_space, action_space, net_config)[spec.critic].param_counts()["critic"]
