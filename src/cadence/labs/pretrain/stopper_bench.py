"""The compute the Ray Tune early stoppers save on a random search of LR schedules
(``cadence bench stoppers``).

Per seed, ``trials`` LR schedules are drawn at random (cosine or WSD; peak log-uniform in
``[peak/4, 2·peak]``; WSD decay fraction uniform in ``[0.05, 0.6]``) and each trains the
pre-training lab for ``steps`` steps from the same initialisation and data order. Every
``steps/reports`` steps a trial reports a Tune result: ``training_iteration``, the mean training
``loss`` and ``grad_norm`` over the steps since the last report, and its live forecast of the final
validation loss (:func:`~cadence.forecast.live.forecast_final` on the validation losses logged so
far, ``cadence/forecast/final_loss``, ``…/low``, ``…/high``; none while it cannot forecast yet).

Each result also carries ``val_loss``, the last validation loss logged at or before the report
(none before the first), and ``done`` (true at the last report), as Tune's results do.

Five searches are compared on the same trials:

* **no stopper** — every trial runs to the end;
* **ForecastStopper** — :class:`~cadence.integrations.ray_tune.ForecastStopper` (defaults);
* **EarlyRankingStopper** — :class:`~cadence.integrations.ray_tune.EarlyRankingStopper` at the
  second report (20% of the run with the default 10 reports);
* **ASHAScheduler** and **MedianStoppingRule** — Ray Tune's own scheduler objects (:func:`ray_schedulers`),
  on ``val_loss``, with Ray's defaults scaled to the trial's length.

The stoppers are called with exactly the ``(trial_id, result)`` pairs Tune passes them, all trials
advancing in lockstep (report ``r`` of every running trial, in trial order, before report ``r+1``:
a Tune run with every trial running at once). Ray's schedulers are driven through their public
callbacks the way Tune's controller drives them (:class:`SchedulerReplay`). A trial is
deterministic, so its results up to the point a stopper ends it are those of its full run: every
trial is trained once, and each stopper is replayed on the recorded results. The stoppers' and
schedulers' settings were fixed before their first measurement.

Per search: trial-steps trained (compute saved = the fraction not trained, and net of the forecast
fits' CPU time converted to steps at the measured step time), the best final validation loss of the
trials that finished, and whether the best trial of the full search finished.

    >>> bench = run_stopper_benchmark(size="tiny", steps=40, trials=3, seeds=1)   # doctest: +SKIP
    >>> [r.method for r in bench.rows]                                          # doctest: +SKIP
    ['no stopper', 'ForecastStopper', 'EarlyRankingStopper', 'ASHAScheduler', 'MedianStoppingRule']
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cadence.errors import CadenceError
from cadence.forecast.law import lr_per_step
from cadence.forecast.live import forecast_final
from cadence.labs.pretrain.train import train
from cadence.labs.pretrain.tree_bench import lab_config
from cadence.progress import Progress

METHODS = ("no stopper", "ForecastStopper", "EarlyRankingStopper", "ASHAScheduler", "MedianStoppingRule")
RANKING_AT = 2
"""The report at which :class:`EarlyRankingStopper` ranks (fixed before measuring)."""
METRIC = "val_loss"
"""The result key Ray's schedulers compare (mode ``min``): the search's objective, validation loss."""


def draw_schedules(seed: int, trials: int, *, steps: int, peak: float) -> list[str]:
    """``trials`` random LR schedules (cosine or WSD, random peak and decay), reproducible from ``seed``.

        >>> draw_schedules(0, 2, steps=100, peak=4e-3)
        ['wsd(peak=0.00175, warmup=2 steps, decay=0.0725)', 'wsd(peak=0.00103, warmup=2 steps, decay=0.497)']
    """
    rng = np.random.default_rng(seed)
    warmup = max(1, round(0.02 * steps))
    out = []
    for _ in range(trials):
        family = rng.choice(["cosine", "wsd"])
        p = float(np.exp(rng.uniform(np.log(peak / 4), np.log(peak * 2))))
        decay = float(rng.uniform(0.05, 0.6))
        out.append(f"warmup(cosine(peak={p:.3g}), {warmup} steps)" if family == "cosine"
                   else f"wsd(peak={p:.3g}, warmup={warmup} steps, decay={decay:.3g})")
    return out


@dataclass
class Trial:
    """One trained trial: its schedule, the logged validation points, per-report training means,
    final validation loss and training seconds; forecasts are made on demand and cached."""

    spec: str
    steps: int
    val_steps: np.ndarray
    val_loss: np.ndarray
    report_steps: list[int]
    loss: list[float]
    grad_norm: list[float]
    final: float
    seconds: float
    forecasts: dict[int, dict[str, float]] = field(default_factory=dict)
    fit_seconds: dict[int, float] = field(default_factory=dict)  # CPU seconds of the forecast at each report

    def result(self, r: int, *, forecast: bool) -> dict[str, Any]:
        """Tune's result at report ``r`` (1-based)."""
        out: dict[str, Any] = {"training_iteration": r, "loss": self.loss[r - 1], "grad_norm": self.grad_norm[r - 1],
                               "done": r == len(self.report_steps)}
        seen = np.flatnonzero(self.val_steps <= self.report_steps[r - 1])
        if seen.size:
            out[METRIC] = float(self.val_loss[seen[-1]])
        if forecast:
            out.update(self.forecast(r))
        return out

    def record(self) -> dict[str, Any]:
        """The trial as plain data (no forecasts): ``Trial(**record)`` rebuilds it."""
        return {"spec": self.spec, "steps": self.steps, "val_steps": self.val_steps.tolist(),
                "val_loss": self.val_loss.tolist(), "report_steps": list(self.report_steps), "loss": list(self.loss),
                "grad_norm": list(self.grad_norm), "final": self.final, "seconds": self.seconds}

    def forecast(self, r: int) -> dict[str, float]:
        if r not in self.forecasts:
            started = time.process_time()
            seen = self.val_steps <= self.report_steps[r - 1]
            try:
                f = forecast_final(self.val_steps[seen], self.val_loss[seen], lr_per_step(self.spec, self.steps))
                self.forecasts[r] = {"cadence/forecast/final_loss": f.final_loss, "cadence/forecast/low": f.low,
                                     "cadence/forecast/high": f.high}
            except CadenceError:  # too early to forecast: the result carries none
                self.forecasts[r] = {}
            self.fit_seconds[r] = time.process_time() - started
        return self.forecasts[r]

    def fits_until(self, step: int) -> float:
        """CPU seconds of the forecasts a trial ended at ``step`` made (its reports up to ``step``)."""
        return sum(self.fit_seconds.get(r, 0.0) for r, s in enumerate(self.report_steps, 1) if s <= step)


