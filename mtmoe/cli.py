"""The `mtmoe` command: argument parsing that calls into the packages; no logic of its own."""

from __future__ import annotations

import argparse
import sys

from mtmoe.errors import MtmoeError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage block is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


ALGO_HELP = "a registered algorithm: ppo | sac | … (default: the suite's)"


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number {'> 0' if minimum == 1 else '>= 0'}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number > 0 (written plainly: not 05 or 1_000)."""
    value = _whole_number(text, 1)
    if str(value) != text.strip().lstrip("+"):
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    return _whole_number(text, 0)


def _tasks_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks-dir", action="append", default=[], metavar="DIR",
                   help="extra folder of task/suite YAML files (repeatable; also MTMOE_TASKS_PATH)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mtmoe",
        description="mtmoe: where should Mixture-of-Experts layers go in actor-critic agents "
                    "(actor, critic, both, none) under non-stationarity?")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_listings, _add_run, _add_evaluate, _add_probe, _add_sweep, _add_reports, _add_nets):
        add(sub)
    return parser


def _add_listings(sub) -> None:
    """The `tasks` and `suites` commands."""
    p = sub.add_parser("tasks", help="list the registered tasks", description="List the registered tasks.")
    _tasks_dir_arg(p)
    p.add_argument("--backend", help="only tasks of this backend")

    p = sub.add_parser("suites", help="list suites, or show one", description="List the suites, or `suites show NAME`.")
    ss = p.add_subparsers(dest="suites_command", metavar="show")
    _tasks_dir_arg(p)
    show = ss.add_parser("show", help="a suite's tasks, mode, schedule and unified spaces",
                         description="Show a suite: its tasks, mode, switch schedule, budgets and spaces after "
                                     "unification (builds one env per task to read the spaces).")
    show.add_argument("name")
    show.add_argument("--steps", type=positive_int, help="budget in env steps (default: the suite's default budget)")
    show.add_argument("--budget", help="a named budget of the suite")
    show.add_argument("--num-envs", type=positive_int, help="env slots (default: the suite's)")
    _tasks_dir_arg(show)


def _add_run(sub) -> None:
    """`mtmoe run`."""
    p = sub.add_parser("run", help="one training run", description="Train one agent on a suite and write its results "
                       "folder (config.json, metrics.jsonl, tb/, summary.json, checkpoint.pt).")
    _net_args(p, suite_required=False)
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint "
                   "(its config.json is used; other flags but --wandb… are ignored)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--steps", type=positive_int, help="env steps (default: the suite's budget)")
    p.add_argument("--budget", help="a named budget of the suite (see `mtmoe suites show`)")
    _device_arg(p)
    p.add_argument("--out", default="results", help="results root (default: results/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. ppo.learning_rate=1e-3 (repeatable)")
    p.add_argument("--backend", choices=["mtmoe", "sample-factory"], default="mtmoe",
                   help="mtmoe: mtmoe's own PPO/SAC loop (default); sample-factory: Sample Factory's APPO with the "
                        "same tasks and networks (PPO suites, not continual ones; settings: --set sf.KEY=VALUE; needs "
                        "pip install --no-deps -r requirements/sample-factory.txt)")
    _wandb_args(p)
    _tasks_dir_arg(p)


def _add_evaluate(sub) -> None:
    """`mtmoe evaluate`."""
    p = sub.add_parser("evaluate", help="play a trained run's policy: per-task scores, videos",
                       description="Load a run folder's config.json and checkpoint, play N episodes of every task "
                                   "and print per-task returns (mean ± std), normalized scores and success rates; "
                                   "writes RUN_DIR/evaluate.json (evaluate-1.json … when one exists). --video DIR "
                                   "also records mp4s of each task.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (of `mtmoe run` or a sweep)")
    p.add_argument("--episodes", type=positive_int, default=10, help="episodes per task (default 10)")
    p.add_argument("--checkpoint", metavar="FILE", help="checkpoint to load (default: RUN_DIR/checkpoint.pt)")
    policy = p.add_mutually_exclusive_group()
    policy.add_argument("--deterministic", dest="deterministic", action="store_true", default=True,
                        help="the policy's mode (default)")
    policy.add_argument("--stochastic", dest="deterministic", action="store_false", help="sample actions")
    p.add_argument("--video", metavar="DIR", help="record mp4s of each task under DIR (gymnasium RecordVideo)")
    p.add_argument("--video-episodes", type=positive_int, default=1, help="recorded episodes per task (default 1)")
    p.add_argument("--video-max-steps", type=positive_int, default=5000,
                   help="steps after which a recorded episode is cut (default 5000)")
    p.add_argument("--max-steps", type=positive_int, default=100_000,
                   help="vector steps the evaluation may take; a task that finished fewer episodes by then is "
                        "marked in the table (default 100000)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the evaluation envs (default 0)")
    _device_arg(p)
    _tasks_dir_arg(p)


def _add_probe(sub) -> None:
    """`mtmoe probe`."""
    p = sub.add_parser("probe", help="measure plasticity and routing again on runs' checkpoints",
                       description="Load each run's config.json and checkpoint, draw its probe batch as the run did "
                                   "and run this mtmoe's probe (dormant fraction, srank, expert load per task and "
                                   "tower): for runs recorded by an older probe. Writes RUN_DIR/probe.json "
                                   "(probe-1.json … when one exists); `mtmoe compare` reads them. Runs whose final probe "
                                   "is already current are skipped.")
    p.add_argument("run_dirs", nargs="+", metavar="DIR", help="run folders, or folders of runs (searched recursively)")
    p.add_argument("--again", action="store_true",
                   help="probe runs whose final probe is already current too (a new probe json beside the old)")
    _device_arg(p)
    _tasks_dir_arg(p)


def _add_sweep(sub) -> None:
    """`mtmoe sweep`."""
    p = sub.add_parser("sweep", help="a grid of runs over placements, seeds, MoE kinds …",
                       description="Run a grid of runs (suites × placements × MoE kinds × positions × experts × "
                                   "seeds) in parallel processes. Started again on the same --out, it skips complete "
                                   "runs and resumes incomplete ones from their checkpoints.")
    p.add_argument("--suite", "--suites", dest="suites", required=True, metavar="S[,S…]", help="suite name(s)")
    p.add_argument("--placements", help="default: none,actor,critic,both")
    p.add_argument("--seeds", default="0-2", help="e.g. 0-4 or 0,3,7 (default: 0-2)")
    p.add_argument("--moes", help="MoE kinds, e.g. softmoe,topk (default: the preset's)")
    p.add_argument("--positions", help="e.g. penultimate,final (default: the preset's)")
    p.add_argument("--experts", help="numbers of experts, e.g. 1,2,4,8")
    p.add_argument("--expert-widths", help="expert hidden sizes, e.g. 32,64")
    p.add_argument("--grid", metavar="FILE", help="a grid file: a YAML list of network variants (placement, moe, "
                   "position, experts, expert_width) under 'variants:', each crossed with --suite and --seeds, "
                   "instead of the placement/MoE axes (e.g. configs/sweeps/reference-study.yaml)")
    _wandb_args(p)
    p.add_argument("--algo", help=ALGO_HELP)
    p.add_argument("--preset", help="configs/<preset>.yaml (default: the suite's)")
    p.add_argument("--steps", type=positive_int, help="env steps per run (default: the suite's budget)")
    p.add_argument("--budget", help="a named budget of the suite")
    _device_arg(p)
    p.add_argument("--jobs", type=non_negative_int, default=0,
                   help="runs at once (default: --runs-per-device per GPU, else one per CPU core)")
    p.add_argument("--runs-per-device", type=positive_int, default=1, metavar="N",
                   help="with GPUs: N runs share each GPU at once (default 1; CUDA_VISIBLE_DEVICES round-robin, "
                        "CPU threads divided among the runs); no effect without a GPU")
    p.add_argument("--retries", type=non_negative_int, default=1, help="relaunches of a failed run, from its checkpoint (default 1)")
    p.add_argument("--dry-run", action="store_true", help="list the grid's runs and what the sweep would do with each "
                   "(skip, resume, start), with the steps logged so far; launch nothing, write nothing")
    p.add_argument("--out", default="results/sweep", help="sweep folder (default: results/sweep)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field in every run")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local: subprocesses on this machine (default); ray: one Ray task per run "
                        '(needs pip install -e ".[ray]")')
    p.add_argument("--address", metavar="HOST:PORT", help="with --backend ray: the Ray cluster's head node "
                   "(default: start a local Ray instance); every node must see --out at the same path")
    _tasks_dir_arg(p)


def _add_reports(sub) -> None:
    """`compare`, `export` and `scaling`: reports read from results folders."""
    p = sub.add_parser("compare", help="compare placements from results folders",
                       description="Read results folders (of `run` or `sweep`) and compare placements and MoE kinds "
                                   "per suite: IQM with stratified-bootstrap CIs, probability of improvement over "
                                   "placement none, performance profiles (rliable), learning and plasticity curves, "
                                   "forgetting per switch, parameter counts. Writes report.md and PNG plots.")
    _report_args(p, "compare")
    p.add_argument("--score", choices=["eval", "train", "success", "train-success"], default="eval",
                   help="eval: final evaluation return (default); train: mean of the last training episodes; "
                        "success / train-success: the same as success rates (tasks with a success criterion)")
    _tasks_dir_arg(p)

    p = sub.add_parser("export", help="results folders as one table (csv or parquet)",
                       description="Read results folders (of `run` or `sweep`) and write one row per run × task × "
                                   "log point (train, eval and probe values; columns in README \"Results as a "
                                   "DataFrame\") to a .csv or .parquet file.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="results folders (searched recursively for runs)")
    p.add_argument("--out", required=True, help="the file to write: runs.csv or runs.parquet (parquet needs pyarrow)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    _tasks_dir_arg(p)

    p = sub.add_parser("scaling", help="returns against parameters and compute, intrinsic performance",
                       description="Read the results of a size sweep (e.g. `mtmoe sweep --experts 1,4,16 …`) and, per "
                                   "placement: final score against parameters (IQM, 95% CIs), return against counted "
                                   "training FLOPs per size, intrinsic performance (Hilton et al. 2023) and its "
                                   "power-law fit. Writes scaling.md and PNG plots.")
    _report_args(p, "scaling")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the power-law fit (default 200)")
    _tasks_dir_arg(p)


def _add_nets(sub) -> None:
    """`mtmoe nets show`."""
    p = sub.add_parser("nets", help="show the networks a run would build", description="`nets show --suite S "
                       "[--placement P …]`: the towers, their layers and parameter counts.")
    ns = p.add_subparsers(dest="nets_command", metavar="show")
    show = ns.add_parser("show", help="towers and parameter counts for a suite and a placement")
    _net_args(show)
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    _tasks_dir_arg(show)


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def _wandb_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (the same scalars as "
                   'TensorBoard, and the config; needs pip install -e ".[wandb]"; WANDB_MODE=offline keeps it on disk)')
    p.add_argument("--wandb-project", default="mtmoe", metavar="P", help="W&B project (default: mtmoe)")
    p.add_argument("--wandb-group", metavar="G", help="W&B group of the run (default: none)")


def _wandb_options(args):
    """The W&B options of `run`/`sweep` (None without --wandb); they are no part of the run's config."""
    from mtmoe.runner.logger import WandbOptions

    if not args.wandb and (args.wandb_group or args.wandb_project != "mtmoe"):
        raise MtmoeError("--wandb-project/--wandb-group: give --wandb too")
    return WandbOptions(project=args.wandb_project, group=args.wandb_group) if args.wandb else None


