"""``cadence forecast`` (fit a loss law on logged runs, predict schedules) and
``cadence bench forecast`` (each law's accuracy on published curves or on the pre-training lab).

    cadence forecast --fit const.csv cosine.csv --schedule "wsd(peak=2e-3, decay=20%)" -o curves.png
    cadence forecast --fit const.csv cosine.csv --law multi-power --steps 4000 --optimize-wsd
    cadence forecast --fit out/checkpoint-500/trainer_state.json --schedule "wsd(peak=3e-4, decay=20%)"
    cadence forecast --refine run.csv --peak 3e-4 -o refined.png
    cadence bench forecast --steps 1500 -o bench.png --log-dir runs/
    cadence bench forecast --curves multipower-25m -o published.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from rich.console import Console
from rich.table import Table

from cadence.cli import console as cli_console
from cadence.cli.arguments import MAX_STEPS, SIZES, duration, file_arg, folder_arg, image_arg, number, whole
from cadence.errors import CadenceError

if TYPE_CHECKING:
    import numpy as np

    from cadence.forecast import FitResult, FitTarget, RunLog

LAW_NAMES = ("annealing", "multi-power")
"""The laws of :data:`cadence.forecast.LAWS` (named here so that ``--help`` does not import scipy; a test
keeps the two equal). The first is :data:`cadence.forecast.DEFAULT_LAW`."""
FIT_CHOICES = ("leave-one-out", "objective")
"""``cadence.forecast.fit.CHOICES``, named here for the same reason (kept equal by the same test)."""
CURVE_SETS = ("multipower-25m", "multipower-100m")
"""The shipped curve sets, ``cadence.forecast.published.SHIPPED`` (kept equal by the same test)."""
OTHER_CURVE_SETS = ("schaipp-124m", "schaipp-210m", "schaipp-124m-lr2e-3", "schaipp-124m-lr5e-4")
"""``cadence.forecast.published.OTHER`` (kept equal by tests/test_forecast_trust.py)."""


def plot_forecast(fit: FitResult, targets: Sequence[FitTarget], predictions: dict[str, np.ndarray],
                  path: str | Path) -> Path:
    """Fitted points (dots) with the law's curves (solid), predicted schedules (dashed), LRs below."""
    import numpy as np

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for i, t in enumerate(targets):
        steps = np.arange(1, len(t.lr) + 1)
        ax.scatter(t.steps, t.loss, s=6, color=f"C{i}")
        at = _plotted_steps(len(t.lr))
        ax.plot(at, fit.law.predict(t.lr, at), color=f"C{i}", label=f"{t.name} (fitted)")
        ax_lr.plot(steps, t.lr, color=f"C{i}")
    lowest = min(float(t.loss.min()) for t in targets)
    for j, (spec, lr) in enumerate(predictions.items(), start=len(targets)):
        steps = np.arange(1, len(lr) + 1)
        at = _plotted_steps(len(lr))
        curve = fit.law.predict(lr, at)
        lowest = min(lowest, float(curve[-1]))
        ax.plot(at, curve, color=f"C{j % 10}", ls="--", label=f"{spec} (predicted)")
        ax_lr.plot(steps, lr, color=f"C{j % 10}", ls="--")
    losses = np.concatenate([t.loss for t in targets])
    ax.set_ylim(lowest * 0.95, np.quantile(losses, 0.9) * 1.1)
    ax.set_ylabel(fitted_target(targets, short=True))
    ax.set_title(textwrap.fill(str(fit.law), 120), fontsize=8)
    ax.legend(fontsize=7)
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("LR")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


_COLUMNS = {"loss": "training loss", "val_loss": "validation loss"}


def fitted_target(targets: Sequence[FitTarget], short: bool = False) -> str:
    """Which logged loss was fitted, and its unit: ``'loss (training loss, as logged: ...)'``; runs
    fitted on different columns are named per run."""
    columns = {t.column for t in targets}
    what = (f"{next(iter(columns))} ({_COLUMNS.get(next(iter(columns)), 'loss')}" if len(columns) == 1 else
            "per run: " + ", ".join(f"{t.name} {t.column}" for t in targets) + " (")
    if short:
        return what + ", as logged)"
    return what + ", as logged: nats per token for a cross-entropy)"


