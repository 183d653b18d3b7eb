"""``cadence bench trl``: the RL lab's prompt-selection policies inside TRL's GRPOTrainer."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from cadence.cli import bench_subcommands
from cadence.cli.arguments import SIZES, image_arg, number, whole
from cadence.errors import CadenceError


def register(subparsers: argparse._SubParsersAction) -> None:
    trl = bench_subcommands(subparsers).add_parser(
        "trl", help="the RL lab's prompt selection inside TRL's GRPOTrainer vs TRL alone (ratios with intervals)",
        description="Warm-start a small Llama on the RL lab's tasks with HF's Trainer, then train it with TRL's "
                    "GRPOTrainer alone and with cadence attached under each prompt-selection policy, on the same "
                    "seeds and step budget. Prints rollouts and steps to TRL alone's best pass@1 relative to TRL "
                    "alone (geometric mean, 95% interval over seeds), final pass@1, informative groups, seconds "
                    "per step, and the adapter's overhead. Needs: pip install \"cadence[trl]\".")
    trl.add_argument("--seeds", type=whole(1), default=3, help="number of seeds (0..N-1; default 3)")
    trl.add_argument("--first-seed", type=whole(0), default=0,
                     help="seeds run are FIRST_SEED..FIRST_SEED+N-1 (default 0; merge runs with --from-records)")
    trl.add_argument("--workers", type=whole(1), default=1, help="processes training policies side by side (default 1)")
    trl.add_argument("--size", choices=SIZES, default="default",
                     help="problem size (default: default; tiny runs in seconds, a smoke test)")
    trl.add_argument("--steps", type=whole(1), default=None, help="GRPO steps per policy (default: the size's)")
    trl.add_argument("--target", type=number(0, 1, low_open=True), default=None,
                     help="target mean pass@1 (default: the best TRL alone reaches in the run)")
    trl.add_argument("--policies", default=None,
                     help="comma-separated policies (default: trl,uniform,dump,sec,pass_rate,dynamic,predictive_dump; "
                          "also: predictive, pcl, hints, replay); 'trl' is GRPOTrainer without cadence")
    trl.add_argument("--families", default=None, metavar="NAMES",
                     help="comma-separated task families: registered names or module:attr of a TaskFamily "
                          "(default: the size's)")
    trl.add_argument("--levels", default=None, metavar="LEVELS",
                     help="comma-separated levels every family must have (default: the size's)")
    trl.add_argument("--experiment", choices=("policies", "overhead"), default="policies",
                     help="policies: the comparison (default); overhead: TRL alone vs TRL + cadence (uniform) "
                          "seconds per step, alternating runs in one process (--seeds pairs of runs, seed 0)")
    trl.add_argument("--compare-lab", action="store_true",
                     help="also run 'bench rl' (the lab's own GRPO loop) on the same suite, seeds and knobs, and "
                          "print its table too (with -o, its rows and records go into the JSON under 'lab')")
    trl.add_argument("-o", "--output", type=image_arg, default=None,
                     help="plot of pass@1 against rollouts (e.g. trl.png); the per-seed records go next to it as .json")
    trl.add_argument("--from-records", default=None, metavar="JSON[,JSON...]",
                     help="train nothing: print the table and (with -o) draw the plot from the per-seed records "
                          "earlier runs wrote (their -o's .json; several runs on other seeds are merged)")
    trl.set_defaults(func=run_bench_trl)


def run_bench_trl(args: argparse.Namespace) -> int:
    from cadence.cli import console as cli_console

    from cadence.cli.rl import _task_options
    from cadence.labs.trl import require_trl

    out = args.output
    if args.from_records is not None:
        return _from_records(args)
    require_trl()
    from cadence.labs.rl.experiment import LabConfig
    from cadence.labs.trl.experiment import BASELINE, lab_for

    lab = lab_for(args.size, args.steps, args.target, args.policies, *_task_options(args))
    lab_twin = None
    if args.first_seed and (args.compare_lab or args.experiment == "overhead"):
        raise CadenceError("--first-seed applies to the policies comparison alone: drop it with "
                           + ("--compare-lab" if args.compare_lab else "--experiment overhead"))
    if args.compare_lab:
        if "uniform" not in lab.policies:
            raise CadenceError("--compare-lab measures the lab against uniform: include 'uniform' in --policies")
        lab_twin = LabConfig(suite=lab.suite, warm=lab.warm, grpo=lab.grpo, target=lab.target,
                             policies=tuple(p for p in lab.policies if p != BASELINE))
    console = cli_console()
    if args.experiment == "overhead":
        console.print(_run_overhead(lab, args, console))
        return 0
    trl_table, overhead_line, seconds = _run_trl(lab, args, console, out)
    console.print(trl_table)
    console.print(overhead_line)
    if lab_twin is not None:
        table, rows, comparisons = _run_lab(lab_twin, args, console)
        console.print(table)
        if out is not None:
            _add_lab(out.with_suffix(".json"), lab_twin, rows, comparisons)
    console.print(f"wall time: {seconds:.0f} s for TRL" + ("" if lab_twin is None else " (the lab's run follows it)"))
    return 0


FROM_RECORDS_CONFLICTS = ("steps", "target", "policies", "families", "levels", "compare_lab", "first_seed")


def _from_records(args: argparse.Namespace) -> int:
    """``--from-records``: the table and the plot of a saved run, without training."""
    from cadence.cli import console as cli_console
    from cadence.labs.rl.report import label
    from cadence.labs.trl import bench
    from cadence.labs.trl.experiment import BASELINE

    given = [f"--{name.replace('_', '-')}" for name in FROM_RECORDS_CONFLICTS
             if getattr(args, name) not in (None, False)]
    if given or args.experiment != "policies":
        raise CadenceError(f"--from-records trains nothing: drop {', '.join(given) or '--experiment overhead'}")
    recs = bench.read_records(*args.from_records.split(","))
    seeds = len({r["seed"] for r in recs})
    timing = {t.policy: (t.step_seconds, t.refill_seconds) for t in bench.timings_of(recs)}
    names = {r["policy"]: ("TRL alone" if r["policy"] == BASELINE else f"TRL + {label(r['policy'])}") for r in recs}
    console = cli_console()
    title = (f"TRL GRPOTrainer · to reach TRL alone's best pass@1 vs TRL alone · {seeds} seeds · "
             f"geometric mean [95% CI] · from {args.from_records}")
    console.print(ratio_table(title, bench.rows_of(recs), timing, names, bench.extras_of(recs)))
    if args.output is not None:
        console.print(f"wrote {bench.plot_records(recs, args.output)}")
    return 0


def _fmt(t: tuple[float, float, float]) -> str:
    return f"{t[0]:.2f} [{t[1]:.2f}, {t[2]:.2f}]"


def ratio_table(title: str, rows: list, seconds: dict[str, tuple[float, float]] | None = None, names=None,
                extras: dict[str, tuple[float, str]] | None = None):
    """The ``bench rl`` table shape; ``seconds``: per policy (s/step, refill s/step); ``extras``: per
    policy (rollouts/step, counters in words; :func:`cadence.labs.trl.bench.extras_of`)."""
    from rich.table import Table

    from cadence.labs.rl.report import label

    table = Table(title=title)
    columns = ["policy", "rollouts ratio", "steps ratio", "reached target", "final pass@1", "informative groups"]
    notes = extras is not None and any(note for _, note in extras.values())
    for col in (columns + (["rollouts/step"] if extras else []) + (["s/step", "refill s/step"] if seconds else [])
                + (["counters"] if notes else [])):
        table.add_column(col, justify="left" if col in ("policy", "counters") else "right")
    for r in rows:
        cells = [(names or {}).get(r.policy, label(r.policy)), _fmt(r.rollouts_ratio), _fmt(r.steps_ratio),
                 f"{r.reached}/{r.seeds}", f"{r.final_accuracy:.3f}", f"{r.informative_share:.0%}"]
        if extras:
            cells.append(f"{extras[r.policy][0]:.0f}")
        if seconds:
            cells += [f"{seconds[r.policy][0]:.2f}", f"{seconds[r.policy][1]:.2f}"]
        if notes:
            cells.append(extras[r.policy][1])
        table.add_row(*cells)
    return table


def _run_trl(lab, args, console, out):
    from cadence.labs.rl.report import label
    from cadence.labs.trl import bench
    from cadence.labs.trl.experiment import BASELINE
    from cadence.progress import Progress

    start = time.perf_counter()
    with Progress(console=console) as progress:
        task = progress.task("bench trl", total=args.seeds * len(lab.policies) * lab.grpo.steps)
        save = None if out is None else (lambda done: bench.write_json(out.with_suffix(".json"), lab,
                                                                       bench.ratio_rows(done, BASELINE), done))
        rows, comparisons = bench.bench_trl(lab, args.seeds, on_step=lambda *_: task.advance(), on_seed=save,
                                            workers=args.workers, first_seed=args.first_seed)
    seconds = time.perf_counter() - start
    timing = {t.policy: (t.step_seconds, t.refill_seconds) for t in bench.timings(comparisons)}
    names = {p: ("TRL alone" if p == BASELINE else f"TRL + {label(p)}") for p in lab.policies}
    table = ratio_table(f"TRL GRPOTrainer · to reach TRL alone's best pass@1 vs TRL alone · {args.seeds} seeds · "
                        f"geometric mean [95% CI]", rows, timing, names, bench.extras_of(bench.records(comparisons)))
    over = bench.overhead(comparisons)
    line = ("overhead: needs both 'trl' and 'uniform'" if over is None else
            f"overhead of cadence (uniform) over TRL alone, median s/step per seed, refills excluded: "
            f"{_fmt(over)}× ({timing['uniform'][0]:.3f} vs {timing[BASELINE][0]:.3f} s/step)")
    if out is not None:
        bench.plot(comparisons, out)
        bench.write_json(out.with_suffix(".json"), lab, rows, comparisons)
        line += f"\nwrote {out} and {out.with_suffix('.json')}"
    return table, line, seconds


def _run_lab(lab, args, console):
    from cadence.labs.rl import bench
    from cadence.progress import Progress

    with Progress(console=console) as progress:
        task = progress.task("bench rl (the lab, same suite)", total=args.seeds * len(lab.policies) * lab.grpo.steps)
        rows, comparisons = bench.bench_curricula(lab, args.seeds, on_step=lambda *_: task.advance(),
                                                  workers=args.workers)
    return ratio_table(f"the lab's GRPO · to reach uniform's best pass@1 vs uniform · {args.seeds} seeds · "
                       f"geometric mean [95% CI]", rows), rows, comparisons


def _add_lab(path, lab, rows, comparisons) -> None:
    """Add the lab's run (``--compare-lab``) to the bench's JSON under ``"lab"``: config, rows, records."""
    import json
    from dataclasses import asdict

    from cadence.labs.trl import bench

    data = json.loads(path.read_text())
    data["lab"] = {"config": repr(lab), "rows": [asdict(r) for r in rows], "records": bench.records(comparisons)}
    path.write_text(json.dumps(data, indent=1))


def _run_overhead(lab, args, console) -> str:
    import numpy as np

    from cadence.labs.trl import bench
    from cadence.progress import Progress

    with Progress(console=console) as progress:
        task = progress.task("bench trl · overhead", total=2 * args.seeds * lab.grpo.steps)
        result = bench.measure_overhead(lab, 0, args.seeds, on_step=lambda *_: task.advance())
    med = result["median_step_seconds"]
    pairs = ", ".join(f"{u:.3f}/{t:.3f}" for u, t in zip(med["uniform"], med["trl"]))
    shares = ", ".join(f"{s:.2%}" for s in result["hook_share"])
    return (f"overhead of cadence (uniform sampling) over TRL alone, {args.seeds} alternating pairs of "
            f"{lab.grpo.steps}-step runs: {_fmt(result['overhead'])}× median s/step "
            f"(per pair, uniform/TRL alone: {pairs})\n"
            f"time inside cadence's own code (its wrappers of TRL's methods minus TRL's, and its callback): "
            f"{1000 * np.mean(result['hook_seconds_per_step']):.1f} ms per step, {np.mean(result['hook_share']):.2%} "
            f"of the step (per uniform run: {shares})")
