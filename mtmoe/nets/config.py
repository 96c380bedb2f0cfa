"""NetConfig: everything that shapes an actor-critic network, as one typed dataclass.

Each field carries a one-line help text in ``metadata["help"]`` (``NetConfig.help()`` returns
them); the six fields that reach the CLI name their flag in ``metadata["flag"]`` (the CLI defines
its own flags; a test holds them equal). ``mtmoe.nets.resolve_config(cfg, obs_space)`` resolves
``torso="auto"``, ``hidden=None`` and ``num_experts=0`` against the spaces (the builders call it
for you); ``expert_width=0``, ``tokenizer="auto"`` and ``patch_dim=0`` are resolved by the tower
and tokenizer builders.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

PLACEMENTS = ("none", "actor", "critic", "both")
POSITIONS = ("penultimate", "final", "all", "big")
ACTIVATIONS = ("relu", "tanh")
LOG_STD_MODES = ("state_independent", "state_dependent")
TOPK_GROUPS = ("sample", "batch")


def _f(default: Any, help: str, flag: str | None = None) -> Any:
    meta = {"help": help}
    if flag:
        meta["flag"] = flag
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NetConfig:
    """Network configuration (see field help texts; ``NetConfig.help()`` returns them)."""

    torso: str = _f("auto", "torso name: auto | mlp | minatar | nature | impala | any registered torso")
    torso_channels: tuple[int, ...] | None = _f(None, "conv channels of the torso (None = the torso's standard ones)")
    mlp_torso: tuple[int, ...] = _f((), "hidden sizes of the MLP torso for vector obs (the part a shared encoder shares)")
    hidden: tuple[int, ...] | None = _f(None, "dense hidden sizes of each tower after the torso (None = per-torso default)")
    activation: str = _f("relu", "activation of dense layers and experts: relu | tanh")
    placement: str = _f("none", "towers that get MoE layers: none | actor | critic | both", "--placement")
    position: str = _f("penultimate", "where in a tower: penultimate | final | all | big (experts = whole towers)", "--position")
    moe: str = _f("softmoe", "MoE kind: softmoe | topk | task | dense | any registered kind", "--moe")
    num_experts: int = _f(0, "number of experts (0 = auto: num_tasks for 'task', else 4)", "--experts")
    expert_width: int = _f(0, "hidden size of each expert MLP (0 = width of the dense layer it replaces)", "--expert-width")
    tokenizer: str = _f("auto", "per_conv | per_feature | per_sample | per_patch | split (auto: per_conv on maps, split on vectors)", "--tokenizer")
    num_tokens: int = _f(4, "number of tokens when a feature vector is split into tokens")
    patch_size: int = _f(2, "patch side for the per_patch tokenizer")
    patch_dim: int = _f(0, "embedding size of a per_patch token (0 = the map's channel count)")
    capacity_factor: float = _f(1.0, "slots (softmoe) / buffer places (topk) per expert = ceil(k * tokens * cf / experts)")
    slots_per_expert: int = _f(0, "softmoe slots per expert (0 = from capacity_factor)")
    top_k: int = _f(1, "experts per token for topk routing (1 or 2)")
    topk_group: str = _f("sample", "topk routing group: sample (capacity per observation; batch-independent) | batch (capacity over the batch; sparse compute for 1-token inputs)")
    normalize: bool = _f(False, "softmoe: L2-normalize tokens and slot parameters, times a learned scale")
    router_noise: float = _f(0.0, "topk: std of Gaussian noise on router logits in training, times 1/num_experts")
    load_balance_coef: float = _f(0.01, "weight of the load-balancing loss topk layers emit (collect_moe)")
    shared_encoder: bool = _f(False, "actor and critic share the torso (PPO only)")
    task_id_input: bool = _f(False, "concatenate a one-hot task id to the torso features")
    num_tasks: int = _f(1, "number of tasks (one-hot size, task routing, per-task telemetry)")
    task_heads: bool = _f(False, "one output head per task on every tower (multi-head SAC/PPO: the task's head is used)")
    log_std: str = _f("state_independent", "continuous actor: state_independent | state_dependent log std")
    log_std_init: float = _f(0.0, "initial log std (state_independent)")
    log_std_bounds: tuple[float, float] = _f((-5.0, 2.0), "log std range for state_dependent (tanh-squashed into it)")
    ortho_init: bool = _f(True, "orthogonal init (gain sqrt 2 hidden, 0.01 policy head, 1 value head), zero biases")
    telemetry: bool = _f(True, "MoE layers hand their routing telemetry to collect_moe(telemetry=True) blocks")

    # ------------------------------------------------------------------ helpers
    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help text."""
        return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}

    @classmethod
    def cli_flags(cls) -> dict[str, str]:
        """CLI flag -> field name, for the fields that reach the CLI."""
        return {f.metadata["flag"]: f.name for f in dataclasses.fields(cls) if "flag" in f.metadata}

    def replace(self, **changes: Any) -> "NetConfig":
        return dataclasses.replace(self, **changes)

    def moe_in(self, tower: str) -> bool:
        """Whether tower ('actor' | 'critic') gets MoE layers under this placement."""
        return self.placement == "both" or self.placement == tower

    def validate(self) -> None:
        from . import registry

        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if self.moe not in registry.moe_kinds():
            raise ValueError(f"unknown moe kind {self.moe!r}; registered: {sorted(registry.moe_kinds())}")
        if self.torso != "auto" and self.torso not in registry.torsos():
            raise ValueError(f"unknown torso {self.torso!r}; registered: {sorted(registry.torsos())}")
        if self.tokenizer != "auto" and self.tokenizer not in registry.tokenizers():
            raise ValueError(f"unknown tokenizer {self.tokenizer!r}; registered: {sorted(registry.tokenizers())}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}")
        if self.log_std not in LOG_STD_MODES:
            raise ValueError(f"log_std must be one of {LOG_STD_MODES}")
        if self.topk_group not in TOPK_GROUPS:
            raise ValueError(f"topk_group must be one of {TOPK_GROUPS}")
        if self.top_k not in (1, 2):
            raise ValueError("top_k must be 1 or 2")
        if self.num_experts < 0 or self.expert_width < 0 or self.num_tokens < 1:
            raise ValueError("num_experts, expert_width must be >= 0 and num_tokens >= 1")
        if self.capacity_factor <= 0:
            raise ValueError("capacity_factor must be > 0")
        if self.num_tasks < 1:
            raise ValueError("num_tasks must be >= 1")
        if self.hidden is not None and self.position == "penultimate" and len(self.hidden) == 0 \
                and self.placement != "none":
            raise ValueError("position 'penultimate' needs at least one hidden layer")

    def experts_for(self, kind: str | None = None) -> int:
        """Resolved number of experts for an MoE kind."""
        kind = kind or self.moe
        if self.num_experts > 0:
            return self.num_experts
        return self.num_tasks if kind == "task" else 4
