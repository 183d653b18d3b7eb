"""Forecast accuracy on the lab: fit each loss law (annealing, multi-power) on a constant-LR and a
cosine run, predict the final loss of other schedules, then run them and compare
(``cadence bench forecast``).

Goals (issue 5): every prediction within 1% relative error, and every pair of schedules whose
measured final losses differ by more than 1% ordered correctly; judged for each law.

With ``log_dir`` every run's log is kept there as ``NAME.csv`` with ``NAME.json`` recording how it
was made (:func:`run_record`: schedule, steps, seed, validation interval, lab config); a later call
with the same ``log_dir`` reuses a log whose record matches (:func:`cached_log`) instead of
training again, so the fit can be iterated on without re-running the lab.

    >>> import torch
    >>> threads = torch.get_num_threads()
    >>> torch.set_num_threads(1)  # tiny models run fastest on one thread
    >>> cfg = PretrainConfig(context=8, batch_size=2, n_layer=1, n_head=1, d_model=8, val_sequences=4)
    >>> bench = forecast_benchmark(cfg, steps=40, eval_every=4, progress=False, laws=("annealing",),
    ...                            held_out={"linear": "warmup(linear(peak={peak}), {warmup} steps)"})
    >>> [row.name for row in bench.forecasts["annealing"].rows]
    ['linear']
    >>> torch.set_num_threads(threads)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cadence.errors import CadenceError
from cadence.forecast.fit import FitResult, fit_law
from cadence.forecast.laws import LAWS
from cadence.forecast.runlog import RunLog
from cadence.labs.pretrain.train import PretrainConfig, train

RUN_RECORD_KIND = "cadence.bench.forecast.run"
LAB_SKIP = 0.2
"""The first fraction of each fitted lab run left out of the fit. Not the library's
``DEFAULT_SKIP`` (0.05): the lab's initial transient is long, and 0.2 fits the fitted runs to ~1%
RMS where 0.05 leaves ~3% (docs/forecast.md)."""


@dataclass(frozen=True)
class LabSize:
    """A lab model and run length for the bench."""

    config: PretrainConfig
    steps: int
    eval_every: int


LAB_SIZES = {
    "default": LabSize(PretrainConfig(), 1500, 25),
    "tiny": LabSize(PretrainConfig(context=16, batch_size=8, n_layer=1, d_model=32, val_sequences=32), 120, 10),
}
"""``cadence bench forecast --size``: the measured default, and a seconds-long smoke test."""
FIT_SCHEDULES = {"constant": "warmup(constant({peak}), {warmup} steps)",
                 "cosine": "warmup(cosine(peak={peak}), {warmup} steps)"}
"""The two runs the law is fitted on (``{peak}`` and ``{warmup}`` are filled in)."""
HELD_OUT_SCHEDULES = {
    "linear": "warmup(linear(peak={peak}), {warmup} steps)",
    "wsd-10%-1-sqrt": "wsd(peak={peak}, warmup={warmup} steps, decay=10%, shape=1-sqrt)",
    "wsd-20%-1-sqrt": "wsd(peak={peak}, warmup={warmup} steps, decay=20%, shape=1-sqrt)",
    "rex": "warmup(rex(peak={peak}), {warmup} steps)",
    "step": "warmup(step(peak={peak}, every=30%, gamma=0.3), {warmup} steps)",
}
"""The schedules whose final loss is predicted, then measured."""


@dataclass(frozen=True)
class ForecastRow:
    name: str
    spec: str
    predicted: float
    measured: float

    @property
    def rel_error(self) -> float:
        return self.predicted / self.measured - 1.0


@dataclass(frozen=True)
class PairCheck:
    """Two held-out schedules whose measured final losses differ by more than the threshold."""

    better: str
    worse: str
    measured_gap: float
    ordered: bool


@dataclass(frozen=True)
class LawForecast:
    """One law's fit on the fitted runs, its predicted-vs-measured rows and the ordering checks."""

    law_name: str
    fit: FitResult
    rows: tuple[ForecastRow, ...]
    pairs: tuple[PairCheck, ...]

    @property
    def max_abs_error(self) -> float:
        return max(abs(r.rel_error) for r in self.rows)

    @property
    def ordering_ok(self) -> bool:
        return all(p.ordered for p in self.pairs)


