"""mtmoe's actor-critic (any placement, MoE kind, position, experts) as a Sample Factory model.

SF's model protocol is ``forward_head`` (encoder) -> ``forward_core`` (RNN) -> ``forward_tail``
(value and action-distribution heads). Here the head runs the whole mtmoe ActorCritic — both
towers, with their MoE layers — on the observation dict and hands on one tensor per sample:
the action-distribution parameters (discrete: logits with invalid actions of the task masked
out; continuous: mean and log std) followed by the value. The core is the identity (no RNN) and
the tail only splits that tensor and builds SF's action distribution, so the learner's and the
inference worker's forward passes train exactly mtmoe's network.

MoE auxiliary (load-balancing) losses: SF's learner has no hook for extra loss terms, so the aux
loss of each training forward pass (collected around the head's forward with ``collect_moe``) is
attached to the head's output with an identity function whose backward adds
``aux_coef * d aux / d params`` (the "aux loss scaler" trick of Megatron-LM's MoE): the
gradients are those of ``loss + aux_coef * aux``. The loss value SF logs leaves the aux term out.
"""

from __future__ import annotations

import dataclasses

import torch
from sample_factory.algo.utils.action_distributions import get_action_distribution
from sample_factory.algo.utils.tensor_dict import TensorDict
from sample_factory.model.actor_critic import ActorCritic as SFActorCritic
from sample_factory.model.model_utils import model_device

from mtmoe.nets import NetConfig, build_actor_critic, collect_moe

MASKED_LOGIT = -1e9  # finite: SF's KL and entropy multiply probabilities by log-probabilities


class _AttachAuxLoss(torch.autograd.Function):
    """Identity on x; the backward pass also sends gradient 1 into `aux` (a scalar loss)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(aux)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (aux,) = ctx.saved_tensors
        return grad, torch.ones_like(aux)


def _torch_dtype(space) -> torch.dtype:
    import numpy as np

    return torch.from_numpy(np.zeros(1, space.dtype)).dtype


class MtmoeActorCritic(SFActorCritic):
    def __init__(self, obs_space, action_space, cfg, net_cfg: NetConfig, aux_coef: float = 1.0):
        super().__init__(obs_space, action_space, cfg)
        self.net = build_actor_critic(obs_space["obs"], action_space, net_cfg)
        self.discrete = self.net.discrete
        self.aux_coef = aux_coef
        self.param_size = action_space.n if self.discrete else 2 * self.net.action_dim
        self._dtypes = {k: _torch_dtype(s) for k, s in obs_space.spaces.items()}

    # SF asks the encoders where and in which dtype each observation key goes; there is one model
    def device_for_input_tensor(self, input_tensor_name: str) -> torch.device:
        return model_device(self)

    def type_for_input_tensor(self, input_tensor_name: str) -> torch.dtype:
        return self._dtypes[input_tensor_name]  # uint8 images stay uint8 (the net scales them), ids stay long

    def forward_head(self, obs_dict) -> torch.Tensor:
        with collect_moe() as moe:  # this forward's aux losses only
            actor_out, value = self.net(obs_dict["obs"], obs_dict["task_id"].long())
        if self.discrete:
            mask = obs_dict.get("action_mask")
            params = actor_out if mask is None else actor_out.masked_fill(~mask.bool(), MASKED_LOGIT)
        else:
            mean, log_std = actor_out
            params = torch.cat([mean, log_std.expand_as(mean)], -1)
        aux = moe.aux_loss(value.device)
        if self.aux_coef and torch.is_grad_enabled() and aux.requires_grad:
            params = _AttachAuxLoss.apply(params, aux * self.aux_coef)
        return torch.cat([params, value.unsqueeze(-1)], -1)

    def forward_core(self, head_output: torch.Tensor, rnn_states):
        return head_output, rnn_states

    def forward_tail(self, core_output: torch.Tensor, values_only: bool, sample_actions: bool) -> TensorDict:
        result = TensorDict(values=core_output[:, -1])
        if values_only:
            return result
        params = core_output[:, :-1]
        self.last_action_distribution = get_action_distribution(self.action_space, params)
        result["action_logits"] = params
        self._maybe_sample_actions(sample_actions, result)
        return result

    def forward(self, normalized_obs_dict, rnn_states, values_only: bool = False) -> TensorDict:
        x, new_rnn_states = self.forward_core(self.forward_head(normalized_obs_dict), rnn_states)
        result = self.forward_tail(x, values_only, sample_actions=True)
        result["new_rnn_states"] = new_rnn_states
        return result


def make_actor_critic(cfg, obs_space, action_space, *, net_cfg: dict, aux_coef: float) -> MtmoeActorCritic:
    """SF's actor-critic factory signature, with mtmoe's network config bound by functools.partial."""
    return MtmoeActorCritic(obs_space, action_space, cfg, net_config(net_cfg), aux_coef)


def net_config(data: dict) -> NetConfig:
    """A NetConfig from its JSON form (lists back to tuples)."""
    fields = {f.name for f in dataclasses.fields(NetConfig)}
    return NetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields})
