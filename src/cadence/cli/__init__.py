"""The ``cadence`` command line. Each area adds its subcommands from its own module.

A command module defines ``register(subparsers)``, which adds parsers whose ``func(args)`` runs
the command; list the module in :data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cadence.errors import CadenceError

COMMAND_MODULES = (
    "cadence.cli.schedules",
    "cadence.cli.curricula",
)


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
