"""Run configuration: task -> suite -> preset -> command line, composed into one RunConfig.

Presets are ``configs/<name>.yaml`` with keys ``algo``, ``num_envs``, ``net`` and one section per
registered algorithm (``ppo:``, ``sac:``, …; mtmoe.agents.registry). ``--set key=value`` overrides any field by dotted path (``ppo.learning_rate=1e-3``,
``net.num_experts=8``, ``num_envs=32``); values are read as YAML scalars. Unknown keys and
ill-typed values are errors naming the key.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtmoe.agents.registry import ALGOS, DEFAULT_ALGO, algo_names, get_algo
from mtmoe.errors import ConfigError
from mtmoe.nets import NetConfig
from mtmoe.tasks.registry import Registry
from mtmoe.tasks.schema import SuiteSpec

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class RunConfig:
    suite: str
    """Suite name."""
    algo: str = DEFAULT_ALGO
    """A registered algorithm (mtmoe.agents.registry): ppo | sac | …"""
    preset: str = ""
    """configs/<preset>.yaml that filled the algorithm and network fields."""
    seed: int = 0
    """Seed of envs, networks and sampling."""
    steps: int = 0
    """Env steps (summed over slots) to train for."""
    num_envs: int = 0
    """Env slots."""
    switch_every: int = 0
    """Sequential suites: env steps per phase (0 for simultaneous)."""
    device: str = "auto"
    """auto | cpu | cuda (auto: CUDA when present)."""
    env_device: str = "auto"
    """tensor: PPO steps the envs on the agent's device when every task has a tensor backend (MinAtar); host: the Python backends; auto: tensor on CUDA, host on CPU."""
    log_every: int = 10_000
    """Env steps between metric lines (at least one PPO iteration)."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    checkpoint_every: int = 0
    """Env steps between checkpoints (0: 10 per run; -1: none)."""
    eval_every: int = 0
    """Env steps between evaluations (0: 10 per run; -1: none)."""
    eval_episodes: int = 8
    """Evaluation episodes per task (deterministic policy, separate envs)."""
    eval_max_steps: int = 5000
    """Vector steps one evaluation may take, and never more env steps than eval_every (a task with no finished game by then scores None)."""
    probe_every: int = 0
    """Env steps between plasticity/routing probes (0: 20 probes per run; -1: none)."""
    probe_per_task: int = 256
    """Observations per task in the fixed probe batch."""
    dense_match: str = ""
    """Placement none as a dense twin: the MoE network (e.g. e4-w256, softmoe-big-e4-w0; see
    mtmoe.scaling.sizes.size_tag) whose critic parameter count its hidden widths were grown to
    match (set by `mtmoe sweep` in a size family or by a grid file's `twin_of`)."""
    net: NetConfig = field(default_factory=NetConfig)
    algos: dict = field(default_factory=dict)
    """Hyperparameters of every registered algorithm: name -> its config dataclass (read as
    cfg.<name>, written to JSON and set with --set as the top-level section `<name>`)."""

    def __post_init__(self):
        algo_names()  # the built-in algorithms register on import
        self.algos = {name: self.algos.get(name) or spec.config() for name, spec in ALGOS.items()}

    def __setattr__(self, name: str, value) -> None:  # cfg.ppo = PPOConfig(...) goes to its section
        algos = self.__dict__.get("algos")
        if algos is not None and name in algos:
            algos[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str):  # cfg.ppo, cfg.sac, cfg.<any registered algorithm>
        algos = self.__dict__.get("algos") or {}
        if name in algos:
            return algos[name]
        raise AttributeError(f"RunConfig has no field or algorithm section {name!r}")

    @property
    def algo_config(self):
        """The running algorithm's hyperparameters."""
        return self.algos[self.algo]

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "algos"}
        data = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in data.items()}
        data.update({name: dataclasses.asdict(c) for name, c in self.algos.items()})
        return json.loads(json.dumps(data))

    @classmethod
    def from_dict(cls, data: dict, source: str) -> "RunConfig":
        """The inverse of to_dict (keys that are neither fields nor algorithms, like 'command', are ignored)."""
        cfg = cls(suite=data["suite"])
        known = {f.name for f in dataclasses.fields(cls)} | set(cfg.algos)
        return apply_changes(cfg, {k: v for k, v in data.items() if k in known and k != "algos"}, source, "")


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def check_suite_preset(suite: SuiteSpec) -> None:
    """A suite's `preset` must name a file in configs/: the error names the suite's file and key."""
    if suite.preset and not (CONFIGS_DIR / f"{suite.preset}.yaml").is_file():
        raise ConfigError(suite.source, "preset", f"no preset named {suite.preset!r} in configs/ "
                                                  f"(have: {', '.join(preset_names())})")