def train_trial(cfg: Any, spec: str, *, steps: int, seed: int, reports: int, eval_every: int) -> Trial:
    started = time.process_time()
    log = train(cfg, spec, steps=steps, seed=seed, eval_every=eval_every, progress=False).log
    seconds = time.process_time() - started
    bounds = [round(steps * (r + 1) / reports) for r in range(reports)]
    loss, grad = [], []
    for lo, hi in zip([0, *bounds[:-1]], bounds):
        loss.append(float(np.mean(log.loss[lo:hi])))
        grad.append(float(np.mean(log.grad_norm[lo:hi])))
    seen = np.isfinite(log.val_loss)
    return Trial(spec, steps, log.step[seen].astype(np.int64), log.val_loss[seen], bounds, loss, grad,
                 float(log.val_loss[seen][-1]), seconds)


def replay(stopper: Callable[[str, dict[str, Any]], bool] | None, trials: list[Trial], *,
           forecast: bool) -> list[int]:
    """The step at which each trial ends under ``stopper`` (``None``: none), trials in lockstep."""
    ended = [t.steps for t in trials]
    running = [True] * len(trials)
    for r in range(1, len(trials[0].report_steps) + 1):
        for i, t in enumerate(trials):
            if running[i] and stopper is not None and stopper(f"trial_{i}", t.result(r, forecast=forecast)):
                running[i] = False
                ended[i] = t.report_steps[r - 1]
    return ended