def _plotted_steps(n: int, points: int = 1000) -> np.ndarray:
    """At most ``points`` evenly spaced steps of ``1..n``, the last included (a long multi-power
    prediction costs per step asked for)."""
    import numpy as np

    return np.unique(np.linspace(1, n, min(n, points)).round().astype(np.int64))


def _read_logs(args: argparse.Namespace, paths: Sequence[str], console: Console) -> list[RunLog]:
    """Read each log with the key flags and its ``--schedule-of`` spec; say what was read."""
    from cadence.forecast import RunLog

    specs = _schedules_of(args.schedule_of, paths)
    logs = []
    for path in paths:
        spec, budget = specs.get(path, (None, None))
        log = RunLog.read(path, step_key=args.step_key, lr_key=args.lr_key, loss_key=args.loss_key,
                          schedule=spec, budget=budget)
        console.print(f"read {path} ({len(log)} rows): {log.source}", highlight=False, markup=False, soft_wrap=True)
        logs.append(log)
    return logs


def _schedules_of(items: Sequence[str], paths: Sequence[str]) -> dict[str, tuple[str, int | None]]:
    """``RUN=SPEC[@STEPS]`` items by the path they name (``RUN``: a path as given, or its file name)."""
    out: dict[str, tuple[str, int | None]] = {}
    for item in items:
        run, sep, spec = item.partition("=")
        if not sep or not spec.strip():
            raise CadenceError(f"--schedule-of needs RUN=SPEC (e.g. 'run.csv=cosine(peak=1e-3)'), got {item!r}")
        budget = None
        head, at, tail = spec.rpartition("@")
        if at:
            if not tail.strip().isdigit() or int(tail) < 1:
                raise CadenceError(f"--schedule-of {item!r}: the budget after '@' must be a whole number of steps")
            spec, budget = head, int(tail)
        matches = [p for p in paths if p == run or Path(p).name == run]
        if len(matches) != 1:
            raise CadenceError(f"--schedule-of {item!r}: {run!r} names {'none' if not matches else 'several'} of "
                               f"the --fit/--refine logs ({', '.join(paths)})")
        out[matches[0]] = (spec, budget)
    return out


def _refine(args: argparse.Namespace) -> int:
    from cadence.forecast.refine import log_grad_norms, refine_schedule, smooth_norms

    console = cli_console()
    if args.peak is None:
        raise CadenceError("--refine needs --peak, the peak LR of the refined schedule")
    log = _read_logs(args, [args.refine], console)[0]
    norms, norm = log_grad_norms(log, args.norm)
    schedule = refine_schedule(norms, peak=args.peak, norm=norm, width=args.width, points=args.points)
    if args.output:
        console.print(f"wrote {plot_refined(norms, smooth_norms(norms, args.width), schedule, args.output)}")
    console.print(f"refined from {len(norms)} steps of {'ℓ1' if norm == 'l1' else 'ℓ2'} gradient norms "
                  f"(median filter over {args.width:.0%} of the run):", highlight=False)
    print(schedule)  # the last line: the spec alone
    return 0


def plot_refined(norms: np.ndarray, smoothed: np.ndarray, schedule: Any, path: str | Path) -> Path:
    """Gradient norms (raw and smoothed) above the refined schedule, both over the run's fraction."""
    import numpy as np

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    u = np.linspace(0, 1, len(norms))
    ax.plot(u, norms, color="C0", alpha=0.4, lw=0.8, label="logged")
    ax.plot(u, smoothed, color="C0", label="median-filtered")
    ax.set_ylabel("gradient norm")
    ax.legend(fontsize=8)
    xs, ys = schedule.curve(1000)
    ax_lr.plot(np.asarray(xs) / 1000, ys, color="C1")
    ax_lr.set_xlabel("fraction of the run")
    ax_lr.set_ylabel("refined LR")
    ax_lr.set_title(textwrap.shorten(str(schedule), 110), fontsize=7)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except (OSError, ValueError) as e:
        raise CadenceError(f"cannot write the plot to {path}: {e}") from None
    finally:
        plt.close(fig)
    return Path(path)


