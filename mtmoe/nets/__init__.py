"""mtmoe.nets: torsos, tokenizers, MoE layers and actor/critic assembly (no envs, no algorithms).

Public API:
    NetConfig                                   typed network configuration
    build_actor_critic(obs_space, action_space, cfg) -> ActorCritic     (PPO)
    build_sac(obs_space, action_space, cfg) -> (SACActor, QNetwork)
    build_q_network(obs_space, action_space, cfg) -> QNetwork           (a twin Q)
    render_summary(net) / show({name: net})     text summary
    register_moe(name, cls) / register_torso(name, builder) / register_tokenizer(name, builder)
    MoELayer, routing_stats                     the contract for new MoE kinds
    collect_moe(telemetry=False) -> MoEOutputs  what MoE layers emit during the forwards in a block:
        with collect_moe() as moe:
            out, value = net(obs, task_id)
        loss = ... + aux_coef * moe.aux_loss()  # their load-balancing losses (zero scalar when none)
        moe.telemetry()                         # with telemetry=True: {layer: routing stats}
      Outside a block MoE layers emit nothing and keep nothing (no side state to clear).
"""

from . import moe as _moe  # registers the built-in MoE kinds
from . import tokenizers as _tokenizers  # registers the built-in tokenizers
from . import torsos as _torsos  # registers the built-in torsos
from .actor_critic import (ActorCritic, NetBase, QNetwork, SACActor, build_actor_critic, build_q_network,
                           build_sac, resolve_config)
from .config import NetConfig, PLACEMENTS, POSITIONS
from .experts import ExpertMLP, ExpertTower
from .moe import DenseMoE, MoELayer, MoEOutputs, SoftMoE, TaskMoE, TopKMoE, collect_moe, routing_stats
from .registry import (get_moe, get_tokenizer, get_torso, moe_kinds, register_moe, register_tokenizer,
                       register_torso, tokenizers, torsos)
from .summary import render_summary, show
from .tower import Tower

__all__ = [
    "ActorCritic", "NetBase", "QNetwork", "SACActor", "build_actor_critic", "build_q_network", "build_sac",
    "resolve_config", "NetConfig", "PLACEMENTS", "POSITIONS", "ExpertMLP", "ExpertTower", "DenseMoE",
    "MoELayer", "MoEOutputs", "SoftMoE", "TaskMoE", "TopKMoE", "collect_moe", "routing_stats", "get_moe",
    "get_tokenizer", "get_torso", "moe_kinds", "register_moe", "register_tokenizer", "register_torso",
    "tokenizers", "torsos", "render_summary", "show", "Tower",
]
