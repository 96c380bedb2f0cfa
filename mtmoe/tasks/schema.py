"""Task and suite specifications, and their validation from YAML mappings.

Every key is checked: unknown keys are errors (a typo must never pass silently), and every
error is one line naming the file, the key and what was expected (``ConfigError``).
"""

from __future__ import annotations

import csv
import dataclasses
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from mtmoe.errors import ConfigError
from mtmoe.tasks.backend import BACKENDS

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")
MODES = ("simultaneous", "sequential")
ACTION_UNIONS = ("semantic", "positional")
ATARI_TABLE = Path(__file__).parent / "data" / "atari_human_random.csv"
MINATAR_TABLE = Path(__file__).parent / "data" / "minatar_reference.csv"


@dataclass(frozen=True)
class Normalization:
    """normalized = (raw - low) / (high - low)."""

    low: float = 0.0
    """Score mapped to 0 (Atari: random agent)."""
    high: float = 1.0
    """Score mapped to 1 (Atari: human)."""
    source: str = "none: normalized equals raw"
    """Where low/high come from (cite it)."""

    def __call__(self, raw: float) -> float:
        return (raw - self.low) / (self.high - self.low)


@dataclass(frozen=True)
class RewardHandling:
    clip: bool = False
    """Clip training rewards to their sign (DQN-style); scores stay raw."""
    scale: float = 1.0
    """Multiply training rewards by this (after clipping)."""


@dataclass(frozen=True)
class TaskSpec:
    """One environment with its preprocessing, reward handling, normalization and budget."""

    id: str
    backend: str
    env: str
    """Backend-specific name: ALE game, MinAtar game, gymnasium id, Procgen game."""
    options: Any = None
    """The backend's options dataclass instance."""
    reward: RewardHandling = RewardHandling()
    max_episode_steps: int | None = None
    """Agent steps after which an episode is truncated (None: the backend's own limit)."""
    normalization: Normalization = Normalization()
    budget: int = 1_000_000
    """Default env steps when this task is trained alone."""
    description: str = ""
    source: str = "<python>"
    """The file this task came from (for messages)."""


