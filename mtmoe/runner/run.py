"""One training run: build the suite's mixture, the networks and the agent; train; log.

Results go to ``<out>/<suite>/<run name>/`` (a new folder per run, never overwritten):
``config.json`` (the effective configuration), ``metrics.jsonl`` (one line per log point),
TensorBoard events in ``tb/`` (and a W&B run in ``wandb/`` with ``--wandb``; mtmoe.runner.logger)
and ``summary.json`` at the end.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections import defaultdict, deque
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from mtmoe.agents.registry import get_algo
from mtmoe.errors import ConfigError, MtmoeError
from mtmoe.runner.config import RunConfig
from mtmoe.runner.logger import RunLogger, WandbOptions, import_wandb
from mtmoe.runner.periodic import EpisodeStats, Evaluation, Progress, Prober, log_schedule, log_training
from mtmoe.tasks import make_mixture
from mtmoe.tasks.registry import Registry


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MtmoeError("--device cuda: no CUDA device is visible to torch (use --device auto or cpu)")
    return torch.device(name)


def _commit() -> str | None:
    """The git commit of the mtmoe checkout (with '+dirty' for local changes), when it is one."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("+dirty" if dirty else "")) if sha else None


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_name(cfg: RunConfig) -> str:
    """e.g. ppo-critic-softmoe-penultimate-e4-s0 (a -w<width> part when the expert width is set)."""
    n = cfg.net
    kind = "dense" if n.placement == "none" else f"{n.moe}-{n.position}-e{n.experts_for()}"
    if n.expert_width and n.placement != "none":
        kind += f"-w{n.expert_width}"
    if n.placement == "none" and cfg.dense_match:
        kind += f"-match-{cfg.dense_match}"
    return f"{cfg.algo}-{n.placement}-{kind}-s{cfg.seed}"


def new_run_dir(out: Path, cfg: RunConfig, name: str | None = None) -> Path:
    """A fresh folder `<out>/<suite>/<name>-<time>` (name: run_name): results are never overwritten."""
    base = out / cfg.suite / f"{name or run_name(cfg)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    path.mkdir(parents=True)
    return path


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


class EpisodeLog:
    """Per-task returns of finished episodes: the window of the last ones, and everything
    (lengths and successes: periodic.EpisodeStats)."""

    def __init__(self, tasks: list[str], window: int = 20):
        self.tasks = tasks
        self.recent = {t: deque(maxlen=window) for t in tasks}
        self.recent_norm = {t: deque(maxlen=window) for t in tasks}
        self.count = defaultdict(int)

    def add(self, episodes: list[dict]) -> None:
        for e in episodes:
            self.recent[e["task"]].append(e["return"])
            self.recent_norm[e["task"]].append(e["normalized"])
            self.count[e["task"]] += 1


    def means(self) -> dict[str, float | None]:
        return {t: float(np.mean(v)) if v else None for t, v in self.recent.items()}

    def norm_means(self) -> dict[str, float | None]:
        return {t: float(np.mean(v)) if v else None for t, v in self.recent_norm.items()}


