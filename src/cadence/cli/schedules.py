"""``cadence plot``, ``cadence show`` and ``cadence gallery``: look at schedules before running them."""

from __future__ import annotations

import argparse

from rich.table import Table
from rich.text import Text

from cadence.cli import console as cli_console
from cadence.cli import image_output
from cadence.cli.regimen import is_regimen_path
from cadence.cli.regimen import plot as plot_regimen_file
from cadence.cli.regimen import show as show_regimen_file
from cadence.cli.arguments import MAX_POINTS, image_arg, number, whole
from cadence.clock import BUDGET_RULE, Axis, parse_budget
from cadence.errors import BudgetError, CadenceError
from cadence.spec import parse, to_spec

_SPEC_HELP = "a schedule spec, e.g. \"wsd(peak=3e-4, warmup=1%%, decay=20%%, shape=1-sqrt, floor=0.1)\""
_RATE_HELP = "nominal rates for converting amounts between units, e.g. --tokens-per-step 4096"


def _add_budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", default="10000 steps", help=f"the run's budget (default: 10000 steps); {BUDGET_RULE}")
    p.add_argument("--tokens-per-step", type=number(0, low_open=True), help=_RATE_HELP)
    p.add_argument("--samples-per-step", type=number(0, low_open=True), help="nominal samples (batch size) per step")


def _axis(args: argparse.Namespace) -> Axis:
    budget = parse_budget(args.budget)
    if budget is None:
        raise BudgetError("plots need a budget")
    per_step = {"steps": 1.0}
    if args.tokens_per_step:
        per_step["tokens"] = args.tokens_per_step
    if args.samples_per_step:
        per_step["samples"] = args.samples_per_step
    own = per_step.get(budget.unit)  # unknown: only fractions and amounts in the budget's unit resolve
    rates = {u: own / r for u, r in per_step.items()} if own else {}
    return Axis(budget.unit, budget.amount, rates)


def _plot(args: argparse.Namespace) -> int:
    from cadence.plotting import plot_schedules

    if any(is_regimen_path(s) for s in args.specs):
        return plot_regimen_file(args)

    output = image_output(args.output)
    if args.label and len(args.label) != len(args.specs):
        raise CadenceError(f"--label must be given once per SPEC: {len(args.specs)} spec(s), "
                           f"{len(args.label)} label(s)")
    axis = _axis(args)
    schedules = [parse(s) for s in args.specs]
    for s in schedules:
        s.check(axis)
    fig = plot_schedules(schedules, axis.total, unit=axis.unit, rates=axis.rates, labels=args.label)
    if args.log:
        fig.axes[0].set_yscale("log")
    fig.savefig(output, dpi=120)
    print(f"wrote {output}")
    return 0


def _show(args: argparse.Namespace) -> int:
    if is_regimen_path(args.spec):
        return show_regimen_file(args)
    axis = _axis(args)
    s = parse(args.spec)
    s.check(axis)
    if args.at:
        points = [axis.length(parse_point(p)) for p in args.at]
    else:
        points = [axis.total * i / (args.points - 1) for i in range(args.points)]
    console = cli_console()
    console.print(to_spec(s, defaults=True), highlight=False, soft_wrap=True)
    table = Table()
    table.add_column(axis.unit, justify="right")
    table.add_column("progress", justify="right")
    table.add_column("value", justify="right")
    for t in points:
        table.add_row(f"{t:,.6g}", f"{t / axis.total:.1%}", f"{s.value(t, axis):.6g}")
    console.print(table)
    return 0


def parse_point(text: str):
    """A point on the run for ``show --at``: a duration such as '50%' or '2000 steps'."""
    from cadence.clock import Duration

    return Duration.parse(float(text) if text.replace(".", "", 1).isdigit() and float(text) <= 1 else text)


def _gallery(args: argparse.Namespace) -> int:
    from cadence.plotting import GALLERY, gallery

    path = image_output(args.output)
    gallery(total=10_000, path=path)
    axis = Axis("steps", 10_000, {"tokens": 1e-6, "samples": 1 / 256})
    cols = ["0%", "1%", "5%", "25%", "50%", "75%", "90%", "100%"]
    table = Table(title="every shape at points of a 10,000-step budget", title_justify="left")
    table.add_column("schedule (spec)")
    for c in cols:
        table.add_column(c, justify="right")
    for title, spec in GALLERY:
        s = parse(spec)
        table.add_row(Text.assemble(title, "\n", (spec, "dim")), *(f"{s.value(float(c[:-1]) / 100 * 10_000, axis):.4g}" for c in cols))
    cli_console().print(table)
    print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw schedules on one axis",
                       description="Draw one or more schedules over a budget on one axis and save the figure.",
                       epilog="example: cadence plot 'cosine(peak=3e-4)' 'wsd(peak=3e-4, warmup=1%)' --budget 10000 -o lr.png")
    p.add_argument("specs", nargs="+", metavar="SPEC", help=_SPEC_HELP + ", or one regimen file (.yaml/.yml/.json): "
                   "every schedule over its budget, stages shaded")
    _add_budget_args(p)
    p.add_argument("-o", "--output", type=image_arg, default="schedules.png",
                   help="image file to write (default: schedules.png)")
    p.add_argument("--label", action="append", help="legend label, once per SPEC (default: the spec)")
    p.add_argument("--log", action="store_true", help="logarithmic value axis")
    p.set_defaults(func=_plot)

    p = sub.add_parser("show", help="print a table of a schedule's values",
                       description="Print a schedule's value at evenly spaced or chosen points of a budget.",
                       epilog="example: cadence show 'wsd(peak=3e-4, warmup=1%, decay=20%)' --budget 10000 --at 0 1% 80% 90% 100%")
    p.add_argument("spec", metavar="SPEC", help=_SPEC_HELP + ", or a regimen file (.yaml/.yml/.json): its stages "
                   "and every schedule's values")
    _add_budget_args(p)
    p.add_argument("--points", type=whole(2, MAX_POINTS), default=11,
                   help=f"number of evenly spaced points, 2 to {MAX_POINTS:,} (default: 11)")
    p.add_argument("--at", nargs="+", metavar="WHEN", help="points to show instead: '50%%', '2000 steps', '1M tokens'")
    p.set_defaults(func=_show)

    p = sub.add_parser("gallery", help="render every schedule shape and print their values",
                       description="Render the gallery of every schedule shape cadence ships and print a table of values.")
    p.add_argument("-o", "--output", type=image_arg, default="cadence-gallery.png",
                   help="image file to write (default: cadence-gallery.png)")
    p.set_defaults(func=_gallery)