def _report_args(p: argparse.ArgumentParser, name: str) -> None:
    """What `compare` and `scaling` share: the results folders, the report folder, the bootstrap, the
    normalization."""
    p.add_argument("dirs", nargs="+", metavar="DIR", help="results folders (searched recursively for runs)")
    p.add_argument("--out", help=f"report folder (default: <first DIR>/{name})")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples of the score CIs (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--normalize", choices=["reference", "best-label", "raw"], default="reference",
                   help="reference: each task's reference scores from the current task registry, best-label for "
                        "tasks without (default); best-label: raw / the best label's mean per task; raw: unscaled")


def _net_args(p: argparse.ArgumentParser, suite_required: bool = True) -> None:
    p.add_argument("--suite", required=suite_required, help="suite name (see `mtmoe suites`)")
    p.add_argument("--algo", help=ALGO_HELP)
    p.add_argument("--preset", help="configs/<preset>.yaml (default: the suite's)")
    p.add_argument("--placement", choices=["none", "actor", "critic", "both"], help="towers that get MoE layers")
    p.add_argument("--position", choices=["penultimate", "final", "all", "big"], help="where in a tower")
    p.add_argument("--moe", help="MoE kind: softmoe | topk | task | dense")
    p.add_argument("--experts", type=positive_int, help="number of experts")
    p.add_argument("--expert-width", type=positive_int, help="hidden size of each expert")
    p.add_argument("--tokenizer", help="per_conv | per_feature | per_sample | per_patch | split")


