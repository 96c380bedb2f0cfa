"""The README's command table against the CLI: every flag a row shows exists, and every flag a
command takes is shown in its row (the table drifted from the code before)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from mtmoe.cli import build_parser

README = Path(__file__).parents[1] / "README.md"
GLOBAL = {"--help", "-h", "--tasks-dir"}  # the paragraph under the table names these for every command
# shown elsewhere in the README, not in the row: the report options of compare and scaling
ELSEWHERE = {"compare": {"--reps", "--seed", "--no-plots"}, "scaling": {"--reps", "--seed", "--no-plots"}}


def _rows() -> list[str]:
    text = README.read_text()
    table = text[text.index("## Commands"):text.index("Every command takes `--help`")]
    return [line for line in table.splitlines() if line.startswith("| `mtmoe ")]


def _flags(parser: argparse.ArgumentParser, words: list[str]) -> list[set[str]]:
    """The command's long options, one set per option (aliases such as --suite/--suites together)."""
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return [{o for o in a.option_strings if o.startswith("--")} for a in parser._actions if a.option_strings]


def test_every_command_row_and_its_flags_match_the_cli():
    parser = build_parser()
    seen = set()
    for row in _rows():
        usage = row.split("` |")[0][len("| `mtmoe "):]
        words = re.findall(r"^(?:[a-z]+)(?: show)?", usage)[0].split()
        shown = set(re.findall(r"--[a-z][a-z-]*", usage))
        options = _flags(parser, words)
        takes = set().union(*options)
        assert shown <= takes, f"mtmoe {' '.join(words)}: README shows {sorted(shown - takes)}, the CLI has no such flag"
        seen.add(" ".join(words))
        if words == ["run"] and "--resume" in shown and len(shown) == 1:
            continue  # the --resume row; the next row shows the rest
        known = shown | GLOBAL | ELSEWHERE.get(words[0], set()) | ({"--resume"} if words == ["run"] else set())
        missing = {min(o) for o in options if o and not o & known}
        assert not missing, f"mtmoe {' '.join(words)}: the README's row does not show {sorted(missing)}"
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {w.split()[0] for w in seen} == set(sub.choices), "a command without a README row"


def test_every_command_takes_tasks_dir_as_the_readme_says():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in sub.choices:
        words = [name, "show"] if name == "nets" else [name]
        assert any("--tasks-dir" in o for o in _flags(parser, words)), f"mtmoe {' '.join(words)} takes no --tasks-dir"


def test_netconfigs_cli_flags_are_the_flags_of_run_and_nets_show():
    """NetConfig names the flags of its CLI fields; `run` and `nets show` take exactly those."""
    from mtmoe.nets import NetConfig

    parser = build_parser()
    declared = set(NetConfig.cli_flags())
    for words in (["run"], ["nets", "show"]):
        assert declared <= set().union(*_flags(parser, words)), words
