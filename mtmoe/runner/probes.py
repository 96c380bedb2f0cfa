"""Plasticity and routing probes on a fixed probe batch per task.

The probe batch is drawn once at the start of a run, by random valid actions in a
*simultaneous* mixture of the suite's tasks (so a continual suite is probed on every task, not
only on the one it trains now). Every probe point feeds it through the networks and records,
per task and per tower (actor, critic, or q1 …): the τ-dormant fraction over the tower's
hidden layers (Sokar et al. 2023), srank of the last hidden layer (Kumar et al. 2021), the
feature norm, the weight norm; and per MoE layer: the expert load (mean share of each token per
expert), its entropy and the mutual information between task and expert.
"""

from __future__ import annotations

import numpy as np
import torch

from mtmoe.metrics import (dormant_ratio_layers, expert_load_entropy, feature_norm, mutual_information, srank,
                           weight_norms)
from mtmoe.nets.moe.collect import collect_moe
from mtmoe.tasks.mixture import TaskMixture, simultaneous_twin

TAUS = (0.0, 0.025, 0.1)
#: what the probe measures, recorded with every probe's result (runs without it: version 1).
#: 2 (December 2026): whole-tower experts (position 'big') are probed layer by layer, torso and
#: hidden layers, like a dense tower (1: their last hidden layer only), srank per expert tower
#: (1: of their features stacked), and experts no row was routed to are left out of the dormant
#: fraction (1: counted as active, diluting it, e.g. 3x for task routing with 3 experts).
PROBE_VERSION = 2


def collect_probe_batch(env: TaskMixture, per_task: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(obs, task_id) with `per_task` observations of every task, from random valid actions."""
    probe_env = simultaneous_twin(env, min(8, per_task))
    rng = np.random.default_rng(seed)
    obs, info = probe_env.reset(seed=seed + 1)
    seen = {k: [] for k in range(env.num_tasks)}
    while min(len(v) for v in seen.values()) < per_task:
        for row, k in zip(obs, info["task_id"]):
            if len(seen[int(k)]) < per_task:
                seen[int(k)].append(row)
        if probe_env.spaces.discrete:
            actions = np.argmax(rng.random(info["action_mask"].shape) + info["action_mask"], -1)
        else:
            actions = rng.uniform(-1, 1, (probe_env.num_envs, *probe_env.single_action_space.shape)).astype(np.float32)
        for _ in range(int(rng.integers(1, 8))):  # spread the samples over time
            obs, _, _, _, info = probe_env.step(actions)
    probe_env.close()
    tasks = np.repeat(np.arange(env.num_tasks), per_task)
    return np.stack([row for k in range(env.num_tasks) for row in seen[k]]), tasks


@torch.no_grad()
def probe(nets: dict[str, torch.nn.Module], obs: torch.Tensor, task: torch.Tensor, task_names: list[str]) -> dict:
    """Nested dict: {task: {tower: {dormant@τ, srank, feature_norm}}, weight_norm: {tower},
    moe: {layer: {load_entropy, task_mi, expert_load, expert_load_per_task: {task: [per expert]}}}}.
    `nets` maps a name (actor_critic, actor, q1 …) to a network with `probe_activations()`; towers are the ones the network reports (actor,
    critic, encoder for a shared encoder), prefixed by the net's name for Q networks."""
    out: dict = {"tasks": {}, "weight_norm": {}, "moe": {}}
    for name, net in nets.items():
        kwargs = {}
        if getattr(net, "probe_needs_action", False):  # Q(s, a) of continuous actions: probe at a = 0
            kwargs["action"] = torch.zeros(obs.shape[0], net.action_dim, device=obs.device)
        for k, tname in enumerate(task_names):
            sel = task == k
            towers = net.probe_activations(obs[sel], task[sel], **{a: v[sel] for a, v in kwargs.items()})
            for tower, acts in towers.items():
                reps = acts.representations
                if not acts.neurons or not reps:
                    continue
                key = tower if name in ("actor_critic", "actor") else f"{name}.{tower}"
                dormant = dormant_ratio_layers(acts.neurons, TAUS)["overall"]
                ranks = [int(srank(rep)) for rep in reps]  # position 'big': the mean over expert towers
                out["tasks"].setdefault(tname, {})[key] = {
                    **{f"dormant@{tau}": float(v) for tau, v in dormant.items()},
                    "srank": ranks[0] if len(ranks) == 1 else float(np.mean(ranks)),
                    "feature_norm": float(np.mean([float(feature_norm(rep)) for rep in reps]))}
        out["weight_norm"][name] = float(weight_norms(net)[1])
        if getattr(net, "moe_layers", dict)():
            with collect_moe(telemetry=True) as moe:  # its aux losses are dropped with the collector
                net(obs, task_id=task, **kwargs)
            for layer, tel in moe.telemetry().items():
                key = layer if name in ("actor_critic", "actor") else f"{name}.{layer}"
                stats = {"load_entropy": float(expert_load_entropy(tel["load"], normalize=True)),
                         "expert_load": [round(float(x), 6) for x in tel["load"].reshape(-1)]}
                if "gate_probs_per_task" in tel:
                    stats["task_mi"] = float(mutual_information(tel["gate_probs_per_task"], tel["task_count"]))
                if "load_per_task" in tel:  # each task's share of the tokens each expert processed
                    stats["expert_load_per_task"] = {
                        tname: [round(float(x), 6) for x in tel["load_per_task"][k].reshape(-1)]
                        for k, tname in enumerate(task_names) if float(tel["task_count"][k]) > 0}
                out["moe"][key] = stats
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a/b': 1} (for TensorBoard; lists stay lists)."""
    flat = {}
    for k, v in d.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            flat.update(flatten(v, key))
        else:
            flat[key] = v
    return flat