def _forecast(args: argparse.Namespace) -> int:
    from cadence.forecast import FitTarget, fit_law, lr_per_step, optimize_wsd

    if args.refine is not None:
        return _refine(args)
    from cadence.spec import parse

    for spec in args.schedule:  # a bad spec is refused before the fit
        parse(spec)
    console = cli_console()
    regimen = None
    if args.regimen is not None:  # read and checked before any fitting
        from cadence.cli.regimen import forecast_schedule

        regimen = forecast_schedule(args.regimen)
    logs = _read_logs(args, args.fit, console)
    skip = {} if args.skip is None else {"skip": args.skip}
    targets = [FitTarget.from_log(log, target=args.target, **skip) for log in logs]
    fit = fit_law(targets, law=args.law, lam=args.lam, delta=args.delta)
    steps = args.steps if args.steps is not None else int(max(len(t.lr) for t in targets))
    console.print(f"fitted: {fit.law}", highlight=False)
    console.print(f"target: {fitted_target(targets)}", highlight=False)
    for name in fit.r2:
        console.print(f"  {name}: R² {fit.r2[name]:.4f}, RMS relative error {fit.rms_rel_error[name]:.2%}",
                      highlight=False)
    predictions = {spec: lr_per_step(spec, steps) for spec in args.schedule}
    if regimen is not None:
        name, lr, regimen_steps = regimen
        if args.steps is not None and args.steps != regimen_steps:
            raise CadenceError(f"--steps {args.steps} differs from the regimen's budget of {regimen_steps} steps")
        predictions[name] = lr_per_step(lr, regimen_steps)
    if predictions:
        table = Table(title=f"predicted final loss after {steps} steps")
        table.add_column("schedule")
        table.add_column("predicted final loss", justify="right")
        table.add_column("band", justify="right")
        for spec, lr in predictions.items():
            low, high = fit.band(lr, [len(lr)])
            table.add_row(spec, f"{fit.law.predict(lr, [len(lr)])[0]:.4f}",
                          f"{low[0]:.4f}-{high[0]:.4f}" if fit.loo_laws else "-")
        console.print(table)
        if fit.loo_laws:
            console.print("  band: the range of the leave-one-out refits' predictions", highlight=False)
        for spec, lr in predictions.items():
            for finding in fit.regime.check(lr) if fit.regime is not None else ():
                console.print(f"  warning: {spec}: outside the fitted regime: {finding}", highlight=False,
                              markup=False)
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
    console = cli_console()
    if args.curves:
        from cadence.forecast.published import curves_dir, plot_published, published_benchmark

        sets = [name.strip() for name in args.curves.split(",") if name.strip()]
        for name in sets:
            curves_dir(name)  # every set checked before any work
        if args.output and len(sets) > 1:
            raise CadenceError("-o/--output plots one curve set; give one --curves SET with it")
        for name in sets:
            bench = published_benchmark(name, tuple(args.law), choose=args.choose,
                                        exclude_transients=args.exclude_transients)
            print_published(bench, console)
            if args.output:
                console.print(f"wrote {plot_published(bench, args.output)}")
        if len(sets) > 1:
            print_size_out(sets, args.exclude_transients, console)
        if args.partial:
            for name in sets:
                print_partial(name, args.law[0], console)
        return 0
    import torch

    from cadence.labs.pretrain.bench import LAB_SIZES, LAB_SKIP, forecast_benchmark, plot_benchmark

    torch.set_num_threads(args.threads)
    smoke = args.size == "tiny"
    if smoke:
        console.print(f"[bold yellow]{SMOKE_NOTE}[/]")
    size = LAB_SIZES[args.size]
    cfg = dataclasses.replace(size.config, val_min_quality=args.val_quality)
    bench = forecast_benchmark(cfg, steps=args.steps or size.steps, peak=args.peak, warmup=args.warmup,
                               seed=args.seed, eval_every=args.eval_every or size.eval_every,
                               skip=LAB_SKIP if args.skip is None else args.skip,
                               lam=args.lam, laws=args.law, log_dir=args.log_dir, progress=not args.no_progress)
    print_benchmark(bench, console)
    if smoke:
        console.print(f"[bold yellow]{SMOKE_NOTE}[/]")
    if args.output:
        console.print(f"wrote {plot_benchmark(bench, args.output)}")
    return 0


