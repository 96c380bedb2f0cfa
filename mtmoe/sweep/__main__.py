"""`python -m mtmoe.sweep RUN_DIR [--tasks-dir D] [--wandb …]`: the worker of one sweep run (both back ends launch it)."""

import sys

from mtmoe.sweep.local import run_worker

if __name__ == "__main__":
    sys.exit(run_worker(sys.argv[1:]))