def ray_schedulers(reports: int, *, asha_grace: int | None = None, median_grace: int | None = None) -> dict[str, Any]:
    """Ray Tune's ``ASHAScheduler`` and ``MedianStoppingRule`` with Ray's defaults scaled to a trial of
    ``reports`` results (the rule fixed before their first measurement; ``asha_grace`` and
    ``median_grace``, in reports, replace the scaled grace periods):

    * time is ``training_iteration`` for both (Tune's auto-filled count; the replay has no wall time,
      and wall time on a shared machine measures its load);
    * ASHA: Ray's ``max_t=100`` iterations is the whole trial, so ``max_t=reports``; its
      ``grace_period=1`` of 100 (1%) becomes ``max(1, round(reports / 100))``, i.e. the first report;
      ``reduction_factor=4``, ``brackets=1``, ``stop_last_trials=True`` as Ray's;
    * median rule: Ray's ``grace_period`` is 60 s of ``time_total_s``, which has no length in
      iterations; it takes ASHA's scaled grace period (the first report), so both may first
      decide at the same point; ``min_samples_required=3``, ``min_time_slice=0``,
      ``hard_stop=True`` as Ray's.

        >>> sorted(ray_schedulers(10))                        # doctest: +SKIP
        ['ASHAScheduler', 'MedianStoppingRule']
    """
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    grace = max(1, round(reports / 100))
    asha_grace = grace if asha_grace is None else asha_grace
    median_grace = grace if median_grace is None else median_grace
    return {"ASHAScheduler": ASHAScheduler(time_attr="training_iteration", metric=METRIC, mode="min",
                                           max_t=reports, grace_period=asha_grace, reduction_factor=4, brackets=1),
            "MedianStoppingRule": MedianStoppingRule(time_attr="training_iteration", metric=METRIC, mode="min",
                                                     grace_period=median_grace, min_samples_required=3)}


class SchedulerReplay:
    """A Ray Tune trial scheduler (ASHA, median stopping, ...) as a ``(trial_id, result) -> stop`` callable,
    driven through its public callbacks the way Tune's controller drives it: ``on_trial_add`` for
    every trial before any result (every trial running at once), ``on_trial_result`` for each result,
    and ``on_trial_complete`` with the last result when a trial stops or reports ``done``. The trials
    are Ray's own ``Trial`` objects (stubs: nothing runs); this object is the controller the
    schedulers see, offering the one query they make of it, ``get_live_trials()``. ``PAUSE`` (a
    median rule with ``hard_stop=False`` while trials wait) has no meaning with every trial running
    and is refused.
    """

    def __init__(self, scheduler: Any, trials: int) -> None:
        from ray.tune.experiment import Trial as RayTrial

        self.scheduler = scheduler
        self.trials = {}
        for i in range(trials):
            trial = RayTrial("replay", trial_id=f"trial_{i}", stub=True)
            trial.set_status(RayTrial.RUNNING)
            self.trials[trial.trial_id] = trial
        for trial in self.trials.values():
            scheduler.on_trial_add(self, trial)

    def get_live_trials(self) -> list[Any]:
        return [t for t in self.trials.values() if t.status == "RUNNING"]

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        from ray.tune.schedulers import TrialScheduler

        trial = self.trials[trial_id]
        decision = self.scheduler.on_trial_result(self, trial, result)
        if decision == TrialScheduler.PAUSE:
            raise CadenceError(f"{type(self.scheduler).__name__} paused {trial_id}; the replay runs every trial at "
                               "once and cannot pause (use hard_stop=True)")
        if decision == TrialScheduler.STOP or result.get("done"):
            self.scheduler.on_trial_complete(self, trial, result)
            trial.set_status("TERMINATED")
        return decision == TrialScheduler.STOP


