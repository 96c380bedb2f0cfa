"""`mtmoe run --backend sample-factory`: APPO from Sample Factory 2.1.1 on mtmoe's suites and networks.

- ``env``: a suite's mixture as an SF env (vectorized, one SF "agent" per slot, per-task episode stats);
- ``model``: mtmoe's actor-critic (same placement, MoE kind, position, experts) as SF's model;
- ``train``: the SF process (``python -m mtmoe.sf.train RUN_DIR``): PPO settings -> APPO flags, metrics;
- ``run``: the mtmoe process: config, results folder, the SF process under a timeout, final
  evaluation, probe and ``summary.json`` in mtmoe's results layout (``mtmoe compare`` reads it).

SF is an optional dependency installed beside mtmoe with ``pip install --no-deps -r
requirements/sample-factory.txt`` (``make install-sf``); see that file for why.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtmoe.errors import MtmoeError

INSTALL_HINT = ("the sample-factory backend needs Sample Factory 2.1.1 installed beside mtmoe: "
                "pip install --no-deps -r requirements/sample-factory.txt (or: make install-sf)")


@dataclass
class SFOptions:
    """Settings of the SF backend only (``--set sf.KEY=VALUE``); the PPO and network settings are
    mtmoe's own (``--set ppo.…``, ``--placement`` …)."""

    num_workers: int = 0
    """Rollout worker processes (0: one per usable CPU core)."""
    envs_per_worker: int = 2
    """SF envs per worker: 2 = double-buffered sampling (SF's default), 1 = none."""
    rollout: int = 32
    """Trajectory length in env steps per slot (SF's default)."""
    timeout_s: int = 0
    """Kill SF after this many seconds (0: 300 + steps / 100): a crashed rollout worker leaves SF's
    main process waiting forever."""
    save_every_sec: int = 120
    """SF checkpoint interval (the final model is always saved)."""
    extra: str = ""
    """More SF flags, verbatim, e.g. "--max_policy_lag=50 --policy_workers_per_policy=2"."""


# the modules SF needs at run time (requirements/sample-factory.txt); checked without importing SF here,
# which would import old gym (procgen's dependency) and print its notice in this process
RUNTIME_MODULES = ("sample_factory", "signal_slot", "faster_fifo", "tensorboardX", "colorlog", "psutil")


def require_sample_factory() -> None:
    """One clear error when Sample Factory or one of its runtime dependencies is missing."""
    import importlib.util

    missing = [m for m in RUNTIME_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise MtmoeError(f"{INSTALL_HINT} (missing: {', '.join(missing)})")