@dataclass(frozen=True)
class SuiteSpec:
    """A list of tasks + a mixture mode + budgets + defaults for the agent."""

    name: str
    tasks: tuple[str, ...]
    mode: Literal["simultaneous", "sequential"] = "simultaneous"
    num_envs: int | None = None
    """Total env slots (split evenly across tasks when simultaneous)."""
    envs_per_task: int | None = None
    """Alternative to num_envs for simultaneous suites: slots per task."""
    switch_every: int | None = None
    """Sequential: env steps (summed over slots) per phase; None: budget / phases."""
    order: tuple[str, ...] = ()
    """Sequential: task order of one cycle (default: `tasks`)."""
    cycles: int = 1
    """Sequential: how many times the order is run."""
    task_id_input: bool = True
    """Give the networks the task id (one-hot); task-routed MoE needs it anyway."""
    action_union: Literal["semantic", "positional"] = "semantic"
    """How discrete action sets are merged: by action name, or by index (pad to largest)."""
    algo: str = ""
    """A registered algorithm (checked by the runner); empty: the runner's default."""
    preset: str = ""
    """Default algorithm/network preset (a configs/*.yaml name)."""
    budgets: dict[str, int] = field(default_factory=dict)
    """Named budgets in env steps; `default` is used when none is named."""
    description: str = ""
    source: str = "<python>"

    @property
    def phases(self) -> int:
        return len(self.order) * self.cycles if self.mode == "sequential" else 1

    def slots(self) -> int:
        if self.mode == "simultaneous" and self.envs_per_task:
            return self.envs_per_task * len(self.tasks)
        return self.num_envs or 8 * len(self.tasks)

    def resolve_switch_every(self, steps: int | None = None, num_envs: int | None = None) -> int:
        """Phase length for a run of `steps` env steps (default: the default budget), a
        multiple of the slot count; an explicit `switch_every` wins."""
        n = num_envs or self.slots()
        every = self.switch_every or (steps or self.budget()) // self.phases
        return max(n, every // n * n)

    def budget(self, name: str | None = None) -> int:
        name = name or "default"
        if name not in self.budgets:
            raise ConfigError(self.source, "budgets", f"no budget named '{name}' (have: {', '.join(self.budgets) or 'none'})")
        return self.budgets[name]


# ---------------------------------------------------------------- validation helpers


class _Reader:
    """Pops keys from a mapping with type checks; `done()` rejects what is left."""

    def __init__(self, data: Any, source: str, prefix: str = ""):
        if not isinstance(data, dict):
            raise ConfigError(source, prefix or "<top>", f"expected a mapping, got {type(data).__name__}")
        self.data, self.source, self.prefix = dict(data), source, prefix

    def key(self, k: str) -> str:
        return f"{self.prefix}.{k}" if self.prefix else k

    def fail(self, k: str, expected: str):
        raise ConfigError(self.source, self.key(k), expected)

    def get(self, k: str, types: type | tuple, default: Any = dataclasses.MISSING) -> Any:
        if k not in self.data:
            if default is dataclasses.MISSING:
                self.fail(k, "is required")
            return default
        value = self.data.pop(k)
        types = types if isinstance(types, tuple) else (types,)
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok and float in types and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            names = " or ".join(t.__name__ if t is not type(None) else "null" for t in types)
            self.fail(k, f"expected {names}, got {value!r}")
        return value

    def positive_int(self, k: str, default: Any = dataclasses.MISSING) -> Any:
        value = self.get(k, (int, type(None)) if default is None else int, default)
        if value is not None and value <= 0:
            self.fail(k, f"expected a positive integer, got {value}")
        return value

    def choice(self, k: str, choices: tuple[str, ...], default: Any = dataclasses.MISSING) -> str:
        value = self.get(k, str, default)
        if value not in choices:
            self.fail(k, f"expected one of {', '.join(choices)}; got {value!r}")
        return value

    def ident(self, k: str) -> str:
        value = self.get(k, str)
        if not ID_PATTERN.match(value):
            self.fail(k, f"expected a lowercase id (letters, digits, '_', '-', '.'), got {value!r}")
        return value

    def done(self) -> None:
        if self.data:
            extra = sorted(self.data)[0]
            self.fail(extra, "unknown key (a typo?)")


def _read_dataclass(cls: type, data: Any, source: str, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, checking names and (simple) types of fields."""
    r = _Reader(data if data is not None else {}, source, prefix)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in r.data:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        types = _types_of(default)
        kwargs[f.name] = r.get(f.name, types)
    r.done()
    return cls(**kwargs)


def _types_of(default: Any) -> tuple:
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, float):
        return (float,)
    if isinstance(default, int):
        return (int,)
    if isinstance(default, str):
        return (str,)
    if isinstance(default, dict):
        return (dict,)
    if isinstance(default, (list, tuple)):
        return (list,)
    return (object,)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a shipped score table (lines starting with # are its provenance)."""
    return list(csv.DictReader(line for line in path.read_text().splitlines() if line and not line.startswith("#")))


@lru_cache(maxsize=1)
def atari_scores() -> dict[str, tuple[float, float]]:
    """game -> (random, human), from the DQN Zoo table shipped with mtmoe."""
    return {r["game"]: (float(r["random"]), float(r["human"])) for r in _csv_rows(ATARI_TABLE)}


@lru_cache(maxsize=1)
def minatar_scores() -> dict[str, tuple[float, float | None, str]]:
    """game -> (random score measured by mtmoe, published reference score or None, its source)."""
    return {r["game"]: (float(r["random"]), float(r["reference"]) if r["reference"] else None, r["reference_source"])
            for r in _csv_rows(MINATAR_TABLE)}


def _named_normalization(name: str, env: str, source: str, prefix: str) -> Normalization:
    """`atari_human` (random/human) or `minatar_reference` (random/published reference), from the shipped tables."""
    if name == "atari_human":
        game = re.sub(r"(?<!^)(?=[A-Z])", "_", env).lower() if not env.islower() else env
        if game not in atari_scores():
            raise ConfigError(source, prefix, f"no human/random scores for Atari game {game!r} in {ATARI_TABLE.name}")
        low, high = atari_scores()[game]
        return Normalization(low=low, high=high, source="random/human, DQN Zoo atari_data.py")
    game = env.removeprefix("MinAtar/").split("-v")[0]
    if game not in minatar_scores():
        raise ConfigError(source, prefix, f"no scores for MinAtar game {game!r} in {MINATAR_TABLE.name}")
    low, high, ref = minatar_scores()[game]
    if high is None:  # no published score: the task stays raw, and says why
        return Normalization(source=f"none: {ref}")
    return Normalization(low=low, high=high, source=f"random (mtmoe, {MINATAR_TABLE.name}) / reference: {ref}")


def _normalization(data: Any, env: str, source: str, prefix: str) -> Normalization:
    if data is None:
        return Normalization()
    if data in ("atari_human", "minatar_reference"):
        return _named_normalization(data, env, source, prefix)
    norm = _read_dataclass(Normalization, data, source, prefix)
    if norm.high == norm.low:
        raise ConfigError(source, prefix + ".high", "must differ from low")
    return norm


def parse_task(data: Any, source: str, prefix: str = "") -> tuple[TaskSpec, bool]:
    """A task mapping -> (TaskSpec, override flag)."""
    r = _Reader(data, source, prefix)
    task_id = r.ident("id")
    backend = r.choice("backend", tuple(sorted(BACKENDS)))
    env = r.get("env", str)
    info = BACKENDS[backend]
    problem = info.check_env(env) if info.check_env else None
    if problem:
        r.fail("env", problem)
    options = _read_dataclass(info.options, r.get("options", (dict, type(None)), None), source, r.key("options"))
    reward = _read_dataclass(RewardHandling, r.get("reward", (dict, type(None)), None), source, r.key("reward"))
    spec = TaskSpec(
        id=task_id,
        backend=backend,
        env=env,
        options=options,
        reward=reward,
        max_episode_steps=r.positive_int("max_episode_steps", None),
        normalization=_normalization(r.get("normalization", (dict, str, type(None)), None), env, source, r.key("normalization")),
        budget=r.positive_int("budget", 1_000_000),
        description=r.get("description", str, ""),
        source=source,
    )
    override = r.get("override", bool, False)
    r.done()
    return spec, override


def parse_suite(data: Any, source: str) -> tuple[SuiteSpec, bool]:
    r = _Reader(data, source)
    name = r.ident("name")
    tasks = r.get("tasks", list)
    if not tasks or not all(isinstance(t, str) for t in tasks):
        r.fail("tasks", "expected a non-empty list of task ids")
    if len(set(tasks)) != len(tasks):
        r.fail("tasks", "lists a task twice")
    mode = r.choice("mode", MODES, "simultaneous")
    order = r.get("order", list, list(tasks))
    unknown = [t for t in order if t not in tasks]
    if unknown:
        r.fail("order", f"names {unknown[0]!r}, which is not in the suite's tasks")
    budgets = r.get("budgets", dict, {})
    for k, v in budgets.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            r.fail(f"budgets.{k}", f"expected a positive integer of env steps, got {v!r}")
    spec = SuiteSpec(
        name=name,
        tasks=tuple(tasks),
        mode=mode,
        num_envs=r.positive_int("num_envs", None),
        envs_per_task=r.positive_int("envs_per_task", None),
        switch_every=r.positive_int("switch_every", None),
        order=tuple(order),
        cycles=r.positive_int("cycles", 1),
        task_id_input=r.get("task_id_input", bool, True),
        action_union=r.choice("action_union", ACTION_UNIONS, "semantic"),
        algo=r.ident("algo") if "algo" in data else "",
        preset=r.get("preset", str, ""),
        budgets=budgets,
        description=r.get("description", str, ""),
        source=source,
    )
    override = r.get("override", bool, False)
    r.done()
    check_suite(spec)
    return spec, override


def check_suite(spec: SuiteSpec) -> None:
    """Cross-field rules of a suite (also applied to suites registered from Python)."""
    if spec.num_envs and spec.envs_per_task:
        raise ConfigError(spec.source, "envs_per_task", "give either num_envs or envs_per_task, not both")
    if spec.mode == "sequential" and spec.envs_per_task:
        raise ConfigError(spec.source, "envs_per_task", "only for simultaneous suites (use num_envs)")
    if spec.mode == "simultaneous" and spec.num_envs and spec.num_envs < len(spec.tasks):
        raise ConfigError(spec.source, "num_envs", f"needs at least one slot per task ({len(spec.tasks)})")
    if spec.mode == "simultaneous" and (spec.switch_every or spec.cycles != 1 or spec.order != spec.tasks):
        key = "switch_every" if spec.switch_every else "cycles" if spec.cycles != 1 else "order"
        raise ConfigError(spec.source, key, "only for sequential suites (mode: sequential)")
    if spec.switch_every and spec.switch_every % spec.slots():
        raise ConfigError(spec.source, "switch_every", f"must be a multiple of the number of env slots ({spec.slots()})")
    if "default" not in spec.budgets:
        raise ConfigError(spec.source, "budgets", "needs a 'default' budget")
