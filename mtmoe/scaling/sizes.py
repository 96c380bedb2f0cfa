"""Size families: the dense baseline whose width grows to match an MoE network's parameters.

In a scaling sweep (``--experts 1,4,16`` and/or ``--expert-widths …``) every MoE size has a
dense twin: placement ``none`` with all hidden layers of one width w, w chosen so that the
critic tower (the network the algorithm registers as its critic: PPO's critic tower, SAC's
Q network) has the parameter count closest to that tower with the
MoE in it at that size. So "none" also grows along the size axis, and returns can be read
against parameters for every placement.
"""

from __future__ import annotations

import dataclasses

from mtmoe.nets import NetConfig


def _critic_params(cfg: NetConfig, algo: str, obs_space, act_space) -> int:
    from mtmoe.agents.registry import critic_params

    return critic_params(algo, obs_space, act_space, cfg)


def matched_hidden(moe_cfg: NetConfig, algo: str, obs_space, act_space, max_width: int = 1 << 16) -> tuple[int, ...]:
    """Hidden widths (w, …, w) of a dense network whose critic has about as many parameters as
    the critic of `moe_cfg` with its MoE (placement forced to 'both' for the count)."""
    from mtmoe.nets.actor_critic import resolve_config

    moe = dataclasses.replace(moe_cfg, placement="both")
    target = _critic_params(moe, algo, obs_space, act_space)
    layers = len(resolve_config(moe, obs_space).hidden)
    dense = dataclasses.replace(moe_cfg, placement="none")

    def params(w: int) -> int:
        return _critic_params(dataclasses.replace(dense, hidden=(w,) * layers), algo, obs_space, act_space)

    hi = 1
    while params(hi) < target and hi < max_width:  # doubling first: huge widths are slow to build
        hi *= 2
    lo = max(1, hi // 2)
    while lo < hi:  # parameters grow with w: find the first w reaching the target
        mid = (lo + hi) // 2
        if params(mid) < target:
            lo = mid + 1
        else:
            hi = mid
    best = min((w for w in (lo - 1, lo) if w >= 1), key=lambda w: abs(params(w) - target))
    return (best,) * layers


def size_tag(cfg: NetConfig) -> str:
    """The MoE network a dense twin matches: 'e4-w256' for SoftMoE at the penultimate layer (experts,
    width; width 0 = the default expert width), '<moe>-<position>-e4-w0' for any other kind or
    position (e.g. 'softmoe-big-e4-w0')."""
    size = f"e{cfg.experts_for()}-w{cfg.expert_width}"
    kind = match_kind(cfg.moe, cfg.position)
    return f"{kind}-{size}" if kind else size


def match_kind(moe: str, position: str) -> str:
    """The kind part of a size tag: '' for SoftMoE at the penultimate layer (the tags of the first
    size sweeps), '<moe>-<position>' for any other."""
    return "" if (moe, position) == ("softmoe", "penultimate") else f"{moe}-{position}"


def parse_size_tag(tag: str) -> tuple[str, int, int]:
    """size_tag's inverse: (kind, experts, width); ('', 0, 0) for no tag; a tag that does not end
    in e<experts>-w<width> comes back whole as the kind, with (0, 0), so it is never taken for none."""
    import re

    m = re.fullmatch(r"(?:(?P<kind>.+)-)?e(?P<e>\d+)-w(?P<w>\d+)", tag or "")
    return (m["kind"] or "", int(m["e"]), int(m["w"])) if m else (tag or "", 0, 0)
