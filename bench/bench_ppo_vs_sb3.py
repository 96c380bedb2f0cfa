"""PPO on MinAtar Breakout: mtmoe against Stable-Baselines3, same env, same network, same hyperparameters.

    python bench/bench_ppo_vs_sb3.py                   # 500k env steps, 1 seed: mtmoe 64 envs, SB3 64 and 8 envs
    python bench/bench_ppo_vs_sb3.py --seeds 3         # return as mean ± std over seeds 0, 1, 2
    python bench/bench_ppo_vs_sb3.py --only sb3        # one side alone
    python bench/bench_ppo_vs_sb3.py --quick           # smoke run (2 PPO iterations)

Reports (a) env steps/s of the whole training loop (rollouts + updates, wall clock of
`PPO.iterate` / `model.learn`, env and model construction excluded), measured after a warm-up
run of `--warmup-iters` iterations on a throwaway agent in the same process, and (b) the mean
raw return of the last `--last` training episodes at the same number of env steps. Every run
is its own subprocess, torch.set_num_threads(--threads).

Fairness, as set up here:
- Env: both sides step mtmoe's `MinAtarEnv("Breakout")` (channels-first (4, 10, 10) uint8 0/1
  observations, sticky actions 0.1, difficulty ramping, minimal action set of 3). mtmoe goes
  through its own vector loop and mixture layer (task `minatar-breakout`, a 10000-step time
  limit); SB3 gets a DummyVecEnv of the same envs, each TimeLimit(10000) + Monitor, as
  `make_vec_env` builds it. Both bootstrap on truncation. Observations reach both networks as
  0/1 floats (mtmoe scales by 1/high = 1; SB3 does not treat a 0..1 Box as an image, and
  normalize_images=False anyway).
- Network: separate actor and critic MLPs 64x64 tanh on the flattened observation, orthogonal
  init (gain sqrt 2 hidden, 0.01 policy head, 1 value head), zero biases, Adam eps 1e-5, one
  optimizer and one global grad-norm clip over both.
- Loss: SB3's value loss is F.mse_loss (no 1/2), mtmoe's (CleanRL's) is 0.5 * mse, so SB3 gets
  vf_coef / 2 for the same objective. Value clipping is off on both: SB3's clip_range_vf clips
  the prediction only, mtmoe's clip_vloss takes the max of clipped and unclipped losses
  (CleanRL/PPO2), which are different losses.
- Learning rate: linear decay on both, matched update for update: mtmoe sets lr*(1 - k/N) before
  iteration k; SB3 evaluates its schedule after the rollout at progress 1 - (k+1)/N, so SB3 gets
  f(p) = lr * min(1, p + 1/N).
- `--steps` is rounded down to a multiple of every run's envs x n_steps, so all runs stop at the
  same env step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (emit_result, lcm, machine_line, markdown_table, mean, mean_std, require_sb3, run_worker,  # noqa: E402
                    single_task_env)

TASK = "minatar-breakout"
GAME = "Breakout"
MAX_EPISODE_STEPS = 10_000  # tasks/minatar.yaml

# configs/ppo-minatar.yaml (PureJaxRL's MinAtar settings), except: value clipping off (see above).
HP = dict(num_steps=128, learning_rate=5e-3, gamma=0.99, gae_lambda=0.95, update_epochs=4, num_minibatches=8,
          clip_coef=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, adam_eps=1e-5)


# ---------------------------------------------------------------- workers


def run_mtmoe(envs: int, steps: int, seed: int, hp: dict, warmup_iters: int, last: int) -> dict:
    import torch

    from mtmoe.agents.ppo import PPO, PPOConfig
    from mtmoe.nets import NetConfig, build_actor_critic

    cfg = PPOConfig(num_steps=hp["num_steps"], learning_rate=hp["learning_rate"], anneal_lr=True,
                    gamma=hp["gamma"], gae_lambda=hp["gae_lambda"], num_minibatches=hp["num_minibatches"],
                    update_epochs=hp["update_epochs"], norm_adv=True, clip_coef=hp["clip_coef"], clip_vloss=False,
                    ent_coef=hp["ent_coef"], vf_coef=hp["vf_coef"], max_grad_norm=hp["max_grad_norm"],
                    target_kl=None, per_task_reward_norm=False, adam_eps=hp["adam_eps"])
    net_cfg = NetConfig(torso="mlp", hidden=(64, 64), activation="tanh", ortho_init=True)

    def build(s):
        torch.manual_seed(s)
        env = single_task_env(TASK, envs)
        net = build_actor_critic(env.single_observation_space, env.single_action_space, net_cfg)
        return env, PPO(env, net, cfg, seed=s)

    per_iter = envs * hp["num_steps"]
    if warmup_iters:
        env, agent = build(seed + 10_000)
        for _ in agent.iterate(warmup_iters * per_iter):
            pass
        env.close()
    env, agent = build(seed)
    returns = []
    t0 = time.perf_counter()
    for stats in agent.iterate(steps):
        returns += [e["return"] for e in stats["episodes"]]
    wall = time.perf_counter() - t0
    env.close()
    return dict(steps=agent.global_step, wall=wall, episodes=len(returns), returns=returns[-last:],
                threads=torch.get_num_threads())


def run_sb3(envs: int, steps: int, seed: int, hp: dict, warmup_iters: int, last: int) -> dict:
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv
    from torch import nn

    from mtmoe.tasks.backends.minatar import MinAtarEnv

    per_iter = envs * hp["num_steps"]
    batch = per_iter
    if batch % hp["num_minibatches"]:
        raise ValueError(f"envs*n_steps ({batch}) must divide into {hp['num_minibatches']} minibatches")

    def build(s, total):
        n_iters = max(1, total // per_iter)
        lr0 = hp["learning_rate"]

        def lr_schedule(progress_remaining: float) -> float:  # = lr * (1 - k/N) at update k, as mtmoe
            return lr0 * min(1.0, progress_remaining + 1.0 / n_iters)

        env = make_vec_env(lambda: gym.wrappers.TimeLimit(MinAtarEnv(GAME), MAX_EPISODE_STEPS), n_envs=envs, seed=s,
                           vec_env_cls=DummyVecEnv)
        model = PPO("MlpPolicy", env, learning_rate=lr_schedule, n_steps=hp["num_steps"],
                    batch_size=batch // hp["num_minibatches"], n_epochs=hp["update_epochs"], gamma=hp["gamma"],
                    gae_lambda=hp["gae_lambda"], clip_range=hp["clip_coef"], clip_range_vf=None,
                    normalize_advantage=True, ent_coef=hp["ent_coef"],
                    vf_coef=hp["vf_coef"] / 2,  # SB3: vf_coef * mse; mtmoe: vf_coef * 0.5 * mse
                    max_grad_norm=hp["max_grad_norm"], target_kl=None, stats_window_size=last,
                    policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=nn.Tanh,
                                       ortho_init=True, normalize_images=False,
                                       optimizer_kwargs=dict(eps=hp["adam_eps"])),
                    seed=s, device="cpu", verbose=0)
        return env, model

    if warmup_iters:
        env, model = build(seed + 10_000, warmup_iters * per_iter)
        model.learn(warmup_iters * per_iter)
        env.close()
    env, model = build(seed, steps)
    torch.set_num_threads(THREADS)  # in case SB3 touched it
    t0 = time.perf_counter()
    model.learn(steps)
    wall = time.perf_counter() - t0
    env.close()
    # ep_info_buffer: the last `stats_window_size` finished episodes, in order (Monitor's raw returns);
    # the episode count comes from the Monitors.
    returns = [float(e["r"]) for e in model.ep_info_buffer]
    episodes = sum(len(m.get_episode_rewards()) for m in env.envs)
    return dict(steps=int(model.num_timesteps), wall=wall, episodes=episodes, returns=returns[-last:],
                threads=torch.get_num_threads())


THREADS = 2


def worker(args) -> None:
    global THREADS
    import torch

    THREADS = args.threads
    torch.set_num_threads(args.threads)
    impl, envs, seed = args.worker
    hp = dict(HP, learning_rate=args.lr)
    fn = run_mtmoe if impl == "mtmoe" else run_sb3
    r = fn(int(envs), args.steps, int(seed), hp, args.warmup_iters, args.last)
    emit_result(dict(impl=impl, envs=int(envs), seed=int(seed), **r))


# ---------------------------------------------------------------- parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=500_000, help="env steps per run (rounded down to whole iterations of every run)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1")
    p.add_argument("--envs", type=int, default=64, help="parallel envs of both sides")
    p.add_argument("--sb3-extra-envs", type=int, nargs="*", default=[8],
                   help="also run SB3 with these env counts (FACTS.md measured SB3 at 8); none: skip")
    p.add_argument("--only", choices=["mtmoe", "sb3"], default=None, help="run one side alone")
    p.add_argument("--lr", type=float, default=HP["learning_rate"], help="initial learning rate (annealed to 0)")
    p.add_argument("--last", type=int, default=100, help="final return = mean of the last N training episodes")
    p.add_argument("--warmup-iters", type=int, default=1, help="PPO iterations of a throwaway agent before timing")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every run")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 iterations at --envs, 1 seed")
    p.add_argument("--worker", nargs=3, metavar=("IMPL", "ENVS", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    runs = []  # (impl, envs)
    if args.only in (None, "mtmoe"):
        runs.append(("mtmoe", args.envs))
    if args.only in (None, "sb3"):
        runs += [("sb3", args.envs)] + [("sb3", e) for e in args.sb3_extra_envs if e != args.envs]
    require_sb3([impl for impl, _ in runs])
    unit = lcm(*(e * HP["num_steps"] for _, e in runs))
    steps = 2 * args.envs * HP["num_steps"] if args.quick else args.steps
    steps = max(unit, steps // unit * unit)
    seeds = 1 if args.quick else args.seeds

    print(machine_line(args.threads))
    print(f"PPO MinAtar Breakout, {steps} env steps per run (multiple of {unit}), seeds 0..{seeds - 1}, "
          f"hyperparameters {dict(HP, learning_rate=args.lr)}", flush=True)
    results = []
    script = os.path.abspath(__file__)
    for seed in range(seeds):
        for impl, envs in runs:
            wargs = ["--worker", impl, str(envs), str(seed), "--steps", str(steps), "--lr", str(args.lr),
                     "--last", str(args.last), "--warmup-iters", str(args.warmup_iters), "--threads", str(args.threads)]
            r = run_worker(script, wargs)
            r["final"] = mean(r["returns"])
            print(f"  {impl:5s} envs {envs:3d} seed {seed}: {r['steps']} steps in {r['wall']:.1f} s "
                  f"({r['steps'] / r['wall']:.0f} steps/s), {r['episodes']} episodes, "
                  f"last-{len(r['returns'])} return {r['final']:.2f} (threads {r['threads']})", flush=True)
            results.append(r)

    base = [r["steps"] / r["wall"] for r in results if r["impl"] == "sb3" and r["envs"] == args.envs]
    base_sps = mean(base) if base else None
    rows = []
    for impl, envs in runs:
        rs = [r for r in results if r["impl"] == impl and r["envs"] == envs]
        sps = mean([r["steps"] / r["wall"] for r in rs])
        rows.append([impl, str(envs), str(rs[0]["steps"]), f"{mean([r['wall'] for r in rs]):.1f}", f"{sps:.0f}",
                     mean_std([r["final"] for r in rs]),
                     f"{sps / base_sps:.2f}" if base_sps else "n/a"])
    print()
    print(markdown_table(["implementation", "envs", "steps", "wall s", "steps/s",
                          f"final return (last {args.last} ep., mean ± std over {seeds} seed(s))",
                          f"steps/s ÷ SB3 ({args.envs} envs)"], rows))
    print("\nSB3 at fewer envs takes more gradient steps per env step (same n_steps and minibatch count),"
          " so its return is not comparable at equal env steps; it is listed for speed.")


if __name__ == "__main__":
    main()
