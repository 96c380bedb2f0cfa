"""Multi-head towers (NetConfig.task_heads): each row's output is its own task's head, a head
only moves its task's outputs, and MoE placements work with heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from mtmoe.nets import NetConfig, build_sac

OBS = spaces.Box(-1, 1, (6,), np.float32)
ACT = spaces.Box(-1, 1, (2,), np.float32)


def _nets(placement="none", position="penultimate", heads=True):
    cfg = NetConfig(torso="mlp", hidden=(16, 16), num_tasks=3, task_heads=heads, placement=placement,
                    position=position, log_std="state_dependent")
    torch.manual_seed(0)
    return build_sac(OBS, ACT, cfg)


@pytest.mark.parametrize("placement,position", [("none", "penultimate"), ("both", "penultimate"),
                                                ("critic", "final"), ("both", "big")])
def test_a_row_gets_its_tasks_head(placement, position):
    actor, q = _nets(placement, position)
    obs = torch.randn(4, 6).repeat(3, 1)  # the same 4 observations under each of the 3 tasks
    task = torch.arange(3).repeat_interleave(4)
    action = torch.zeros(12, 2)
    out = q(obs, action, task)
    assert out.shape == (12,)
    assert not torch.allclose(out[:4], out[4:8])  # different tasks, different heads
    for k in range(3):  # a batch of one task gives that task's rows of the mixed batch
        sel = task == k
        assert torch.allclose(q(obs[sel], action[sel], task[sel]), out[sel], atol=1e-5)


def test_a_head_moves_only_its_tasks_outputs():
    _, q = _nets()
    head = q.critic_tower.layers[-1]
    weight = next(p for p in head.parameters() if p.dim() == 2)
    obs, action = torch.randn(6, 6), torch.zeros(6, 2)
    task = torch.tensor([0, 0, 1, 1, 2, 2])
    before = q(obs, action, task).detach()
    with torch.no_grad():
        weight[1] += 1.0  # output row 1 = head of task 1 (one Q value per head)
    after = q(obs, action, task).detach()
    moved = ~torch.isclose(before, after)
    assert moved.tolist() == [False, False, True, True, False, False]


def test_heads_multiply_the_head_parameters_only():
    _, q_single = _nets(heads=False)
    _, q_multi = _nets()
    extra = sum(p.numel() for p in q_multi.parameters()) - sum(p.numel() for p in q_single.parameters())
    assert extra == 2 * (16 + 1)  # two more heads of 16 weights and a bias
    with pytest.raises(ValueError, match="task id"):
        q_multi(torch.randn(2, 6), torch.zeros(2, 2))