SMOKE_NOTE = ("SMOKE TEST (--size tiny): a 1-layer model trained for seconds only checks that the bench runs end "
              "to end; its goal verdicts (met/MISSED) say nothing about the laws.")


def print_published(bench: Any, console: Console) -> None:
    """Per law: every curve's PredE, WorstE, final-loss error and band, fitted and held-out rows
    apart, then the summaries next to the paper's figures."""
    for law, scores in bench.scores.items():
        fit = scores.fit
        console.print(f"\n[{law} law] fitted in {scores.seconds:.1f} s on {', '.join(c.name for c in scores.curves if c.fitted)}"
                      f": {fit.law}", highlight=False, markup=False)
        if fit.loo_laws:
            console.print(f"  chosen among {fit.candidates} good fit(s) by leave-one-out error {fit.loo_score:.3%}; "
                          f"band = range of the {len(fit.loo_laws)} leave-one-out refits", highlight=False)
        table = Table(title=f"{bench.name}, {law} law: |L - L_hat| / L at every logged step", caption=(
            "PredE mean, WorstE max (at step); final: L_hat/L - 1 at the last point; band: width of the "
            "leave-one-out band there; cover: share of points inside the 80% predictive interval (pooled / "
            "run envelope), final in: whether the final loss is inside it (pooled / run envelope / last-point "
            "final-loss interval)"))
        for col in ("curve", "", "PredE", "WorstE", "at step", "final", "band", "cover", "final in"):
            table.add_column(col, justify="left" if col in ("curve", "") else "right", no_wrap=True)
        for fitted in (True, False):
            rows = [c for c in scores.curves if c.fitted == fitted]
            for i, c in enumerate(rows):
                table.add_row(c.name, "fit" if fitted else "held out", f"{c.pred_e:.3%}", f"{c.worst_e:.3%}",
                              str(c.worst_step),
                              f"{c.final_error:+.3%}", f"{c.band:.3%}", f"{c.coverage:.0%} / {c.runs_coverage:.0%}",
                              " / ".join("yes" if x else "no" for x in (c.final_inside, c.runs_final_inside,
                                                                          c.final_interval_inside)),
                              end_section=fitted and i == len(rows) - 1)
        _wide(console, 120).print(table)
        for c in scores.curves:
            if c.outside:
                console.print(f"  {c.name}: outside the fitted regime: {'; '.join(c.outside)}", highlight=False,
                              markup=False)
        pred_e, worst_e = scores.summary()
        console.print(f"{law}: all curves: PredE {pred_e:.3%}, WorstE {worst_e:.3%} (largest)", highlight=False)
        pred_e, worst_e = scores.summary(held_out_only=True)
        finals = max((abs(c.final_error) for c in scores.curves if not c.fitted), default=float("nan"))
        console.print(f"{law}: held-out curves: PredE {pred_e:.3%}, WorstE {worst_e:.3%} (largest), "
                      f"max |final| {finals:.3%}", highlight=False)
        if bench.published is not None:  # one verdict per metric, on the figures' own definition
            verdict = lambda ours, paper: "at or below" if ours <= paper else "ABOVE"  # noqa: E731
            pred_e, worst_e = scores.paper_summary()
            console.print(f"{law}: held-out means as published (mean PredE, mean WorstE): {pred_e:.3%}, {worst_e:.3%} "
                          f"(published fit: {bench.published[0]:.3%}, {bench.published[1]:.3%}; PredE "
                          f"{verdict(pred_e, bench.published[0])}, WorstE {verdict(worst_e, bench.published[1])})",
                          highlight=False)
        if any(not c.fitted for c in scores.curves) and fit.loo_residuals:
            points, finals = scores.coverage()
            console.print(f"{law}: 80% predictive interval on the held-out curves: {points:.0%} of points, "
                          f"{finals:.0%} of final losses inside", highlight=False)
            points, finals = scores.coverage("runs")
            console.print(f"{law}: run envelope (interval(method='runs')) on the held-out curves: {points:.0%} of "
                          f"points, {finals:.0%} of final losses inside; last-point final-loss interval "
                          f"(final_interval(lr, 'last')): "
                          f"{scores.final_coverage():.0%} of final losses inside", highlight=False)


