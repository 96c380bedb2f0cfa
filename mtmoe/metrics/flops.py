"""Training compute, counted: FLOPs of the networks' actual forward and backward passes.

Counting uses ``torch.utils.flop_counter.FlopCounterMode``, which records the FLOPs of every
matrix product and convolution the network runs (mm/addmm/bmm/baddbmm/conv, forward and
backward, 2 FLOPs per multiply-add); elementwise ops, softmaxes and normalizations are not
counted (they are a small share of a network's arithmetic, and the counter does not model them).

Per env step, the algorithm's use of the network is composed from counted pieces:
  PPO: one forward per collected observation (the rollout) + ``update_epochs`` forward+backward
       passes per collected sample (every epoch visits every sample once).
  SAC: one actor forward per env step (acting) + gradient_steps/train_freq updates per vector
       step, each over a batch: actor forward on s and s', two target-Q forwards on s', two
       Q forward+backward passes (critic loss) and, every ``policy_frequency`` updates, the
       actor loss's Q forwards+backwards and the actor backward.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products and convolutions that fn() runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _outputs(o)]
    return []


def forward_flops(net: torch.nn.Module, *args, **kwargs) -> int:
    # grad mode on: FlopCounterMode's module tracker fails on no-grad outputs of some heads;
    # the graph is dropped at once and forward FLOPs do not depend on it
    flops = count_flops(lambda: net(*args, **kwargs))
    if hasattr(net, "aux_loss"):
        net.aux_loss()
    return flops


def train_flops(net: torch.nn.Module, *args, **kwargs) -> int:
    """Forward + backward (to every parameter) of the sum of the network's float outputs."""
    def step():
        loss = sum(o.float().sum() for o in _outputs(net(*args, **kwargs)) if o.is_floating_point())
        loss.backward()

    flops = count_flops(step)
    net.zero_grad(set_to_none=True)
    if hasattr(net, "aux_loss"):
        net.aux_loss()  # drop what the counting forward recorded
    return flops


def ppo_flops(net, obs: torch.Tensor, task: torch.Tensor, update_epochs: int) -> dict[str, float]:
    """Per env step FLOPs of PPO with this network (obs: a batch of observations)."""
    n = obs.shape[0]
    fwd = forward_flops(net, obs, task) / n
    trn = train_flops(net, obs, task) / n
    return {"forward_per_obs": fwd, "train_per_sample": trn, "per_env_step": fwd + update_epochs * trn}


def sac_flops(actor, q1, q2, obs: torch.Tensor, task: torch.Tensor, action: torch.Tensor | None, cfg,
              num_envs: int) -> dict[str, float]:
    """Per env step FLOPs of SAC (see the module docstring); `action` None for discrete SAC."""
    n = obs.shape[0]
    qa = () if action is None else (action,)
    act_fwd = forward_flops(actor, obs, task) / n
    q_fwd = forward_flops(q1, obs, *qa, task_id=task) / n
    q_trn = train_flops(q1, obs, *qa, task_id=task) / n
    a_trn = train_flops(actor, obs, task) / n
    # critic loss: actor on s' (shared forward with s), 2 target Qs, 2 online Qs trained
    critic = 2 * act_fwd + 2 * q_fwd + 2 * q_trn
    policy = a_trn + 2 * q_trn  # actor loss: backward through both Qs to the actions, then the actor
    per_update = (critic + policy / max(1, cfg.policy_frequency)) * cfg.batch_size
    updates_per_env_step = cfg.gradient_steps / (cfg.train_freq * num_envs)
    return {"forward_per_obs": act_fwd, "per_update": per_update,
            "per_env_step": act_fwd + updates_per_env_step * per_update}
