"""`mtmoe evaluate RUN_DIR`: play a finished (or checkpointed) run's policy and report per task.

The run's ``config.json`` rebuilds its mixture and networks (as `mtmoe run` does, always on the
Python-loop envs), ``checkpoint.pt`` (or ``--checkpoint``) fills the networks, and the Evaluator's
simultaneous twin of the suite plays ``--episodes`` games of every task (the policy's mode, or
samples with ``--stochastic``). A task that has not finished its games within ``--max-steps``
vector steps is reported with the number it did finish. The result goes to
``RUN_DIR/evaluate.json``, or to ``evaluate-1.json``, ``evaluate-2.json`` … when that exists.

``--video DIR`` also plays ``--video-episodes`` games per task on a single render env
(``mtmoe.tasks.render``) wrapped in gymnasium's RecordVideo: mp4s under
``DIR/<run folder>-<json name>/<task>/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtmoe.errors import MtmoeError
from mtmoe.runner.config import RunConfig
from mtmoe.runner.checkpoint import CHECKPOINT
from mtmoe.runner.records import read_config
from mtmoe.runner.run import build_agent, make_env, pick_device, seed_everything


@dataclass(frozen=True)
class EvalRequest:
    run_dir: Path
    episodes: int = 10
    deterministic: bool = True
    checkpoint: Path | None = None
    video: Path | None = None
    video_episodes: int = 1
    video_max_steps: int = 5000
    max_steps: int = 100_000
    seed: int = 0
    device: str = "auto"


def read_checkpoint(path: Path, device: torch.device, what: str = "evaluate") -> dict:
    """The checkpoint's saved agent state (what `agent.state_dict()` wrote) and its global step;
    errors start with `what` (the command)."""
    if not path.is_file():
        raise MtmoeError(f"{what}: no checkpoint at {path} (a run writes {CHECKPOINT} at its end and on "
                         "schedule; this one has none yet, or checkpoint_every=-1)")
    try:
        state = torch.load(path, weights_only=False, map_location=device)
    except Exception as e:  # truncated, empty or foreign file: torch raises many kinds
        reason = (str(e).splitlines() or [""])[0].split(". ")[0][:100]
        raise MtmoeError(f"{what}: {path} is unreadable ({type(e).__name__}: {reason})") from None
    if not isinstance(state, dict) or not isinstance(state.get("agent"), dict):
        raise MtmoeError(f"{what}: {path} is not an mtmoe checkpoint (no 'agent' state)")
    return state["agent"]


def build(cfg: RunConfig, registry, device: torch.device, agent_state: dict, source: Path):
    """(the run's mixture on the Python-loop envs, its agent with the checkpoint's networks)."""
    cfg = dataclasses.replace(cfg, device=str(device), env_device="host")
    seed_everything(cfg.seed)
    env = make_env(cfg, registry, device)
    agent, _ = build_agent(cfg, env, device)
    try:
        agent.load_state_dict(_portable(agent, agent_state))
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        env.close()
        reason = (str(e).splitlines() or [""])[0][:160]
        raise MtmoeError(f"evaluate: {source} does not fit the networks of its config.json "
                         f"({type(e).__name__}: {reason})") from None
    return env, agent


def _portable(agent, state: dict) -> dict:
    """A CUDA generator's state does not fit a CPU generator (or the reverse): a run trained on a GPU
    and evaluated on a CPU keeps the fresh generator, which only seeds --stochastic sampling."""
    mine = getattr(getattr(agent, "generator", None), "get_state", None)
    saved = state.get("generator")
    if mine is not None and isinstance(saved, torch.Tensor) and saved.numel() != mine().numel():
        return {**state, "generator": mine()}
    return state


def task_stats(episodes: list[dict], requested: int) -> dict:
    """Mean ± std of raw returns, normalized mean, success rate (None when the task has none)."""
    returns = [e["return"] for e in episodes]
    success = [e["success"] for e in episodes if "success" in e]
    mean = lambda v: float(np.mean(v)) if v else None  # noqa: E731
    return {"finished": len(episodes), "requested": requested, "return_mean": mean(returns),
            "return_std": float(np.std(returns)) if returns else None,
            "normalized_mean": mean([e["normalized"] for e in episodes]),
            "success_rate": mean(success) if len(success) == len(episodes) and success else None,
            "length_mean": mean([e["length"] for e in episodes]),
            "episodes": [{k: e[k] for k in ("return", "normalized", "length", "success") if k in e} for e in episodes]}


def play(env, agent, req: EvalRequest) -> tuple[dict[str, dict], int]:
    """(per-task stats, vector steps played) over the Evaluator's simultaneous twin of the mixture."""
    from mtmoe.runner.evaluate import Evaluator

    evaluator = Evaluator(env, req.episodes, req.seed, max_vector_steps=req.max_steps)
    try:
        done, steps = evaluator.play(agent, deterministic=req.deterministic)
    finally:
        evaluator.close()
    return {t: task_stats(eps, req.episodes) for t, eps in done.items()}, steps