def _wide(console: Console, width: int) -> Console:
    """A console writing where ``console`` writes, at least ``width`` columns wide (a narrow or
    piped terminal would cut the tables' figures)."""
    return console if console.width >= width else Console(file=console.file, width=width)


def print_size_out(sets: Sequence[str], exclude_transients: bool, console: Console) -> None:
    """The leave-a-size-out evaluation: every setting's held-out scores on every set, then each
    choice made on one set and judged on another, next to the shipped default."""
    from cadence.forecast.evaluate import SETTINGS, size_out
    from cadence.progress import Progress

    with Progress(console=console) as progress:
        task = progress.task("leave-a-size-out: settings fitted", len(sets) * len(SETTINGS))
        result = size_out(sets, exclude_transients=exclude_transients, progress=lambda name, s: task.advance())
    table = Table(title="leave-a-size-out: every setting on the held-out schedules of each set", caption=(
        "PredE mean, WorstE max, |final| max of |L_hat/L - 1| at the last point; criterion = mean PredE + "
        f"mean |final|; cover = share of points in the {result.level:.0%} interval (scale 1)"))
    table.add_column("setting")
    for name in sets:
        for col in ("PredE", "WorstE", "|final|", "criterion", "cover"):
            table.add_column(f"{name} {col}", justify="right")
    for setting in SETTINGS:
        cells = []
        for name in sets:
            h = result.scores[name][setting]
            cells += [f"{sum(h.pred_e) / len(h.pred_e):.3%}", f"{max(h.worst_e):.3%}",
                      f"{max(abs(f) for f in h.final):.3%}", f"{h.criterion:.3%}", f"{h.mean_coverage(1.0):.0%}"]
        table.add_row(str(setting), *cells)
    _wide(console, 60 + 45 * len(sets)).print(table)
    for d in result.decisions:
        c, dflt = d.chosen_judged, d.default_judged
        console.print(
            f"decided on {d.decided_on}: {d.chosen} (interval scale {d.scale:g}); judged on {d.judged_on}: "
            f"criterion {c.criterion:.3%} (shipped default {dflt.criterion:.3%}), max |final| "
            f"{max(abs(f) for f in c.final):.3%}, interval coverage {c.mean_coverage(d.scale):.0%} of points, "
            f"{sum(c.final_covered[d.scale])}/{len(c.names)} final losses (nominal {result.level:.0%}); "
            f"run-envelope interval (method='runs', scale {d.runs_scale:g} decided there): "
            f"{c.mean_coverage(d.runs_scale, 'runs'):.0%} of points, "
            f"{sum(c.runs_final_covered[d.runs_scale])}/{len(c.names)} final losses",
            highlight=False, markup=False)


