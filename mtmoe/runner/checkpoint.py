"""``checkpoint.pt``: everything a run needs to continue exactly where it stopped — the agent (networks,
optimizers, replay), the envs when they pickle exactly, the loop's own state, the probe and
evaluation schedules, the RNGs and how far ``metrics.jsonl`` had got.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from mtmoe.errors import MtmoeError
from mtmoe.runner.records import EpisodeLog

CHECKPOINT = "checkpoint.pt"


class RunState:
    """What the training loop carries from one iteration to the next (saved in checkpoints)."""

    def __init__(self, log: EpisodeLog, episode_stats):
        self.log, self.episode_stats, self.first_means = log, episode_stats, {}
        self.last_log, self.measuring, self.elapsed, self.stopped = 0, 0.0, 0.0, None


def save_checkpoint(run_dir: Path, env, agent, st: RunState, prober, evaluation, metrics_offset: int) -> None:
    """Write the checkpoint atomically: a kill mid-write leaves the previous one intact."""
    exact = getattr(env, "exact_pickle", None) or all(getattr(b, "exact_pickle", False) for b in env.backends)
    env_state = pickle.dumps(env) if exact else None  # others: fresh episodes on resume
    state = {"agent": agent.state_dict(), "env": env_state, "run": st.__dict__,
             "prober": (prober.next, prober.last), "evaluation": evaluation.state(),
             "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(), "metrics_offset": metrics_offset}
    tmp = run_dir / (CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, run_dir / CHECKPOINT)


def _load(path: Path, device: torch.device) -> dict:
    if not path.is_file():
        raise MtmoeError(f"--resume {path.parent}: no {CHECKPOINT} there (the run wrote none yet)")
    try:
        state = torch.load(path, weights_only=False, map_location=device)
    except Exception as e:  # truncated, empty or foreign file: torch raises many kinds
        reason = (str(e).splitlines() or [""])[0].split(". ")[0][:100]
        raise MtmoeError(f"--resume: {path} is unreadable ({type(e).__name__}: {reason}); "
                         "the run cannot continue from it") from None
    if not isinstance(state, dict) or not {"agent", "run", "metrics_offset"} <= set(state):
        raise MtmoeError(f"--resume: {path} is not an mtmoe checkpoint")
    return state


def restore_checkpoint(run_dir: Path, device: torch.device, seed: int, env, agent, st: RunState, prober,
                       evaluation):
    """Load the checkpoint into the freshly built objects; returns the env to train on."""
    path = run_dir / CHECKPOINT
    state = _load(path, device)
    agent.load_state_dict(state["agent"])
    if state["env"] is not None:
        env.close()
        try:
            env = pickle.loads(state["env"])
        except Exception as e:  # e.g. tensor envs saved on a GPU, resumed where there is none
            raise MtmoeError(f"--resume: the envs saved in {path} cannot be restored here ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:100]})") from None
    else:  # not bit-exact: fresh episodes at the right point of the schedule
        agent.restart_episodes(*env.resume_at(agent.global_step, seed + agent.global_step))
    saved_tensor_envs = getattr(env, "on_device", False)
    if saved_tensor_envs != getattr(agent, "on_device", False):
        raise MtmoeError(f"--resume: {path} holds {'tensor' if saved_tensor_envs else 'Python-loop'} envs; resume "
                         f"with env_device={'tensor' if saved_tensor_envs else 'host'} in its config.json")
    agent.env = env
    st.__dict__.update(state["run"])
    prober.next, prober.last = state["prober"]
    evaluation.load_state(state["evaluation"])
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])
    with open(run_dir / "metrics.jsonl", "r+") as f:  # drop lines written after the checkpoint
        f.truncate(state["metrics_offset"])
    return env