@dataclass(frozen=True)
class ForecastBenchmark:
    """The fitted and held-out runs' logs and, per law name, its :class:`LawForecast`."""

    fit_logs: dict[str, RunLog]
    logs: dict[str, RunLog]
    forecasts: dict[str, LawForecast]
    steps: int
    seconds: float
    reused: tuple[str, ...] = ()


def forecast_benchmark(cfg: PretrainConfig | None = None, *, steps: int = 1500, peak: float = 4e-3,
                       warmup: int | None = None, seed: int = 0, eval_every: int = 25, skip: float = LAB_SKIP,
                       lam: float | None = None, laws: Sequence[str] = tuple(LAWS),
                       held_out: Mapping[str, str] | None = None, pair_threshold: float = 0.01,
                       log_dir: str | Path | None = None, progress: bool = True) -> ForecastBenchmark:
    """Get the fit runs and the held-out runs (same seed and data order), fit every law in
    ``laws``, predict, compare.

    ``held_out`` maps names to spec templates with ``{peak}`` and ``{warmup}`` (default:
    :data:`HELD_OUT_SCHEDULES`); ``warmup`` defaults to 2% of ``steps``. Each law is fitted on the
    validation losses after the first ``skip`` fraction of each fitted run (the lab's initial
    transient is long: 0.2 fits the fitted runs to ~1% RMS where 0.05 leaves ~3%); ``lam`` fixes
    the annealing law's momentum (default: chosen from its grid). Every prediction is made before
    its run is trained. With ``log_dir`` the logs are kept there and reused (module docstring).
    """
    cfg = cfg if cfg is not None else PretrainConfig()
    unknown = [name for name in laws if name not in LAWS]
    if unknown or not laws:
        raise CadenceError(f"laws must be a non-empty subset of {sorted(LAWS)}, got {list(laws)}")
    warmup = max(1, round(0.02 * steps)) if warmup is None else warmup
    fill = lambda template: template.format(peak=f"{peak:g}", warmup=warmup)  # noqa: E731
    started = time.monotonic()
    reused: list[str] = []

    def run(name: str, spec: str) -> RunLog:
        record = run_record(cfg, spec, steps=steps, seed=seed, eval_every=eval_every)
        if log_dir is not None:
            log = cached_log(Path(log_dir), name, record)
            if log is not None:
                reused.append(name)
                return log
        path = None if log_dir is None else Path(log_dir) / f"{name}.csv"
        if log_dir is not None:  # a stale record must not vouch for the log about to be written
            (Path(log_dir) / f"{name}.json").unlink(missing_ok=True)
        log = train(cfg, spec, steps=steps, seed=seed, eval_every=eval_every, log_path=path, progress=progress).log
        if log_dir is not None:
            (Path(log_dir) / f"{name}.json").write_text(json.dumps(record, indent=2))
        log.name = name
        return log

    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
    fit_logs = {name: run(name, fill(t)) for name, t in FIT_SCHEDULES.items()}
    fits = {name: fit_law(list(fit_logs.values()), law=name, target="val_loss", skip=skip,
                          lam=lam if name == "annealing" else None) for name in laws}
    specs = {name: fill(t) for name, t in (held_out if held_out is not None else HELD_OUT_SCHEDULES).items()}
    predicted = {law: {name: fit.law.final_loss(spec, steps) for name, spec in specs.items()}
                 for law, fit in fits.items()}
    logs = {name: run(name, spec) for name, spec in specs.items()}
    forecasts = {}
    for law, fit in fits.items():
        rows = [ForecastRow(name, spec, predicted[law][name], float(logs[name].val_loss[-1]))
                for name, spec in specs.items()]
        forecasts[law] = LawForecast(law, fit, tuple(rows), ordering_checks(rows, pair_threshold))
    return ForecastBenchmark(fit_logs, logs, forecasts, steps, time.monotonic() - started, tuple(reused))


