"""A live forecast from a partial run: the final loss of a running job under the rest of its schedule.

:func:`forecast_final` fits a law on the points logged so far (after the warmup), with or without
earlier finished runs, and predicts the last step of the job's whole schedule. Its interval comes
from a backtest on the run itself: the same fit made on the first half of the points seen so far
predicts the second half, and the relative residuals' ``(1 ∓ level)/2`` quantiles, times
:data:`~cadence.forecast.fit.INTERVAL_SCALE`, bound the final loss (measured coverage in
docs/forecast-evidence.md, "A live forecast from a partial run").

:class:`LiveForecast` does this while training: the training thread only appends ``(step, loss)``;
every ``every`` steps a background thread hands a fit to a separate worker process
(:class:`~cadence.forecast.worker.FitWorker`; never two fits at once, and the fit never holds the
training process's GIL), and
:meth:`LiveForecast.values` returns the latest finished forecast as
``cadence/forecast/final_loss``, ``…/low``, ``…/high`` and ``…/at_step``. The Hugging Face and
Lightning callbacks (``cadence.integrations``) and :meth:`RegimenLink.live_forecast
<cadence.regimen.link.RegimenLink.live_forecast>` feed it.

    >>> import numpy as np
    >>> from cadence.forecast import AnnealingLaw, lr_per_step
    >>> truth = AnnealingLaw(L0=1.2, A=0.6, alpha=0.4, C=0.5, lam=0.95, lr_ref=1e-3, steps_ref=600)
    >>> lr = lr_per_step("warmup(cosine(peak=1e-3, floor=0.1), 30 steps)", 600)
    >>> seen = np.arange(10, 301, 10)                                   # half the run so far
    >>> f = forecast_final(seen, truth.predict(lr, seen), lr, lams=(0.95,))
    >>> bool(abs(f.final_loss / truth.predict(lr)[-1] - 1) < 1e-3), bool(f.low <= f.final_loss <= f.high)
    (True, True)
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from cadence.errors import CadenceError, StateError
from cadence.forecast.fit import DEFAULT_LAMS, DEFAULT_LEVEL, INTERVAL_SCALE, FitResult, FitTarget, fit_law, \
    residual_quantiles
from cadence.forecast.law import warmup_end
from cadence.forecast.laws import DEFAULT_LAW
from cadence.forecast.worker import FitWorker

MIN_POINTS = 6
"""Fewest logged points after the warmup a forecast is made from (the backtest halves them)."""
LR_TOLERANCE = 0.02
"""A logged LR matches the schedule when it is within this fraction of the schedule's peak."""
KIND = "cadence.forecast.LiveForecast"


def warmup_top(lr: np.ndarray) -> int:
    """The 1-based step at which the LR first reaches the top of its initial rise (1 without a warmup).

        >>> warmup_top(np.array([0.1, 0.5, 1.0, 1.0, 0.5]))
        3
    """
    lr = np.asarray(lr, dtype=float)
    end = warmup_end(lr)
    return int(np.argmax(lr[:end] >= lr[:end].max())) + 1


@dataclass(frozen=True)
class FinalForecast:
    """The predicted final loss of a run, its interval (NaN when too few points for the backtest),
    the last step it was made from and the fit behind it."""

    final_loss: float
    low: float
    high: float
    at_step: int
    fit: FitResult


def check_partial(steps: np.ndarray, lr: np.ndarray, logged_lr: np.ndarray | None = None) -> None:
    """Raise :class:`CadenceError` when a partial log cannot be forecast from: steps beyond the
    schedule, a log that ends inside the warmup, or logged LRs that the schedule does not give."""
    if len(steps) == 0:
        raise CadenceError("the partial log has no points yet")
    if steps.min() < 1 or steps.max() > len(lr):
        raise CadenceError(f"the partial log's steps must lie in 1..{len(lr)}, the schedule's budget")
    top = warmup_top(lr)
    if steps.max() <= top:
        raise CadenceError(f"the partial log ends at step {int(steps.max())}, inside the warmup (it reaches the peak "
                           f"at step {top}): nothing to forecast from yet")
    if logged_lr is not None:
        logged_lr = np.asarray(logged_lr, dtype=float)
        expected = lr[steps - 1]
        off = np.flatnonzero(np.abs(logged_lr - expected) > LR_TOLERANCE * lr.max())
        if len(off):
            i = off[0]
            raise CadenceError(f"the schedule does not match the log's LRs: at step {int(steps[i])} the log has "
                               f"{logged_lr[i]:.4g}, the schedule {expected[i]:.4g} ({len(off)} step(s) differ)")


