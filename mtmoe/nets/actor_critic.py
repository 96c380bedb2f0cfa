"""Assembly: actor-critic (PPO) and SAC networks from gymnasium spaces and a NetConfig.

    net = build_actor_critic(obs_space, action_space, cfg)
    logits = net.actor(obs, task_id)             # Discrete(n): (B, n) logits
    mean, log_std = net.actor(obs, task_id)      # Box(d,): (B, d) each
    value = net.critic(obs, task_id)             # (B,)
    out, value = net(obs, task_id)               # both, the shared encoder run once
    with collect_moe(telemetry=True) as moe:     # MoE layers emit into the innermost collector
        out, value = net(obs, task_id)
    moe.aux_loss()        # load-balancing losses of the forwards in the block (a zero scalar when none)
    moe.telemetry()       # {layer: {gate_probs, load, entropy, dropped, ..._per_task}} of their last forward
    net.features(obs, task_id); net.param_counts(); net.summary()

    actor, q = build_sac(obs_space, action_space, cfg)   # q(obs, task_id=t) -> (B, n) for Discrete,
                                                          # q(obs, action, t) -> (B,) for Box
Observations: uint8 / float images (C, H, W), scaled by 1 / observation_space.high.max(), or
float vectors (D,). ``task_id`` is a LongTensor (B,), needed for task routing and task_id_input.
Outside a ``collect_moe`` block (``mtmoe.nets.collect_moe``) a forward's MoE layers keep no aux
loss and no telemetry: nothing of a forward that is not part of a loss can reach a later one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from .capture import ProbeCapture, TowerActivations
from .config import NetConfig
from .layers import count_params
from .moe.base import MoELayer, task_one_hot
from .moe.collect import collect_moe
from .torsos import auto_torso, build_torso, default_hidden
from .tower import Tower


def resolve_config(cfg: NetConfig, obs_space: spaces.Space) -> NetConfig:
    """Fill the 'auto' fields (torso, hidden, num_experts) for this observation space, and validate."""
    shape = tuple(obs_space.shape)
    torso = auto_torso(shape) if cfg.torso == "auto" else cfg.torso
    hidden = tuple(cfg.hidden) if cfg.hidden is not None else default_hidden(torso)
    cfg = dataclasses.replace(cfg, torso=torso, hidden=hidden, num_experts=cfg.experts_for(cfg.moe))
    cfg.validate()
    return cfg


def _obs_scale(obs_space: spaces.Box) -> float:
    if len(obs_space.shape) != 3:
        return 1.0
    high = float(np.max(obs_space.high))
    return 1.0 / high if np.isfinite(high) and high > 0 else 1.0


class NetBase(nn.Module):
    """Shared plumbing: towers, MoE layers, probes, parameter counts, summary."""

    cfg: NetConfig

    def _setup_inputs(self, obs_space: spaces.Space, cfg: NetConfig) -> None:
        if not isinstance(obs_space, spaces.Box):
            raise TypeError(f"observations must be a gymnasium Box, got {obs_space}")
        self.obs_space, self.cfg = obs_space, cfg
        self.obs_shape = tuple(obs_space.shape)
        self.obs_scale = _obs_scale(obs_space)
        self.needs_task_id = cfg.task_id_input or (cfg.placement != "none" and _kind_uses_task_id(cfg))

    def _prep(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float()
        return x * self.obs_scale if self.obs_scale != 1.0 else x

    def _cond(self, task_id, *extra) -> torch.Tensor | None:
        if self.needs_task_id and task_id is None:
            raise ValueError("this network needs task_id (LongTensor (B,)): task routing or task_id_input is on")
        parts = [task_one_hot(task_id, self.cfg.num_tasks)] if self.cfg.task_id_input else []
        parts += [e.float().flatten(1) for e in extra if e is not None]
        return torch.cat(parts, -1) if parts else None

    # -- towers and MoE layers
    def towers(self) -> dict[str, Tower]:
        return {m.name: m for m in self.children() if isinstance(m, Tower)}

    def moe_layers(self) -> dict[str, MoELayer]:
        out: dict[str, MoELayer] = {}
        for t in self.towers().values():
            out.update(t.moe_layers())
        return out

    def set_telemetry(self, enabled: bool) -> None:
        """Whether the MoE layers hand routing tensors to a ``collect_moe(telemetry=True)`` block."""
        for layer in self.moe_layers().values():
            layer.telemetry_enabled = enabled

    # -- probes
    @torch.no_grad()
    def features(self, obs: torch.Tensor, task_id: torch.Tensor | None = None, action=None) -> dict[str, torch.Tensor]:
        """Layer name -> activations for plasticity probes (a probe: may sync with the device).

        Keys: '<tower>.torso.<conv/fc i>' (conv maps (B, C, h, w)), '<tower>.torso',
        '<tower>.hidden<i>' / '<tower>.head' / '<tower>.big' (outputs, flattened (B, F)), 'encoder' and
        'encoder.<conv i>' for a shared encoder, and for each MoE layer '<layer>.expert<e>' = (rows, h):
        hidden activations of expert e on the slots or tokens it processed. The probe forward
        emits into a collector of its own: an enclosing ``collect_moe`` block receives nothing.
        """
        return self._capture(obs, task_id, action).flat

    @torch.no_grad()
    def probe_activations(self, obs: torch.Tensor, task_id: torch.Tensor | None = None,
                          action=None) -> dict[str, TowerActivations]:
        """Tower ('actor', 'critic', 'encoder' when shared) -> its dormant-ratio neurons and representation."""
        return self._capture(obs, task_id, action).towers

    def _capture(self, obs, task_id, action) -> ProbeCapture:
        layers = self.moe_layers().values()
        for l in layers:
            l.capture = True
        try:
            cap = ProbeCapture()
            with collect_moe():  # the probe's aux losses go here, and are dropped with it
                self._probe(obs, task_id, action, cap)
            for tower in self.towers().values():
                tower.record_experts(cap)
        finally:
            for l in layers:
                l.capture, l.captured, l.captured_inputs = False, None, None
        return cap

    def _probe(self, obs, task_id, action, cap: ProbeCapture) -> None:
        raise NotImplementedError

    # -- sizes
    def param_counts(self) -> dict[str, int]:
        """Parameters per tower: 'encoder' (shared torso, 0 if none), 'actor', 'critic', 'total'."""
        raise NotImplementedError

    def summary(self) -> str:
        from .summary import render_summary

        return render_summary(self)


def _kind_uses_task_id(cfg: NetConfig) -> bool:
    from .registry import get_moe

    return getattr(get_moe(cfg.moe), "uses_task_id", False)


def _action_dims(action_space: spaces.Space, cfg: NetConfig) -> tuple[bool, int, int]:
    """-> (discrete, action_dim, actor output size)."""
    if isinstance(action_space, spaces.Discrete):
        return True, int(action_space.n), int(action_space.n)
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        d = int(action_space.shape[0])
        return False, d, 2 * d if cfg.log_std == "state_dependent" else d
    raise TypeError(f"action space must be Discrete or a 1-D Box, got {action_space}")


class _PolicyHead:
    """Turns the actor tower's output into logits or (mean, log_std)."""

    def _policy(self, out: torch.Tensor):
        if self.discrete:
            return out
        if self.cfg.log_std == "state_dependent":
            mean, raw = out.chunk(2, -1)
            lo, hi = self.cfg.log_std_bounds
            return mean, lo + 0.5 * (hi - lo) * (torch.tanh(raw) + 1.0)
        return out, self.log_std.expand_as(out)


