"""The `mtmoe` command: argument parsing that calls into the packages; no logic of its own."""

from __future__ import annotations

import argparse
import sys

from mtmoe.errors import MtmoeError


def _tasks_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks-dir", action="append", default=[], metavar="DIR",
                   help="extra folder of task/suite YAML files (repeatable; also MTMOE_TASKS_PATH)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtmoe",
        description="mtmoe: where should Mixture-of-Experts layers go in actor-critic agents "
                    "(actor, critic, both, none) under non-stationarity?")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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
    show.add_argument("--steps", type=int, help="budget in env steps (default: the suite's default budget)")
    show.add_argument("--budget", help="a named budget of the suite")
    show.add_argument("--num-envs", type=int, help="env slots (default: the suite's)")
    _tasks_dir_arg(show)
    return parser


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
    except MtmoeError as e:
        print(f"mtmoe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtmoe: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
