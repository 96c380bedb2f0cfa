"""Evaluation episodes per task on separate envs, and the non-stationarity metrics built on them.

Evaluation runs a simultaneous twin of the suite's mixture (every task, whatever the suite's
mode) with the agent's deterministic policy until each task has `episodes` finished games, or
a step cap is hit (then a task may report fewer, or none: its score is None). The cap is
`max_vector_steps`, and with `max_env_steps` also that many env steps over all slots.
"""

from __future__ import annotations

import numpy as np

from mtmoe.metrics import forgetting, steps_to_recover, switch_drop
from mtmoe.metrics.continual_world import continual_world_metrics
from mtmoe.tasks.mixture import TaskMixture, simultaneous_twin


class Evaluator:
    def __init__(self, env: TaskMixture, episodes: int, seed: int, max_vector_steps: int = 5000,
                 max_env_steps: int | None = None):
        self.env = simultaneous_twin(env, max(1, min(episodes, 4)))
        self.episodes, self.seed, self.cap = episodes, seed, max_vector_steps
        if max_env_steps is not None:
            self.cap = min(self.cap, max(1, -(-max_env_steps // self.env.num_envs)))
        self.names = env.task_names
        self.calls = 0
        self.curves: dict[str, list[tuple[int, float]]] = {t: [] for t in self.names}
        self.success_curves: dict[str, list[tuple[int, float]]] = {}  # tasks that report success

    def play(self, agent, deterministic: bool = True) -> tuple[dict[str, list[dict]], int]:
        """(each task's first `episodes` finished games (the mixture's episode dicts), vector steps
        played): until every task has them or the cap is hit (then a task may have fewer)."""
        obs, info = self.env.reset(seed=self.seed + 7919 * self.calls)
        self.calls += 1
        done: dict[str, list[dict]] = {t: [] for t in self.names}
        steps = 0
        while steps < self.cap and min(len(v) for v in done.values()) < self.episodes:
            obs, _, _, _, info = self.env.step(agent.act(obs, info, deterministic=deterministic))
            steps += 1
            for e in info.get("episodes", []):
                done[e["task"]].append(e)
        return {t: eps[: self.episodes] for t, eps in done.items()}, steps

    def run(self, agent, step: int) -> dict[str, dict]:
        done, _ = self.play(agent)
        out = {}
        for t, eps in done.items():
            norm = float(np.mean([e["normalized"] for e in eps])) if eps else None
            out[t] = {"return": float(np.mean([e["return"] for e in eps])) if eps else None,
                      "normalized": norm, "episodes": len(eps)}
            if norm is not None:
                self.curves[t].append((step, norm))
            if eps and "success" in eps[0]:
                out[t]["success"] = float(np.mean([e["success"] for e in eps]))
                self.success_curves.setdefault(t, []).append((step, out[t]["success"]))
        return out

    def close(self) -> None:
        self.env.close()


def nonstationarity_summary(curves: dict, schedule, task_names: list[str], total_steps: int,
                            success_curves: dict | None = None) -> dict:
    """Forgetting, drop on return and steps to recover for a sequential run (normalized scores),
    and Continual World's metrics on success rates (on normalized scores for tasks without success)."""
    phases = [(task_names[p.task_index], p.start, p.end if p.end is not None else total_steps) for p in schedule]
    phases = [p for p in phases if p[1] < p[2]]  # a run may stop before its last phase starts
    on_success = bool(success_curves) and all(t in success_curves for t, _, _ in phases)
    cw = continual_world_metrics(success_curves if on_success else curves, phases, total_steps)
    return {"phases": phases, "forgetting": forgetting(curves, phases), "switch_drop": switch_drop(curves, phases),
            "steps_to_recover": steps_to_recover(curves, phases),
            "continual_world": {"score": "success" if on_success else "normalized", **cw}}
