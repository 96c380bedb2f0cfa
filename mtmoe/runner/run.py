"""One training run: build the suite's mixture, the networks and the agent; train; log.

Results go to ``<out>/<suite>/<run name>/`` (a new folder per run, never overwritten):
``config.json`` (the effective configuration), ``metrics.jsonl`` (one line per log point),
TensorBoard events in ``tb/`` and ``summary.json`` at the end.
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
    """Per-task returns (and successes, for tasks that report them) of finished episodes: the
    window of the last ones, and everything."""

    def __init__(self, tasks: list[str], window: int = 20):
        self.tasks = tasks
        self.recent = {t: deque(maxlen=window) for t in tasks}
        self.recent_norm = {t: deque(maxlen=window) for t in tasks}
        self.recent_success = {t: deque(maxlen=window) for t in tasks}
        self.count = defaultdict(int)

    def add(self, episodes: list[dict]) -> None:
        for e in episodes:
            self.recent[e["task"]].append(e["return"])
            self.recent_norm[e["task"]].append(e["normalized"])
            if "success" in e:
                self.recent_success[e["task"]].append(e["success"])
            self.count[e["task"]] += 1

    def __setstate__(self, state: dict) -> None:  # checkpoints from before success was logged
        self.__dict__.update(state)
        if "recent_success" not in state:
            self.recent_success = {t: deque(maxlen=d.maxlen) for t, d in self.recent.items()}

    def success_means(self) -> dict[str, float] | None:
        """Success rate of the last episodes per task that reports success; None if none does."""
        rates = {t: float(np.mean(v)) for t, v in self.recent_success.items() if v}
        return rates or None

    def means(self) -> dict[str, float | None]:
        return {t: float(np.mean(v)) if v else None for t, v in self.recent.items()}

    def norm_means(self) -> dict[str, float | None]:
        return {t: float(np.mean(v)) if v else None for t, v in self.recent_norm.items()}


CHECKPOINT = "checkpoint.pt"


def train(cfg: RunConfig, registry: Registry, out: Path, progress: bool | None = None,
          resume: Path | None = None, stop_at_step: int | None = None, run_dir: Path | None = None) -> Path:
    """Train and return the run folder. `resume`: a run folder to continue from its checkpoint.
    `run_dir`: train into this folder instead of a new timestamped one (sweeps; it must hold no
    results yet). `stop_at_step`: leave the loop after that step without finishing, as a kill would (tests)."""
    if resume and (resume / "summary.json").is_file():
        raise MtmoeError(f"--resume {resume}: this run is finished (it has a summary.json); nothing to resume — "
                         "start a new run instead")
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
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tb"))
    show = sys.stderr.isatty() if progress is None else progress
    planned = agent.planned_steps(cfg.steps)
    bar = _Progress(planned, env.task_names, show)
    prober = _Prober(cfg, env, agent.probe_networks(), device, writer)
    evaluation = _Evaluation(cfg, env, writer)
    st = _RunState(EpisodeLog(env.task_names))
    if resume:
        env = _restore(run_dir, cfg, env, agent, st, prober, evaluation)
    if progress is not False:
        _announce(cfg, env, agent, planned, device, run_dir)
    ckpt_every = cfg.checkpoint_every if cfg.checkpoint_every > 0 else max(1, cfg.steps // 10)
    next_ckpt = (agent.global_step // ckpt_every + 1) * ckpt_every
    start = time.time() - st.elapsed
    iterator = agent.iterate(cfg.steps, log_every=cfg.log_every)
    with open(run_dir / "metrics.jsonl", "a") as metrics:
        for stats in iterator:
            st.log.add(stats.pop("episodes"))
            switches = stats.pop("switches")
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
                if st.log.success_means():
                    line["success"] = st.log.success_means()
                metrics.write(json.dumps(line) + "\n")
                metrics.flush()
                for k, v in stats.items():
                    if isinstance(v, (int, float)) and k != "global_step":
                        writer.add_scalar(f"train/{k}", v, step)
                for t, m in st.log.means().items():
                    if m is not None:
                        writer.add_scalar(f"return/{t}", m, step)
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
        "final_success": st.log.success_means(),
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
    writer.close()
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

    def __init__(self, log: EpisodeLog):
        self.log, self.first_means = log, {}
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


class _Prober:
    """Runs the plasticity/routing probes on schedule and logs them (metrics.jsonl + TensorBoard)."""

    def __init__(self, cfg: RunConfig, env, nets: dict, device: torch.device, writer):
        from mtmoe.runner.probes import collect_probe_batch

        self.every = cfg.probe_every if cfg.probe_every > 0 else max(1, cfg.steps // 20)
        self.enabled = cfg.probe_every >= 0
        self.nets, self.writer, self.names = nets, writer, env.task_names
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
        for key, value in flatten(self.last).items():
            self.writer.add_scalar(f"probe/{key}", value, step)
        self.next = step + self.every


class _Evaluation:
    """Evaluation episodes on schedule (and at the end), logged like the probes."""

    def __init__(self, cfg: RunConfig, env, writer):
        from mtmoe.runner.evaluate import Evaluator

        self.every = cfg.eval_every if cfg.eval_every > 0 else max(1, cfg.steps // 10)
        # an evaluation never plays more env steps than the training between two of them
        self.evaluator = (Evaluator(env, cfg.eval_episodes, cfg.seed + 10_000, cfg.eval_max_steps, self.every)
                          if cfg.eval_every >= 0 else None)
        self.writer, self.next, self.last, self.last_step = writer, self.every, None, -1

    def maybe(self, step: int, metrics, agent, final: bool = False) -> None:
        if self.evaluator is None or (step < self.next and not final) or step == self.last_step:
            return
        self.last, self.last_step = self.evaluator.run(agent, step), step
        metrics.write(json.dumps({"global_step": step, "eval": self.last}) + "\n")
        for task, result in self.last.items():
            for key in ("return", "normalized", "success"):
                if result.get(key) is not None:
                    self.writer.add_scalar(f"eval/{task}/{key}", result[key], step)
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


class _Progress:
    """A rich progress bar with steps/s, ETA and the latest per-task returns; a plain line
    every ~10% when not a terminal."""

    def __init__(self, total: int, tasks: list[str], show: bool):
        self.total, self.tasks, self.show = total, tasks, show
        self.next_line = 0
        self.start = time.time()
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

    def update(self, step: int, means: dict) -> None:
        sps = step / max(time.time() - self.start, 1e-9)
        if self.show:
            self.bar.update(self.task, completed=step, sps=f"{sps:,.0f}", returns=self._fmt(means))
        elif step >= self.next_line:
            print(f"step {step:,}/{self.total:,}  {sps:,.0f} steps/s  {self._fmt(means)}", file=sys.stderr, flush=True)
            self.next_line = step + max(1, self.total // 10)

    def close(self) -> None:
        if self.show:
            self.bar.stop()
