"""The Sample Factory side of a run: ``python -m mtmoe.sf.train RUN_DIR`` (started by mtmoe.sf.run).

Reads ``RUN_DIR/config.json`` (written by the parent), registers the suite's mixture as SF's env
and mtmoe's actor-critic as SF's model, translates the PPO settings into SF's APPO flags, trains
for ``steps`` env steps and writes, from SF's runner process:
- ``metrics.jsonl`` training lines in mtmoe's format (per-task mean raw and normalized return of
  the last 20 episodes, episode counts, steps/s, losses), every ``log_every`` env steps;
- TensorBoard events in ``tb/`` (SF's own summaries stay in ``sf/.summary``);
- ``sf_result.json``: the totals the parent puts into ``summary.json``.
SF's experiment folder (checkpoints, its config) is ``RUN_DIR/sf``.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np

RESULT = "sf_result.json"
SF_DIR = "sf"


def sf_argv(cfg, sf: dict, run_dir: Path, device: str) -> list[str]:
    """SF's command line for a RunConfig (PPO settings mapped onto APPO's) and the SF options."""
    p = cfg.ppo
    slots = sf["num_envs"]
    per_update = slots * p.num_steps  # mtmoe's rollout size: one update per this many samples
    rollout = sf["rollout"]
    batch = max(rollout, (per_update // p.num_minibatches) // rollout * rollout)
    args = dict(
        algo="APPO", env="mtmoe_mixture", experiment=SF_DIR, train_dir=str(run_dir), device=device, seed=cfg.seed,
        num_workers=sf["num_workers"], num_envs_per_worker=sf["envs_per_worker"],
        worker_num_splits=sf["envs_per_worker"], batched_sampling=True, rollout=rollout, recurrence=1, use_rnn=False,
        batch_size=batch, num_batches_per_epoch=p.num_minibatches, num_epochs=p.update_epochs,
        learning_rate=p.learning_rate, adam_eps=p.adam_eps, max_grad_norm=p.max_grad_norm, gamma=p.gamma,
        gae_lambda=p.gae_lambda, ppo_clip_value=p.clip_coef if p.clip_vloss else 1e9,
        ppo_clip_ratio=p.clip_coef,  # SF clips the ratio to [1 / (1 + c), 1 + c], PPO to [1 - c, 1 + c]
        exploration_loss="entropy", exploration_loss_coeff=p.ent_coef,
        value_loss_coeff=0.5 * p.vf_coef,  # SF's value loss has no 1/2
        normalize_input=False, normalize_returns=False, obs_scale=1.0, value_bootstrap=True, reward_scale=1.0,
        reward_clip=1e9, env_gpu_observations=False, train_for_env_steps=cfg.steps,
        save_every_sec=sf["save_every_sec"], keep_checkpoints=1,
        save_best_every_sec=10**9, with_wandb=False, log_to_file=False, experiment_summaries_interval=5,
        stats_avg=20, restart_behavior="overwrite", use_env_info_cache=False,
    )
    return [f"--{k}={v}" for k, v in args.items()] + shlex.split(sf.get("extra", ""))


class Recorder:
    """Per-task episode returns from SF's episodic stats, written as mtmoe training lines."""

    def __init__(self, run_dir: Path, task_names: list[str], total: int, log_every: int):
        from torch.utils.tensorboard import SummaryWriter

        from mtmoe.runner.records import EpisodeLog

        self.run_dir, self.names, self.total, self.log_every = run_dir, task_names, total, log_every
        self.log, self.first = EpisodeLog(task_names), {}
        self.writer = SummaryWriter(str(run_dir / "tb"))
        self.metrics = open(run_dir / "metrics.jsonl", "a")
        self.train: dict = {}
        self.last_log, self.t0, self.stopped, self.step = -1, None, None, 0

    # -- handlers (all run in SF's runner process)
    def episodic(self, runner, msg: dict, policy_id: int) -> None:
        from sample_factory.algo.utils.misc import EPISODIC

        s = msg[EPISODIC]
        if "mtmoe_return" not in s:
            return
        ret, norm, task = (np.atleast_1d(np.asarray(s[k], np.float64)) for k in
                           ("mtmoe_return", "mtmoe_normalized", "mtmoe_task"))
        ok = np.isfinite(ret) & np.isfinite(task)
        self.log.add([{"task": self.names[int(k)], "return": float(r), "normalized": float(n)}
                      for r, n, k in zip(ret[ok], norm[ok], task[ok])])
        for t, m in self.log.means().items():
            if m is not None and t not in self.first:
                self.first[t] = m

    def train_stats(self, runner, msg: dict, policy_id: int) -> None:
        from sample_factory.algo.utils.misc import TRAIN_STATS

        self.train = dict(msg[TRAIN_STATS])
        loss = self.train.get("loss")
        if loss is not None and not math.isfinite(loss) and self.stopped is None:
            self.stopped = f"loss became {loss} at step {runner.env_steps.get(0, 0):,}"
            self.write_line(runner.env_steps.get(0, 0))
            runner._stop_training(failed=True)

    # -- lines
    def write_line(self, step: int) -> None:
        elapsed = time.time() - (self.t0 or time.time())
        tr = self.train
        losses = {"policy_loss": tr.get("policy_loss"), "value_loss": tr.get("value_loss"),
                  "entropy": tr.get("entropy"), "approx_kl": tr.get("kl_divergence"),
                  "clipfrac": tr.get("fraction_clipped"), "learning_rate": tr.get("lr"),
                  "policy_lag": tr.get("version_diff_avg")}
        losses = {k: float(v) for k, v in losses.items() if v is not None}
        line = {"global_step": int(step), "time": round(elapsed, 2), "sps": round(step / max(elapsed, 1e-9), 1),
                **losses, "return": self.log.means(), "normalized": self.log.norm_means(),
                "episodes": dict(self.log.count), "switches": []}
        self.metrics.write(json.dumps(line) + "\n")
        self.metrics.flush()
        for k, v in losses.items():
            if math.isfinite(v):
                self.writer.add_scalar(f"train/{k}", v, step)
        for t, m in self.log.means().items():
            if m is not None:
                self.writer.add_scalar(f"return/{t}", m, step)
        self.last_log, self.step = step, step


