"""Tables the CLI prints about tasks and suites (rich tables; plain text when piped)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from mtmoe.tasks.registry import BUILTIN_DIR, load_registry

def _isatty() -> bool:
    import sys

    return sys.stdout.isatty()


console = Console(width=None if _isatty() else 160)


def _where(source: str) -> str:
    return "built-in" if source.startswith(str(BUILTIN_DIR)) else source


def tasks_table(tasks_dirs, backend: str | None = None) -> None:
    reg = load_registry(tasks_dirs)
    table = Table(title=f"{len(reg.tasks)} tasks", show_lines=False)
    for col in ("id", "backend", "env", "budget", "normalization", "from"):
        table.add_column(col, no_wrap=col != "from", overflow="fold")
    for t in sorted(reg.tasks.values(), key=lambda t: (t.backend, t.id)):
        if backend and t.backend != backend:
            continue
        norm = "raw" if t.normalization.source.startswith("none") else f"[{t.normalization.low:g}, {t.normalization.high:g}]"
        where = _where(t.source) + (" (overrides)" if t.id in reg.overridden else "")
        table.add_row(t.id, t.backend, t.env, f"{t.budget:,}", norm, where)
    console.print(table)


def suites_table(tasks_dirs) -> None:
    reg = load_registry(tasks_dirs)
    table = Table(title=f"{len(reg.suites)} suites")
    for col in ("suite", "mode", "tasks", "slots", "algo", "default budget", "description"):
        table.add_column(col, no_wrap=col != "description", overflow="fold")
    for s in sorted(reg.suites.values(), key=lambda s: s.name):
        table.add_row(s.name, s.mode, str(len(s.tasks)), str(s.slots()), s.algo or "-", f"{s.budget():,}", s.description)
    console.print(table)


def suite_spaces(suite, tasks):
    """(backend specs, unified spaces) of a suite, from one env per task."""
    from mtmoe.tasks.mixture import make_backend
    from mtmoe.tasks.spaces import unify

    specs = []
    with console.status("building one env per task to read its spaces…"):
        for t in tasks:
            backend = make_backend(t, 1)
            specs.append(backend.spec)
            backend.close()
    return specs, unify(list(suite.tasks), specs, suite.action_union, suite.source)


def nets_show(args) -> None:
    """The towers and parameter counts a run of this suite and placement would build."""
    from mtmoe.agents.registry import get_algo
    from mtmoe.nets import show
    from mtmoe.runner.config import compose

    reg = load_registry(args.tasks_dir)
    cfg, suite = compose(reg, args.suite, preset=args.preset, algo=args.algo, steps=1, net_flags=net_flags(args),
                         sets=args.set)
    _, spaces = suite_spaces(suite, [reg.task(t) for t in suite.tasks])
    nets = get_algo(cfg.algo).networks(spaces.observation_space, spaces.action_space, cfg.net)
    console.print(show(nets), highlight=False)


def net_flags(args) -> dict:
    """The CLI's network flags, by NetConfig field name."""
    return {"placement": args.placement, "position": args.position, "moe": args.moe, "num_experts": args.experts,
            "expert_width": args.expert_width, "tokenizer": args.tokenizer}


def suite_show(name: str, tasks_dirs, steps=None, budget=None, num_envs=None) -> None:
    from mtmoe.tasks.mixture import plan_schedule, slot_counts

    from mtmoe.runner.config import check_suite_preset

    reg = load_registry(tasks_dirs)
    suite = reg.suite(name)
    check_suite_preset(suite)
    tasks = [reg.task(t) for t in suite.tasks]
    steps = steps or suite.budget(budget)
    slots = num_envs or suite.slots()
    console.print(f"[bold]{suite.name}[/bold] — {suite.description}")
    console.print(f"mode: {suite.mode}; env slots: {slots}; algo: {suite.algo or '-'} (preset {suite.preset or '-'}); "
                  f"task-id input: {'on' if suite.task_id_input else 'off'}; from {_where(suite.source)}")
    console.print("budgets: " + ", ".join(f"{k}={v:,}" for k, v in suite.budgets.items()) + f"; this view: {steps:,} env steps")

    specs, spaces = suite_spaces(suite, tasks)
    table = Table(title="tasks")
    for col in ("#", "task", "backend", "env", "observation", "actions", "normalization"):
        table.add_column(col, overflow="fold")
    for k, (t, sp) in enumerate(zip(tasks, specs)):
        acts = f"{sp.n_actions} discrete" if sp.action_kind == "discrete" else f"{sp.action_dim}-dim continuous"
        norm = t.normalization.source if not t.normalization.source.startswith("none") else "raw"
        table.add_row(str(k), t.id, t.backend, t.env, "x".join(map(str, sp.obs_shape)), acts, norm)
    console.print(table)

    obs = spaces.observation_space
    console.print(f"unified observation: {obs.dtype} {tuple(obs.shape)}; "
                  f"unified actions: {spaces.action_space}"
                  + (f" ({', '.join(spaces.action_names)})" if spaces.action_names else ""))
    for k, t in enumerate(tasks):
        console.print(f"  action mask {t.id}: {''.join('1' if m else '0' for m in spaces.action_masks[k])}")

    if suite.mode == "sequential":
        every = suite.resolve_switch_every(steps, slots)
        schedule = plan_schedule(suite, slots, every)
        console.print(f"schedule: switch every {every:,} env steps, order {' → '.join(suite.order)}, {suite.cycles} cycle(s)")
        for p in schedule:
            end = "end of run" if p.end is None else f"{p.end:,}"
            console.print(f"  phase {p.index}: {suite.tasks[p.task_index]:<28} steps {p.start:>12,} – {end}")
    else:
        counts = slot_counts(suite, num_envs)
        console.print("schedule: every task every step; slots " + ", ".join(f"{t.id}={c}" for t, c in zip(tasks, counts)))


