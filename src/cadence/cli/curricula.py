"""``cadence plot-curriculum LOG -o arms.png``: arm probabilities over training from a curriculum log."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plot-curriculum", help="plot arm probabilities from a curriculum log (.jsonl/.csv)",
                              description="Plot arm probabilities over training from a log written by "
                                          "cadence.curricula.CurriculumLog.")
    p.add_argument("log", help="curriculum log (.jsonl or .csv)")
    p.add_argument("-o", "--output", default="arms.png", help="image to write (default: arms.png)")
    p.add_argument("--lines", action="store_true", help="draw lines instead of stacked areas")
    p.add_argument("--title", default=None)
    p.set_defaults(func=_plot)


def _plot(args: argparse.Namespace) -> int:
    from cadence.cli import image_output
    from cadence.curricula.plot import plot_curriculum

    out = plot_curriculum(args.log, image_output(args.output), title=args.title, stacked=not args.lines)
    print(f"wrote {out}")
    return 0
