"""``cadence bench tree`` and ``cadence bench codesign``: the WSD tree and the curriculum × LR study,
run on the pre-training lab.

* **tree** — budgets ``B, 2B, 4B, 8B``: one constant-LR trunk with 1-sqrt cooldown branches (and,
  with ``--wsd-s``, a WSD-S chain) against four dedicated cosine runs; prints total compute against
  ``(1 − d)·B_max + d·ΣB_k`` and each model's final validation loss against its dedicated run.
* **codesign** — quality-ascending data order vs a random order of the same documents, each with
  (a) full LR decay, (b) moderate decay, (c) constant LR plus tail averaging of the last
  checkpoints; mean ± std of the validation loss over seeds ("How Learning Rate Decay Wastes Your Best Data in
  Curriculum-Based LLM Pretraining", Luo et al., arXiv 2511.18903).

The runs live in :mod:`cadence.labs.pretrain.tree_bench`; this module prints them. Sizes are flags so
tests run them tiny.

    cadence bench tree --base 200
    cadence bench codesign --steps 500 --seeds 3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cadence.cli import console as cli_console
from cadence.cli.arguments import add_size_option, file_arg, image_arg, number, whole
from cadence.progress import Progress
from cadence.tree import plan_tree


def print_tree_benchmark(bench: Any, console: Console) -> None:
    plan = bench.plan
    table = Table(title=f"WSD tree vs dedicated cosine runs (decay {plan.decay:.0%}, 1-sqrt; peak {plan.peak:g})")
    for col in ("budget", "dedicated cosine", "tree branch", "gap", "within 1%"):
        table.add_column(col, justify="right")
    if bench.wsds_compute is not None:
        table.add_column("WSD-S", justify="right")
        table.add_column("WSD-S gap", justify="right")
    for r in bench.rows:
        cells = [str(r.budget), f"{r.dedicated_loss:.4f}", f"{r.tree_loss:.4f}", f"{r.gap:+.2%}",
                 "yes" if r.gap <= 0.01 else "NO"]
        if r.wsds_loss is not None:
            cells += [f"{r.wsds_loss:.4f}", f"{r.wsds_loss / r.dedicated_loss - 1:+.2%}"]
        table.add_row(*cells)
    console.print(table)
    bound = plan.compute_bound
    console.print(f"compute: tree {bench.tree_compute} steps, goal <= (1-d)*B_max + d*sum(B) = {bound:g} "
                  f"({'met' if bench.tree_compute <= bound else 'MISSED'}); dedicated runs {plan.dedicated_compute} "
                  f"steps; ratio tree/dedicated = {bench.tree_compute / plan.dedicated_compute:.3f}", highlight=False)
    if bench.wsds_compute is not None:
        console.print(f"WSD-S chain: {bench.wsds_compute} steps (= B_max)", highlight=False)
    worst = max(r.gap for r in bench.rows)
    console.print(f"losses: worst gap {worst:+.2%} (goal: tree no more than 1% above each dedicated run: "
                  f"{'met' if worst <= 0.01 else 'MISSED'}); wall {bench.seconds:.0f} s", highlight=False)


def print_branch_data(res: Any, console: Console) -> None:
    fmt = lambda t: f"{t[0]:.4f} [{t[1]:.4f}, {t[2]:.4f}]"  # noqa: E731
    table = Table(title=f"one trunk to step {res.trunk_steps}, decayed to {res.budget} steps on different data · "
                        f"{len(next(iter(res.per_seed.values())))} seeds · val loss mean [95% CI]")
    from cadence.labs.pretrain.continual import mean_interval

    first = next(iter(res.per_seed))
    for col in ("branch data", "spec", "final val loss", f"minus {first}, same seed"):
        table.add_column(col, justify="left" if col in ("branch data", "spec") else "right")
    specs = {n["id"].split(":", 1)[1]: n["data"] for n in res.lineage["nodes"] if ":" in n["id"]}
    for name, loss in res.losses.items():
        diff = [a - b for a, b in zip(res.per_seed[name], res.per_seed[first])]
        table.add_row(name, json.dumps(specs.get(name)) if specs.get(name) else "(the trunk's)", fmt(loss),
                      "—" if name == first else fmt(mean_interval(diff)))
    console.print(table)
    console.print(f"wall {res.seconds:.0f} s", highlight=False)


def _bench_branch_data(args: argparse.Namespace) -> int:
    from cadence.errors import CadenceError
    from cadence.labs.pretrain.tree_bench import run_branch_data  # heavy: on use

    if args.seeds < 1:
        raise CadenceError(f"--seeds must be at least 1, got {args.seeds}")
    budget = args.base if args.base is not None else _BRANCH_BUDGET[args.size]
    plan_tree([budget], decay=args.decay, peak=args.peak)   # bad sizes fail before any work
    with Progress(transient=True) as progress:
        tick = progress.counter("bench tree · branch data · steps", args.seeds * (budget + 2 * args.decay * budget))
        res = run_branch_data(budget=budget, decay=args.decay, peak=args.peak, seeds=args.seeds, size=args.size,
                              on_steps=tick)
    print_branch_data(res, cli_console())
    if args.lineage:
        Path(args.lineage).write_text(json.dumps(res.lineage, indent=2))
    return 0


def _bench_tree(args: argparse.Namespace) -> int:
    from cadence.labs.pretrain.tree_bench import plot_tree_benchmark, run_tree_benchmark  # heavy: on use

    base = args.base if args.base is not None else _TREE_BASE[args.size]
    budgets = [base * m for m in (1, 2, 4, 8)]
    total = plan_tree(budgets, decay=args.decay).total_compute + sum(budgets) + (max(budgets) if args.wsd_s else 0)
    with Progress(transient=True) as progress:
        tick = progress.counter("bench tree", total, unit="steps")
        bench = run_tree_benchmark(base=base, decay=args.decay, peak=args.peak, warmup=args.warmup,
                                   cosine_floor=args.cosine_floor, size=args.size, seed=args.seed, wsds=args.wsd_s,
                                   on_steps=tick)
    print_tree_benchmark(bench, cli_console())
    if args.output:
        print(f"wrote {plot_tree_benchmark(bench, args.output)}")
    if args.lineage:
        Path(args.lineage).write_text(json.dumps(bench.lineage, indent=2))
        print(f"wrote lineage to {args.lineage}")
    return 0


def print_codesign(res: Any, console: Console) -> None:
    from cadence.labs.pretrain.tree_bench import LR_VARIANTS

    n = len(next(iter(res.losses["random"].values())))
    table = Table(title=f"Curriculum x LR co-design: validation loss (documents of quality >= {res.val_min_quality:g}), "
                        f"mean ± std over {n} seeds, {res.steps} steps")
    table.add_column("LR regimen")
    for o in res.losses:
        table.add_column(o, justify="right")
    table.add_column("ascending − random", justify="right")
    for v in LR_VARIANTS:
        r, q = res.losses["random"][v], res.losses["quality-ascending"][v]
        diff = q - r
        table.add_row(v, f"{r.mean():.4f} ± {r.std():.4f}", f"{q.mean():.4f} ± {q.std():.4f}",
                      f"{diff.mean():+.4f} ± {diff.std():.4f}")
    console.print(table)
    console.print(f"full decay: cosine to 0; moderate decay: cosine to {res.moderate_floor:g}× peak; tail avg: uniform "
                  f"over the last {res.tail} checkpoints (steps {', '.join(map(str, res.tail_steps))}) of the "
                  f"constant-LR run; wall {res.seconds:.0f} s", highlight=False)


def _bench_codesign(args: argparse.Namespace) -> int:
    from cadence.labs.pretrain.tree_bench import run_codesign

    steps = args.steps if args.steps is not None else _CODESIGN_STEPS[args.size]
    with Progress(transient=True) as progress:
        tick = progress.counter("bench codesign", steps * args.seeds * 2 * 3, unit="steps")
        res = run_codesign(steps=steps, seeds=args.seeds, peak=args.peak, moderate_floor=args.moderate_floor,
                           tail=args.tail, tail_span=args.tail_span, size=args.size,
                           val_min_quality=args.val_min_quality, on_steps=tick)
    print_codesign(res, cli_console())
    return 0


_TREE_BASE = {"tiny": 20, "default": 200}
_BRANCH_BUDGET = {"tiny": 40, "default": 600}
_CODESIGN_STEPS = {"tiny": 50, "default": 500}
_SIZE_HELP = "lab size: 'tiny' (a tiny model and {} by default; seconds, a smoke test) or 'default' (the benchmark)"
_TREE_DESCRIPTION = ("The WSD tree on the pre-training lab: budgets B, 2B, 4B, 8B from one constant-LR trunk "
                     "with 1-sqrt cooldown branches (and, with --wsd-s, a WSD-S chain) against four dedicated "
                     "cosine runs. Prints the total compute against (1 - d)*B_max + d*sum(B_k) and each branch's "
                     "final validation loss against its dedicated run.")
_CODESIGN_DESCRIPTION = ("Curriculum x LR co-design on the pre-training lab: a quality-ascending data order vs "
                         "a random order of the same documents, each with full LR decay, moderate decay, and "
                         "constant LR plus tail averaging of the last checkpoints; mean and std of the validation "
                         "loss over seeds (Luo et al., arXiv 2511.18903).")


def add_tree_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="WSD tree vs dedicated cosine runs on the pre-training lab",
                       description=_TREE_DESCRIPTION)
    p.add_argument("--base", type=whole(1), default=None,
                   help="B, the smallest budget in steps (budgets B, 2B, 4B, 8B; default 200, or 20 with --size tiny)")
    p.add_argument("--decay", type=number(0, 1, low_open=True, high_open=True), default=0.2,
                   help="cooldown fraction d of each budget (default 0.2)")
    p.add_argument("--peak", type=number(0, low_open=True), default=3e-3, help="peak LR (default 3e-3)")
    p.add_argument("--warmup", type=whole(0), default=None, help="warmup steps (default B/10)")
    p.add_argument("--cosine-floor", type=number(0, 1), default=0.1,
                   help="final LR factor of the cosine runs (default 0.1)")
    add_size_option(p, _SIZE_HELP.format("--base 20"))
    p.add_argument("--seed", type=whole(0), default=0, help="random seed (default 0)")
    p.add_argument("--wsd-s", action="store_true", help="also run a WSD-S chain (B_max more steps)")
    p.add_argument("--lineage", type=file_arg, help="write the tree's lineage JSON here")
    p.add_argument("-o", "--output", type=image_arg, help="write a plot of the runs' LR and loss here (.png)")
    p.add_argument("--branch-data", action="store_true",
                   help="instead: one trunk decayed on its own data and on two quality mixtures (budget --base, "
                        "default 600; 40 with --size tiny), over --seeds")
    p.add_argument("--seeds", type=whole(1), default=3, help="seeds of --branch-data (default 3)")
    p.set_defaults(func=lambda args: _bench_branch_data(args) if args.branch_data else _bench_tree(args))


def add_codesign_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="quality curriculum x LR decay/averaging study on the pre-training lab",
                       description=_CODESIGN_DESCRIPTION)
    p.add_argument("--steps", type=whole(1), default=None, help="steps per run (default 500, or 50 with --size tiny)")
    p.add_argument("--seeds", type=whole(1), default=3, help="seeds (default 3)")
    p.add_argument("--peak", type=number(0, low_open=True), default=3e-3, help="peak LR (default 3e-3)")
    p.add_argument("--moderate-floor", type=number(0, 1), default=0.3,
                   help="final LR factor of the moderate decay (0.3)")
    p.add_argument("--tail", type=whole(1), default=5, help="checkpoints averaged at the end of the constant-LR run")
    p.add_argument("--tail-span", type=number(0, 1, low_open=True), default=0.1,
                   help="fraction of the run the averaged checkpoints are spread over (default 0.1)")
    p.add_argument("--val-min-quality", type=number(0, 1), default=0.9,
                   help="validate on documents of at least this quality (default 0.9: clean text)")
    add_size_option(p, _SIZE_HELP.format("--steps 50"))
    p.set_defaults(func=_bench_codesign)


def register(subparsers: Any) -> None:
    """Add ``cadence bench tree`` and ``cadence bench codesign`` to the shared ``bench`` group."""
    from cadence.cli import bench_subcommands

    bench = bench_subcommands(subparsers)
    add_tree_parser(bench, "tree")
    add_codesign_parser(bench, "codesign")