def run_summary(run_dir) -> None:
    """The end-of-run table: per-task returns early in the run and at the end."""
    import json
    from pathlib import Path

    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    table = Table(title=f"{summary['suite']} · {summary['algo']} · placement {summary['placement']} · seed {summary['seed']}")
    success, evals = summary.get("final_success") or {}, summary.get("eval") or {}
    columns = ["task", "episodes", "first return", "final return (last 20)", "final normalized", "final eval"]
    if success:  # tasks with a success criterion (Meta-World)
        columns += ["success (last 20)", "eval success"]
    for col in columns:
        table.add_column(col)
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for t, final in summary["final_return"].items():
        row = [t, str(summary["episodes"].get(t, 0)), fmt(summary["first_return"].get(t)), fmt(final),
               fmt(summary["final_normalized"].get(t)), fmt(evals.get(t, {}).get("return"))]
        if success:
            row += [fmt(success.get(t)), fmt(evals.get(t, {}).get("success"))]
        table.add_row(*row)
    console.print(table)
    cw = (summary.get("nonstationarity") or {}).get("continual_world")
    if cw and cw.get("average_performance") is not None:
        console.print(f"Continual World ({cw['score']}): average performance {cw['average_performance']:.2f}, "
                      f"mean forgetting {_mean(cw['forgetting'].values())}")
    console.print(f"{summary['steps']:,} env steps in {summary['wall_time_s']:.0f} s, of which "
                  f"{summary['eval_and_probe_time_s']:.0f} s evaluation and probes "
                  f"({summary['steps_per_s']:,.0f} training steps/s on {summary['device']}); results in {run_dir}")


def _mean(values) -> str:
    known = [v for v in values if v is not None]
    return f"{sum(known) / len(known):.2f}" if known else "-"


def _print_table(title: str, header, rows) -> None:
    table = Table(title=title)
    for col in header:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def compare_tables(result: dict) -> None:
    """The main table of `mtmoe compare`, one per suite."""
    from mtmoe.compare import MAIN_HEADER, main_rows

    for suite, entry in result.items():
        how = {"best-label": "best-label scaled", "raw": "raw"}.get(entry.get("normalize"), "normalized")
        _print_table(f"{suite} · {how} final score", MAIN_HEADER, main_rows(entry))


def scaling_tables(result: dict) -> None:
    """The tables of `mtmoe scaling`, per suite: score against size, each MoE size against its
    dense twin, the intrinsic-performance fit."""
    from mtmoe.scaling.report import FIT_HEADER, TWIN_HEADER, fit_rows, size_rows, twin_rows

    for suite, entry in result.items():
        _print_table(f"{suite} · final score against size",
                     ("placement", "size", "parameters", "FLOPs / env step", "runs", "IQM [95% CI]"), size_rows(entry))
        for fam, f in entry["families"].items():
            console.print(f"  {fam}: final score {f['trend']}")
        if entry.get("twins"):
            _print_table(f"{suite} · each MoE size against its width-matched dense twin", TWIN_HEADER,
                         twin_rows(entry))
        rows = fit_rows(entry)
        if rows:
            _print_table(f"{suite} · intrinsic performance I^(-β) = (N_c/N)^α_N + (E_c/E)^α_E", FIT_HEADER, rows)


def sweep_plan(configs, out) -> None:
    """`mtmoe sweep --dry-run`: one row per grid point, what the sweep would do with it."""
    from mtmoe.sweep.jobs import describe, run_folder

    table = Table(title=f"{len(configs)} runs in {out} (dry run: nothing launched)")
    for col in ("suite", "run", "steps logged", "the sweep would"):
        table.add_column(col, overflow="fold")
    counts: dict[str, int] = {}
    for cfg in configs:
        what, step = describe(run_folder(out, cfg), cfg.steps)
        kind = what.split(" (")[0]
        counts[kind] = counts.get(kind, 0) + 1
        table.add_row(cfg.suite, run_folder(out, cfg).name, f"{step:,}/{cfg.steps:,}", what)
    console.print(table)
    console.print(" · ".join(f"{n} {kind}" for kind, n in counts.items()))
