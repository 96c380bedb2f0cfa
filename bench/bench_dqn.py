"""DQN on MinAtar Breakout: mtmoe against Stable-Baselines3, same env, same network, same hyperparameters.

    python bench/bench_dqn.py                          # 100k env steps, seeds 0, 1, 2, both sides
    python bench/bench_dqn.py --seeds 1 --steps 20000  # one short run per side
    python bench/bench_dqn.py --only sb3               # one side alone
    python bench/bench_dqn.py --no-clip                # no gradient clipping (the preset's and the paper's)
    python bench/bench_dqn.py --quick                  # smoke run (2000 steps, learning_starts 500, 1 seed)

Hyperparameters are configs/dqn-minatar.yaml's (the MinAtar paper's DQN, Young & Tian 2019):
one env, replay 100k, `--learning-starts` uniform random steps first (default 5000), batch 32,
gamma 0.99, one-step targets with the max over the target network (Nature DQN: no double DQN,
no dueling head), Huber loss (smooth_l1_loss, mean over the batch), one gradient step per env
step (train_freq 1), the target network copied every 1000 env steps (tau 1), centered RMSprop
(lr 2.5e-4, alpha 0.95, momentum 0.95, eps 0.01), epsilon 1.0 -> 0.1 linearly. Reports env
steps/s of the whole loop (wall clock of `DQN.iterate` / `model.learn`, env and model
construction excluded), of the learning phase (wall clock from env step `--learning-starts` to
the end, every step with a gradient update), and the mean raw return of the last `--last`
training episodes (epsilon-greedy policy) at equal env steps. Each run is its own subprocess
with torch.set_num_threads(--threads), after a warm-up of `--warmup-steps` steps (half random,
half learning) on a throwaway agent.

Fairness, as set up here:
- Env: both sides step mtmoe's `MinAtarEnv("Breakout")` (channels-first (4, 10, 10) uint8 0/1
  observations, sticky actions 0.1, difficulty ramping, minimal action set of 3). mtmoe goes
  through its own vector loop and mixture layer (task `minatar-breakout`, a 10000-step time
  limit); SB3 gets a DummyVecEnv of one such env, TimeLimit(10000) + Monitor, as `make_vec_env`
  builds it (as bench_ppo_vs_sb3.py does). Both bootstrap on truncation (SB3's replay buffer
  handles timeouts; mtmoe stores the final observation). Observations reach both networks as
  0/1 floats (mtmoe scales by 1/high = 1; SB3 does not treat a 0..1 Box as an image, and
  normalize_images=False anyway); both replay buffers store uint8.
- Network: MinAtar's one 16-channel 3x3 stride-1 conv + ReLU, flatten (1024), Linear 128 + ReLU,
  Linear 3; PyTorch's default init on both (mtmoe `NetConfig(torso="minatar", hidden=(128,),
  activation="relu", ortho_init=False)` through `q_network`; SB3 a BaseFeaturesExtractor with
  the same conv and `net_arch=[128]`). The table's `Q params` column checks they match.
- Optimizer: torch's RMSprop(lr 2.5e-4, alpha 0.95, momentum 0.95, eps 0.01, centered) over the
  online Q network on both (SB3: policy_kwargs optimizer_class / optimizer_kwargs, constant lr).
- Gradient clipping: SB3 always clips the global grad norm (max_grad_norm, default 10); the
  preset does not clip. Here mtmoe gets max_grad_norm=10 too, so both sides do the same work;
  `--no-clip` gives the preset's no clipping instead (mtmoe 0, SB3 max_grad_norm=inf, which
  leaves the gradients as they are but still computes their norm).
- Schedule: the first gradient step follows env step learning_starts + 1 on both (mtmoe: due
  updates = global_step - learning_starts; SB3: trains once num_timesteps > learning_starts),
  so both take steps - learning_starts gradient steps; the target is copied whenever the env
  step reaches a multiple of 1000 on both.
- Epsilon: mtmoe decays linearly from 1.0 at env step learning_starts to 0.1 at
  learning_starts + `--epsilon-decay-steps` (the preset's 100k by default); SB3's LinearSchedule
  runs from env step 0 over exploration_fraction x total steps, so it gets exploration_fraction
  = (learning_starts + epsilon_decay_steps) / steps: both reach 0.1 at the same env step (at the
  default 100k steps neither gets there: the run ends at epsilon ~0.14). The start differs (see
  below).

Known differences left in (neither side has a switch for them):
- Epsilon start offset: SB3's epsilon decays from env step 0 (during the random phase too), so
  from learning_starts on it is lower than mtmoe's by 0.9 x learning_starts / (learning_starts +
  epsilon_decay_steps) x (remaining fraction of the decay): ~0.043 at step 5000 by default,
  shrinking linearly to 0 where both reach 0.1. (Matching it exactly would mean replacing
  SB3's `model.exploration_schedule`; SB3 is left stock.)
- Exploring steps: SB3 draws the coin first and skips the Q forward when it explores; mtmoe
  computes the greedy action every step and then picks, one more forward per exploring step
  (a speed cost on mtmoe's side while epsilon is high; the same action distribution).
- Target copy order: SB3 copies in `_on_step`, before the gradient step of that env step; mtmoe
  after it, so SB3's copy lags by one gradient step.
- Replay: mtmoe stores each observation once and reads s' from the next row, so the newest
  transition is not sampled until the next step (and a full ring holds one transition fewer);
  SB3 stores s' separately and samples all stored transitions. Both sample uniformly with
  replacement, from different random streams (as are the random actions: SB3's action_space
  .sample(), mtmoe's uniform over the task's valid actions, here all 3).
- Implementation: mtmoe steps RMSprop with foreach=True; SB3 uses torch's default
  (per-parameter loop on the CPU). The same arithmetic; it shows in steps/s only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (emit_result, machine_line, markdown_table, mean, mean_std, require_sb3, run_worker,  # noqa: E402
                    sb3_learn_clock, single_task_env, timed_iterate, warm_up)

TASK = "minatar-breakout"
GAME = "Breakout"
MAX_EPISODE_STEPS = 10_000  # tasks/minatar.yaml
PRESET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "dqn-minatar.yaml")

# configs/dqn-minatar.yaml; learning_starts and epsilon_decay_steps come from the command line.
HP = dict(buffer_size=100_000, batch_size=32, gamma=0.99, learning_rate=2.5e-4, rmsprop_alpha=0.95,
          rmsprop_momentum=0.95, eps=0.01, target_update_every=1000, epsilon_start=1.0, epsilon_end=0.1)
CONV_CHANNELS, HIDDEN = 16, 128


def preset_mismatches() -> list[str]:
    """Settings of HP (and the fixed ones) that configs/dqn-minatar.yaml no longer holds."""
    import yaml

    with open(PRESET) as f:
        dqn = yaml.safe_load(f)["dqn"]
    fixed = dict(HP, n_step=1, double_dqn=False, dueling=False, loss="huber", optimizer="rmsprop",
                 rmsprop_centered=True, train_freq=1, tau=1.0)
    return [f"{k}: bench {v!r}, preset {dqn.get(k)!r}" for k, v in fixed.items() if dqn.get(k) != v]


# ---------------------------------------------------------------- workers


def run_mtmoe(steps: int, seed: int, learning_starts: int, decay_steps: int, max_grad_norm: float,
              warmup_steps: int, last: int) -> dict:
    import torch

    from mtmoe.agents.dqn import DQN, DQNConfig, q_network
    from mtmoe.nets import NetConfig

    net_cfg = NetConfig(torso="minatar", hidden=(HIDDEN,), activation="relu", ortho_init=False)

    def build(s, starts, decay):
        cfg = DQNConfig(buffer_size=HP["buffer_size"], learning_starts=starts, batch_size=HP["batch_size"],
                        gamma=HP["gamma"], n_step=1, double_dqn=False, dueling=False, loss="huber",
                        optimizer="rmsprop", learning_rate=HP["learning_rate"], eps=HP["eps"],
                        rmsprop_alpha=HP["rmsprop_alpha"], rmsprop_momentum=HP["rmsprop_momentum"],
                        rmsprop_centered=True, max_grad_norm=max_grad_norm, train_freq=1,
                        target_update_every=HP["target_update_every"], tau=1.0, epsilon_start=HP["epsilon_start"],
                        epsilon_end=HP["epsilon_end"], epsilon_decay_steps=decay)
        torch.manual_seed(s)
        env = single_task_env(TASK, 1, algo="dqn")
        q = q_network(env.single_observation_space, env.single_action_space, net_cfg)
        return env, DQN(env, q, cfg, seed=s)

    if warmup_steps:
        warm_up(*build(seed + 10_000, warmup_steps // 2, max(1, warmup_steps // 2)), warmup_steps)
    env, agent = build(seed, learning_starts, decay_steps)
    params = sum(p.numel() for p in agent.q.parameters())
    result = timed_iterate(env, agent, steps, learning_starts, last)
    return dict(result, updates=agent.num_updates, epsilon=agent.epsilon(), params=params)


def run_sb3(steps: int, seed: int, learning_starts: int, decay_steps: int, max_grad_norm: float,
            warmup_steps: int, last: int, threads: int) -> dict:
    import gymnasium as gym
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from stable_baselines3.common.vec_env import DummyVecEnv
    from torch import nn

    from mtmoe.tasks.backends.minatar import MinAtarEnv

    class MinAtarCNN(BaseFeaturesExtractor):
        """MinAtar's torso: one 16-channel 3x3 stride-1 conv, ReLU, flatten (PyTorch default init)."""

        def __init__(self, observation_space: gym.spaces.Box):
            c, h, w = observation_space.shape
            super().__init__(observation_space, features_dim=CONV_CHANNELS * (h - 2) * (w - 2))
            self.cnn = nn.Sequential(nn.Conv2d(c, CONV_CHANNELS, 3, 1), nn.ReLU(), nn.Flatten())

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.cnn(obs)

    def build(s, total, starts, decay):
        env = make_vec_env(lambda: gym.wrappers.TimeLimit(MinAtarEnv(GAME), MAX_EPISODE_STEPS), n_envs=1, seed=s,
                           vec_env_cls=DummyVecEnv)
        model = DQN("MlpPolicy", env, learning_rate=HP["learning_rate"], buffer_size=HP["buffer_size"],
                    learning_starts=starts, batch_size=HP["batch_size"], tau=1.0, gamma=HP["gamma"], train_freq=1,
                    gradient_steps=1, n_steps=1, target_update_interval=HP["target_update_every"],
                    exploration_fraction=(starts + decay) / total,  # epsilon reaches its end where mtmoe's does
                    exploration_initial_eps=HP["epsilon_start"], exploration_final_eps=HP["epsilon_end"],
                    max_grad_norm=max_grad_norm if max_grad_norm > 0 else float("inf"), stats_window_size=last,
                    policy_kwargs=dict(features_extractor_class=MinAtarCNN, net_arch=[HIDDEN], activation_fn=nn.ReLU,
                                       normalize_images=False, optimizer_class=torch.optim.RMSprop,
                                       optimizer_kwargs=dict(alpha=HP["rmsprop_alpha"],
                                                             momentum=HP["rmsprop_momentum"], eps=HP["eps"],
                                                             centered=True)),
                    seed=s, device="cpu", verbose=0)
        return env, model

    if warmup_steps:
        env, model = build(seed + 10_000, warmup_steps, warmup_steps // 2, max(1, warmup_steps // 2))
        model.learn(warmup_steps)
        env.close()
    env, model = build(seed, steps, learning_starts, decay_steps)
    params = sum(p.numel() for p in model.q_net.parameters())
    torch.set_num_threads(threads)  # in case SB3 touched it
    clock = sb3_learn_clock(learning_starts)
    t0 = time.perf_counter()
    model.learn(steps, callback=clock)
    t1 = time.perf_counter()
    env.close()
    # ep_info_buffer: the last `stats_window_size` finished episodes, in order (Monitor's raw returns)
    returns = [float(e["r"]) for e in model.ep_info_buffer]
    episodes = len(env.envs[0].get_episode_rewards())
    return dict(steps=int(model.num_timesteps), wall=t1 - t0, learn_steps=int(model.num_timesteps) - clock.step,
                learn_wall=t1 - clock.t, updates=int(model._n_updates), episodes=episodes, returns=returns[-last:],
                epsilon=float(model.exploration_rate), params=params, threads=torch.get_num_threads())


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    impl, seed = args.worker[0], int(args.worker[1])
    common = (args.steps, seed, args.learning_starts, args.epsilon_decay_steps, 0.0 if args.no_clip else 10.0,
              args.warmup_steps, args.last)
    r = run_mtmoe(*common) if impl == "mtmoe" else run_sb3(*common, args.threads)
    emit_result(dict(impl=impl, seed=seed, load=os.getloadavg()[0], **r))  # 1-min load at the end: contention check


# ---------------------------------------------------------------- parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100_000, help="env steps per run")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument("--only", choices=["mtmoe", "sb3"], default=None, help="run one side alone")
    p.add_argument("--learning-starts", type=int, default=5000, help="uniform random env steps before learning")
    p.add_argument("--epsilon-decay-steps", type=int, default=100_000,
                   help="env steps after learning_starts over which epsilon goes 1.0 -> 0.1 (the preset's 100k)")
    p.add_argument("--no-clip", action="store_true",
                   help="no gradient clipping (the preset's): mtmoe max_grad_norm 0, SB3 inf (default: 10 on both)")
    p.add_argument("--last", type=int, default=100, help="final return = mean of the last N training episodes")
    p.add_argument("--warmup-steps", type=int, default=1000, help="steps of a throwaway agent before timing (0: none)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every run")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2000 steps, learning_starts 500, epsilon decay 1000, 1 seed, short warm-up")
    p.add_argument("--worker", nargs=2, metavar=("IMPL", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.steps, args.seeds, args.learning_starts, args.epsilon_decay_steps, args.warmup_steps = 2000, 1, 500, 1000, 200
    if args.steps <= args.learning_starts:
        p.error("--steps must exceed --learning-starts")

    impls = [i for i in ("mtmoe", "sb3") if args.only in (None, i)]
    require_sb3(impls)
    clip = "none" if args.no_clip else "10 on both"
    decay_end = args.learning_starts + args.epsilon_decay_steps
    print(machine_line(args.threads))
    print(f"DQN MinAtar Breakout, {args.steps} env steps per run, learning_starts {args.learning_starts}, "
          f"epsilon {HP['epsilon_start']} -> {HP['epsilon_end']} at env step {decay_end} "
          f"(SB3 exploration_fraction {decay_end / args.steps:.4g}), grad-norm clip {clip}, seeds 0..{args.seeds - 1}, "
          f"hyperparameters {HP}", flush=True)
    for m in preset_mismatches():
        print(f"  warning: configs/dqn-minatar.yaml differs from this bench: {m}", flush=True)
    results = []
    script = os.path.abspath(__file__)
    for seed in range(args.seeds):
        for impl in impls:
            wargs = ["--worker", impl, str(seed), "--steps", str(args.steps), "--learning-starts",
                     str(args.learning_starts), "--epsilon-decay-steps", str(args.epsilon_decay_steps),
                     "--last", str(args.last), "--warmup-steps", str(args.warmup_steps),
                     "--threads", str(args.threads)] + (["--no-clip"] if args.no_clip else [])
            r = run_worker(script, wargs)
            r["final"] = mean(r["returns"])
            print(f"  {impl:5s} seed {seed}: {r['steps']} steps in {r['wall']:.1f} s ({r['steps'] / r['wall']:.0f} "
                  f"steps/s), learning phase {r['learn_steps']} steps in {r['learn_wall']:.1f} s "
                  f"({r['learn_steps'] / r['learn_wall']:.0f} steps/s), {r['updates']} gradient steps, "
                  f"{r['episodes']} episodes, last-{len(r['returns'])} return {r['final']:.2f}, "
                  f"final epsilon {r['epsilon']:.3f} (threads {r['threads']}, process {r['process_s']:.0f} s, "
                  f"1-min load avg at the end {r['load']:.2f})",
                  flush=True)
            results.append(r)

    base = [r["learn_steps"] / r["learn_wall"] for r in results if r["impl"] == "sb3"]
    base_sps = mean(base) if base else None
    rows = []
    for impl in impls:
        rs = [r for r in results if r["impl"] == impl]
        sps = mean([r["learn_steps"] / r["learn_wall"] for r in rs])
        rows.append([impl, str(rs[0]["params"]), str(rs[0]["steps"]), f"{mean([r['wall'] for r in rs]):.1f}",
                     f"{mean([r['steps'] / r['wall'] for r in rs]):.0f}", f"{sps:.0f}", f"{1000 / sps:.2f}",
                     f"{mean([r['episodes'] for r in rs]):.0f}", mean_std([r["final"] for r in rs]),
                     f"{sps / base_sps:.2f}" if base_sps else "n/a"])
    print()
    print(markdown_table(["implementation", "Q params", "steps", "wall s", "steps/s (all)", "steps/s (learning)",
                          "ms/step (learning)", "episodes",
                          f"final return (last {args.last} ep., mean ± std over {args.seeds} seed(s))",
                          "learning steps/s ÷ SB3"], rows))


if __name__ == "__main__":
    main()
