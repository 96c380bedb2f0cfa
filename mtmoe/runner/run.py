"""One training run: build the suite's mixture, the networks and the agent; train; log.

Results go to ``<out>/<suite>/<run name>/`` (a new folder per run, never overwritten):
``config.json`` (the effective configuration), ``metrics.jsonl`` (one line per log point),
TensorBoard events in ``tb/`` (and a W&B run in ``wandb/`` with ``--wandb``; mtmoe.runner.logger),
``checkpoint.pt`` on schedule and ``summary.json`` at the end.

The pieces: :func:`train` builds and hands over to a :class:`TrainingLoop` (the agent's yields:
training lines, probes, evaluations, checkpoints, progress); folders, config and summary records
are in mtmoe.runner.records, checkpoints in mtmoe.runner.checkpoint, the periodic work
(probes, evaluations, the progress bar) in mtmoe.runner.periodic.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mtmoe.agents.registry import get_algo
from mtmoe.errors import ConfigError, MtmoeError
from mtmoe.runner.checkpoint import CHECKPOINT, RunState, restore_checkpoint, save_checkpoint
from mtmoe.runner.config import RunConfig
from mtmoe.runner.records import (EpisodeLog, flops_record, machine_info, new_run_dir, normalization_of, write_config,
                                  write_summary)
from mtmoe.runner.lock import hold
from mtmoe.runner.logger import RunLogger, WandbOptions, import_wandb
from mtmoe.runner.periodic import EpisodeStats, Evaluation, Progress, Prober, log_schedule, log_training
from mtmoe.runner.probes import PROBE_VERSION
from mtmoe.tasks import make_mixture
from mtmoe.tasks.registry import Registry


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MtmoeError("--device cuda: no CUDA device is visible to torch (use --device auto or cpu)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_env(cfg: RunConfig, registry: Registry, device: torch.device):
    """The run's mixture: tensor envs on the agent's device (a DeviceMixture) or the Python backends.

    Tensor envs pay on a GPU (no host round trip per step); on a CPU, at a preset's 64 envs, the
    Python loop is as fast (per-op cost), so there `auto` keeps the loop."""
    from mtmoe.tasks.device_mixture import has_device_backend

    takes_tensors = get_algo(cfg.algo).tensor_envs
    if cfg.env_device == "tensor":  # asked for explicitly: say why it cannot be
        if not takes_tensors:
            raise ConfigError("--set", "env_device", f"{cfg.algo} does not take tensor envs (use auto or host)")
        if not has_device_backend([registry.task(t) for t in registry.suite(cfg.suite).tasks]):
            raise ConfigError("--set", "env_device", f"not every task of {cfg.suite} has a tensor backend "
                                                     "(MinAtar has one): use auto or host")
    tensor = takes_tensors and (cfg.env_device == "tensor" or (cfg.env_device == "auto" and device.type == "cuda"))
    try:
        return make_mixture(cfg.suite, registry, num_envs=cfg.num_envs, steps=cfg.steps,
                            switch_every=cfg.switch_every or None, device=device if tensor else None)
    except ValueError as e:  # slots or schedule the suite cannot have (e.g. --set num_envs=-3)
        raise ConfigError("--set", "num_envs/switch_every", str(e)) from None


def build_agent(cfg: RunConfig, env, device: torch.device):
    """(the registered algorithm's agent, its networks by name)."""
    agent = get_algo(cfg.algo).build(cfg, env, device)
    return agent, agent.networks()


def flops_batch(env, device: torch.device, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Observations sampled from the observation space (and task 0) to count FLOPs on."""
    space = env.single_observation_space
    obs = torch.from_numpy(np.stack([space.sample() for _ in range(batch)])).to(device)
    return obs, torch.zeros(batch, dtype=torch.long, device=device)


def train(cfg: RunConfig, registry: Registry, out: Path, progress: bool | None = None,
          resume: Path | None = None, stop_at_step: int | None = None, run_dir: Path | None = None,
          wandb: WandbOptions | None = None) -> Path:
    """Train and return the run folder. `resume`: a run folder to continue from its checkpoint.
    `run_dir`: train into this folder instead of a new timestamped one (sweeps; it must hold no
    results yet). `stop_at_step`: leave the loop after that step without finishing, as a kill would (tests).
    `wandb`: also log to Weights & Biases."""
    if resume and (resume / "summary.json").is_file():
        raise MtmoeError(f"--resume {resume}: this run is finished (it has a summary.json); nothing to resume — "
                         "start a new run instead")
    folder = resume or run_dir
    if folder is None:
        return _train(cfg, registry, out, progress, None, stop_at_step, None, wandb)
    with hold(folder):  # one process per run folder (a second sweep on it, a --resume while it runs)
        return _train(cfg, registry, out, progress, resume, stop_at_step, run_dir, wandb)


def _train(cfg: RunConfig, registry: Registry, out: Path, progress: bool | None, resume: Path | None,
           stop_at_step: int | None, run_dir: Path | None, wandb: WandbOptions | None) -> Path:
    if wandb is not None:
        import_wandb()  # before anything is built or written
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    env = make_env(cfg, registry, device)
    if not resume:  # config.json records the envs that ran: a resume (on any machine) uses the same kind
        cfg = dataclasses.replace(cfg, env_device="tensor" if getattr(env, "on_device", False) else "host")
    agent, nets = build_agent(cfg, env, device)
    flops = agent.flops_per_env_step(*flops_batch(env, device))
    run_dir = _run_folder(out, cfg, device, resume, run_dir)
    loop = TrainingLoop(cfg, run_dir, env, agent, device, progress, wandb, resume)
    if loop.run(stop_at_step):
        loop.finish(nets, flops)
    return run_dir


def _run_folder(out: Path, cfg: RunConfig, device: torch.device, resume: Path | None, run_dir: Path | None) -> Path:
    """The folder to train into, with its config.json written (a resumed run keeps its own)."""
    if resume:
        return resume
    if run_dir is not None:
        if any((run_dir / f).exists() for f in ("metrics.jsonl", "summary.json", CHECKPOINT)):
            raise MtmoeError(f"{run_dir} already holds results: resume it or choose another folder")
        run_dir.mkdir(parents=True, exist_ok=True)
    run_dir = run_dir or new_run_dir(out, cfg)
    write_config(run_dir, cfg, device)
    return run_dir


class TrainingLoop:
    """Drives one run's agent: after each of its yields, the training line (every log_every env
    steps, at a switch, or when a loss is no longer finite), probes and evaluations when due, a
    checkpoint on schedule, the progress bar; at the end the final evaluation and summary.json."""

    def __init__(self, cfg: RunConfig, run_dir: Path, env, agent, device: torch.device, progress: bool | None,
                 wandb: WandbOptions | None, resume: Path | None):
        self.cfg, self.run_dir, self.agent, self.device, self.resumed = cfg, run_dir, agent, device, bool(resume)
        self.logger = RunLogger(run_dir, json.loads((run_dir / "config.json").read_text()), wandb)
        self.planned = agent.planned_steps(cfg.steps)
        self.bar = Progress(self.planned, env.task_names, sys.stderr.isatty() if progress is None else progress)
        self.prober = Prober(cfg, env, agent.probe_networks(), device, self.logger)
        self.evaluation = Evaluation(cfg, env, self.logger)
        self.st = RunState(EpisodeLog(env.task_names), EpisodeStats(env.task_names))
        if resume:
            env = restore_checkpoint(run_dir, device, cfg.seed, env, agent, self.st, self.prober, self.evaluation)
        else:
            log_schedule(self.logger, env, [], start=True)
        self.env = env
        if progress is not False:
            _announce(cfg, env, agent, self.planned, device, run_dir)
        self.ckpt_every = cfg.checkpoint_every if cfg.checkpoint_every > 0 else max(1, cfg.steps // 10)
        self.next_ckpt = (agent.global_step // self.ckpt_every + 1) * self.ckpt_every
        self.start = time.time() - self.st.elapsed
        self.bar.begin_at(agent.global_step)  # a resumed run: not the steps of before

    def yield_every(self) -> int:
        """The agent hands control back at least as often as something is due (evaluations, probes
        and checkpoints run between its yields); training lines stay log_every apart."""
        cfg = self.cfg
        due = ([cfg.log_every] + [self.ckpt_every] * (cfg.checkpoint_every >= 0) + [self.prober.every] * self.prober.enabled
               + [self.evaluation.every] * (self.evaluation.evaluator is not None))
        return max(1, min(due))

    def run(self, stop_at_step: int | None = None) -> bool:
        """Train to the planned step (True), or stop after `stop_at_step` as a kill would (False;
        the checkpoint and metrics stay as they were)."""
        with open(self.run_dir / "metrics.jsonl", "a") as metrics:
            for stats in self.agent.iterate(self.cfg.steps, log_every=self.yield_every()):
                step = stats["global_step"]
                if not self.record(stats, metrics):
                    break
                t0 = time.time()
                self.prober.maybe(step, metrics, self.agent)
                self.evaluation.maybe(step, metrics, self.agent)
                self.st.measuring += time.time() - t0
                self.maybe_checkpoint(step, metrics)
                if stop_at_step is not None and step >= stop_at_step:
                    self.bar.close()
                    self.logger.close()
                    self.env.close()
                    return False
        self.bar.close()
        return True

    def record(self, stats: dict, metrics) -> bool:
        """Take one yield's episodes and switches; write a training line when one is due. False when
        a loss is no longer finite (the run stops, `st.stopped` says why)."""
        st, step = self.st, stats["global_step"]
        episodes = stats.pop("episodes")
        st.log.add(episodes)
        st.episode_stats.add(episodes)
        switches = stats.pop("switches")
        log_schedule(self.logger, self.env, switches)
        for t, m in st.log.means().items():
            if m is not None and t not in st.first_means:
                st.first_means[t] = m
        self.bar.update(step, st.log.means())
        bad = [k for k, v in stats.items() if isinstance(v, float) and not math.isfinite(v) and k != "explained_variance"]
        if bad or step - st.last_log >= self.cfg.log_every or step >= self.planned or switches:
            st.last_log = step
            line = self.training_line(stats, switches)
            metrics.write(json.dumps(line) + "\n")
            metrics.flush()
            log_training(self.logger, step, stats, line["sps"], st.log, st.episode_stats)
        if bad:
            st.stopped = f"{bad[0]} became {stats[bad[0]]} at step {step:,}"
        return not bad

    def training_line(self, stats: dict, switches: list) -> dict:
        """One metrics.jsonl training line: the agent's statistics and the episode windows."""
        st, step = self.st, stats["global_step"]
        elapsed = time.time() - self.start
        line = {"global_step": step, "time": round(elapsed, 2),
                "sps": round(step / max(elapsed - st.measuring, 1e-9), 1),
                **{k: v for k, v in stats.items() if k != "global_step"},
                "return": st.log.means(), "normalized": st.log.norm_means(), "episodes": dict(st.log.count),
                "switches": switches}
        if st.episode_stats.means("success"):  # tasks with a success criterion (Meta-World)
            line["success"] = st.episode_stats.means("success")
        return line

    def maybe_checkpoint(self, step: int, metrics) -> None:
        if self.cfg.checkpoint_every >= 0 and step >= self.next_ckpt and step < self.planned:
            self.checkpoint(metrics)
            self.next_ckpt = (step // self.ckpt_every + 1) * self.ckpt_every

    def checkpoint(self, metrics, elapsed: float | None = None) -> None:
        metrics.flush()
        self.st.elapsed = time.time() - self.start if elapsed is None else elapsed
        save_checkpoint(self.run_dir, self.env, self.agent, self.st, self.prober, self.evaluation, metrics.tell())

    def finish(self, nets: dict, flops: dict | None) -> None:
        """The final evaluation and checkpoint (unless the run stopped), summary.json, closing; a
        stopped run raises after its records are written."""
        st, agent, run_dir = self.st, self.agent, self.run_dir
        elapsed = time.time() - self.start
        if not st.stopped:
            with open(run_dir / "metrics.jsonl", "a") as metrics:
                self.evaluation.maybe(agent.global_step, metrics, agent, final=True)
                if self.cfg.checkpoint_every >= 0:  # the finished networks (also for runs shorter than one interval)
                    self.checkpoint(metrics, elapsed)
        write_summary(run_dir, self.summary(elapsed, nets, flops))
        self.logger.close(failed=bool(st.stopped))
        self.env.close()
        if self.evaluation.evaluator is not None:
            self.evaluation.evaluator.close()
        if st.stopped:
            last = (f"its last good checkpoint is {run_dir / CHECKPOINT}" if (run_dir / CHECKPOINT).is_file()
                    else "it stopped before its first checkpoint, so there is none to resume from")
            raise MtmoeError(f"the run stopped: {st.stopped} (non-finite loss); what it logged is in {run_dir}; {last}")

    def summary(self, elapsed: float, nets: dict, flops: dict | None) -> dict:
        cfg, st, steps, env = self.cfg, self.st, self.agent.global_step, self.env
        return {
            "suite": cfg.suite, "algo": cfg.algo, "placement": cfg.net.placement, "position": cfg.net.position,
            "moe": cfg.net.moe, "seed": cfg.seed, "steps": steps, "wall_time_s": round(elapsed, 1),
            "eval_and_probe_time_s": round(st.measuring, 1),
            "steps_per_s": round(steps / max(elapsed - st.measuring, 1e-9), 1), "device": str(self.device),
            "machine": machine_info(self.device), "envs": "tensor" if getattr(env, "on_device", False) else "host",
            "first_return": st.first_means, "final_return": st.log.means(), "final_normalized": st.log.norm_means(),
            "final_success": st.episode_stats.means("success") or None,
            "episodes": dict(st.log.count),
            "param_counts": {name: net.param_counts() for name, net in nets.items()},
            "flops": flops_record(flops, steps),
            "normalization": normalization_of(env.tasks),
            "stopped": st.stopped,
            "resumed": self.resumed,
            "final_probe": self.prober.last, "probe_version": PROBE_VERSION,
            "eval": self.evaluation.last,
            "nonstationarity": self.evaluation.nonstationarity(env, steps),
        }


def _announce(cfg: RunConfig, env, agent, planned: int, device: torch.device, run_dir: Path) -> None:
    """One line before the first rollout (which may take minutes), and one when --steps was rounded."""
    per_iter = agent.steps_per_iteration()
    if planned != cfg.steps and not agent.global_step:
        print(f"mtmoe: note: {cfg.steps:,} env steps round to {planned:,} (whole iterations of {per_iter:,} "
              "env steps)", file=sys.stderr)
    what = f"resuming at step {agent.global_step:,} of" if agent.global_step else "for"
    print(f"mtmoe: training {cfg.algo} on {cfg.suite} ({env.num_tasks} task{'s' * (env.num_tasks > 1)}, "
          f"{env.num_envs} envs) {what} {planned:,} env steps on {device}, {per_iter:,} per iteration; "
          f"results in {run_dir}", file=sys.stderr, flush=True)
