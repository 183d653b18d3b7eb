"""The ``cadence`` command line. Each area adds its subcommands from its own module.

A command module defines ``register(subparsers)``, which adds parsers whose ``func(args)`` runs
the command; list the module in :data:`COMMAND_MODULES`. Benchmarks share one group, ``cadence bench``:
a module adds its own with ``bench_subcommands(subparsers).add_parser("name", ...)``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from cadence.errors import CadenceError

COMMAND_MODULES = (
    "cadence.cli.schedules",
    "cadence.cli.rl",
    "cadence.cli.trl",
    "cadence.cli.curricula",
    "cadence.cli.forecast",
    "cadence.cli.tree",
    "cadence.cli.continual",
    "cadence.cli.pbt",
    "cadence.cli.stoppers",
    "cadence.cli.doctor",
)


def command_group(subparsers: argparse._SubParsersAction, name: str, *, help: str, description: str,
                  metavar: str) -> argparse._SubParsersAction:
    """The subcommand group of ``cadence NAME`` (created on first use, so module order does not matter)."""
    group = subparsers.choices.get(name)
    if group is None:
        group = subparsers.add_parser(name, help=help, description=description)
        return group.add_subparsers(dest=name, required=True, metavar=metavar)
    for action in group._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise CadenceError(f"the {name!r} command exists but has no subcommand group")


def bench_subcommands(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The subcommand group of ``cadence bench``."""
    return command_group(subparsers, "bench", help="benchmarks that print measured figures",
                         description="Benchmarks that print measured figures.", metavar="BENCHMARK")



class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (the usage is in ``--help``); subcommands inherit it."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="cadence",
        description="cadence: schedules, curricula and budgets for PyTorch training on one clock.",
        epilog="Run 'cadence COMMAND --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


LOG_WIDTH = 400
"""Width of the console off a terminal: wide enough that rich never cuts a table cell in a log."""


def console(**kwargs: Any) -> Any:
    """The rich console a command prints to: on a terminal its width; piped to a file or a log,
    :data:`LOG_WIDTH` columns, so tables keep full names (``constant_24000``, not ``constan…``)."""
    from rich.console import Console

    out = Console(**kwargs)
    if not out.is_terminal and "width" not in kwargs:
        out = Console(width=LOG_WIDTH, **kwargs)
    return out


def require_ray(command: str) -> None:
    """A one-line :class:`CadenceError` naming the extra when Ray Tune is not installed (``command``: what needs it)."""
    try:
        found = importlib.util.find_spec("ray.tune") is not None   # not a bare 'ray' folder (Ray's /tmp/ray) on the path
    except ModuleNotFoundError:
        found = False
    if not found:
        raise CadenceError(f'{command} needs Ray Tune: pip install "cadence[ray]"')


def interval_text(mean: float, low: float, high: float, seeds: int, digits: int = 4) -> str:
    """``'0.9120 [0.8820, 0.9430]'``; with one seed there is no interval: ``'0.8820 (interval n/a: 1 seed)'``.

        >>> interval_text(0.882, 0.882, 0.882, seeds=1, digits=3)
        '0.882 (interval n/a: 1 seed)'
    """
    if seeds < 2:
        return f"{mean:.{digits}f} (interval n/a: 1 seed)"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def image_output(path: str | Path) -> Path:
    """Check an image path before any work is done (:func:`cadence.cli.arguments.output_image`)."""
    from cadence.cli.arguments import output_image

    return output_image(path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cadence`` script; returns the exit code.

    Any error ends with one line on stderr and exit code 2: a bad command line (checked, output paths
    included, before anything runs: see :mod:`cadence.cli.arguments`), bad input (a :class:`CadenceError`), a file
    that cannot be read or written (``OSError``), or text that is not text (``UnicodeError``). Other
    exceptions are bugs: they also exit 2 (so a gate such as ``cadence check`` never mistakes a crash
    for its own codes), with the traceback when ``CADENCE_DEBUG=1``.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad command line (2, one line already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except CadenceError as e:
        print(f"cadence: error: {e}", file=sys.stderr)
    except OSError as e:
        where = f" {e.filename!r}" if e.filename else ""
        print(f"cadence: error: cannot access{where}: {e.strerror or e}", file=sys.stderr)
    except UnicodeError as e:
        print(f"cadence: error: the input is not UTF-8 text ({e})", file=sys.stderr)
    except Exception as e:  # a bug: still one line and exit 2 unless debugging
        if os.environ.get("CADENCE_DEBUG") == "1":
            raise
        print(f"cadence: internal error: {type(e).__name__}: {e} (set CADENCE_DEBUG=1 for the traceback; "
              f"please report it)", file=sys.stderr)
    return 2
