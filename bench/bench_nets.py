"""Time one PPO-sized update (forward + backward + Adam step, batch 256) per MoE kind and tokenizer.

    python bench/bench_nets.py                       # MinAtar CNN and MLP towers, placement both
    python bench/bench_nets.py --placement critic --position final --iters 20

Prints ms/update (median of --iters timed updates, best of --rounds interleaved rounds, after
warm-up) and the ratio to the dense network (placement none) with the same torso and hidden
sizes. CPU, torch.set_num_threads(2) (--threads). On a shared, loaded machine use
--threads 1 --clock cpu: this process's CPU time, which other processes do not inflate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from gymnasium import spaces

from mtmoe.nets import NetConfig, build_actor_critic, collect_moe

SETUPS = {
    # name: (obs space, action space, tokenizers to try)
    "minatar": (spaces.Box(0, 1, (6, 10, 10), np.uint8), spaces.Discrete(6),
                ["per_conv", "per_feature", "per_sample", "per_patch"]),
    # the ppo-minatar preset's towers (hidden 64, 64): the penultimate MoE sits on a 64-vector
    "minatar-preset": (spaces.Box(0, 1, (6, 10, 10), np.uint8), spaces.Discrete(6), ["split", "per_sample"]),
    "mlp": (spaces.Box(-np.inf, np.inf, (17,), np.float32), spaces.Box(-1, 1, (6,), np.float32),
            ["split", "per_sample"]),
}
KINDS = [  # (label, config changes)
    ("softmoe", {"moe": "softmoe"}),
    ("top1", {"moe": "topk", "top_k": 1}),
    ("top2", {"moe": "topk", "top_k": 2}),
    ("top1-bat", {"moe": "topk", "top_k": 1, "topk_group": "batch"}),  # capacity over the batch
    ("task", {"moe": "task"}),
    ("dense", {"moe": "dense"}),  # routing-free control: one MLP of width experts * expert_width
]


def ppo_update(net, opt, obs, task, act, adv, ret):
    with collect_moe() as moe:
        out, value = net(obs, task)
    if net.discrete:
        dist = torch.distributions.Categorical(logits=out)
    else:
        dist = torch.distributions.Normal(out[0], out[1].exp())
    logp = dist.log_prob(act)
    if logp.dim() > 1:
        logp = logp.sum(-1)
    loss = -(logp * adv).mean() + 0.5 * ((value - ret) ** 2).mean() - 0.01 * dist.entropy().mean()
    loss = loss + moe.aux_loss()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


class Case:
    """One network + optimizer + fixed batch; ``time(iters)`` -> median ms of one update."""

    def __init__(self, obs_space, act_space, cfg, batch, compile_=False, clock=time.perf_counter):
        torch.manual_seed(0)
        self.clock = clock
        self.net = build_actor_critic(obs_space, act_space, cfg)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=3e-4)
        if obs_space.dtype == np.uint8:
            obs = torch.randint(0, int(obs_space.high.max()) + 1, (batch, *obs_space.shape), dtype=torch.uint8)
        else:
            obs = torch.randn(batch, *obs_space.shape)
        task = torch.randint(0, cfg.num_tasks, (batch,))
        act = (torch.randint(0, act_space.n, (batch,)) if isinstance(act_space, spaces.Discrete)
               else torch.randn(batch, *act_space.shape))
        self.args = (obs, task, act, torch.randn(batch), torch.randn(batch))
        self.step = torch.compile(ppo_update) if compile_ else ppo_update
        self.params = self.net.param_counts()["total"]

    def time(self, iters: int) -> float:
        times = []
        for _ in range(iters):
            t0 = self.clock()
            self.step(self.net, self.opt, *self.args)
            times.append((self.clock() - t0) * 1e3)
        return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setups", default="minatar,mlp")
    p.add_argument("--kinds", default="", help="comma-separated subset of " + ",".join(k for k, _ in KINDS))
    p.add_argument("--tokenizers", default="", help="comma-separated subset of each setup's tokenizers")
    p.add_argument("--placement", default="both")
    p.add_argument("--position", default="penultimate")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--expert-width", type=int, default=0, help="0 = width of the replaced dense layer")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--iters", type=int, default=10, help="timed updates per round (median taken)")
    p.add_argument("--rounds", type=int, default=3, help="rounds over all cases; the best round's median is kept")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="torch.compile the update step")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time; cpu: this process's CPU time (steadier on a loaded machine, "
                        "with --threads 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    load0 = os.getloadavg()[0]
    cases: dict[tuple[str, str, str], Case] = {}
    for name in args.setups.split(","):
        obs_space, act_space, toks = SETUPS[name]
        base = NetConfig(num_tasks=4, num_experts=args.experts, expert_width=args.expert_width,
                         hidden=(64, 64) if name == "minatar-preset" else None)
        cases[(name, "none", "-")] = Case(obs_space, act_space, base, args.batch, args.compile, clock)
        for label, extra in KINDS:
            if args.kinds and label not in args.kinds.split(","):
                continue
            for tok in toks:
                if args.tokenizers and tok not in args.tokenizers.split(","):
                    continue
                cfg = base.replace(placement=args.placement, position=args.position, tokenizer=tok, **extra)
                cases[(name, label, tok)] = Case(obs_space, act_space, cfg, args.batch, args.compile, clock)
    for case in cases.values():  # warm-up (and compilation)
        case.time(args.warmup)
    best = {key: float("inf") for key in cases}
    for _ in range(args.rounds):  # interleaved rounds: a busy machine slows every case alike
        for key, case in cases.items():
            best[key] = min(best[key], case.time(args.iters))

    print(f"load average {os.getloadavg()[0]:.2f} (before: {load0:.2f}); "
          f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, placement {args.placement}, "
          f"position {args.position}, {args.experts} experts, expert width {args.expert_width or 'auto'}, "
          f"{args.clock} clock" + (", compiled" if args.compile else ""))
    print(f"{'setup':8s} {'kind':8s} {'tokenizer':12s} {'params':>10s} {'ms/update':>10s} {'x dense':>8s}")
    for (name, label, tok), case in cases.items():
        ms, ms0 = best[(name, label, tok)], best[(name, "none", "-")]
        print(f"{name:8s} {label:8s} {tok:12s} {case.params:>10,d} {ms:>10.1f} {ms / ms0:>8.2f}")


if __name__ == "__main__":
    main()
