"""``cadence bench continual``: continual pre-training with replay on the pre-training lab.

A model trained on the shipped corpus continues on its shifted copy (letters rotated by 13) with a
re-warmed, re-decayed LR, replaying a fraction ρ of the old corpus in every batch (Ibrahim et al.,
arXiv 2403.08763); prints the validation loss on both corpora per ρ with 95% t-intervals. The runs
live in :mod:`cadence.labs.pretrain.continual`.

    cadence bench continual --seeds 5
    cadence bench continual --size tiny
"""

from __future__ import annotations

import argparse
from typing import Any

SIZES = {"tiny": (20, 10), "default": (600, 300)}
"""Steps of the first and the continued phase per size."""


def _fractions(text: str) -> list[float]:
    from cadence.errors import CadenceError

    try:
        values = [float(p) for p in text.split(",")]
    except ValueError:
        raise CadenceError(f"--fractions needs comma-separated numbers in [0, 1), got {text!r}") from None
    if not all(0.0 <= v < 1.0 for v in values):
        raise CadenceError(f"--fractions needs comma-separated numbers in [0, 1), got {text!r}")
    return values


def _bench_continual(args: argparse.Namespace) -> int:
    from cadence.cli import console as cli_console

    from cadence.errors import CadenceError
    from cadence.labs.pretrain.continual import run_continual
    from cadence.labs.pretrain.tree_bench import lab_config
    from cadence.progress import Progress

    fractions = _fractions(args.fractions)
    if args.seeds < 1:
        raise CadenceError(f"--seeds must be at least 1, got {args.seeds}")
    first, second = SIZES[args.size]
    cfg = lab_config("tiny" if args.size == "tiny" else "small")
    with Progress(transient=True) as progress:
        tick = progress.counter("bench continual · runs", args.seeds * (1 + len(fractions)))
        res = run_continual(cfg, first=first, second=second, seeds=args.seeds, fractions=fractions,
                            peak=args.peak, on_step=tick)
    print_continual(res, cli_console())
    return 0


def print_continual(res: Any, console: Any) -> None:
    from rich.table import Table

    s = res.settings
    fmt = lambda t: f"{t[0]:.4f} [{t[1]:.4f}, {t[2]:.4f}]"  # noqa: E731
    table = Table(title=f"continual pre-training · {s['first']} steps on D0, {s['second']} on D1 (ROT13) · "
                        f"{s['seeds']} seeds · val loss mean [95% CI]")
    for col in ("replay ρ", "tokens replayed", "loss on D0 (forgetting)", "loss on D1 (learning)"):
        table.add_column(col, justify="right")
    table.add_row("before D1", "—", fmt(res.before_old), fmt(res.before_new))
    for r in res.rows:
        table.add_row(f"{r.fraction:g}", f"{r.replayed:.3f}", fmt(r.old_loss), fmt(r.new_loss))
    console.print(table)
    console.print(f"LR: {s['schedule_two']}; wall {res.seconds:.0f} s", highlight=False)


def register(subparsers: Any) -> None:
    """Add ``cadence bench continual`` to the shared ``bench`` group."""
    from cadence.cli import bench_subcommands

    p = bench_subcommands(subparsers).add_parser(
        "continual", help="continual pre-training: re-warm on a shifted corpus with replay ρ = 0, 0.05, 0.25",
        description="Train on the lab corpus, continue on a shifted copy with a re-warmed LR, replaying a fraction "
                    "of the old corpus in every batch; validation loss on both corpora over seeds.")
    p.add_argument("--size", choices=tuple(SIZES), default="default",
                   help="'tiny' (seconds, a smoke test) or 'default' (600 + 300 steps of the small lab model)")
    p.add_argument("--seeds", type=int, default=3, help="seeds (default 3)")
    p.add_argument("--fractions", default="0,0.05,0.25", help="replay fractions (default 0,0.05,0.25)")
    p.add_argument("--peak", type=float, default=3e-3, help="peak LR of both phases (default 3e-3)")
    p.set_defaults(func=_bench_continual)