def run_record(cfg: PretrainConfig, schedule: str, *, steps: int, seed: int, eval_every: int) -> dict[str, Any]:
    """How a lab run is made, as the JSON-safe dict kept beside its log as ``NAME.json``: a kept
    log is reused only when this record matches exactly.

        >>> sorted(run_record(PretrainConfig(), "constant(1e-3)", steps=10, seed=0, eval_every=5))
        ['config', 'eval_every', 'kind', 'schedule', 'seed', 'steps']
    """
    return {"kind": RUN_RECORD_KIND, "schedule": schedule, "steps": steps, "seed": seed,
            "eval_every": eval_every, "config": dataclasses.asdict(cfg)}


def cached_log(log_dir: str | Path, name: str, record: dict[str, Any]) -> RunLog | None:
    """The log kept as ``log_dir/NAME.csv`` if ``log_dir/NAME.json`` says it was made exactly as
    ``record`` (:func:`run_record`) asks and it reaches the last step with a validation loss; else
    ``None`` (train it again). Logs without a record are never reused."""
    log_dir = Path(log_dir)
    csv_path, record_path = log_dir / f"{name}.csv", log_dir / f"{name}.json"
    if not (csv_path.exists() and record_path.exists()):
        return None
    try:
        kept = json.loads(record_path.read_text())
    except json.JSONDecodeError:
        return None
    if kept != json.loads(json.dumps(record)):
        return None
    log = RunLog.read(csv_path)
    if int(log.step[-1]) != record["steps"] or np.isnan(log.val_loss[-1]):
        return None
    log.name = name
    return log


def ordering_checks(rows: list[ForecastRow], threshold: float = 0.01) -> tuple[PairCheck, ...]:
    """For every pair whose measured final losses differ by more than ``threshold`` (relative),
    whether the predictions order them the same way."""
    out = []
    for a, b in itertools.combinations(rows, 2):
        better, worse = (a, b) if a.measured <= b.measured else (b, a)
        gap = worse.measured / better.measured - 1.0
        if gap > threshold:
            out.append(PairCheck(better.name, worse.name, gap, better.predicted < worse.predicted))
    return tuple(out)


def plot_benchmark(bench: ForecastBenchmark, path: str | Path) -> Path:
    """Measured validation losses (points) and each law's curves (lines), one panel per law, LRs below."""
    from cadence.plotting import loss_panels_over_lrs, save_with_lrs

    fig, axes = loss_panels_over_lrs(len(bench.forecasts), width=8, panel_height=4)
    runs = {**bench.fit_logs, **bench.logs}
    finals = [float(log.val_loss[-1]) for log in runs.values()]
    for ax, (law, forecast) in zip(axes, bench.forecasts.items()):
        for i, (name, log) in enumerate(runs.items()):
            colour, fitted = f"C{i}", name in bench.fit_logs
            ax.plot(log.step, forecast.fit.law.predict(log.lr), color=colour, ls="-" if fitted else "--",
                    label=f"{name} ({'fitted' if fitted else 'predicted'})")
            measured = ~np.isnan(log.val_loss)
            ax.scatter(log.step[measured], log.val_loss[measured], s=6, color=colour)
        lowest = min(finals + [r.predicted for r in forecast.rows])
        ax.set_ylim(lowest * 0.97, max(finals) * 1.6)
        ax.set_ylabel("validation loss (nats/char)")
        ax.set_title(f"{law} law: fitted on constant + cosine, predicting the rest "
                     f"(max error {forecast.max_abs_error:.1%})")
        ax.legend(fontsize=7)
    return save_with_lrs(fig, axes[-1], [(log.step, log.lr) for log in runs.values()], path, dpi=120)
