"""``cadence bench pbt``: population-based training of the LR schedule on the pre-training lab, on
local Ray Tune, against cosine, the forecast-optimised WSD, and the PBT-found schedule replayed
from scratch (:mod:`cadence.labs.pretrain.pbt_bench`). Needs ``pip install "cadence[ray]"``.

    cadence bench pbt --steps 400 --seeds 2
    cadence bench pbt --size tiny --steps 32 --seeds 1
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from cadence.cli.arguments import add_size_option, duration, image_arg, number, whole


def print_pbt_benchmark(bench: Any, console: Console) -> None:
    from cadence.cli import interval_text
    from cadence.labs.pretrain.pbt_bench import COMPUTE, METHODS

    n = len(bench.specs)
    table = Table(title=f"PBT on the pre-training lab ({bench.size}, {bench.steps} steps, {n} seed(s)): "
                        "final validation loss")
    for col in ("schedule", "compute (runs)", "loss per seed", "mean", "ratio to cosine [95% CI]"):
        table.add_column(col, justify="right")
    for m in METHODS:
        v = bench.losses[m]
        table.add_row(m, str(COMPUTE[m]), ", ".join(f"{x:.4f}" for x in v), f"{v.mean():.4f}",
                      interval_text(*bench.ratios(m), seeds=n))
    console.print(table)
    for seed, (spec, wsd) in enumerate(zip(bench.specs, bench.forecast_specs)):
        console.print(f"seed {seed}: forecast WSD {wsd}\n        PBT-found {spec}", highlight=False, soft_wrap=True)
    console.print(f"wall {bench.seconds:.0f} s", highlight=False)


def _bench_pbt(args: argparse.Namespace) -> int:
    from cadence.cli import console as cli_console
    from cadence.cli import require_ray

    require_ray("cadence bench pbt")
    from cadence.labs.pretrain.pbt_bench import plot_pbt_benchmark, run_pbt_benchmark

    steps = args.steps if args.steps is not None else (32 if args.size == "tiny" else 400)
    bench = run_pbt_benchmark(steps=steps, seeds=args.seeds, size=args.size, peak=args.peak, glide=args.glide)
    print_pbt_benchmark(bench, cli_console())
    if args.output:
        print(f"wrote {plot_pbt_benchmark(bench, args.output)}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``cadence bench pbt`` to the shared ``bench`` group."""
    from cadence.cli import bench_subcommands

    p = bench_subcommands(subparsers).add_parser(
        "pbt", help="PBT of the LR schedule on local Ray Tune vs cosine and the forecast WSD",
        description="Population-based training of the LR schedule on the pre-training lab, on local Ray Tune, "
                    "against cosine, the forecast-optimised WSD, and the PBT-found schedule replayed from scratch: "
                    "final validation loss per seed and its ratio to cosine. Needs pip install \"cadence[ray]\".")
    p.add_argument("--steps", type=whole(1), default=None, help="steps per run (default 400; 32 with --size tiny)")
    p.add_argument("--seeds", type=whole(1), default=2, help="seeds (default 2)")
    add_size_option(p, "lab model size: 'tiny' (seconds, a smoke test) or 'default' (the benchmark)")
    p.add_argument("--peak", type=number(0, low_open=True), default=4e-3,
                   help="cosine peak and centre of PBT's peak range (default 4e-3)")
    p.add_argument("--glide", type=duration, default="2%",
                   help="how long a perturbed schedule glides to its new values (default 2%%)")
    p.add_argument("-o", "--output", type=image_arg, help="write a plot of the schedules and losses here (.png)")
    p.set_defaults(func=_bench_pbt)
