"""``cadence demo`` and ``cadence bench rl``: the RL lab's commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from cadence.cli import bench_subcommands, command_group
from cadence.cli.arguments import SIZES, file_arg, folder_arg, image_arg, number, whole
from cadence.errors import CadenceError


def _size_options(parser: argparse.ArgumentParser, default_size: str) -> None:
    parser.add_argument("--size", choices=SIZES, default=default_size,
                        help=f"problem size (default: {default_size}; tiny runs in seconds)")
    parser.add_argument("--quick", action="store_const", const="tiny", dest="size", help="same as --size tiny")
    parser.add_argument("--steps", type=whole(1), default=None, help="GRPO steps per policy (default: the size's)")
    parser.add_argument("--target", type=number(0, 1, low_open=True), default=None,
                        help="target mean pass@1 (default: the best uniform sampling reaches in the run)")
    parser.add_argument("--policies", default=None,
                        help="comma-separated policies to compare (default: uniform,dump,sec,pass_rate,predictive,"
                             "predictive_dump; also: dynamic, d3s, pcl, gvm, replay, hints)")
    parser.add_argument("--families", default=None, metavar="NAMES",
                        help="comma-separated task families: registered names or module:attr of a TaskFamily "
                             "(e.g. add,sort,mytasks:rev; default: the size's)")
    parser.add_argument("--levels", default=None, metavar="LEVELS",
                        help="comma-separated levels every family must have (e.g. 1,2; default: the size's)")


def _lab_policies(args: argparse.Namespace) -> None:
    """Refuse a ``--policies`` list naming a policy the RL lab does not have."""
    if args.policies is not None:
        from cadence.labs.rl.experiment import POLICIES

        names = [p.strip() for p in args.policies.split(",")]
        unknown = [p for p in names if p not in POLICIES]
        if not all(names) or unknown:
            raise CadenceError(f"--policies needs comma-separated names from {', '.join(POLICIES)}, "
                               f"got {args.policies!r}")


def _task_options(args: argparse.Namespace) -> tuple[list[str] | None, list[int] | None]:
    """``--families`` and ``--levels`` as lists (``None`` when not given); bad lists are refused."""
    families = levels = None
    if args.families is not None:
        families = [f.strip() for f in args.families.split(",")]
        if not all(families):
            raise CadenceError(f"--families needs comma-separated family names, got {args.families!r}")
    if args.levels is not None:
        parts = [p.strip() for p in args.levels.split(",")]
        if not all(p.isascii() and p.isdigit() and int(p) >= 1 for p in parts):
            raise CadenceError(f"--levels needs comma-separated positive integers, got {args.levels!r}")
        levels = [int(p) for p in parts]
    return families, levels


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="GRPO on a tiny model: uniform vs DUMP, SEC and pass-rate/predictive filters, with a report",
        description="Warm-start a tiny transformer on generated reasoning tasks, then train it with GRPO "
                    "under uniform sampling, DUMP, SEC, pass-rate filtering, the predictive filter and the "
                    "predictive filter with DUMP, on the same seed and budget. Prints a comparison and writes "
                    "report.md with plots.")
    demo.add_argument("-o", "--output", type=folder_arg, default="cadence-demo",
                      help="folder for the report (default: cadence-demo/)")
    demo.add_argument("--seed", type=whole(0), default=0, help="random seed (default: 0)")
    demo.add_argument("--workers", type=whole(1), default=None,
                      help="processes training policies side by side (default: 2, or 1 with --quick)")
    _size_options(demo, "default")
    demo.set_defaults(func=run_demo_command)

    rl = bench_subcommands(subparsers).add_parser(
        "rl", help="curricula vs uniform over seeds (ratios with intervals), or the budget experiments",
        description="curricula: rollouts and steps to the target accuracy relative to uniform, over seeds, "
                    "with 95% t-intervals. length: a tightened response-length budget vs a fixed one. "
                    "allocation: knapsack rollout allocation vs the same number of answers per prompt. "
                    "hpt: HPT's per-prompt SFT/RL gate vs GRPO vs SFT-then-GRPO (equal rollouts and SFT tokens). "
                    "limr: a LIMR subset chosen from a pilot run vs the whole prompt pool.")
    rl.add_argument("--seeds", type=whole(1), default=3, help="number of seeds (0..N-1; default 3)")
    rl.add_argument("--first-seed", type=whole(0), default=0,
                    help="seeds run are FIRST_SEED..FIRST_SEED+N-1 (curricula; default 0; merge runs with --from-records)")
    rl.add_argument("-o", "--output", type=image_arg, default=None,
                    help="plot of pass@1 against rollouts (curricula; e.g. rl.png); the per-seed records go next "
                         "to it as .json")
    rl.add_argument("--from-records", default=None, metavar="JSON[,JSON...]",
                    help="train nothing: print the curricula table and (with -o) draw the plot from the per-seed "
                         "records earlier runs wrote (their -o's .json; several runs on other seeds are merged)")
    rl.add_argument("--experiment", choices=("curricula", "length", "allocation", "hpt", "limr"), default="curricula",
                    help="which experiment (default: curricula)")
    rl.add_argument("--workers", type=whole(1), default=1, help="processes training policies side by side (curricula)")
    _size_options(rl, "default")
    rl.set_defaults(func=run_bench_command)

    limr = rl_subcommands(subparsers).add_parser(
        "limr", help="LIMR: the samples of a pilot run whose reward curve tracks the run's average",
        description="Read a pilot run's log (JSON lines: step, id, reward), score each sample by LIMR's learning "
                    "impact (arXiv 2502.11886) and write the ids scoring at least the threshold.")
    limr.add_argument("log", type=Path, help="the run log (JSON lines with step, id, reward)")
    limr.add_argument("-o", "--output", type=file_arg, required=True, help="JSON file for the selected ids")
    limr.add_argument("--threshold", type=number(), default=0.6, help="keep scores >= this (paper: 0.6; default 0.6)")
    limr.add_argument("--steps-per-epoch", type=whole(1), default=1,
                      help="steps per epoch of the pilot run (epoch = step // this; default 1)")
    limr.set_defaults(func=run_limr_command)


def rl_subcommands(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The subcommand group of ``cadence rl``."""
    return command_group(subparsers, "rl", help="RL post-training tools (e.g. LIMR data selection)",
                         description="RL post-training tools.", metavar="TOOL")


