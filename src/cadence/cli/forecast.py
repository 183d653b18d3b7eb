"""``cadence forecast`` (fit a loss law on logged runs, predict schedules) and
``cadence bench forecast`` (each law's accuracy on the pre-training lab).

    cadence forecast --fit const.csv cosine.csv --schedule "wsd(peak=2e-3, decay=20%)" -o curves.png
    cadence forecast --fit const.csv cosine.csv --law multi-power --steps 4000 --optimize-wsd
    cadence bench forecast --steps 1500 -o bench.png --log-dir runs/
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

LAW_NAMES = ("annealing", "multi-power")
"""The laws of :data:`cadence.forecast.LAWS` (named here so that ``--help`` does not import scipy; a test
keeps the two equal). The first is :data:`cadence.forecast.DEFAULT_LAW`."""


def plot_forecast(fit: Any, targets: Sequence[Any], predictions: dict[str, Any], path: str | Path) -> Path:
    """Fitted points (dots) with the law's curves (solid), predicted schedules (dashed), LRs below."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for i, t in enumerate(targets):
        steps = np.arange(1, len(t.lr) + 1)
        ax.scatter(t.steps, t.loss, s=6, color=f"C{i}")
        ax.plot(steps, fit.law.predict(t.lr), color=f"C{i}", label=f"{t.name} (fitted)")
        ax_lr.plot(steps, t.lr, color=f"C{i}")
    lowest = min(float(t.loss.min()) for t in targets)
    for j, (spec, lr) in enumerate(predictions.items(), start=len(targets)):
        steps = np.arange(1, len(lr) + 1)
        curve = fit.law.predict(lr)
        lowest = min(lowest, float(curve[-1]))
        ax.plot(steps, curve, color=f"C{j % 10}", ls="--", label=f"{spec} (predicted)")
        ax_lr.plot(steps, lr, color=f"C{j % 10}", ls="--")
    losses = np.concatenate([t.loss for t in targets])
    ax.set_ylim(lowest * 0.95, np.quantile(losses, 0.9) * 1.1)
    ax.set_ylabel("loss")
    ax.set_title(textwrap.fill(str(fit.law), 120), fontsize=8)
    ax.legend(fontsize=7)
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("LR")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _forecast(args: argparse.Namespace) -> int:
    from cadence.forecast import FitTarget, RunLog, fit_law, lr_per_step, optimize_wsd

    console = Console()
    logs = [RunLog.read(p) for p in args.fit]
    targets = [FitTarget.from_log(log, target=args.target, skip=args.skip) for log in logs]
    fit = fit_law(targets, law=args.law, lam=args.lam, delta=args.delta)
    steps = args.steps if args.steps is not None else int(max(len(t.lr) for t in targets))
    console.print(f"fitted: {fit.law}", highlight=False)
    for name in fit.r2:
        console.print(f"  {name}: R² {fit.r2[name]:.4f}, RMS relative error {fit.rms_rel_error[name]:.2%}",
                      highlight=False)
    predictions = {spec: lr_per_step(spec, steps) for spec in args.schedule}
    if predictions:
        table = Table(title=f"predicted final loss after {steps} steps")
        table.add_column("schedule")
        table.add_column("predicted final loss", justify="right")
        for spec, lr in predictions.items():
            table.add_row(spec, f"{fit.law.predict(lr)[-1]:.4f}")
        console.print(table)
    if args.optimize_wsd:
        choice = optimize_wsd(fit.law, steps, warmup=args.warmup)
        console.print(f"best WSD for {steps} steps: {choice.schedule}  predicted final loss "
                      f"{choice.predicted_final_loss:.4f}", highlight=False)
        if choice.at_bounds:
            console.print(f"  on a search bound: {', '.join(choice.at_bounds)} (the laws always favour a larger LR; "
                          f"see docs/forecast.md)", highlight=False)
    if args.save:
        Path(args.save).write_text(json.dumps(fit.law.to_dict(), indent=2))
    if args.output:
        console.print(f"wrote {plot_forecast(fit, targets, predictions, args.output)}")
    return 0


def _bench_forecast(args: argparse.Namespace) -> int:
    import torch

    from cadence.labs.pretrain import PretrainConfig
    from cadence.labs.pretrain.bench import forecast_benchmark, plot_benchmark

    torch.set_num_threads(args.threads)
    console = Console()
    cfg = PretrainConfig(val_min_quality=args.val_quality)
    bench = forecast_benchmark(cfg, steps=args.steps, peak=args.peak, warmup=args.warmup, seed=args.seed,
                               eval_every=args.eval_every, skip=args.skip, lam=args.lam, laws=args.law,
                               log_dir=args.log_dir, progress=not args.no_progress)
    print_benchmark(bench, console)
    if args.output:
        console.print(f"wrote {plot_benchmark(bench, args.output)}")
    return 0