CHECKPOINT = "checkpoint.pt"


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
    if run_dir is not None and not resume:
        if any((run_dir / f).exists() for f in ("metrics.jsonl", "summary.json", CHECKPOINT)):
            raise MtmoeError(f"{run_dir} already holds results: resume it or choose another folder")
        run_dir.mkdir(parents=True, exist_ok=True)
    run_dir = resume or run_dir or new_run_dir(out, cfg)
    if not resume:
        (run_dir / "config.json").write_text(json.dumps({**cfg.to_dict(), "device_resolved": str(device),
                                                         "command": " ".join(sys.argv), "mtmoe_commit": _commit()},
                                                        indent=2))
    logger = RunLogger(run_dir, json.loads((run_dir / "config.json").read_text()), wandb)
    show = sys.stderr.isatty() if progress is None else progress
    planned = agent.planned_steps(cfg.steps)
    bar = Progress(planned, env.task_names, show)
    prober = Prober(cfg, env, agent.probe_networks(), device, logger)
    evaluation = Evaluation(cfg, env, logger)
    st = _RunState(EpisodeLog(env.task_names), EpisodeStats(env.task_names))
    if resume:
        env = _restore(run_dir, cfg, env, agent, st, prober, evaluation)
    else:
        log_schedule(logger, env, [], start=True)
    if progress is not False:
        _announce(cfg, env, agent, planned, device, run_dir)
    ckpt_every = cfg.checkpoint_every if cfg.checkpoint_every > 0 else max(1, cfg.steps // 10)
    next_ckpt = (agent.global_step // ckpt_every + 1) * ckpt_every
    start = time.time() - st.elapsed
    # the agent hands control back at least as often as something is due (evaluations, probes and
    # checkpoints run between its yields); metrics lines stay log_every apart
    due = ([cfg.log_every] + [ckpt_every] * (cfg.checkpoint_every >= 0) + [prober.every] * prober.enabled
           + [evaluation.every] * (evaluation.evaluator is not None))
    iterator = agent.iterate(cfg.steps, log_every=max(1, min(due)))
    with open(run_dir / "metrics.jsonl", "a") as metrics:
        for stats in iterator:
            episodes = stats.pop("episodes")
            st.log.add(episodes)
            st.episode_stats.add(episodes)
            switches = stats.pop("switches")
            log_schedule(logger, env, switches)
            step = stats["global_step"]
            for t, m in st.log.means().items():
                if m is not None and t not in st.first_means:
                    st.first_means[t] = m
            bar.update(step, st.log.means())
            bad = [k for k, v in stats.items() if isinstance(v, float) and not math.isfinite(v) and k != "explained_variance"]
            if bad or step - st.last_log >= cfg.log_every or step >= planned or switches:
                st.last_log = step
                elapsed = time.time() - start
                line = {"global_step": step, "time": round(elapsed, 2),
                        "sps": round(step / max(elapsed - st.measuring, 1e-9), 1),
                        **{k: v for k, v in stats.items() if k != "global_step"},
                        "return": st.log.means(), "normalized": st.log.norm_means(), "episodes": dict(st.log.count),
                        "switches": switches}
                if st.episode_stats.means("success"):  # tasks with a success criterion (Meta-World)
                    line["success"] = st.episode_stats.means("success")
                metrics.write(json.dumps(line) + "\n")
                metrics.flush()
                log_training(logger, step, stats, line["sps"], st.log, st.episode_stats)
            if bad:
                st.stopped = f"{bad[0]} became {stats[bad[0]]} at step {step:,}"
                break
            t0 = time.time()
            prober.maybe(step, metrics, agent)
            evaluation.maybe(step, metrics, agent)
            st.measuring += time.time() - t0
            if cfg.checkpoint_every >= 0 and step >= next_ckpt and step < planned:
                metrics.flush()
                st.elapsed = time.time() - start
                _save(run_dir, env, agent, st, prober, evaluation, metrics.tell())
                next_ckpt = (step // ckpt_every + 1) * ckpt_every
            if stop_at_step is not None and step >= stop_at_step:
                bar.close()
                logger.close()
                env.close()
                return run_dir
    bar.close()
    elapsed = time.time() - start
    if not st.stopped:
        with open(run_dir / "metrics.jsonl", "a") as metrics:
            evaluation.maybe(agent.global_step, metrics, agent, final=True)
            if cfg.checkpoint_every >= 0:  # the finished networks (also for runs shorter than one interval)
                metrics.flush()
                st.elapsed = elapsed
                _save(run_dir, env, agent, st, prober, evaluation, metrics.tell())
    summary = {
        "suite": cfg.suite, "algo": cfg.algo, "placement": cfg.net.placement, "position": cfg.net.position,
        "moe": cfg.net.moe, "seed": cfg.seed, "steps": agent.global_step, "wall_time_s": round(elapsed, 1),
        "eval_and_probe_time_s": round(st.measuring, 1),
        "steps_per_s": round(agent.global_step / max(elapsed - st.measuring, 1e-9), 1), "device": str(device),
        "envs": "tensor" if getattr(env, "on_device", False) else "host",
        "first_return": st.first_means, "final_return": st.log.means(), "final_normalized": st.log.norm_means(),
        "final_success": st.episode_stats.means("success") or None,
        "episodes": dict(st.log.count),
        "param_counts": {name: net.param_counts() for name, net in nets.items()},
        "flops": {**flops, "total": flops["per_env_step"] * agent.global_step} if flops else None,
        "normalization": {t.id: {"low": t.normalization.low, "high": t.normalization.high,
                                 "source": t.normalization.source} for t in env.tasks},
        "stopped": st.stopped,
        "resumed": bool(resume),
        "final_probe": prober.last,
        "eval": evaluation.last,
        "nonstationarity": evaluation.nonstationarity(env, agent.global_step),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.close(failed=bool(st.stopped))
    env.close()
    if evaluation.evaluator is not None:
        evaluation.evaluator.close()
    if st.stopped:
        last = (f"its last good checkpoint is {run_dir / CHECKPOINT}" if (run_dir / CHECKPOINT).is_file()
                else "it stopped before its first checkpoint, so there is none to resume from")
        raise MtmoeError(f"the run stopped: {st.stopped} (non-finite loss); what it logged is in {run_dir}; {last}")
    return run_dir


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


class _RunState:
    """What the loop itself carries from one iteration to the next (saved in checkpoints)."""

    def __init__(self, log: EpisodeLog, episode_stats: EpisodeStats):
        self.log, self.episode_stats, self.first_means = log, episode_stats, {}
        self.last_log, self.measuring, self.elapsed, self.stopped = 0, 0.0, 0.0, None


def _save(run_dir: Path, env, agent, st: _RunState, prober, evaluation, metrics_offset: int) -> None:
    """Write the checkpoint atomically: a kill mid-write leaves the previous one intact."""
    import os
    import pickle

    exact = getattr(env, "exact_pickle", None) or all(getattr(b, "exact_pickle", False) for b in env.backends)
    env_state = pickle.dumps(env) if exact else None  # others: fresh episodes on resume
    state = {"agent": agent.state_dict(), "env": env_state, "run": st.__dict__,
             "prober": (prober.next, prober.last), "evaluation": evaluation.state(),
             "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(), "metrics_offset": metrics_offset}
    tmp = run_dir / (CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, run_dir / CHECKPOINT)


def _restore(run_dir: Path, cfg: RunConfig, env, agent, st: _RunState, prober, evaluation):
    """Load the checkpoint into the freshly built objects; returns the env to train on."""
    import pickle

    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise MtmoeError(f"--resume {run_dir}: no {CHECKPOINT} there (the run wrote none yet)")
    try:
        state = torch.load(path, weights_only=False, map_location=pick_device(cfg.device))
    except Exception as e:  # truncated, empty or foreign file: torch raises many kinds
        reason = (str(e).splitlines() or [""])[0].split(". ")[0][:100]
        raise MtmoeError(f"--resume: {path} is unreadable ({type(e).__name__}: {reason}); "
                         "the run cannot continue from it") from None
    if not isinstance(state, dict) or not {"agent", "run", "metrics_offset"} <= set(state):
        raise MtmoeError(f"--resume: {path} is not an mtmoe checkpoint")
    agent.load_state_dict(state["agent"])
    if state["env"] is not None:
        env.close()
        try:
            env = pickle.loads(state["env"])
        except Exception as e:  # e.g. tensor envs saved on a GPU, resumed where there is none
            raise MtmoeError(f"--resume: the envs saved in {path} cannot be restored here ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:100]})") from None
    else:  # not bit-exact: fresh episodes at the right point of the schedule
        agent.restart_episodes(*env.resume_at(agent.global_step, cfg.seed + agent.global_step))
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
