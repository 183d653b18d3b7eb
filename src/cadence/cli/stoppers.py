"""``cadence bench stoppers``: the compute Ray Tune's ForecastStopper and EarlyRankingStopper save on a
random search of LR schedules on the pre-training lab, at the best final loss they keep, next to Ray's
own ASHAScheduler and MedianStoppingRule (:mod:`cadence.labs.pretrain.stopper_bench`). Needs
``pip install "cadence[ray]"`` (the stoppers live in the Ray integration; the search itself is replayed
without starting Ray).

    cadence bench stoppers --seeds 5
    cadence bench stoppers --seeds 5 --first-seed 5 -o held_out.json   # a block of new searches
    cadence bench stoppers --size tiny --steps 40 --trials 3 --seeds 1
    cadence bench stoppers --from-records stoppers_5seeds.json,held_out.json   # both blocks, no training
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from cadence.cli.arguments import add_size_option, file_arg, number, whole
from cadence.errors import CadenceError


FROM_RECORDS_CONFLICTS = ("steps", "trials", "seeds", "first_seed", "reports", "peak")
"""Options that shape the training, which ``--from-records`` does not do."""


def print_stopper_benchmark(bench: Any, console: Console, source: str | None = None) -> None:
    from cadence.cli import interval_text
    from cadence.labs.pretrain.stopper_bench import METHODS
    from cadence.labs.rl.bench import interval

    seeds = len(bench.specs)
    first, last = bench.seeds[0], bench.seeds[-1]
    table = Table(title=f"Early stoppers on a random search of {bench.trials} LR schedules ({bench.size} lab, "
                        f"{bench.steps} steps, {seeds} seed(s): {first}" + (f"–{last})" if last != first else ")")
                        + (f" · from {source}" if source else ""))
    for col in ("search", "trial-steps saved", "net of forecast fits", "trials stopped",
                "best final loss / full search's [95% CI]", "best trial kept"):
        table.add_column(col, justify="right")
    for m in METHODS:
        rows = bench.of(m)
        saved = [r.saved for r in rows]
        net = [r.net_saved for r in rows]
        ratio = interval([r.best_final / r.full_best_final for r in rows])
        table.add_row(m, f"{100 * sum(saved) / seeds:.1f}% ({', '.join(f'{100 * s:.0f}' for s in saved)})",
                      f"{100 * sum(net) / seeds:.1f}%", f"{sum(r.stopped for r in rows) / seeds:.1f}",
                      interval_text(*ratio, seeds=seeds), f"{sum(r.best_survives for r in rows)}/{seeds}")
    console.print(table)
    console.print(f"training step {1e3 * bench.step_seconds:.1f} ms CPU" + (" (as recorded)" if source else "")
                  + f"; wall {bench.seconds:.0f} s", highlight=False)


def _bench_stoppers(args: argparse.Namespace) -> int:
    from cadence.cli import console as cli_console
    from cadence.cli import require_ray

    require_ray("cadence bench stoppers")
    from cadence.labs.pretrain.stopper_bench import replay_records, run_stopper_benchmark

    def save(bench: Any) -> None:  # after every seed, so a long run keeps what it measured
        if args.output:
            args.output.write_text(json.dumps(bench.as_dict(), indent=1))

    if args.from_records is not None:
        given = [f"--{n.replace('_', '-')}" for n in FROM_RECORDS_CONFLICTS if getattr(args, n) is not None]
        given += ["--size"] if args.size != "default" else []
        if given:
            raise CadenceError(f"--from-records trains nothing: drop {', '.join(given)}")
        bench = replay_records(*[p for p in args.from_records.split(",") if p])
        save(bench)
        print_stopper_benchmark(bench, cli_console(), source=args.from_records)
    else:
        steps = args.steps if args.steps is not None else (40 if args.size == "tiny" else 400)
        trials = args.trials if args.trials is not None else (3 if args.size == "tiny" else 12)
        reports = 10 if args.reports is None else args.reports
        if reports > steps // 2:
            raise CadenceError(f"--reports {reports} needs at least {2 * reports} steps, got {steps}")
        bench = run_stopper_benchmark(size=args.size, steps=steps, trials=trials, seeds=args.seeds or 5,
                                      first_seed=args.first_seed or 0, reports=reports,
                                      peak=4e-3 if args.peak is None else args.peak, after_seed=save)
        print_stopper_benchmark(bench, cli_console())
    if args.output:
        print(f"wrote {args.output}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``cadence bench stoppers`` to the shared ``bench`` group."""
    from cadence.cli import bench_subcommands

    p = bench_subcommands(subparsers).add_parser(
        "stoppers", help="compute saved by ForecastStopper, EarlyRankingStopper, ASHA and the median rule on a random LR search",
        description="A random search of LR schedules (cosine or WSD, random peak and decay) on the pre-training "
                    "lab, with no stopper, ForecastStopper, EarlyRankingStopper and Ray's ASHAScheduler and "
                    "MedianStoppingRule: trial-steps saved, "
                    "the best final validation loss kept and whether the best trial survives, per seed. "
                    "Needs pip install \"cadence[ray]\".")
    p.add_argument("--steps", type=whole(20), default=None, help="steps per trial (default 400; 40 with --size tiny)")
    p.add_argument("--trials", type=whole(2), default=None, help="trials per search (default 12; 3 with --size tiny)")
    p.add_argument("--seeds", type=whole(1), default=None, help="searches, each with its own draws and seed (default 5)")
    p.add_argument("--first-seed", type=whole(0), default=None,
                   help="seeds run are FIRST_SEED..FIRST_SEED+N-1 (default 0; e.g. 5 for searches held out from "
                        "0..4; merge runs with --from-records)")
    p.add_argument("--reports", type=whole(3), default=None, help="results each trial reports (default 10)")
    p.add_argument("--peak", type=number(0, low_open=True), default=None,
                   help="centre of the peak LR range [peak/4, 2 peak] (default 4e-3)")
    p.add_argument("--from-records", default=None, metavar="JSON[,JSON...]",
                   help="train nothing: replay the searches on the trials earlier runs recorded (their -o; runs "
                        "on other seeds are merged) and print the table (with -o, write the merged records)")
    add_size_option(p, "lab model size: 'tiny' (seconds, a smoke test) or 'default' (the benchmark)")
    p.add_argument("-o", "--output", type=file_arg, help="write every search's figures and schedules here (.json)")
    p.set_defaults(func=_bench_stoppers)