def run_limr_command(args: argparse.Namespace) -> int:
    import json

    from cadence.rl.limr import limr, read_run_log

    if not args.log.is_file():
        raise CadenceError(f"cannot read the run log {str(args.log)!r}: no such file")
    kept, scores = limr(read_run_log(args.log), steps_per_epoch=args.steps_per_epoch, threshold=args.threshold)
    args.output.write_text(json.dumps({"ids": kept, "threshold": args.threshold, "steps_per_epoch": args.steps_per_epoch,
                                       "scores": [[i, s] for i, s in scores.items()]}, indent=1), encoding="utf-8")
    print(f"kept {len(kept)} of {len(scores)} scored samples (score >= {args.threshold:g}) -> {args.output}")
    return 0


def run_demo_command(args: argparse.Namespace) -> int:
    from cadence.labs.rl.demo import run_demo

    _lab_policies(args)
    families, levels = _task_options(args)
    from cadence.cli import console

    run_demo(args.size, args.output, console=console(), seed=args.seed, steps=args.steps, target=args.target,
             workers=args.workers,
             policies=args.policies, families=families, levels=levels)
    return 0


RECORD_OPTIONS = ("first_seed", "output", "from_records")
FROM_RECORDS_CONFLICTS = ("steps", "target", "policies", "families", "levels", "first_seed")


def _record_options(args: argparse.Namespace) -> None:
    """Refuse ``--first-seed``, ``-o`` and ``--from-records`` where they do not apply."""
    given = [f"--{n.replace('_', '-')}" if n != "output" else "-o" for n in RECORD_OPTIONS
             if getattr(args, n) not in (None, 0)]
    if args.experiment != "curricula" and given:
        raise CadenceError(f"{', '.join(given)} apply to --experiment curricula alone, not {args.experiment}")
    if args.from_records is not None:
        conflicts = [f"--{n.replace('_', '-')}" for n in FROM_RECORDS_CONFLICTS if getattr(args, n) not in (None, 0)]
        conflicts += [f"--{n}" for n, default in (("workers", 1), ("size", "default")) if getattr(args, n) != default]
        if conflicts:
            raise CadenceError(f"--from-records trains nothing: drop {', '.join(conflicts)}")


