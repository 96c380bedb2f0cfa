"""Where tasks and suites come from: YAML folders and Python registrations.

Search path, in order: the built-in `tasks/` folder, the folders in ``MTMOE_TASKS_PATH``
(``os.pathsep``-separated), then any ``--tasks-dir``. In each folder, ``*.yaml`` files hold
tasks (one mapping with an ``id``, or ``tasks: [...]`` with optional ``defaults:`` merged into
each) and ``suites/*.yaml`` files hold one suite each — or a suite *template*: a file with
``for_each_task: {backend: B, prefix: P}`` becomes one suite per task of backend B whose id starts
with P, ``{id}`` in its values replaced by the task id and ``{name}`` by the id without P (e.g.
``mt1-{name}`` over Meta-World's 50 tasks). Templates expand after every folder's tasks are read.

Collisions: a task or suite whose id is already defined by an earlier folder (a built-in one,
say) is an error naming both files, unless the later definition sets ``override: true``; then
it replaces the earlier one, and ``mtmoe tasks`` shows where each id comes from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

import mtmoe.tasks.backends  # noqa: F401  (registers the built-in backends)
from mtmoe.errors import ConfigError
from mtmoe.tasks.schema import SuiteSpec, TaskSpec, check_suite, parse_suite, parse_task

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "tasks"
ENV_VAR = "MTMOE_TASKS_PATH"

_PY_TASKS: list[tuple[TaskSpec, bool]] = []
_PY_SUITES: list[tuple[SuiteSpec, bool]] = []


def register_task(task: TaskSpec | dict[str, Any], override: bool = False) -> TaskSpec:
    """Register a task from Python (a TaskSpec or the same mapping a YAML file holds)."""
    if isinstance(task, dict):
        task, flag = parse_task(task, source="<python>")
        override = override or flag
    _PY_TASKS.append((task, override))
    return task


def register_suite(suite: SuiteSpec | dict[str, Any], override: bool = False) -> SuiteSpec:
    """Register a suite from Python (a SuiteSpec or a suite mapping)."""
    if isinstance(suite, dict):
        suite, flag = parse_suite(suite, source="<python>")
        override = override or flag
    else:
        check_suite(suite)
    _PY_SUITES.append((suite, override))
    return suite


@dataclass
class Registry:
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    suites: dict[str, SuiteSpec] = field(default_factory=dict)
    overridden: dict[str, str] = field(default_factory=dict)
    """id -> the source it replaced (for display)."""

    def task(self, task_id: str) -> TaskSpec:
        if task_id not in self.tasks:
            raise ConfigError("task", "", f"unknown task {task_id!r} (see `mtmoe tasks`)")
        return self.tasks[task_id]

    def suite(self, name: str) -> SuiteSpec:
        if name not in self.suites:
            close = [s for s in self.suites if name.split("-")[0] in s]
            hint = f"; did you mean {', '.join(close)}?" if close else " (see `mtmoe suites`)"
            raise ConfigError("--suite", "", f"unknown suite {name!r}{hint}")
        return self.suites[name]

    def _add(self, table: dict, spec: Any, key: str, override: bool, kind: str) -> None:
        if key in table and not override:
            raise ConfigError(
                spec.source, "id" if kind == "task" else "name",
                f"{kind} {key!r} is already defined in {table[key].source} (set 'override: true' to replace it)")
        if key in table:
            self.overridden[key] = table[key].source
        table[key] = spec

    def add_task(self, spec: TaskSpec, override: bool = False) -> None:
        self._add(self.tasks, spec, spec.id, override, "task")

    def add_suite(self, spec: SuiteSpec, override: bool = False) -> None:
        self._add(self.suites, spec, spec.name, override, "suite")

    def check_references(self) -> None:
        for suite in self.suites.values():
            for t in suite.tasks:
                if t not in self.tasks:
                    raise ConfigError(suite.source, "tasks", f"unknown task {t!r}")


def expand_template(data: dict, source: str, tasks: dict[str, TaskSpec]) -> list[dict]:
    """The suite mappings of a `for_each_task` template, one per matching task, in task-id order."""
    match = data["for_each_task"]
    if not isinstance(match, dict) or set(match) - {"backend", "prefix"} or "backend" not in match:
        raise ConfigError(source, "for_each_task", "expected {backend: NAME, prefix: ID_PREFIX}")
    prefix = str(match.get("prefix", ""))
    chosen = [t for t in sorted(tasks) if tasks[t].backend == match["backend"] and t.startswith(prefix)]
    if not chosen:
        raise ConfigError(source, "for_each_task", f"no task of backend {match['backend']!r} with id prefix {prefix!r}")
    body = {k: v for k, v in data.items() if k != "for_each_task"}

    def fill(value, task_id: str):
        if isinstance(value, str):
            return value.replace("{id}", task_id).replace("{name}", task_id.removeprefix(prefix))
        if isinstance(value, list):
            return [fill(v, task_id) for v in value]
        if isinstance(value, dict):
            return {k: fill(v, task_id) for k, v in value.items()}
        return value

    return [fill(body, t) for t in chosen]


def _load_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise ConfigError(str(path), "", f"not UTF-8 text (byte 0x{e.object[e.start]:02x} on line {line}); "
                                         "save the file as UTF-8") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise ConfigError(str(path), "", f"not valid YAML ({where}: {getattr(e, 'problem', e)})") from None


def read_task_file(path: Path) -> list[tuple[TaskSpec, bool]]:
    data = _load_yaml(path)
    source = str(path)
    if isinstance(data, dict) and "tasks" in data:
        extra = set(data) - {"tasks", "defaults"}
        if extra:
            raise ConfigError(source, sorted(extra)[0], "unknown key (a task family file has only 'defaults' and 'tasks')")
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise ConfigError(source, "defaults", "expected a mapping")
        if not isinstance(data["tasks"], list) or not data["tasks"]:
            raise ConfigError(source, "tasks", "expected a non-empty list of tasks")
        out = []
        for i, item in enumerate(data["tasks"]):
            if not isinstance(item, dict):
                raise ConfigError(source, f"tasks[{i}]", "expected a mapping")
            out.append(parse_task(_merge(defaults, item), source, prefix=f"tasks[{i}]"))
        return out
    return [parse_task(data, source)]


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for k, v in top.items():
        merged[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return merged


def search_path(tasks_dirs: Iterable[str | Path] = ()) -> list[Path]:
    dirs = [BUILTIN_DIR]
    dirs += [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    dirs += [Path(p) for p in tasks_dirs]
    for d in dirs[1:]:
        if not d.is_dir():
            raise ConfigError(str(d), "", "tasks folder does not exist")
    return dirs


def load_registry(tasks_dirs: Iterable[str | Path] = ()) -> Registry:
    """Read every folder on the search path, then the Python registrations."""
    reg = Registry()
    templates: list[tuple[dict, Path]] = []
    for folder in search_path(tasks_dirs):
        for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
            for spec, override in read_task_file(path):
                reg.add_task(spec, override)
        for path in sorted((folder / "suites").glob("*.y*ml")):
            data = _load_yaml(path)
            if isinstance(data, dict) and "for_each_task" in data:
                templates.append((data, path))
                continue
            spec, override = parse_suite(data, str(path))
            reg.add_suite(spec, override)
    for spec, override in _PY_TASKS:
        reg.add_task(spec, override)
    for data, path in templates:
        for suite in expand_template(data, str(path), reg.tasks):
            reg.add_suite(*parse_suite(suite, str(path)))
    for spec, override in _PY_SUITES:
        reg.add_suite(spec, override)
    reg.check_references()
    return reg
