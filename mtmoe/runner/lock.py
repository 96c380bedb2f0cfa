"""One process trains a run folder at a time: it holds an exclusive lock on ``<run>/.running``
while it trains (the kernel lets go when the process ends, however it ends), so a second sweep,
or an `mtmoe run --resume`, started on a folder that is being trained says so instead of training
the same run twice into the same files."""

from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from mtmoe.errors import MtmoeError

LOCK_NAME = ".running"
ELSEWHERE_EXIT = 75
"""The exit status of a sweep worker whose run folder another process is training (EX_TEMPFAIL)."""


class RunInUse(MtmoeError):
    """The run folder is being trained by another process."""


@contextmanager
def hold(run_dir: Path):
    """Hold the run folder's lock while the block runs; RunInUse when another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    f = open(run_dir / LOCK_NAME, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        who = f.read().strip() or "another process"
        f.close()
        raise RunInUse(f"{run_dir} is being trained by {who}; wait for it, or stop it first") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def held_by(run_dir: Path) -> str | None:
    """Who trains the run folder now ('pid N on HOST'), or None when no process does."""
    path = run_dir / LOCK_NAME
    if not path.is_file():
        return None
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "another process"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None