def numbered_path(run_dir: Path, stem: str = "evaluate") -> Path:
    """<stem>.json, or the first free <stem>-<i>.json: an earlier result is never overwritten."""
    path, i = run_dir / f"{stem}.json", 1
    while path.exists():
        path, i = run_dir / f"{stem}-{i}.json", i + 1
    return path


def write_new(path: Path, data: dict) -> Path:
    """Write to `path`, or to the next free name of its kind should another command have taken it meanwhile."""
    stem = path.stem.rsplit("-", 1)[0] if path.stem.rsplit("-", 1)[-1].isdigit() else path.stem
    while True:
        try:
            with open(path, "x") as f:
                json.dump(data, f, indent=2)
            return path
        except FileExistsError:
            path = numbered_path(path.parent, stem)


# ---------------------------------------------------------------------------------------------- videos


def _policy_input(env, k: int, obs: np.ndarray) -> tuple[np.ndarray, dict]:
    """One render-env observation as the agent sees it: padded to the unified space, with its task."""
    space = env.single_observation_space
    unified = np.zeros((1, *space.shape), space.dtype)
    unified[(0, *(slice(0, n) for n in obs.shape))] = obs
    return unified, {"task_id": np.array([k], np.int64), "action_mask": env.spaces.action_masks[[k]]}


def _local_action(env, k: int, action: np.ndarray):
    """The agent's unified action -> the task's own action (as the mixture maps it)."""
    if env.spaces.discrete:
        return int(env.spaces.to_local[k][int(action[0])])
    return env.rescalers[k](np.asarray(action, np.float32).reshape(1, -1))[0]


def _play_recorded(rec, env, agent, k: int, seed: int, req: EvalRequest) -> dict:
    obs, _ = rec.reset(seed=seed)
    ret, length, success, ended = 0.0, 0, None, False
    while length < req.video_max_steps and not ended:
        unified, info = _policy_input(env, k, obs)
        action = agent.act(unified, info, deterministic=req.deterministic)
        obs, reward, terminated, truncated, step_info = rec.step(_local_action(env, k, action))
        ret, length, ended = ret + float(reward), length + 1, bool(terminated or truncated)
        if "success" in step_info:
            success = bool(success) or bool(step_info["success"])
    out = {"return": ret, "length": length, "cut_at_max_steps": not ended}
    return out if success is None else {**out, "success": float(success)}


def open_render_envs(tasks, req: EvalRequest) -> list:
    """Every task's render env, built (and drawn once) before anything is played: a backend that
    cannot render stops the command before the evaluation's minutes are spent."""
    from mtmoe.tasks.render import make_render_env

    envs = []
    try:
        for k, task in enumerate(tasks):
            envs.append(make_render_env(task, req.seed + 1_000 * (k + 1)))
    except MtmoeError:
        for e in envs:
            e.close()
        raise
    return envs


def record_videos(env, agent, req: EvalRequest, render_envs: list, folder: Path) -> dict[str, list[dict]]:
    """`req.video_episodes` recorded games of every task: {task: [{file, return, length, …}]}."""
    from gymnasium.wrappers import RecordVideo

    out = {}
    for k, (task, renv) in enumerate(zip(env.tasks, render_envs)):
        seed = req.seed + 1_000 * (k + 1)
        rec = RecordVideo(renv, str(folder / task.id), episode_trigger=lambda _: True, name_prefix=task.id,
                          disable_logger=True)
        try:
            games = [_play_recorded(rec, env, agent, k, seed + i, req) for i in range(req.video_episodes)]
        finally:
            rec.close()  # writes the last episode's mp4
        out[task.id] = [{"file": str(folder / task.id / f"{task.id}-episode-{i}.mp4"), **g}
                        for i, g in enumerate(games)]
    return out