def print_benchmark(bench: Any, console: Console) -> None:
    """For each law: its fit, its predicted-vs-measured table and the two goals."""
    if bench.reused:
        console.print(f"reused logged runs: {', '.join(bench.reused)}", highlight=False)
    for law, forecast in bench.forecasts.items():
        console.print(f"\n[{law} law] fitted on constant + cosine ({bench.steps} steps each): {forecast.fit.law}",
                      highlight=False, markup=False)
        console.print("  fit RMS relative error: " + ", ".join(
            f"{name} {err:.2%}" for name, err in forecast.fit.rms_rel_error.items()), highlight=False)
        table = Table(title=f"{law} law: final validation loss, predicted vs measured")
        for col in ("schedule", "predicted", "measured", "rel. error"):
            table.add_column(col, justify="left" if col == "schedule" else "right")
        for r in forecast.rows:
            table.add_row(r.name, f"{r.predicted:.4f}", f"{r.measured:.4f}", f"{r.rel_error:+.2%}")
        console.print(table)
        wrong = [p for p in forecast.pairs if not p.ordered]
        console.print(f"{law}: accuracy: max |rel. error| {forecast.max_abs_error:.2%} (goal <= 1%: "
                      f"{'met' if forecast.max_abs_error <= 0.01 else 'MISSED'})", highlight=False)
        console.print(f"{law}: ordering: {len(forecast.pairs) - len(wrong)}/{len(forecast.pairs)} pairs differing "
                      f"by >1% ordered correctly (goal: all: {'met' if not wrong else 'MISSED'})"
                      + "".join(f"\n  wrong: {p.better} < {p.worse} measured (gap {p.measured_gap:.2%})"
                                for p in wrong), highlight=False)
    console.print(f"wall {bench.seconds:.0f} s", highlight=False)


def add_forecast_parser(sub: Any, name: str = "forecast") -> None:
    p = sub.add_parser(name, help="fit a loss law on logged runs and predict schedules",
                       description="Fit a loss law (annealing: L = L0 + A*S1^-alpha - C*S2; or multi-power) on run "
                                   "logs (CSV/JSONL: step, lr, loss and/or val_loss) and predict the loss curve of "
                                   "schedule specs.")
    p.add_argument("--law", default=LAW_NAMES[0], choices=LAW_NAMES,
                   help=f"which law to fit (default {LAW_NAMES[0]}; see docs/forecast.md)")
    p.add_argument("--fit", nargs="+", required=True, metavar="RUN", help="run logs to fit (.csv or .jsonl)")
    p.add_argument("--schedule", nargs="*", default=[], metavar="SPEC", help="schedule specs to predict")
    p.add_argument("--steps", type=int, help="budget of the predicted schedules (default: the longest fitted run)")
    p.add_argument("--target", default="auto", choices=("auto", "val_loss", "loss"),
                   help="which loss column to fit (auto: val_loss when logged)")
    p.add_argument("--lam", type=float, help="fix the annealing law's momentum (default: chosen from a grid)")
    p.add_argument("--skip", type=float, default=0.05, help="leave out this first fraction of each run (0.05)")
    p.add_argument("--delta", type=float, default=1e-3, help="Huber threshold on log loss (1e-3)")
    p.add_argument("--optimize-wsd", action="store_true", help="also search the WSD decay fraction, shape and peak")
    p.add_argument("--warmup", default="0", help="warmup of the searched WSD schedules (e.g. '2%%', '50 steps')")
    p.add_argument("--save", metavar="FILE", help="write the fitted law as JSON")
    p.add_argument("-o", "--output", metavar="PNG", help="plot fitted data and predicted curves here")
    p.set_defaults(func=_forecast)


def add_bench_forecast_parser(sub: Any, name: str = "forecast") -> None:
    p = sub.add_parser(name, help="the loss laws' accuracy on the pre-training lab (7 lab runs, reusable)",
                       description="Fit on a constant-LR and a cosine run of the lab, predict the final loss of "
                                   "linear, WSD 10% and 20% 1-sqrt, REX and step schedules, run them, compare.")
    p.add_argument("--steps", type=int, default=1500, help="steps per run (1500)")
    p.add_argument("--peak", type=float, default=4e-3, help="peak LR of every schedule (4e-3)")
    p.add_argument("--warmup", type=int, help="warmup steps (default 2%% of --steps)")
    p.add_argument("--val-quality", type=float, default=0.0,
                   help="evaluate on held-out documents of at least this quality (0: the training distribution)")
    p.add_argument("--skip", type=float, default=0.2, help="leave out this first fraction of the fitted runs (0.2)")
    p.add_argument("--lam", type=float, help="fix the annealing law's momentum (default: chosen by the fit)")
    p.add_argument("--law", nargs="+", default=list(LAW_NAMES), choices=LAW_NAMES,
                   help="laws to fit and judge (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=25, help="validation interval in steps (25)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument("--log-dir", help="keep every run's log here (NAME.csv + NAME.json) and reuse matching ones")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-o", "--output", metavar="PNG", help="plot measured and predicted curves here")
    p.set_defaults(func=_bench_forecast)


def register(subparsers: Any) -> None:
    """Add ``forecast`` and ``bench forecast`` (to the ``bench`` group shared through :mod:`cadence.cli.rl`)."""
    from cadence.cli import bench_subcommands

    add_forecast_parser(subparsers)
    add_bench_forecast_parser(bench_subcommands(subparsers))
