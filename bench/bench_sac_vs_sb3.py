"""SAC on HalfCheetah-v5: mtmoe against Stable-Baselines3, same env, same networks, same hyperparameters.

    python bench/bench_sac_vs_sb3.py                   # 20k env steps, 1 seed, both sides
    python bench/bench_sac_vs_sb3.py --seeds 3 --steps 50000
    python bench/bench_sac_vs_sb3.py --only mtmoe      # one side alone
    python bench/bench_sac_vs_sb3.py --quick           # smoke run (1000 steps)

One env, one gradient step per env step, batch 256, buffer 1e6, `--learning-starts` uniform
random steps first (default 100 = SB3's and configs/sac-mujoco.yaml's), automatic temperature
starting at 1.0 with target entropy -dim(A), lr 3e-4 for actor, critics and temperature,
tau 0.005, gamma 0.99, actor and twin critics 256x256 ReLU. Reports env steps/s of the
learning phase (wall clock from env step `--learning-starts` to the end, every step with a
gradient update), of the whole loop, and the mean raw return of the last `--last` training
episodes (stochastic policy, 1000-step episodes) at equal env steps. Each run is its own
subprocess with torch.set_num_threads(--threads), after a warm-up of `--warmup-steps` steps
(half random, half learning) on a throwaway agent.

Fairness, as set up here:
- Env: `gym.make("HalfCheetah-v5")` on both sides (mtmoe through its mujoco backend and mixture
  layer, task `mujoco-halfcheetah`; SB3 through Monitor + DummyVecEnv). Truncation at 1000
  steps bootstraps on both.
- Init: mtmoe's NetConfig defaults to orthogonal init (SB3's PPO convention, with a 0.01 policy
  head); SB3's SAC uses PyTorch's default init, so mtmoe runs with ortho_init=False here
  (`--mtmoe-ortho` restores mtmoe's default).
- Known differences left in (mtmoe has no switch for them): the log std is tanh-squashed into
  [-5, 2] in mtmoe (CleanRL) and clamped to [-20, 2] in SB3; the critic loss is
  mse(q1) + mse(q2) in mtmoe and 0.5 * (mse(q1) + mse(q2)) in SB3 (Adam makes this nearly
  scale-free); the temperature loss is alpha * (entropy - target) in mtmoe (CleanRL) and
  -log_alpha * (log_prob + target) in SB3 (gradient differs by the factor alpha; same fixed
  point); SB3 updates the temperature before the critic, mtmoe after the actor; the first
  gradient step happens at env step learning_starts (mtmoe) vs learning_starts + 1 (SB3).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (emit_result, machine_line, markdown_table, mean, mean_std, require_sb3, run_worker,  # noqa: E402
                    sb3_learn_clock, single_task_env, timed_iterate, warm_up)

TASK = "mujoco-halfcheetah"
ENV_ID = "HalfCheetah-v5"
HP = dict(buffer_size=1_000_000, batch_size=256, gamma=0.99, tau=0.005, lr=3e-4, alpha=1.0)


# ---------------------------------------------------------------- workers


def run_mtmoe(steps: int, seed: int, learning_starts: int, warmup_steps: int, last: int, ortho: bool) -> dict:
    import torch

    from mtmoe.agents.sac import SAC, SACConfig
    from mtmoe.nets import NetConfig, build_q_network, build_sac

    net_cfg = NetConfig(torso="mlp", hidden=(256, 256), activation="relu", log_std="state_dependent", ortho_init=ortho)

    def build(s, starts):
        cfg = SACConfig(buffer_size=HP["buffer_size"], learning_starts=starts, batch_size=HP["batch_size"],
                        gamma=HP["gamma"], tau=HP["tau"], policy_lr=HP["lr"], q_lr=HP["lr"], alpha_lr=HP["lr"],
                        train_freq=1, gradient_steps=1, policy_frequency=1, autotune=True, alpha=HP["alpha"],
                        per_task_alpha=False, target_entropy_scale=1.0, adam_eps=1e-8)
        torch.manual_seed(s)
        env = single_task_env(TASK, 1, algo="sac")
        actor, q1 = build_sac(env.single_observation_space, env.single_action_space, net_cfg)
        q2 = build_q_network(env.single_observation_space, env.single_action_space, net_cfg)
        return env, SAC(env, actor, q1, q2, cfg, seed=s)

    if warmup_steps:
        warm_up(*build(seed + 10_000, warmup_steps // 2), warmup_steps)
    return timed_iterate(*build(seed, learning_starts), steps, learning_starts, last)


def run_sb3(steps: int, seed: int, learning_starts: int, warmup_steps: int, last: int, threads: int) -> dict:
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC
    from torch import nn

    def build(s, starts):
        env = gym.make(ENV_ID)
        model = SAC("MlpPolicy", env, learning_rate=HP["lr"], buffer_size=HP["buffer_size"], learning_starts=starts,
                    batch_size=HP["batch_size"], tau=HP["tau"], gamma=HP["gamma"], train_freq=1, gradient_steps=1,
                    ent_coef="auto_1.0", target_entropy="auto", target_update_interval=1,
                    policy_kwargs=dict(net_arch=[256, 256], activation_fn=nn.ReLU), stats_window_size=last,
                    seed=s, device="cpu", verbose=0)
        return model

    if warmup_steps:
        build(seed + 10_000, warmup_steps // 2).learn(warmup_steps)
    model = build(seed, learning_starts)
    torch.set_num_threads(threads)  # in case SB3 touched it
    clock = sb3_learn_clock(learning_starts)
    t0 = time.perf_counter()
    model.learn(steps, callback=clock)
    t1 = time.perf_counter()
    returns = [float(e["r"]) for e in model.ep_info_buffer]
    monitor = model.get_env().envs[0]
    episodes = len(monitor.get_episode_rewards())
    model.get_env().close()
    return dict(steps=int(model.num_timesteps), wall=t1 - t0, learn_steps=int(model.num_timesteps) - clock.step,
                learn_wall=t1 - clock.t, episodes=episodes, returns=returns[-last:], threads=torch.get_num_threads())


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    impl, seed = args.worker[0], int(args.worker[1])
    if impl == "mtmoe":
        r = run_mtmoe(args.steps, seed, args.learning_starts, args.warmup_steps, args.last, args.mtmoe_ortho)
    else:
        r = run_sb3(args.steps, seed, args.learning_starts, args.warmup_steps, args.last, args.threads)
    emit_result(dict(impl=impl, seed=seed, **r))


# ---------------------------------------------------------------- parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20_000, help="env steps per run")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1")
    p.add_argument("--only", choices=["mtmoe", "sb3"], default=None, help="run one side alone")
    p.add_argument("--learning-starts", type=int, default=100, help="uniform random env steps before learning")
    p.add_argument("--last", type=int, default=5, help="final return = mean of the last N training episodes")
    p.add_argument("--warmup-steps", type=int, default=200, help="steps of a throwaway agent before timing (0: none)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every run")
    p.add_argument("--mtmoe-ortho", action="store_true", help="mtmoe with its default orthogonal init (SB3 has none)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1000 steps, 1 seed, short warm-up")
    p.add_argument("--worker", nargs=2, metavar=("IMPL", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.steps, args.seeds, args.warmup_steps = 1000, 1, 100
    if args.steps <= args.learning_starts:
        p.error("--steps must exceed --learning-starts")

    impls = [i for i in ("mtmoe", "sb3") if args.only in (None, i)]
    require_sb3(impls)
    print(machine_line(args.threads))
    print(f"SAC {ENV_ID}, {args.steps} env steps per run, learning_starts {args.learning_starts}, "
          f"seeds 0..{args.seeds - 1}, hyperparameters {HP}, mtmoe orthogonal init {args.mtmoe_ortho}", flush=True)
    results = []
    script = os.path.abspath(__file__)
    for seed in range(args.seeds):
        for impl in impls:
            wargs = ["--worker", impl, str(seed), "--steps", str(args.steps), "--learning-starts",
                     str(args.learning_starts), "--last", str(args.last), "--warmup-steps", str(args.warmup_steps),
                     "--threads", str(args.threads)] + (["--mtmoe-ortho"] if args.mtmoe_ortho else [])
            r = run_worker(script, wargs)
            r["final"] = mean(r["returns"])
            print(f"  {impl:5s} seed {seed}: {r['steps']} steps in {r['wall']:.1f} s, learning phase "
                  f"{r['learn_steps']} steps in {r['learn_wall']:.1f} s ({r['learn_steps'] / r['learn_wall']:.1f} steps/s), "
                  f"{r['episodes']} episodes, last-{len(r['returns'])} return {r['final']:.1f} "
                  f"(threads {r['threads']})", flush=True)
            results.append(r)

    base = [r["learn_steps"] / r["learn_wall"] for r in results if r["impl"] == "sb3"]
    base_sps = mean(base) if base else None
    rows = []
    for impl in impls:
        rs = [r for r in results if r["impl"] == impl]
        sps = mean([r["learn_steps"] / r["learn_wall"] for r in rs])
        rows.append([impl, "1", str(rs[0]["steps"]), f"{mean([r['wall'] for r in rs]):.1f}",
                     f"{mean([r['steps'] / r['wall'] for r in rs]):.1f}", f"{sps:.1f}",
                     f"{1000 / sps:.1f}", mean_std([r["final"] for r in rs], "{:.1f}"),
                     f"{sps / base_sps:.2f}" if base_sps else "n/a"])
    print()
    print(markdown_table(["implementation", "envs", "steps", "wall s", "steps/s (all)", "steps/s (learning)",
                          "ms/step (learning)", f"final return (last {args.last} ep., mean ± std over {args.seeds} seed(s))",
                          "learning steps/s ÷ SB3"], rows))


if __name__ == "__main__":
    main()