def _run(args) -> None:
    """Compose the RunConfig once (or read it back for --resume) and hand it to the backend."""
    from pathlib import Path

    from mtmoe import views
    from mtmoe.errors import MtmoeError
    from mtmoe.runner.config import compose, env_count_note
    from mtmoe.runner.records import read_config
    from mtmoe.tasks.registry import load_registry

    wandb = _wandb_options(args)
    sets, sf_options = args.set, None
    if args.backend == "sample-factory":
        from mtmoe.sf.run import split_sets

        if wandb:
            raise MtmoeError("--wandb: not with --backend sample-factory (its TensorBoard events are in tb/)")
        if args.resume:
            raise MtmoeError("--resume: Sample Factory runs cannot be resumed (start a new run)")
        sets, sf_options = split_sets(args.set)
    reg = load_registry(args.tasks_dir)
    if args.resume:
        cfg = read_config(Path(args.resume), "--resume")
    elif not args.suite:
        raise MtmoeError("run: give --suite NAME" + (" (or --resume DIR)" if args.backend != "sample-factory" else ""))
    else:
        cfg, suite = compose(reg, args.suite, preset=args.preset, algo=args.algo, steps=args.steps,
                             budget=args.budget, seed=args.seed, device=args.device, net_flags=views.net_flags(args),
                             sets=sets)
        note = env_count_note(cfg, suite, sets)
        if note:
            print(f"mtmoe: note: {note}", file=sys.stderr)
    if args.backend == "sample-factory":
        from mtmoe.sf.run import train_sf

        run_dir = train_sf(cfg, reg, Path(args.out), sf_options, tasks_dirs=args.tasks_dir)
    else:
        from mtmoe.runner.run import train

        run_dir = train(cfg, reg, Path(args.out), resume=Path(args.resume) if args.resume else None, wandb=wandb)
    views.run_summary(run_dir)