def observer(rec: Recorder):
    """An SF AlgoObserver around the Recorder (SF is imported only in the worker process)."""
    from sample_factory.algo.runners.runner import AlgoObserver

    class _Observer(AlgoObserver):
        def on_start(self, runner) -> None:
            rec.t0 = time.time()

        def on_training_step(self, runner, training_iteration_since_resume: int) -> None:
            step = runner.env_steps.get(0, 0)
            if rec.stopped is None and step - max(rec.last_log, 0) >= rec.log_every:
                rec.write_line(step)

        def on_stop(self, runner) -> None:
            step = runner.env_steps.get(0, 0)
            if rec.stopped is None and step != rec.last_log:
                rec.write_line(step)
            elapsed = time.time() - (rec.t0 or time.time())
            result = {"steps": int(step), "train_time_s": round(elapsed, 1),
                      "steps_per_s": round(step / max(elapsed, 1e-9), 1), "first_return": rec.first,
                      "final_return": rec.log.means(), "final_normalized": rec.log.norm_means(),
                      "episodes": dict(rec.log.count), "stopped": rec.stopped}
            (rec.run_dir / RESULT).write_text(json.dumps(result, indent=2))
            rec.metrics.flush()
            rec.writer.flush()

    return _Observer()


def main(argv: list[str]) -> int:
    warnings.filterwarnings("ignore", message=".*Gym has been unmaintained.*")
    from sample_factory.algo.utils.context import global_model_factory
    from sample_factory.algo.utils.misc import ExperimentStatus, TRAIN_STATS
    from sample_factory.cfg.arguments import parse_full_cfg, parse_sf_args
    from sample_factory.envs.env_utils import register_env
    from sample_factory.train import make_runner

    from mtmoe.runner.config import RunConfig
    from mtmoe.sf.env import ENV_NAME, make_env
    from mtmoe.sf.model import make_actor_critic
    from mtmoe.tasks.registry import load_registry

    run_dir = Path(argv[0])
    data = json.loads((run_dir / "config.json").read_text())
    cfg, sf = RunConfig.from_dict(data, str(run_dir / "config.json")), data["sf"]
    registry = load_registry(data.get("tasks_dirs") or [])
    suite = registry.suite(cfg.suite)
    tasks = [registry.task(t) for t in suite.tasks]
    register_env(ENV_NAME, partial(make_env, suite=suite, tasks=tasks, slots_per_task=sf["slots_per_task"],
                                   seed=cfg.seed))
    global_model_factory().register_actor_critic_factory(
        partial(make_actor_critic, net_cfg=data["net"], aux_coef=cfg.ppo.aux_coef))

    args = sf_argv(cfg, sf, run_dir, sf["device"])
    parser, _ = parse_sf_args(args)
    sf_cfg = parse_full_cfg(parser, args)
    if cfg.ppo.anneal_lr:  # in SF 2.1.1's code, not in its argparse choices
        sf_cfg.lr_schedule = "linear_decay"
    sf_cfg, runner = make_runner(sf_cfg)
    rec = Recorder(run_dir, [t.id for t in tasks], cfg.steps, cfg.log_every)
    runner.register_observer(observer(rec))
    runner.register_episodic_stats_handler(rec.episodic)
    # register_policy_msg_handler() of SF 2.1.1 replaces the handler list by the function (it then fails
    # on the next message), so append to the list as register_episodic_stats_handler() does
    runner.policy_msg_handlers.setdefault(TRAIN_STATS, []).append(rec.train_stats)
    status = runner.init()
    if status == ExperimentStatus.SUCCESS:
        status = runner.run()
    rec.metrics.close()
    rec.writer.close()
    return 0 if status == ExperimentStatus.SUCCESS or rec.stopped else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