class ActorCritic(_PolicyHead, NetBase):
    """PPO network: actor tower + critic tower (+ optional shared encoder)."""

    def __init__(self, obs_space: spaces.Space, action_space: spaces.Space, cfg: NetConfig):
        super().__init__()
        cfg = resolve_config(cfg, obs_space)
        self._setup_inputs(obs_space, cfg)
        self.action_space = action_space
        self.discrete, self.action_dim, n_out = _action_dims(action_space, cfg)
        cond = cfg.num_tasks if cfg.task_id_input else 0
        if cfg.shared_encoder:
            self.encoder = build_torso(cfg.torso, self.obs_shape, cfg)
            in_shape, make_torso = tuple(self.encoder.out_shape), None
        else:
            self.encoder = None
            in_shape = self.obs_shape

            def make_torso():
                return build_torso(cfg.torso, self.obs_shape, cfg)

        self.actor_tower = Tower("actor", in_shape, n_out, cfg, use_moe=cfg.moe_in("actor"),
                                 make_torso=make_torso, cond_dim=cond, out_gain=0.01)
        self.critic_tower = Tower("critic", in_shape, 1, cfg, use_moe=cfg.moe_in("critic"),
                                  make_torso=make_torso, cond_dim=cond, out_gain=1.0)
        if not self.discrete and cfg.log_std == "state_independent":
            self.log_std = nn.Parameter(torch.full((self.action_dim,), float(cfg.log_std_init)))

    def _encode(self, obs, capture: ProbeCapture | None = None):
        x = self._prep(obs)
        if self.encoder is None:
            return x
        if capture is None:
            return self.encoder(x)
        x = capture.torso("encoder", None, self.encoder, x)
        capture.representation("encoder", x)
        return x

    def actor(self, obs: torch.Tensor, task_id: torch.Tensor | None = None):
        """-> logits (B, n) for Discrete, (mean, log_std) each (B, d) for Box."""
        return self._policy(self.actor_tower(self._encode(obs), self._cond(task_id), task_id))

    def critic(self, obs: torch.Tensor, task_id: torch.Tensor | None = None) -> torch.Tensor:
        """-> value (B,)."""
        return self.critic_tower(self._encode(obs), self._cond(task_id), task_id).squeeze(-1)

    def forward(self, obs: torch.Tensor, task_id: torch.Tensor | None = None):
        """-> (actor output, value); a shared encoder runs once."""
        x, cond = self._encode(obs), self._cond(task_id)
        return (self._policy(self.actor_tower(x, cond, task_id)),
                self.critic_tower(x, cond, task_id).squeeze(-1))

    def _probe(self, obs, task_id, action, cap):
        x, cond = self._encode(obs, cap), self._cond(task_id)
        self.actor_tower.run(x, cond, task_id, cap)
        self.critic_tower.run(x, cond, task_id, cap)

    def param_counts(self) -> dict[str, int]:
        enc = count_params(self.encoder)
        actor = count_params(self.actor_tower) + (self.log_std.numel() if hasattr(self, "log_std") else 0)
        critic = count_params(self.critic_tower)
        return {"encoder": enc, "actor": actor, "critic": critic, "total": enc + actor + critic}