def load_preset(name: str) -> dict:
    path = CONFIGS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError("--preset", "", f"no preset named {name!r} in configs/ (have: {', '.join(preset_names())})")
    data = yaml.safe_load(path.read_text()) or {}
    allowed = {"algo", "num_envs", "net", *algo_names()}
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(str(path), sorted(unknown)[0], f"unknown key (a preset has {', '.join(sorted(allowed))})")
    return data


def _coerce(cls_field_default: Any, value: Any, source: str, key: str) -> Any:
    """Check a value against the type of the field's default (tuples from lists allowed)."""
    d = cls_field_default
    if isinstance(d, bool):
        ok = isinstance(value, bool)
    elif isinstance(d, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(d, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(d, str):
        ok = isinstance(value, str)
    elif isinstance(d, tuple) or d is None:
        if isinstance(value, list):
            value = tuple(value)
        ok = True
    else:
        ok = True
    if not ok:
        raise ConfigError(source, key, f"expected {type(d).__name__}, got {value!r}")
    return value


def apply_changes(obj: Any, changes: dict, source: str, prefix: str) -> Any:
    """A copy of the dataclass `obj` with the nested `changes` applied, each value checked against
    its field's type; errors name `source` and the dotted key (under `prefix`)."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    sections = getattr(obj, "algos", None) if isinstance(obj, RunConfig) else None
    if sections is not None:
        fields.pop("algos")  # set through each algorithm's own section
    updates = {}
    for k, v in changes.items():
        key = f"{prefix}{k}"
        if sections is not None and k in sections and k not in fields:  # an algorithm's section
            if not isinstance(v, dict):
                raise ConfigError(source, key, "expected a mapping")
            updates["algos"] = {**updates.get("algos", sections), k: apply_changes(sections[k], v, source, key + ".")}
            continue
        if k not in fields:
            known = sorted(set(fields) | set(sections or ()))
            raise ConfigError(source, key, f"unknown key; known: {', '.join(known)}")
        current = getattr(obj, k)
        if dataclasses.is_dataclass(current):
            if not isinstance(v, dict):
                raise ConfigError(source, key, "expected a mapping")
            updates[k] = apply_changes(current, v, source, key + ".")
        else:
            updates[k] = _coerce(current, v, source, key)
    return dataclasses.replace(obj, **updates)


def parse_sets(pairs: list[str]) -> dict:
    """['ppo.learning_rate=1e-3', 'net.hidden=[64,64]'] -> nested dict."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError("--set", pair, "expected key=value")
        key, raw = pair.split("=", 1)
        value = yaml.safe_load(raw)
        if isinstance(value, str):  # YAML 1.1 reads '1e-3' as a string
            try:
                value = float(value)
            except ValueError:
                pass
        node = out
        parts = key.strip().split(".")
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError("--set", ".".join(parts[: i + 1]), "is set to a value and used as a section")
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError("--set", key.strip(), "is a section: set its fields (e.g. ppo.learning_rate=...)")
        node[parts[-1]] = value
    return out


def compose(registry: Registry, suite_name: str, *, preset: str | None = None, algo: str | None = None,
            steps: int | None = None, budget: str | None = None, seed: int = 0, device: str = "auto",
            net_flags: dict | None = None, sets: list[str] = ()) -> tuple[RunConfig, SuiteSpec]:
    """Compose task -> suite -> preset -> command line."""
    suite = registry.suite(suite_name)
    if not preset:
        check_suite_preset(suite)
    algo_name = algo or suite.algo or DEFAULT_ALGO
    get_algo(algo_name, "--algo" if algo else suite.source)
    cfg = RunConfig(suite=suite.name, algo=algo_name, seed=seed, device=device)
    if not preset and suite.preset and algo and not suite.preset.startswith(algo + "-"):
        # e.g. --algo ppo on a suite whose preset is sac-mujoco: take ppo-mujoco (none if there is no such file)
        derived = algo + "-" + suite.preset.split("-", 1)[-1]
        preset = derived if (CONFIGS_DIR / f"{derived}.yaml").is_file() else None
    elif not preset:
        preset = suite.preset
    if preset:
        data = load_preset(preset)
        if algo and data.get("algo", algo) != algo:
            raise ConfigError("--algo", "algo", f"preset {preset!r} is for {data['algo']}; pass a --preset for {algo}")
        cfg = apply_changes(cfg, {k: v for k, v in data.items()}, f"configs/{preset}.yaml", "")
        cfg.preset = preset
    cfg.num_envs = cfg.num_envs or suite.slots()
    if suite.mode == "simultaneous" and cfg.num_envs < len(suite.tasks):
        cfg.num_envs = len(suite.tasks)  # e.g. a 1-env SAC preset on a multi-task suite: one slot per task
    cfg.steps = steps or suite.budget(budget)
    net_changes = {k: v for k, v in (net_flags or {}).items() if v is not None}
    if net_changes:
        cfg = apply_changes(cfg, {"net": net_changes}, "command line", "")
    if sets:
        cfg = apply_changes(cfg, parse_sets(list(sets)), "--set", "")
    if cfg.env_device not in ("auto", "tensor", "host"):
        raise ConfigError("--set", "env_device", f"expected auto, tensor or host, got {cfg.env_device!r}")
    if cfg.seed < 0 or cfg.num_envs <= 0:
        key, what = ("seed", "a whole number >= 0") if cfg.seed < 0 else ("num_envs", "a positive number of env slots")
        raise ConfigError("command line", key, f"expected {what}, got {getattr(cfg, key)}")
    if cfg.steps <= 0:
        raise ConfigError("command line", "steps", f"expected a positive number of env steps, got {cfg.steps}")
    cfg.net = dataclasses.replace(cfg.net, num_tasks=len(suite.tasks),
                                  task_id_input=cfg.net.task_id_input or (suite.task_id_input and len(suite.tasks) > 1))
    if suite.mode == "sequential":
        cfg.switch_every = cfg.switch_every or suite.resolve_switch_every(cfg.steps, cfg.num_envs)
    try:
        cfg.net.validate()
    except ValueError as e:
        raise ConfigError("command line", "net", str(e)) from None
    return cfg, suite


def env_count_note(cfg: RunConfig, suite: SuiteSpec, sets: list[str] = ()) -> str | None:
    """One line when a suite declares an env count that its own preset overrides (a preset's
    `num_envs` wins: it is what its algorithm's settings assume; another algorithm's preset, or the
    user's `--set num_envs=`, is not noted)."""
    declared = suite.slots() if (suite.envs_per_task or suite.num_envs) else 0
    if (not declared or declared == cfg.num_envs or cfg.preset != suite.preset
            or "num_envs" in parse_sets(list(sets))):
        return None
    what = (f"{suite.envs_per_task} envs per task ({declared} slots)"
            if suite.mode == "simultaneous" and suite.envs_per_task else f"{declared} env slots")
    return (f"{suite.name} declares {what}; its preset {cfg.preset}'s num_envs wins: {cfg.num_envs} slots "
            f"(--set num_envs={declared} takes the suite's)")