def curricula_table(rows: list, seeds: int):
    """The ``bench rl`` curricula table: per policy, ratios vs uniform with intervals over ``seeds``."""
    from rich.table import Table

    from cadence.cli import interval_text
    from cadence.labs.rl.report import label

    table = Table(title=f"to reach the target vs uniform · {seeds} seeds · geometric mean [95% CI]")
    for col in ("policy", "rollouts ratio", "steps ratio", "reached target", "final pass@1",
                "informative groups"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for r in rows:
        fmt = lambda t: interval_text(*t, seeds=seeds, digits=2)  # noqa: E731
        table.add_row(label(r.policy), fmt(r.rollouts_ratio), fmt(r.steps_ratio), f"{r.reached}/{r.seeds}",
                      f"{r.final_accuracy:.3f}", f"{r.informative_share:.0%}")
    return table


def _bench_from_records(args: argparse.Namespace) -> int:
    """``--from-records``: the curricula table and the plot of saved runs, without training."""
    from cadence.cli import console as cli_console
    from cadence.labs.rl import bench

    recs = bench.read_records(*args.from_records.split(","))
    console = cli_console()
    console.print(curricula_table(bench.rows_of(recs), len({r["seed"] for r in recs})))
    console.print(f"from the records in {args.from_records}")
    if args.output is not None:
        console.print(f"wrote {bench.plot_records(recs, args.output)}")
    return 0


def run_bench_command(args: argparse.Namespace) -> int:
    import numpy as np
    from rich.table import Table

    from cadence.cli import console as cli_console
    from cadence.labs.rl import bench
    from cadence.labs.rl.demo import lab_for
    from cadence.progress import Progress

    _lab_policies(args)
    _record_options(args)
    if args.from_records is not None:
        return _bench_from_records(args)
    console = cli_console()
    lab = lab_for(args.size, args.steps, args.target, args.policies, *_task_options(args))
    if args.experiment == "hpt":
        from cadence.labs.rl.hpt_bench import run_hpt_command

        return run_hpt_command(lab, args.seeds, console)
    runs = {"curricula": len(lab.policies), "length": 3, "allocation": 2, "limr": 2}[args.experiment]
    with Progress(console=console) as progress:
        task = progress.task(f"bench rl · {args.experiment}", total=args.seeds * runs * lab.grpo.steps, unit="steps")
        tick = lambda *_: task.advance()  # noqa: E731
        if args.experiment == "curricula":
            rows, comparisons = bench.bench_curricula(lab, args.seeds, on_step=tick, workers=args.workers,
                                                      first_seed=args.first_seed)
        elif args.experiment == "length":
            result = bench.bench_length(lab, args.seeds, on_step=tick)
        elif args.experiment == "limr":
            result = bench.bench_limr(lab, args.seeds, on_step=tick)
        else:
            result = bench.bench_allocation(lab, args.seeds, on_step=tick)
    if args.experiment == "curricula":
        table = curricula_table(rows, args.seeds)
    else:
        table = Table(title=f"bench rl · {args.experiment} · {args.seeds} seeds · mean (min–max)")
        metrics = list(next(iter(result.values())))
        table.add_column("setting")
        for m in metrics:
            table.add_column(m.replace("_", " "), justify="right")
        for name, values in result.items():
            cells = [f"{np.mean(v):.3f} ({np.min(v):.3f}–{np.max(v):.3f})" if isinstance(v, list) else f"{v:.3f}"
                     for v in values.values()]
            table.add_row(name, *cells)
    console.print(table)
    if args.experiment == "curricula" and args.output is not None:
        path = bench.write_json(args.output.with_suffix(".json"), lab, rows, comparisons)
        console.print(f"wrote {bench.plot_records(bench.records(comparisons), args.output)} and {path}")
    return 0
