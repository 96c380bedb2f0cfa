"""Tasks, suites and the mixture environments agents train on."""

from __future__ import annotations

from mtmoe.tasks.backend import BACKENDS, BackendSpec, StepResult, VecBackend, register_backend
from mtmoe.tasks.mixture import TaskMixture
from mtmoe.tasks.registry import Registry, load_registry, register_suite, register_task
from mtmoe.tasks.schema import SuiteSpec, TaskSpec


def make_mixture(suite: str | SuiteSpec, registry: Registry | None = None, *, steps: int | None = None,
                 num_envs: int | None = None, switch_every: int | None = None, device=None):
    """Build the mixture env of a suite. For sequential suites without an explicit
    `switch_every`, the phase length is `steps` (default: the suite's default budget) split
    evenly over the phases, rounded down to a multiple of the slot count. `device`: when every
    task has a tensor backend, a DeviceMixture on that device; otherwise (or None) a TaskMixture."""
    from mtmoe.tasks.device_mixture import DeviceMixture, has_device_backend

    registry = registry or load_registry()
    spec = registry.suite(suite) if isinstance(suite, str) else suite
    tasks = [registry.task(t) for t in spec.tasks]
    if spec.mode == "sequential" and switch_every is None:
        switch_every = spec.resolve_switch_every(steps, num_envs)
    if device is not None and has_device_backend(tasks):
        return DeviceMixture(spec, tasks, device, num_envs=num_envs, switch_every=switch_every)
    return TaskMixture(spec, tasks, num_envs=num_envs, switch_every=switch_every)


__all__ = [
    "BACKENDS", "BackendSpec", "StepResult", "VecBackend", "register_backend", "TaskMixture",
    "Registry", "load_registry", "register_suite", "register_task", "SuiteSpec", "TaskSpec", "make_mixture",
]
