"""The ``cadence`` command line. Each area adds its subcommands from its own module.

A command module defines ``register(subparsers)``, which adds parsers whose ``func(args)`` runs
the command; list the module in :data:`COMMAND_MODULES`. Benchmarks share one group, ``cadence bench``:
a module adds its own with ``bench_subcommands(subparsers).add_parser("name", ...)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cadence.errors import CadenceError

COMMAND_MODULES = (
    "cadence.cli.schedules",
    "cadence.cli.rl",
    "cadence.cli.curricula",
    "cadence.cli.forecast",
    "cadence.cli.tree",
    "cadence.cli.pbt",
    "cadence.cli.doctor",
)


def bench_subcommands(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The subcommand group of ``cadence bench`` (created on first use, so module order does not matter)."""
    bench = subparsers.choices.get("bench")
    if bench is None:
        bench = subparsers.add_parser("bench", help="benchmarks that print measured figures",
                                      description="Benchmarks that print measured figures.")
        return bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for action in bench._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise CadenceError("the 'bench' command exists but has no subcommand group")



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cadence",
        description="cadence: schedules, curricula and budgets for PyTorch training on one clock.",
        epilog="Run 'cadence COMMAND --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cadence`` script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CadenceError as e:
        print(f"cadence: error: {e}", file=sys.stderr)
        return 2