class SACActor(_PolicyHead, NetBase):
    """SAC policy: logits (Discrete) or (mean, log_std) with state-dependent log std (Box)."""

    def __init__(self, obs_space: spaces.Space, action_space: spaces.Space, cfg: NetConfig):
        super().__init__()
        cfg = resolve_config(dataclasses.replace(cfg, log_std="state_dependent", shared_encoder=False), obs_space)
        self._setup_inputs(obs_space, cfg)
        self.discrete, self.action_dim, n_out = _action_dims(action_space, cfg)
        self.actor_tower = Tower("actor", self.obs_shape, n_out, cfg, use_moe=cfg.moe_in("actor"),
                                 make_torso=lambda: build_torso(cfg.torso, self.obs_shape, cfg),
                                 cond_dim=cfg.num_tasks if cfg.task_id_input else 0, out_gain=0.01)

    def forward(self, obs: torch.Tensor, task_id: torch.Tensor | None = None):
        return self._policy(self.actor_tower(self._prep(obs), self._cond(task_id), task_id))

    def _probe(self, obs, task_id, action, cap):
        self.actor_tower.run(self._prep(obs), self._cond(task_id), task_id, cap)

    def param_counts(self) -> dict[str, int]:
        n = count_params(self)
        return {"encoder": 0, "actor": n, "critic": 0, "total": n}


class QNetwork(NetBase):
    """SAC critic: Q(s, .) over all actions (Discrete) or Q(s, a) (Box; the action joins the first layer).

    The 'critic' placement applies here. For twin Qs build two (``build_q_network`` twice).
    """

    @property
    def probe_needs_action(self) -> bool:
        """Probes feed Q(s, a) an action (zeros) when actions are continuous."""
        return not self.discrete

    def __init__(self, obs_space: spaces.Space, action_space: spaces.Space, cfg: NetConfig):
        super().__init__()
        cfg = resolve_config(dataclasses.replace(cfg, shared_encoder=False), obs_space)
        self._setup_inputs(obs_space, cfg)
        self.discrete, self.action_dim, _ = _action_dims(action_space, cfg)
        cond = (cfg.num_tasks if cfg.task_id_input else 0) + (0 if self.discrete else self.action_dim)
        self.critic_tower = Tower("critic", self.obs_shape, self.action_dim if self.discrete else 1, cfg,
                                  use_moe=cfg.moe_in("critic"),
                                  make_torso=lambda: build_torso(cfg.torso, self.obs_shape, cfg),
                                  cond_dim=cond, out_gain=1.0)

    def forward(self, obs: torch.Tensor, action: torch.Tensor | None = None, task_id: torch.Tensor | None = None):
        """Discrete: q(obs, task_id=t) -> Q(s, .) (B, n); q(obs, action, t) -> Q(s, a) (B,).
        Box: q(obs, action, task_id) -> Q(s, a) (B,)."""
        if self.discrete:
            q = self.critic_tower(self._prep(obs), self._cond(task_id), task_id)
            return q if action is None else q.gather(1, action.long().view(-1, 1)).squeeze(1)
        if action is None:
            raise ValueError("a continuous Q network needs the action: q(obs, action, task_id)")
        return self.critic_tower(self._prep(obs), self._cond(task_id, action), task_id).squeeze(-1)

    def _probe(self, obs, task_id, action, cap):
        cond = self._cond(task_id) if self.discrete else self._cond(task_id, action)
        self.critic_tower.run(self._prep(obs), cond, task_id, cap)

    def param_counts(self) -> dict[str, int]:
        n = count_params(self)
        return {"encoder": 0, "actor": 0, "critic": n, "total": n}


def build_actor_critic(obs_space: spaces.Space, action_space: spaces.Space, cfg: NetConfig | None = None) -> ActorCritic:
    """The PPO network for these spaces (see module docstring)."""
    return ActorCritic(obs_space, action_space, cfg or NetConfig())


def build_q_network(obs_space: spaces.Space, action_space: spaces.Space, cfg: NetConfig | None = None) -> QNetwork:
    """One SAC Q network (call twice for twin Qs)."""
    return QNetwork(obs_space, action_space, cfg or NetConfig())


def build_sac(obs_space: spaces.Space, action_space: spaces.Space, cfg: NetConfig | None = None) -> tuple[SACActor, QNetwork]:
    """(actor, q_net) for SAC. The actor's log std is state-dependent; encoders are never shared."""
    cfg = cfg or NetConfig()
    return SACActor(obs_space, action_space, cfg), QNetwork(obs_space, action_space, cfg)