def print_partial(name: str, law: str, console: Console) -> None:
    """The live forecast's final-loss error against the share of each held-out curve seen."""
    import numpy as np

    from cadence.forecast.evaluate import FRACTIONS, partial_runs
    from cadence.forecast.published import load_curves
    from cadence.progress import Progress

    curves = load_curves(name)
    held = sum(not c.fitted for c in curves)
    with Progress(console=console) as progress:
        task = progress.task(f"{name}: partial-run forecasts", held * len(FRACTIONS) * 2)
        rows = partial_runs(curves, law=law, progress=task.advance)
    table = Table(title=f"{name}, {law} law: live forecast of the final loss from the first part of each held-out "
                        f"curve", caption="mean / max |L_hat/L - 1| over the curves with a forecast; covered: final loss "
                                          "inside the 80% interval")
    table.add_column("seen", justify="right")
    for col in ("alone", "with the fitted curves"):
        table.add_column(col, justify="right")
    for fraction in FRACTIONS:
        cells = []
        for with_runs in (False, True):
            done = [r for r in rows if r.fraction == fraction and r.with_runs == with_runs and np.isfinite(r.error)]
            errors = np.abs([r.error for r in done])
            cells.append("no forecast" if not done else
                         f"{errors.mean():.3%} / {errors.max():.3%}, covered {np.mean([r.covered for r in done]):.0%} "
                         f"(n={len(done)})")
        table.add_row(f"{fraction:.0%}", *cells)
    _wide(console, 100).print(table)


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
                                   "logs (cadence CSV/JSONL, or the logs of a Hugging Face Trainer, Lightning, W&B or "
                                   "TensorBoard) and predict the loss curve of schedule specs; or (--refine) turn a "
                                   "run's gradient norms into a refined schedule.")
    p.add_argument("--law", default=LAW_NAMES[0], choices=LAW_NAMES,
                   help=f"which law to fit (default {LAW_NAMES[0]}; see docs/forecast.md)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--fit", nargs="+", metavar="RUN",
                      help="run logs to fit: cadence CSV/JSONL, HF trainer_state.json, Lightning metrics.csv, W&B CSV "
                           "export or TensorBoard events (file or directory); told apart by content")
    what.add_argument("--refine", metavar="RUN",
                      help="print the schedule refined from this run's gradient norms (Defazio et al., "
                           "arXiv 2310.07831) as a table spec; needs --peak")
    p.add_argument("--step-key", help="the log's step key (default: detected, e.g. step, Step, _step)")
    p.add_argument("--lr-key", help="the log's learning-rate key (default: detected, e.g. lr, learning_rate, lr-AdamW)")
    p.add_argument("--loss-key", help="the log's training-loss key (default: detected, e.g. loss, train/loss)")
    p.add_argument("--schedule-of", action="append", default=[], metavar="RUN=SPEC[@STEPS]",
                   help="the LR schedule a logged run used, for the steps the log leaves out (budget: STEPS, else the "
                        "log's max_steps, else its last step); repeat per run. Default: interpolate logged LRs")
    p.add_argument("--peak", type=number(0, low_open=True), help="--refine: the peak LR of the refined schedule")
    p.add_argument("--norm", default="auto", choices=("auto", "l1", "l2"),
                   help="--refine: which gradient norms (auto: grad_norm_l1 when logged, the form for Adam-type "
                        "methods; else grad_norm, the SGD form)")
    p.add_argument("--width", type=number(0, 1, low_open=True), default=0.1,
                   help="--refine: median-filter width as a fraction of the run (0.1)")
    p.add_argument("--points", type=whole(2), default=51, help="--refine: points of the table schedule (51)")
    p.add_argument("--schedule", nargs="*", default=[], metavar="SPEC", help="schedule specs to predict")
    p.add_argument("--regimen", metavar="FILE", help="a regimen file: predict the loss of its LR (stages joined) "
                   "over its budget")
    p.add_argument("--steps", type=whole(1, MAX_STEPS),
                   help="budget of the predicted schedules in steps (default: the longest fitted run)")
    p.add_argument("--target", default="auto", choices=("auto", "val_loss", "loss"),
                   help="which loss column to fit (auto: val_loss when logged)")
    p.add_argument("--lam", type=number(0, 1, high_open=True),
                   help="fix the annealing law's momentum (default: chosen from a grid)")
    p.add_argument("--skip", type=number(0, 1, high_open=True), default=None,
                   help="leave out this first fraction of each run (default: fit_law's default)")
    p.add_argument("--delta", type=number(0, low_open=True), default=1e-3, help="Huber threshold on log loss (1e-3)")
    p.add_argument("--optimize-wsd", action="store_true", help="also search the WSD decay fraction, shape and peak")
    p.add_argument("--warmup", type=duration, default="0",
                   help="warmup of the searched WSD schedules (e.g. '2%%', '50 steps')")
    p.add_argument("--save", metavar="FILE", type=file_arg, help="write the fitted law as JSON")
    p.add_argument("-o", "--output", metavar="PNG", type=image_arg,
                   help="plot fitted data and predicted curves (--refine: the norms and the refined schedule) here")
    p.set_defaults(func=_forecast)


