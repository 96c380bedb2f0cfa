"""The mtmoe side of a Sample Factory run: configuration, results folder, the SF process under a
timeout, and the results in mtmoe's layout.

``RUN_DIR`` (``<out>/<suite>/sf-appo-<placement>-<kind>-s<seed>-<time>/``) ends up with what
``mtmoe run`` writes — ``config.json`` (``"backend": "sample-factory"``, the SF options and flags),
``metrics.jsonl`` (training lines from SF's episodic stats; at the end one ``eval`` and one
``probe`` line), ``tb/``, ``summary.json`` — plus ``log.txt`` (SF's output) and ``sf/`` (SF's
experiment folder: its checkpoint of the final model and its own summaries). There is no
``checkpoint.pt``: SF runs cannot be resumed with ``--resume``.

The final evaluation (``--score eval``) plays ``eval_episodes`` games per task with the trained
network's deterministic policy, with mtmoe's Evaluator, in this process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from mtmoe.agents.ppo import PPOConfig
from mtmoe.errors import ConfigError, MtmoeError
from mtmoe.runner.config import RunConfig, apply_changes, parse_sets
from mtmoe.runner.records import flops_record, new_run_dir, normalization_of, run_name, write_config, write_summary
from mtmoe.sf import SFOptions, require_sample_factory
from mtmoe.tasks.registry import Registry

BACKEND = "sample-factory"


def split_sets(sets: list[str]) -> tuple[list[str], SFOptions]:
    """`--set` pairs -> (mtmoe's, SFOptions from the `sf.` ones)."""
    ours = [s for s in sets if not s.strip().startswith("sf.")]
    sf = [s.strip()[3:] for s in sets if s.strip().startswith("sf.")]
    opts = apply_changes(SFOptions(), parse_sets(sf), "--set", "sf.") if sf else SFOptions()
    if opts.envs_per_worker not in (1, 2):
        raise ConfigError("--set", "sf.envs_per_worker", "expected 1 or 2 (one SF env per sampling split)")
    return ours, opts


def check_supported(cfg: RunConfig, suite) -> None:
    if not isinstance(cfg.algo_config, PPOConfig):
        raise ConfigError("command line", "algo", "Sample Factory trains APPO only: use --algo ppo, or --backend "
                          "mtmoe for SAC")
    if suite.mode == "sequential":
        raise MtmoeError(f"--backend sample-factory: {suite.name} is a continual (sequential) suite; its task "
                         "switches follow the global step count, which SF's worker processes do not share — "
                         "run continual suites with --backend mtmoe")
    if cfg.ppo.per_task_reward_norm or cfg.ppo.target_kl is not None:
        raise ConfigError("--set", "ppo.per_task_reward_norm", "per_task_reward_norm and target_kl are not available with --backend "
                          "sample-factory")


def plan(cfg: RunConfig, opts: SFOptions, num_tasks: int) -> dict:
    """Workers, SF envs and slots: about cfg.num_envs slots in all, every task in every SF env."""
    from mtmoe.sf.env import plan_slots

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    # by default one worker per core, but no more than it takes to hold every task once in each
    # SF env: more workers would silently grow the training batch (slots x num_steps)
    workers = opts.num_workers or max(1, min(cores, math.ceil(cfg.num_envs / (opts.envs_per_worker * num_tasks))))
    per_task = plan_slots(cfg.num_envs, num_tasks, workers, opts.envs_per_worker)
    return {**dataclasses.asdict(opts), "num_workers": workers, "slots_per_task": per_task,
            "num_envs": workers * opts.envs_per_worker * per_task * num_tasks,
            "timeout_s": opts.timeout_s or int(300 + cfg.steps / 100)}


def run_dir_for(out: Path, cfg: RunConfig) -> Path:
    return new_run_dir(out, cfg, name="sf-appo" + run_name(cfg)[len(cfg.algo):])


def train_sf(cfg: RunConfig, registry: Registry, out: Path, opts: SFOptions | None = None, *,
             tasks_dirs: list[str] = (), run_dir: Path | None = None, progress: bool | None = None) -> Path:
    """Train with Sample Factory's APPO and return the run folder (mtmoe's layout). `cfg`: the
    RunConfig `mtmoe run` composed (as for every backend); `opts`: the `--set sf.KEY=VALUE` options."""
    from mtmoe.runner.run import pick_device

    suite = registry.suite(cfg.suite)
    check_supported(cfg, suite)
    require_sample_factory()
    device = pick_device(cfg.device)
    sf = plan(cfg, opts or SFOptions(), len(suite.tasks))
    sf["device"] = "gpu" if device.type == "cuda" else "cpu"
    cfg = dataclasses.replace(cfg, num_envs=sf["num_envs"])
    from mtmoe.sf.train import sf_argv

    if run_dir is None:
        run_dir = run_dir_for(out, cfg)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
    sf["argv"] = sf_argv(cfg, sf, run_dir, sf["device"])
    write_config(run_dir, cfg, device, backend=BACKEND, sf=sf, tasks_dirs=[str(Path(d).resolve()) for d in tasks_dirs])
    show = sys.stderr.isatty() if progress is None else progress
    start = time.time()
    try:
        _launch(run_dir, cfg, [t for t in suite.tasks], sf["timeout_s"], show)
    finally:
        sf_cfg = run_dir / "sf" / "config.json"
        if sf_cfg.is_file():  # `mtmoe compare` takes any folder with a config.json for a run
            sf_cfg.replace(run_dir / "sf" / "sf_config.json")
    _finish(run_dir, cfg, registry, device, time.time() - start)
    return run_dir


def _launch(run_dir: Path, cfg: RunConfig, tasks: list[str], timeout_s: int, show: bool) -> None:
    """Run `python -m mtmoe.sf.train RUN_DIR` in its own process group; kill the group on timeout
    or Ctrl-C. Progress comes from the metrics lines it writes."""
    from mtmoe.runner.periodic import Progress as _Progress

    bar = _Progress(cfg.steps, tasks, show)
    log_path = run_dir / "log.txt"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mtmoe.sf.train", str(run_dir)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline, seen, scanned = time.time() + timeout_s, 0, 0
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread:  # a killed mtmoe takes SF's processes along
            old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                seen = _progress(run_dir, bar, seen)
                crashed, scanned = _crash_in_log(log_path, scanned)
                if crashed or time.time() > deadline:
                    _kill(proc)
                    why = (f"one of its processes crashed ({_plain(crashed)})" if crashed else
                           f"it did not finish within {timeout_s} s (sf.timeout_s)")
                    raise MtmoeError(f"Sample Factory was stopped: {why}; see {log_path}")
        except BaseException:
            _kill(proc)
            bar.close()
            raise
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, old_term)
    _progress(run_dir, bar, seen)
    bar.close()
    if proc.returncode != 0:
        _kill(proc)  # its workers may outlive it (e.g. when it was OOM-killed)
        tail = "".join((run_dir / "log.txt").read_text(errors="replace").splitlines(keepends=True)[-15:])
        print(tail, file=sys.stderr)
        raise MtmoeError(f"Sample Factory exited with status {proc.returncode}: see {run_dir / 'log.txt'}")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