def forecast_final(steps: Sequence[int], loss: Sequence[float], lr: np.ndarray, *, runs: Sequence[FitTarget] = (),
                   law: str = DEFAULT_LAW, lams: Sequence[float] = DEFAULT_LAMS, level: float = DEFAULT_LEVEL,
                   scale: float = INTERVAL_SCALE, logged_lr: Sequence[float] | None = None) -> FinalForecast:
    """The final loss of a run whose whole schedule gives per-step LRs ``lr``, from the losses
    logged so far at ``steps`` (and earlier finished ``runs``, fitted alongside).

    Only the points after the warmup are fitted. Raises :class:`CadenceError` for a log that ends
    inside the warmup, fewer than :data:`MIN_POINTS` points after it, or ``logged_lr`` (the LRs
    the log recorded at ``steps``) that the schedule does not give, and for a fit that predicts a
    non-positive final loss (an extrapolation from too early a part of the run).
    """
    steps, loss, lr = np.asarray(steps, dtype=np.int64), np.asarray(loss, dtype=float), np.asarray(lr, dtype=float)
    if steps.shape != loss.shape:
        raise CadenceError(f"the partial log has {len(steps)} steps but {len(loss)} losses")
    check_partial(steps, lr, logged_lr)
    keep = steps > warmup_top(lr)
    if keep.sum() < MIN_POINTS:
        raise CadenceError(f"the partial log has {int(keep.sum())} point(s) after the warmup; a forecast needs "
                           f"{MIN_POINTS}")
    steps, loss = steps[keep], loss[keep]
    options: dict[str, Any] = {"law": law, "choose": "objective"}
    if law == "annealing":
        options["lams"] = tuple(lams)
    fit = fit_law([*runs, FitTarget(steps, loss, lr, "partial")], **options)
    final = float(fit.law.predict(lr, np.array([len(lr)]))[0])
    if not np.isfinite(final) or final <= 0:
        raise CadenceError(f"the fit on {len(steps)} point(s) predicts a final loss of {final:.4g}: "
                           "too few points to extrapolate from yet")
    half = len(steps) // 2
    early = fit_law([*runs, FitTarget(steps[:half], loss[:half], lr, "partial")], **options).law
    residuals = loss[half:] / early.predict(lr, steps[half:]) - 1.0
    q_low, q_high = residual_quantiles([residuals], ((1 - level) / 2, (1 + level) / 2))
    # the backtest looked (last − midpoint) steps ahead, the forecast looks (budget − last) ahead
    ahead = max(1.0, (len(lr) - steps[-1]) / max(steps[-1] - steps[half - 1], 1))
    half_width = scale * ahead * max(abs(q_low), abs(q_high))  # symmetric: the backtest's sign need not last
    spread = float(np.exp(half_width))  # in log loss, so a wide interval stays positive
    return FinalForecast(final, final / spread, final * spread, int(steps[-1]), fit)