def _evaluate(args) -> None:
    from pathlib import Path

    from mtmoe.runner.evaluate_run import EvalRequest, evaluate_run
    from mtmoe.tasks.registry import load_registry

    evaluate_run(EvalRequest(
        run_dir=Path(args.run_dir), episodes=args.episodes, deterministic=args.deterministic,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None, video=Path(args.video) if args.video else None,
        video_episodes=args.video_episodes, video_max_steps=args.video_max_steps, max_steps=args.max_steps,
        seed=args.seed, device=args.device), load_registry(args.tasks_dir))


def _probe(args) -> None:
    from pathlib import Path

    from mtmoe.runner.probe_run import probe_runs
    from mtmoe.tasks.registry import load_registry

    written = probe_runs([Path(d) for d in args.run_dirs], load_registry(args.tasks_dir),
                         args.device, say=lambda line: print(line, file=sys.stderr), again=args.again)
    print(f"probed {len(written)} run(s); `mtmoe compare` reads their probe json beside the recorded probes",
          file=sys.stderr)


def _sweep_grid(args):
    """The sweep's Grid from its flags: the placement/MoE axes, or a --grid file's variants."""
    from mtmoe.sweep import Grid, load_variants, parse_ints, parse_list

    axes = {"--placements": args.placements, "--moes": args.moes, "--positions": args.positions,
            "--experts": args.experts, "--expert-widths": args.expert_widths}
    variants = []
    if args.grid:
        given = [flag for flag, value in axes.items() if value is not None]
        if given:
            raise MtmoeError(f"sweep: --grid replaces {', '.join(given)} (the variants in the file say them)")
        variants = load_variants(args.grid)
    return Grid(suites=parse_list(args.suites, "--suite"), seeds=parse_ints(args.seeds, "--seeds"),
                placements=parse_list(args.placements or "none,actor,critic,both", "--placements"),
                moes=parse_list(args.moes, "--moes"), positions=parse_list(args.positions, "--positions"),
                experts=parse_ints(args.experts, "--experts"),
                expert_widths=parse_ints(args.expert_widths, "--expert-widths"), algo=args.algo, preset=args.preset,
                steps=args.steps, budget=args.budget, device=args.device, sets=args.set, variants=variants)


