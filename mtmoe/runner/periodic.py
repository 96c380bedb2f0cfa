"""What the training loop does besides training: the probes and evaluations on schedule, the
progress display, and the logger's points of training lines and task switches.

TensorBoard tags (and W&B keys): ``train/<stat>`` (the algorithm's losses …) and
``train/steps_per_s``; per task ``return/<task>``, ``normalized/<task>``, ``episode_length/<task>``
and ``success/<task>`` (tasks whose episodes report success, e.g. Meta-World) over the last 20
training episodes; ``probe/…`` (the probe dict, flattened) and per MoE layer the histogram
``expert_load/<layer>`` (one bucket per expert); ``eval/<task>/return|normalized``; in sequential
suites ``schedule/task_index`` at the start and at each switch, with a text entry ``schedule/switch``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque

import numpy as np
import torch

from mtmoe.runner.config import RunConfig


class EpisodeStats:
    """Per task: the lengths and successes of the last finished episodes (for the logger)."""

    def __init__(self, tasks: list[str], window: int = 20):
        self.length = {t: deque(maxlen=window) for t in tasks}
        self.success = {t: deque(maxlen=window) for t in tasks}

    def add(self, episodes: list[dict]) -> None:
        for e in episodes:
            for key in ("length", "success"):
                if key in e:
                    getattr(self, key)[e["task"]].append(e[key])

    def means(self, key: str) -> dict[str, float]:
        return {t: float(np.mean(v)) for t, v in getattr(self, key).items() if v}


def log_training(logger, step: int, stats: dict, steps_per_s: float, log, episodes: EpisodeStats) -> None:
    """One training line's scalars (log: the run's EpisodeLog)."""
    values = {f"train/{k}": v for k, v in stats.items() if k != "global_step"}
    values["train/steps_per_s"] = steps_per_s
    for prefix, means in (("return", log.means()), ("normalized", log.norm_means()),
                          ("episode_length", episodes.means("length")), ("success", episodes.means("success"))):
        values.update({f"{prefix}/{t}": m for t, m in means.items() if m is not None})
    logger.scalars(step, values)


def log_schedule(logger, env, switches: list[dict], start: bool = False) -> None:
    """Mark the task of each new phase: `schedule/task_index` and a text entry (with `start`: the first)."""
    if start and env.schedule:
        first = env.task_names[env.schedule[0].task_index]
        switches = [{"from": None, "to": first, "phase": 0, "step": 0}, *switches]
    for s in switches:
        logger.scalars(s["step"], {"schedule/task_index": env.task_names.index(s["to"]),
                                   "schedule/phase": s["phase"]})
        what = f"starts on {s['to']}" if s["from"] is None else f"switches from {s['from']} to {s['to']}"
        logger.text("schedule/switch", f"step {s['step']:,}: phase {s['phase']} {what}", s["step"])


class Prober:
    """Runs the plasticity/routing probes on schedule and logs them (metrics.jsonl + the logger)."""

    def __init__(self, cfg: RunConfig, env, nets: dict, device: torch.device, logger):
        from mtmoe.runner.probes import collect_probe_batch

        self.every = cfg.probe_every if cfg.probe_every > 0 else max(1, cfg.steps // 20)
        self.enabled = cfg.probe_every >= 0
        self.nets, self.logger, self.names = nets, logger, env.task_names
        self.next, self.last = 0, None
        self.interference = env.mode == "simultaneous" and env.num_tasks > 1  # tasks share each batch
        if self.enabled:
            obs, task = collect_probe_batch(env, cfg.probe_per_task, cfg.seed)
            self.obs, self.task = torch.from_numpy(obs).to(device), torch.from_numpy(task).to(device)

    def maybe(self, step: int, metrics, agent=None) -> None:
        if not self.enabled or step < self.next:
            return
        from mtmoe.runner.probes import flatten, probe

        self.last = probe(self.nets, self.obs, self.task, self.names)
        if self.interference and hasattr(agent, "task_gradient_cosines"):
            self.last["interference"] = agent.task_gradient_cosines()
        metrics.write(json.dumps({"global_step": step, "probe": self.last}) + "\n")
        self.logger.scalars(step, flatten(self.last), "probe/")
        for layer, stats in self.last["moe"].items():
            load = stats.get("expert_load")
            if load:
                edges = np.arange(len(load) + 1) - 0.5  # one bucket per expert
                self.logger.histogram(f"expert_load/{layer}", np.arange(len(load)), step, weights=load, bins=edges)
        self.next = step + self.every


class Evaluation:
    """Evaluation episodes on schedule (and at the end), logged like the probes."""

    def __init__(self, cfg: RunConfig, env, logger):
        from mtmoe.runner.evaluate import Evaluator

        self.every = cfg.eval_every if cfg.eval_every > 0 else max(1, cfg.steps // 10)
        # an evaluation never plays more env steps than the training between two of them
        self.evaluator = (Evaluator(env, cfg.eval_episodes, cfg.seed + 10_000, cfg.eval_max_steps, self.every)
                          if cfg.eval_every >= 0 else None)
        self.logger, self.next, self.last, self.last_step = logger, self.every, None, -1

    def maybe(self, step: int, metrics, agent, final: bool = False) -> None:
        if self.evaluator is None or (step < self.next and not final) or step == self.last_step:
            return
        self.last, self.last_step = self.evaluator.run(agent, step), step
        metrics.write(json.dumps({"global_step": step, "eval": self.last}) + "\n")
        self.logger.scalars(step, {f"eval/{task}/{key}": result[key] for task, result in self.last.items()
                                   for key in ("return", "normalized", "success") if key in result})
        self.next = step + self.every

    def state(self) -> dict:
        ev = self.evaluator
        return {"next": self.next, "last": self.last, "last_step": self.last_step,
                "calls": ev.calls if ev else 0, "curves": ev.curves if ev else {},
                "success_curves": ev.success_curves if ev else {}}

    def load_state(self, state: dict) -> None:
        self.next, self.last, self.last_step = state["next"], state["last"], state["last_step"]
        if self.evaluator is not None:
            self.evaluator.calls, self.evaluator.curves = state["calls"], state["curves"]
            self.evaluator.success_curves = state.get("success_curves", {})

    def nonstationarity(self, env, total_steps: int) -> dict | None:
        if self.evaluator is None or not env.schedule:
            return None
        from mtmoe.runner.evaluate import nonstationarity_summary

        return nonstationarity_summary(self.evaluator.curves, env.schedule, env.task_names, total_steps,
                                      self.evaluator.success_curves)


class Progress:
    """A rich progress bar with steps/s, ETA and the latest per-task returns; a plain line
    every ~10% when not a terminal."""

    def __init__(self, total: int, tasks: list[str], show: bool):
        self.total, self.tasks, self.show = total, tasks, show
        self.next_line = 0
        self.start, self.first_step = time.time(), 0
        if show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[sps]} steps/s"), TimeRemainingColumn(),
                                TextColumn("{task.fields[returns]}"))
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, sps="-", returns="")

    @staticmethod
    def _fmt(means: dict) -> str:
        return "  ".join(f"{t}: {m:.1f}" for t, m in means.items() if m is not None)

    def begin_at(self, step: int) -> None:
        """Training starts (or resumes) at `step`: steps/s and the ETA count only the steps trained from here."""
        self.start, self.first_step = time.time(), step
        if self.show:
            self.bar.reset(self.task, completed=step, sps="-", returns="")

    def update(self, step: int, means: dict) -> None:
        sps = (step - self.first_step) / max(time.time() - self.start, 1e-9)
        if self.show:
            self.bar.update(self.task, completed=step, sps=f"{sps:,.0f}", returns=self._fmt(means))
        elif step >= self.next_line:
            print(f"step {step:,}/{self.total:,}  {sps:,.0f} steps/s  {self._fmt(means)}", file=sys.stderr, flush=True)
            self.next_line = step + max(1, self.total // 10)

    def close(self) -> None:
        if self.show:
            self.bar.stop()