class LiveForecast:
    """The final-loss forecast of a running job, refitted every ``every`` steps off the training thread.

    Args:
        lr: the LR of every step of the job's whole budget (``cadence.forecast.lr_per_step``).
        every: steps between fits (a fit starts at the first :meth:`observe` at or after each
            multiple, unless the previous one is still running).
        runs: earlier finished runs fitted alongside (:class:`~cadence.forecast.FitTarget`).
        law, lams, level: as :func:`forecast_final`.
        prefix: prefix of the keys :meth:`values` returns.
        worker: where a fit runs: ``"process"`` (default: a separate Python process, started at
            the first fit, ended by :meth:`close` or at exit) or ``"thread"`` (the background
            thread itself: no extra process, but the fit holds the GIL and stalls training steps).
            Both give identical forecasts.
        max_share: the largest fraction of wall time fits may take: after a fit that took ``d``
            seconds, the next one starts no sooner than ``d·(1/max_share − 1)`` after it ended (at
            the first :meth:`observe` from then on at or after a multiple of ``every``). This bounds
            how many steps overlap a fit, and so the mean stall wherever a fit slows steps down
            (1: no limit; :meth:`refit` ignores it).

    The training thread's share of the work is :meth:`observe` (an append, and every ``every``
    steps a copy of the points and a thread start); :attr:`slowest_observe` records the longest
    call in seconds. ``benchmarks/live_forecast_overhead.py`` measures the stall on a training step.
    """

    def __init__(self, lr: np.ndarray, *, every: int = 100, runs: Sequence[FitTarget] = (), law: str = DEFAULT_LAW,
                 lams: Sequence[float] = DEFAULT_LAMS, level: float = DEFAULT_LEVEL, prefix: str = "cadence/",
                 worker: str = "process", max_share: float = 0.1) -> None:
        self.lr = np.asarray(lr, dtype=float)
        if self.lr.ndim != 1 or len(self.lr) < 2 or not np.all(np.isfinite(self.lr)) or np.any(self.lr < 0):
            raise CadenceError("LiveForecast needs the finite, non-negative LR of every step of the budget")
        if int(every) < 1:
            raise CadenceError(f"every must be a whole number of steps >= 1, got {every}")
        if not 0 < float(max_share) <= 1:
            raise CadenceError(f"max_share must lie in (0, 1], got {max_share}")
        if worker not in ("process", "thread"):
            raise CadenceError(f"worker must be 'process' or 'thread', got {worker!r}")
        self.every, self.runs, self.law, self.level, self.prefix = int(every), tuple(runs), law, level, prefix
        self.worker = FitWorker() if worker == "process" else None
        self.max_share = float(max_share)
        self._rest_until = -np.inf  # perf_counter time before which no scheduled fit starts
        self.lams = tuple(lams)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.latest: FinalForecast | None = None
        self.error: str | None = None  # why the last fit gave no forecast (e.g. still in the warmup)
        self.fits = 0
        self.slowest_observe = 0.0
        self._next = self.every
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def observe(self, step: int, loss: float) -> None:
        """Record the loss logged after optimizer step ``step`` (1-based); start a background fit
        when a multiple of ``every`` is reached, none is running and the last one's rest is over
        (``max_share``). Non-finite losses are skipped."""
        started = time.perf_counter()
        step, loss = int(step), float(loss)
        if self.steps and step <= self.steps[-1]:
            raise CadenceError(f"LiveForecast: step {step} is not after the last observed step {self.steps[-1]}")
        if np.isfinite(loss) and loss > 0 and step <= len(self.lr):
            self.steps.append(step)
            self.losses.append(loss)
        if step >= self._next and (self._thread is None or not self._thread.is_alive()) and \
                started >= self._rest_until:
            self._next = (step // self.every + 1) * self.every
            self._start()
        self.slowest_observe = max(self.slowest_observe, time.perf_counter() - started)

    def _start(self) -> None:
        points = (np.array(self.steps, dtype=np.int64), np.array(self.losses))
        self._thread = threading.Thread(target=self._fit, args=points, name="cadence-live-forecast", daemon=True)
        self._thread.start()

    def refit(self) -> None:
        """Start a fit on every point observed so far, once any running fit has finished (e.g. at
        the end of training, when the last scheduled fit was skipped because one was running)."""
        self.wait()
        self._start()

    def _fit(self, steps: np.ndarray, losses: np.ndarray) -> None:
        fit = self.worker.forecast if self.worker is not None else forecast_final
        started = time.perf_counter()
        try:
            result = fit(steps, losses, self.lr, runs=self.runs, law=self.law, lams=self.lams, level=self.level)
        except CadenceError as e:
            with self._lock:
                self.error = str(e)
            return
        finally:
            ended = time.perf_counter()
            self._rest_until = ended + (ended - started) * (1 / self.max_share - 1)
        with self._lock:
            self.latest, self.error, self.fits = result, None, self.fits + 1

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a running fit to finish; whether none is running afterwards."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def close(self) -> None:
        """Wait for a running fit, then end the worker process (a later fit starts a new one)."""
        self.wait()
        if self.worker is not None:
            self.worker.close()

    def values(self) -> dict[str, float]:
        """The latest finished forecast (empty before the first)."""
        with self._lock:
            f = self.latest
        if f is None:
            return {}
        key = self.prefix + "forecast/"
        return {key + "final_loss": float(f.final_loss), key + "low": float(f.low), key + "high": float(f.high),
                key + "at_step": float(f.at_step)}

    def state_dict(self) -> dict[str, Any]:
        """The observed points and the next fit step (plain data); a fit is redone after loading."""
        return {"kind": KIND, "steps": list(self.steps), "losses": list(self.losses), "next": self._next}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or state.get("kind") != KIND:
            raise StateError(f"not a LiveForecast state (missing kind={KIND!r})")
        steps, losses = list(map(int, state["steps"])), list(map(float, state["losses"]))
        if len(steps) != len(losses) or any(b <= a for a, b in zip(steps, steps[1:])):
            raise StateError("LiveForecast state: steps and losses must pair up, steps increasing")
        self.wait()
        self.steps, self.losses, self._next = steps, losses, int(state["next"])