def _sweep(args) -> None:
    import dataclasses
    from pathlib import Path

    from mtmoe import views
    from mtmoe.sweep import sweep
    from mtmoe.tasks.registry import load_registry

    grid = _sweep_grid(args)
    if args.dry_run:
        views.sweep_plan(grid.configs(load_registry(args.tasks_dir)), Path(args.out))
        return
    if args.address and args.backend != "ray":
        raise MtmoeError("sweep: --address needs --backend ray")
    wandb = _wandb_options(args)
    if wandb is not None:
        from mtmoe.runner.logger import import_wandb

        import_wandb()  # one line now rather than a failed run per grid point
        if wandb.group is None:  # the sweep's runs together in W&B
            wandb = dataclasses.replace(wandb, group=Path(args.out).resolve().name)
    if args.backend == "ray":
        from mtmoe.sweep.ray_backend import sweep_ray

        counts = sweep_ray(grid, load_registry(args.tasks_dir), Path(args.out), jobs=args.jobs,
                           retries=args.retries, tasks_dirs=args.tasks_dir, address=args.address,
                           runs_per_device=args.runs_per_device, wandb=wandb)
    else:
        counts = sweep(grid, load_registry(args.tasks_dir), Path(args.out), jobs=args.jobs, retries=args.retries,
                       tasks_dirs=args.tasks_dir, runs_per_device=args.runs_per_device, wandb=wandb)
    elsewhere = f", {counts['elsewhere']} left to another process training them" if counts.get("elsewhere") else ""
    print(f"sweep {args.out}: {counts['done']} run(s) finished ({counts['resumed']} resumed), "
          f"{counts['skipped']} already complete, {counts['failed']} failed{elsewhere}", file=sys.stderr)
    if counts["failed"]:
        raise MtmoeError(f"{counts['failed']} run(s) failed: see log.txt in their folders under {args.out}")
    print(f"compare them: mtmoe compare {args.out}", file=sys.stderr)


def _compare(args) -> None:
    from pathlib import Path

    from mtmoe import views
    from mtmoe.compare import compare

    dirs = [Path(d) for d in args.dirs]
    out = Path(args.out) if args.out else dirs[0] / "compare"
    warn = lambda msg: print(f"mtmoe: warning: {msg}", file=sys.stderr)  # noqa: E731
    result = compare(dirs, out, score=args.score, reps=args.reps, seed=args.seed, plots=not args.no_plots, warn=warn,
                     normalize=args.normalize, tasks_dirs=args.tasks_dir)
    views.compare_tables(result)
    print(f"report: {out / 'report.md'}", file=sys.stderr)


def _export(args) -> None:
    from mtmoe.results import export

    warn = lambda msg: print(f"mtmoe: warning: {msg}", file=sys.stderr)  # noqa: E731
    path, rows = export(args.dirs, args.out, force=args.force, warn=warn, tasks_dirs=args.tasks_dir)
    print(f"export: {rows:,} rows -> {path}", file=sys.stderr)


def _scaling(args) -> None:
    from pathlib import Path

    from mtmoe import views
    from mtmoe.scaling.report import scaling

    dirs = [Path(d) for d in args.dirs]
    out = Path(args.out) if args.out else dirs[0] / "scaling"
    warn = lambda msg: print(f"mtmoe: warning: {msg}", file=sys.stderr)  # noqa: E731
    result = scaling(dirs, out, reps=args.reps, seed=args.seed, bootstrap=args.bootstrap, plots=not args.no_plots,
                     warn=warn, tasks_dirs=args.tasks_dir, normalize=args.normalize)
    views.scaling_tables(result)
    print(f"report: {out / 'scaling.md'}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        from mtmoe import views

        if args.command == "tasks":
            views.tasks_table(args.tasks_dir, args.backend)
        elif args.command == "suites" and getattr(args, "suites_command", None) == "show":
            views.suite_show(args.name, args.tasks_dir, steps=args.steps, budget=args.budget, num_envs=args.num_envs)
        elif args.command == "suites":
            views.suites_table(args.tasks_dir)
        elif args.command == "run":
            _run(args)
        elif args.command == "evaluate":
            _evaluate(args)
        elif args.command == "probe":
            _probe(args)
        elif args.command == "compare":
            _compare(args)
        elif args.command == "export":
            _export(args)
        elif args.command == "scaling":
            _scaling(args)
        elif args.command == "sweep":
            _sweep(args)
        elif args.command == "nets" and getattr(args, "nets_command", None) == "show":
            views.nets_show(args)
        elif args.command == "nets":
            parser.parse_args(["nets", "--help"])
    except MtmoeError as e:
        print(f"mtmoe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtmoe: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