@dataclass(frozen=True)
class SearchRow:
    """One search (method × seed): steps trained, best final loss among finished trials, and more."""

    method: str
    seed: int
    trial_steps: int
    full_steps: int
    best_final: float
    full_best_final: float
    best_survives: bool
    stopped: int
    overhead_steps: float  # the forecast fits' CPU time, in training steps

    @property
    def saved(self) -> float:
        """Fraction of the full search's trial-steps not trained."""
        return 1.0 - self.trial_steps / self.full_steps

    @property
    def net_saved(self) -> float:
        """:attr:`saved` less the forecast fits' CPU time (in steps)."""
        return 1.0 - (self.trial_steps + self.overhead_steps) / self.full_steps


@dataclass(frozen=True)
class StopperBenchmark:
    """Every search's row, the drawn schedules and each trial's recorded results (``records``:
    per seed, per trial, what :meth:`Trial.record` gives; replay other stoppers on them)."""

    rows: list[SearchRow]
    specs: list[list[str]]
    steps: int
    trials: int
    size: str
    seconds: float
    step_seconds: float
    records: list[list[dict[str, Any]]] = field(default_factory=list)

    def of(self, method: str) -> list[SearchRow]:
        return [r for r in self.rows if r.method == method]

    @property
    def seeds(self) -> list[int]:
        """The seeds of the searches, in order."""
        return sorted({r.seed for r in self.rows})

    def as_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "trials": self.trials, "size": self.size, "seeds": self.seeds,
                "seconds": self.seconds,
                "step_seconds": self.step_seconds, "specs": self.specs,
                "rows": [dict(r.__dict__, saved=r.saved, net_saved=r.net_saved) for r in self.rows],
                "records": self.records}


def search_row(method: str, seed: int, trials: list[Trial], stopper: Callable[[str, dict[str, Any]], bool] | None,
               *, forecast: bool, step_seconds: float) -> SearchRow:
    """One search: ``stopper`` replayed on one seed's ``trials`` (``forecast``: results carry forecasts)."""
    steps = trials[0].steps
    finals = [t.final for t in trials]
    best = int(np.argmin(finals))
    ended = replay(stopper, trials, forecast=forecast)
    overhead = sum(t.fits_until(e) for t, e in zip(trials, ended)) / step_seconds if forecast else 0.0
    done = [i for i, e in enumerate(ended) if e == steps]
    best_kept = min((finals[i] for i in done), default=math.inf)  # inf: the stopper ended every trial
    return SearchRow(method, seed, int(sum(ended)), len(trials) * steps, best_kept, finals[best], best in done,
                     len(trials) - len(done), overhead)


def search_rows(seed: int, trials: list[Trial], step_seconds: float) -> list[SearchRow]:
    """The searches of one seed's trials (:data:`METHODS` order)."""
    from cadence.integrations.ray_tune import EarlyRankingStopper, ForecastStopper

    schedulers = ray_schedulers(len(trials[0].report_steps))
    return [search_row(method, seed, trials, stopper, forecast=forecast, step_seconds=step_seconds)
            for method, stopper, forecast in (
                (METHODS[0], None, False), (METHODS[1], ForecastStopper(), True),
                (METHODS[2], EarlyRankingStopper(at_iteration=RANKING_AT), False),
                *((m, SchedulerReplay(schedulers[m], len(trials)), False) for m in METHODS[3:]))]