# SF logs a worker's fatal exception with this line; the worker is gone and SF's main process waits forever
_CRASH_MARK = "Unhandled exception"


def _new_lines(path: Path, offset: int) -> tuple[list[bytes], int]:
    """The complete lines written to `path` after byte `offset` (none while it does not exist), and
    the offset after them: a line still being written is read next time."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return [], offset
    done = chunk[: chunk.rfind(b"\n") + 1]
    return done.splitlines(), offset + len(done)


def _crash_in_log(path: Path, offset: int) -> tuple[str | None, int]:
    """(the first crash line after `offset`, or None; the new offset)."""
    lines, offset = _new_lines(path, offset)
    crashes = (text for text in (line.decode(errors="replace") for line in lines) if _CRASH_MARK in text)
    return next(crashes, None), offset


def _plain(line: str) -> str:
    """A log line without its colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", line).strip()


def _kill(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to SF's process group (its main process and every worker), until it is gone."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        end = time.time() + wait
        while time.time() < end:
            proc.poll()  # reap the main process
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def _progress(run_dir: Path, bar, seen: int) -> int:
    """The progress bar follows the training lines SF's process appends to metrics.jsonl."""
    lines, seen = _new_lines(run_dir / "metrics.jsonl", seen)
    for line in lines:
        rec = json.loads(line)
        if "return" in rec:
            bar.update(rec["global_step"], rec["return"])
    return seen


class _Policy:
    """What mtmoe's Evaluator needs of an agent: act(obs, info, deterministic)."""

    def __init__(self, net, device: torch.device):
        self.net, self.device = net, device

    @torch.no_grad()
    def act(self, obs: np.ndarray, info: dict, deterministic: bool = True) -> np.ndarray:
        task = torch.as_tensor(np.array(info["task_id"]), device=self.device)
        out = self.net.actor(torch.as_tensor(obs, device=self.device), task)
        if not self.net.discrete:
            return out[0].cpu().numpy()
        mask = torch.as_tensor(np.array(info["action_mask"]), device=self.device)
        return out.masked_fill(~mask, torch.finfo(out.dtype).min).argmax(-1).cpu().numpy()


def load_trained_net(run_dir: Path, cfg: RunConfig, env, device: torch.device):
    """(mtmoe's ActorCritic with the weights of SF's last checkpoint, the env steps it was trained on)."""
    from mtmoe.nets import build_actor_critic

    ckpts = sorted((run_dir / "sf" / "checkpoint_p0").glob("checkpoint_*.pth"))
    if not ckpts:
        raise MtmoeError(f"Sample Factory left no checkpoint in {run_dir / 'sf' / 'checkpoint_p0'}")
    ckpt = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
    net = build_actor_critic(env.single_observation_space, env.single_action_space, cfg.net)
    net.load_state_dict({k[len("net."):]: v for k, v in ckpt["model"].items() if k.startswith("net.")})
    return net.to(device).eval(), int(ckpt["env_steps"])


def _finish(run_dir: Path, cfg: RunConfig, registry: Registry, device: torch.device, wall: float) -> None:
    """Final evaluation and probe with mtmoe's tools, then summary.json."""
    from mtmoe.runner.evaluate import Evaluator
    from mtmoe.runner.probes import PROBE_VERSION, collect_probe_batch, probe
    from mtmoe.agents.ppo import ppo_flops
    from mtmoe.runner.run import flops_batch
    from mtmoe.sf.train import RESULT
    from mtmoe.tasks import make_mixture

    if not (run_dir / RESULT).is_file():
        raise MtmoeError(f"Sample Factory ended without writing {RESULT}: see {run_dir / 'log.txt'}")
    res = json.loads((run_dir / RESULT).read_text())
    suite = registry.suite(cfg.suite)
    env = make_mixture(cfg.suite, registry, num_envs=len(suite.tasks))  # one slot per task: spaces, eval, probe
    try:
        net, trained = load_trained_net(run_dir, cfg, env, device)
        # the learner may finish a batch after the runner's last count: the model saw `trained` steps
        step, t0, nets = max(res["steps"], trained), time.time(), {"actor_critic": net}
        sps = round(step / max(res["train_time_s"], 1e-9), 1)
        evaluation = last_probe = None
        with open(run_dir / "metrics.jsonl", "a") as metrics:
            if cfg.eval_every >= 0 and not res["stopped"]:
                evaluator = Evaluator(env, cfg.eval_episodes, cfg.seed + 10_000, cfg.eval_max_steps)
                try:
                    evaluation = evaluator.run(_Policy(net, device), step)
                finally:
                    evaluator.close()
                metrics.write(json.dumps({"global_step": step, "eval": evaluation}) + "\n")
            if cfg.probe_every >= 0:
                obs, task = collect_probe_batch(env, cfg.probe_per_task, cfg.seed)
                last_probe = probe(nets, torch.from_numpy(obs).to(device), torch.from_numpy(task).to(device),
                                   env.task_names)
                metrics.write(json.dumps({"global_step": step, "probe": last_probe}) + "\n")
        measuring = time.time() - t0
        flops = ppo_flops(net, *flops_batch(env, device), cfg.ppo.update_epochs)  # APPO's passes are PPO's
        summary = {
            "suite": cfg.suite, "algo": "appo", "backend": BACKEND, "placement": cfg.net.placement,
            "position": cfg.net.position, "moe": cfg.net.moe, "seed": cfg.seed, "steps": step,
            "wall_time_s": round(wall + measuring, 1), "eval_and_probe_time_s": round(measuring, 1),
            "steps_per_s": sps, "device": str(device),
            "first_return": res["first_return"], "final_return": res["final_return"],
            "final_normalized": res["final_normalized"], "episodes": res["episodes"],
            "param_counts": {name: n.param_counts() for name, n in nets.items()},
            "flops": flops_record(flops, step),
            "normalization": normalization_of(env.tasks),
            "stopped": res["stopped"], "resumed": False, "final_probe": last_probe, "probe_version": PROBE_VERSION,
            "eval": evaluation,
            "nonstationarity": None,
        }
        write_summary(run_dir, summary)
    finally:
        env.close()
    if res["stopped"]:
        raise MtmoeError(f"the run stopped: {res['stopped']} (non-finite loss); what it logged is in {run_dir}")