def _quiet_video_stack() -> None:
    """No audio or display for pygame's SDL (frames are drawn off screen; SDL complains about
    XDG_RUNTIME_DIR on a headless machine); no pkg_resources notices from pygame and imageio-ffmpeg."""
    import warnings

    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # frames are drawn off screen (rgb_array)
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)


def video_folder(root: Path, run_dir: Path, json_path: Path) -> Path:
    base = root / f"{run_dir.name}-{json_path.stem}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


# ---------------------------------------------------------------------------------------------- report


def print_table(result: dict) -> None:
    from rich.table import Table

    from mtmoe.views import console

    fmt = lambda v, f="{:.2f}": "-" if v is None else f.format(v)  # noqa: E731
    c = result["config"]
    table = Table(title=f"{result['suite']} · {result['algo']} · step {result['global_step']:,} · "
                        f"{c['policy']} policy · {c['episodes']} episode(s) per task")
    for col in ("task", "episodes", "return (mean ± std)", "normalized", "success", "length"):
        table.add_column(col)
    for t, s in result["tasks"].items():
        ret = "-" if s["return_mean"] is None else f"{s['return_mean']:.2f} ± {s['return_std']:.2f}"
        eps = f"{s['finished']}/{s['requested']}" + (" (cap)" if s["finished"] < s["requested"] else "")
        table.add_row(t, eps, ret, fmt(s["normalized_mean"]), fmt(s["success_rate"], "{:.0%}"),
                      fmt(s["length_mean"], "{:.0f}"))
    console.print(table)
    short = [t for t, s in result["tasks"].items() if s["finished"] < s["requested"]]
    if short:
        console.print(f"note: {', '.join(short)} finished fewer than {c['episodes']} episodes within --max-steps "
                      f"{c['max_steps']:,} vector steps (their scores are over the episodes they finished)")
    for t, games in (result.get("videos") or {}).items():
        for g in games:
            cut = f" (cut at {g['length']:,} steps: --video-max-steps)" if g["cut_at_max_steps"] else ""
            won = f", success {g['success']:.0f}" if "success" in g else ""
            console.print(f"video {t}: {g['file']} (return {g['return']:.2f}, {g['length']:,} steps{won}){cut}")


def evaluate_run(req: EvalRequest, registry) -> Path:
    """Evaluate, print the table and write the json; returns its path."""
    start = time.time()
    cfg = read_config(req.run_dir, "evaluate")
    checkpoint = req.checkpoint or req.run_dir / CHECKPOINT
    device = pick_device(req.device)
    if req.video is not None:
        _quiet_video_stack()
        from mtmoe.tasks.render import prepare_video

        prepare_video([registry.task(t) for t in registry.suite(cfg.suite).tasks])
    state = read_checkpoint(checkpoint, device)
    env, agent = build(cfg, registry, device, state, checkpoint)
    try:
        render_envs = open_render_envs(env.tasks, req) if req.video else []
        tasks, steps = play(env, agent, req)
        json_path = numbered_path(req.run_dir)
        videos = (record_videos(env, agent, req, render_envs, video_folder(req.video, req.run_dir, json_path))
                  if req.video else None)
    finally:
        env.close()
    result = {"run_dir": str(req.run_dir), "checkpoint": str(checkpoint), "suite": cfg.suite, "algo": cfg.algo,
              "global_step": int(getattr(agent, "global_step", 0)), "device": str(device),
              "config": {"policy": "deterministic" if req.deterministic else "stochastic",
                         "deterministic": req.deterministic, "episodes": req.episodes, "seed": req.seed,
                         "max_steps": req.max_steps, "vector_steps_played": steps},
              "tasks": tasks, "videos": videos, "wall_time_s": round(time.time() - start, 2)}
    json_path = write_new(json_path, result)
    print_table(result)
    from mtmoe.views import console

    earlier = " (earlier evaluations kept: never overwritten)" if json_path.name != "evaluate.json" else ""
    console.print(f"wrote {json_path}{earlier}")
    return json_path
