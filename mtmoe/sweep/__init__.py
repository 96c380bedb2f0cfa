"""`mtmoe sweep`: a grid of runs (suites × placements × MoE kinds × positions × experts × seeds).

Every grid point has a fixed folder, ``<out>/<suite>/<run name>``, so a sweep started again
finds its own work: a folder with ``summary.json`` is complete and skipped; one with a
checkpoint is resumed from it; one without (killed before its first checkpoint) is moved aside
to ``<name>.incomplete-<time>`` and started again. Runs are subprocesses (``python -m
mtmoe.sweep RUN_DIR``), at most ``jobs`` at once (default: one per CPU core, or
``runs_per_device`` per GPU); each gets ``cores // jobs`` torch threads and, with GPUs, its own
``CUDA_VISIBLE_DEVICES`` naming one GPU, round-robin over the job slots (:func:`plan`), so that
with ``jobs = runs_per_device × GPUs`` every GPU runs ``runs_per_device`` runs at once.
A run that fails is retried (from its checkpoint) up to ``retries`` times; its output is in
``<run>/log.txt``.

The package:

- :mod:`mtmoe.sweep.grid`: the axes (:class:`Grid`) and the parsing of their command-line lists;
- :mod:`mtmoe.sweep.jobs`: run folders and their states, the jobs of a queue, ``sweep.json``, and
  :func:`~mtmoe.sweep.jobs.settle`, the one rule both back ends apply when an attempt ends;
- :mod:`mtmoe.sweep.view`: the progress table;
- :mod:`mtmoe.sweep.local`: the local back end (:func:`sweep`, :func:`plan`) and the worker that
  ``python -m mtmoe.sweep RUN_DIR`` runs;
- :mod:`mtmoe.sweep.ray_backend`: the same grid over a Ray cluster (``--backend ray``).
"""

from mtmoe.sweep.grid import Grid, load_variants, parse_ints, parse_list
from mtmoe.sweep.jobs import Job, prepare, run_folder, state_of
from mtmoe.sweep.local import Plan, default_jobs, gpu_count, plan, sweep

__all__ = ["Grid", "Job", "Plan", "default_jobs", "gpu_count", "load_variants", "parse_ints", "parse_list", "plan", "prepare",
           "run_folder", "state_of", "sweep"]