def add_bench_forecast_parser(sub: Any, name: str = "forecast") -> None:
    p = sub.add_parser(name, help="the loss laws' accuracy on published curves (--curves) or the pre-training lab",
                       description="With --curves: the Multi-Power Law paper's protocol on a folder of step,lr,loss "
                                   "curves or a shipped set (fit on cosine_24000, constant_24000, wsdcon_9; predict "
                                   "the rest). Without: fit on a constant-LR and a cosine run of the lab, predict the "
                                   "final loss of linear, WSD 10% and 20% 1-sqrt, REX and step schedules, run them, "
                                   "compare.")
    p.add_argument("--curves", metavar="SET[,SET...]", type=_curve_sets,
                   help=f"a folder of curves or a shipped set ({', '.join(CURVE_SETS + OTHER_CURVE_SETS)}); two or more, comma-separated, "
                        "also print the leave-a-size-out evaluation of every forecaster setting")
    p.add_argument("--partial", action="store_true",
                   help="--curves: also forecast each held-out curve's final loss from its first 10%%..90%% (alone and "
                        "with the fitted curves), with the first --law (minutes)")
    p.add_argument("--exclude-transients", action="store_true",
                   help="--curves: leave the points right after the warmup and after abrupt LR drops (5%% of the run "
                        "each) out of every fit and score (both laws fail there; docs/forecast-evidence.md)")
    p.add_argument("--choose", default=FIT_CHOICES[0], choices=FIT_CHOICES,
                   help="how a fit is chosen among good starts (default: leave-one-out error)")
    p.add_argument("--size", default="default", choices=SIZES,
                   help="lab size (tiny: a 1-layer model, 120 steps, seconds; a smoke test, not a measurement)")
    p.add_argument("--steps", type=whole(1), help="steps per lab run (default 1500; tiny 120)")
    p.add_argument("--peak", type=number(0, low_open=True), default=4e-3, help="peak LR of every lab schedule (4e-3)")
    p.add_argument("--warmup", type=whole(0), help="warmup steps (default 2%% of --steps)")
    p.add_argument("--val-quality", type=number(0, 1), default=0.0,
                   help="evaluate on held-out documents of at least this quality (0: the training distribution)")
    p.add_argument("--skip", type=number(0, 1, high_open=True),
                   help="leave out this first fraction of the fitted lab runs (default 0.2, the lab's long transient; "
                        "see docs/forecast.md)")
    p.add_argument("--lam", type=number(0, 1, high_open=True),
                   help="fix the annealing law's momentum (default: chosen by the fit)")
    p.add_argument("--law", nargs="+", default=list(LAW_NAMES), choices=LAW_NAMES,
                   help="laws to fit and judge (default: all)")
    p.add_argument("--seed", type=whole(0), default=0, help="random seed (default 0)")
    p.add_argument("--eval-every", type=whole(1), help="validation interval in steps (default 25; tiny 10)")
    p.add_argument("--threads", type=whole(1), default=1, help="torch threads (1)")
    p.add_argument("--log-dir", type=folder_arg,
                   help="keep every lab run's log here (NAME.csv + NAME.json) and reuse matching ones")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-o", "--output", metavar="PNG", type=image_arg, help="plot measured and predicted curves here")
    p.set_defaults(func=_bench_forecast)


def _curve_sets(text: str) -> str:
    """``--curves``: shipped sets or existing folders, comma-separated, checked when the command line is read."""
    known = CURVE_SETS + OTHER_CURVE_SETS
    for name in (part.strip() for part in text.split(",")):
        if name not in known and not Path(name).is_dir():
            raise argparse.ArgumentTypeError(f"{name!r} is neither a folder nor one of {', '.join(known)}")
    return text


def register(subparsers: Any) -> None:
    """Add ``forecast`` and ``bench forecast`` (to the ``bench`` group shared through :mod:`cadence.cli.rl`)."""
    from cadence.cli import bench_subcommands

    add_forecast_parser(subparsers)
    add_bench_forecast_parser(bench_subcommands(subparsers))