def run_stopper_benchmark(*, size: str = "default", steps: int = 400, trials: int = 12, seeds: int = 5,
                          first_seed: int = 0, reports: int = 10, peak: float = 4e-3, progress: bool = True,
                          after_seed: Callable[[StopperBenchmark], None] | None = None) -> StopperBenchmark:
    """Train every seed's trials (seeds ``first_seed`` … ``first_seed + seeds - 1``) and replay the
    searches on them (see the module docstring); ``after_seed`` receives the benchmark so far after
    each seed (e.g. to save partial results)."""
    if steps < 20 or trials < 2 or seeds < 1 or first_seed < 0 or not 3 <= reports <= steps // 2:
        raise CadenceError(f"need steps >= 20, trials >= 2, seeds >= 1, first_seed >= 0 and 3 <= reports <= "
                           f"steps/2; got {steps}, {trials}, {seeds}, {first_seed}, {reports}")
    if not (math.isfinite(peak) and peak > 0):
        raise CadenceError(f"peak must be a positive number, got {peak}")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = lab_config(size)
    eval_every = max(1, steps // 50)
    rows, specs, records = [], [], []
    train_seconds, trained = 0.0, 0
    with Progress(enabled=progress, transient=True) as bar:
        task = bar.task("stopper benchmark", total=seeds * trials, unit="trials")
        for seed in range(first_seed, first_seed + seeds):
            specs.append(draw_schedules(seed, trials, steps=steps, peak=peak))
            runs = []
            for spec in specs[-1]:
                runs.append(train_trial(cfg, spec, steps=steps, seed=seed, reports=reports, eval_every=eval_every))
                train_seconds, trained = train_seconds + runs[-1].seconds, trained + steps
                task.advance()
            rows += search_rows(seed, runs, train_seconds / trained)
            records.append([t.record() for t in runs])
            if after_seed is not None:
                after_seed(StopperBenchmark(list(rows), list(specs), steps, trials, size, time.perf_counter() - t0,
                                            train_seconds / trained, list(records)))
    return StopperBenchmark(rows, specs, steps, trials, size, time.perf_counter() - t0, train_seconds / trained,
                            records)


def _read(path: str | Path) -> tuple[dict[str, Any], dict[int, list[Trial]]]:
    try:
        bench = json.loads(Path(path).read_text())
        records = bench["records"]
        float(bench["step_seconds"])
        seeds = bench.get("seeds", list(range(len(records))))
        searches = {int(seed): [Trial(**{k: np.asarray(v) if k.startswith("val_") else v for k, v in r.items()})
                                for r in trials] for seed, trials in zip(seeds, records, strict=True)}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CadenceError(f"cannot read stopper records from {path}: {e}") from None
    if not searches:
        raise CadenceError(f"{path} holds no recorded searches")
    return bench, searches


def read_searches(path: str | Path) -> tuple[dict[int, list[Trial]], float]:
    """``({seed: trials}, step_seconds)`` from the JSON that ``cadence bench stoppers -o`` wrote
    (runs before ``--first-seed`` existed hold seeds 0, 1, …)."""
    bench, searches = _read(path)
    return searches, float(bench["step_seconds"])


def replay_records(*paths: str | Path) -> StopperBenchmark:
    """The searches of :data:`METHODS` replayed on the trials recorded in ``paths`` (the JSON of
    ``cadence bench stoppers -o``; runs on other seeds are merged), without training. Each file's
    rows use its own measured step time; files must share the lab size, trial length, trials per
    search and reports, and not repeat a seed."""
    started = time.perf_counter()
    merged: dict[int, tuple[list[Trial], float]] = {}
    shapes, sizes = set(), set()
    for path in paths:
        bench, searches = _read(path)
        repeated = sorted(set(merged) & set(searches))
        if repeated:
            raise CadenceError(f"{path} repeats seeds {repeated} of an earlier file")
        sizes.add(bench.get("size", "default"))
        for seed, trials in searches.items():
            shapes.add((len(trials), trials[0].steps, len(trials[0].report_steps)))
            merged[seed] = (trials, float(bench["step_seconds"]))
    if len(shapes) > 1 or len(sizes) > 1:
        raise CadenceError(f"the records differ in lab size {sorted(sizes)} or in (trials, steps, reports) "
                           f"{sorted(shapes)}; replay them separately")
    rows = [row for seed in sorted(merged) for row in search_rows(seed, *merged[seed])]
    (trials, steps, _), = shapes
    ordered = [merged[seed][0] for seed in sorted(merged)]
    return StopperBenchmark(rows, [[t.spec for t in ts] for ts in ordered], steps, trials, sizes.pop(),
                            time.perf_counter() - started, float(np.mean([merged[s][1] for s in merged])),
                            [[t.record() for t in ts] for ts in ordered])
