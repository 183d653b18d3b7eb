"""Fit a loss law — the annealing law (:mod:`cadence.forecast.law`, the default) or the
multi-power law (:mod:`cadence.forecast.multipower`, ``law="multi-power"``) — to one or more
logged runs. Both use the same points and the same fitting loss (:mod:`cadence.forecast.objective`).

For the annealing law, as in public reproductions of arXiv 2408.11029: a Huber loss (``delta`` ≈ 1e-3) between
predicted and measured *log* loss, L-BFGS-B with bounds (every constant ≥ 0, ``L0`` below the
lowest measured loss), a multi-start grid of initial values, and parameter sets that predict a
non-positive loss rejected. The momentum λ is chosen from a grid by the same objective (or fixed).
Each run weighs the same whatever its number of points.

    >>> import numpy as np
    >>> from cadence.forecast.law import AnnealingLaw, lr_per_step
    >>> truth = AnnealingLaw(L0=1.2, A=0.6, alpha=0.4, C=0.5, lam=0.95, lr_ref=1e-3, steps_ref=400)
    >>> runs = []
    >>> for spec in ("constant(1e-3)", "cosine(peak=1e-3)"):
    ...     lr = lr_per_step(spec, 400)
    ...     runs.append(FitTarget(np.arange(1, 401), truth.predict(lr), lr, spec))
    >>> law = fit_law(runs, lams=(0.9, 0.95, 0.99)).law
    >>> round(law.alpha, 2), round(law.lam, 2)
    (0.4, 0.95)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from cadence.errors import CadenceError
from cadence.forecast.law import AnnealingLaw, annealing_area, forward_area
from cadence.forecast.laws import DEFAULT_LAW, LAWS, Law
from cadence.forecast.multipower_fit import POLISHED_STARTS, MultiPowerProblem, search_multi_power
from cadence.forecast.objective import huber_log, power_starts
from cadence.forecast.regime import Regime
from cadence.forecast.runlog import RunLog

DEFAULT_SKIP = 0.05
"""The first fraction of each logged run left out of a fit (the laws describe the curve after the
initial transient); ``fit_law``, ``FitTarget.from_log`` and ``cadence forecast --skip`` share it."""
DEFAULT_LAMS = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
"""λ grid searched when none is fixed (reproductions use 0.999 or a grid from 0.99 to 0.9995;
shorter runs need a shorter memory, hence the smaller values)."""
DEFAULT_LEVEL = 0.8
"""Nominal level of :meth:`FitResult.interval`."""
INTERVAL_SCALE = 1.5
"""Factor on the leave-one-run-out residual quantiles of :meth:`FitResult.interval` (decided by the
leave-a-size-out evaluation, docs/forecast-evidence.md)."""
RUNS_INTERVAL_SCALE = 0.75
"""The same factor for ``FitResult.interval(method="runs")``, decided on the 25M curves only
(docs/forecast-evidence.md, "Predictive intervals")."""
INTERVAL_METHODS = ("pooled", "runs")
"""How :meth:`FitResult.interval` turns the leave-one-run-out residuals into a width."""
FINAL_INTERVAL_SCALE = 0.75
"""Factor on the largest last-point leave-one-run-out residual in :meth:`FitResult.final_interval`,
decided on the 25M curves only (docs/forecast-evidence.md, "A held-out check on a 210M model")."""


@dataclass(frozen=True)
class FitTarget:
    """Measured losses of one run at ``steps`` and the LR of every step ``1..len(lr)``; ``column``:
    which logged loss they are (``"loss"``, training, or ``"val_loss"``, validation)."""

    steps: np.ndarray
    loss: np.ndarray
    lr: np.ndarray
    name: str = "run"
    column: str = "loss"

    def __post_init__(self) -> None:
        steps, loss, lr = (np.asarray(a) for a in (self.steps, self.loss, self.lr))
        if steps.shape != loss.shape or steps.ndim != 1 or len(steps) < 2:
            raise CadenceError(f"{self.name}: need at least 2 (step, loss) points of equal count")
        if steps.min() < 1 or steps.max() > len(lr):
            raise CadenceError(f"{self.name}: loss steps must lie in 1..{len(lr)} (the steps with a known LR)")
        if not np.all(np.isfinite(loss)) or np.any(loss <= 0):
            raise CadenceError(f"{self.name}: losses must be positive and finite")
        if not np.all(np.isfinite(lr)) or np.any(lr < 0):
            raise CadenceError(f"{self.name}: learning rates must be finite and >= 0")
        object.__setattr__(self, "steps", steps.astype(np.int64))
        object.__setattr__(self, "loss", loss.astype(float))
        object.__setattr__(self, "lr", lr.astype(float))

    @classmethod
    def from_log(cls, log: RunLog, *, target: str = "auto", skip: float = DEFAULT_SKIP, max_points: int = 400) -> FitTarget:
        """Points to fit from a run log.

        ``target``: ``"val_loss"``, ``"loss"`` or ``"auto"`` (validation loss when the log has at
        least 5 values, else training loss). The LR is interpolated linearly between logged steps.
        The first ``skip`` fraction of the run is left out (the law describes the curve after the
        initial transient) and at most ``max_points`` evenly spaced points are kept.
        """
        if target == "auto":
            target = "val_loss" if np.count_nonzero(~np.isnan(log.val_loss)) >= 5 else "loss"
        if target not in ("val_loss", "loss"):
            raise CadenceError(f"target must be 'auto', 'val_loss' or 'loss', got {target!r}")
        if not 0 <= skip < 1:
            raise CadenceError(f"skip must be a fraction in [0, 1), got {skip}")
        n = int(log.step[-1])
        lr = np.interp(np.arange(1, n + 1), log.step, log.lr)
        values = getattr(log, target)
        keep = ~np.isnan(values) & (log.step > skip * n)
        steps, loss = log.step[keep], values[keep]
        if len(steps) > max_points:
            idx = np.unique(np.linspace(0, len(steps) - 1, max_points).round().astype(int))
            steps, loss = steps[idx], loss[idx]
        if len(steps) < 2:
            raise CadenceError(f"{log.name}: fewer than 2 {target} values to fit after skipping {skip:.0%}")
        return cls(steps, loss, lr, log.name, target)


@dataclass(frozen=True)
class FitResult:
    """The fitted law, its objective (exact), per-run fit quality (R², RMS relative error), the
    fitted :class:`~cadence.forecast.regime.Regime`, and the leave-one-out refits behind the
    uncertainty band (empty when one run was fitted).

    ``loo_score`` is the chosen fit's leave-one-out error: the mean over runs of the mean
    ``|L − L̂|/L`` on a run when the law is refitted without it (NaN with one run), and
    ``loo_residuals`` the relative residuals ``L/L̂ − 1`` behind it, one array per run: the
    errors of forecasting a schedule the fit has not seen, which :meth:`interval` is made of.
    """

    law: Law
    objective: float
    r2: dict[str, float] = field(default_factory=dict)
    rms_rel_error: dict[str, float] = field(default_factory=dict)
    regime: Regime | None = None
    loo_laws: tuple[Law, ...] = ()
    loo_score: float = float("nan")
    candidates: int = 1
    loo_residuals: tuple[np.ndarray, ...] = ()

    def predict(self, lr: np.ndarray, at: np.ndarray | None = None, *, name: str = "schedule") -> np.ndarray:
        """``law.predict``, warning (:class:`~cadence.forecast.regime.ForecastWarning`) for every way
        ``lr`` leaves the fitted regime."""
        if self.regime is not None:
            self.regime.warn(lr, name)
        return self.law.predict(lr, at)

    def band(self, lr: np.ndarray, at: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)``: the lowest and highest prediction among the fitted law and its
        leave-one-out refits — how far the forecast moves when any one fitted run is missing.
        Both equal the law's prediction when one run was fitted."""
        curves = np.array([law.predict(lr, at) for law in (self.law, *self.loo_laws)])
        return curves.min(axis=0), curves.max(axis=0)

    def interval(self, lr: np.ndarray, at: np.ndarray | None = None, level: float = DEFAULT_LEVEL,
                 scale: float | None = None, method: str = "pooled") -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)``: a predictive interval of nominal ``level`` around every predicted point,
        ``L̂·(1 + scale·q)``, from the leave-one-run-out residuals (see docs/forecast-evidence.md for
        the measured coverage of both methods). Needs two or more fitted runs.

        ``method="pooled"`` (default; ``scale`` defaults to :data:`INTERVAL_SCALE`): ``q`` are the
        ``(1 ∓ level)/2`` quantiles of the residuals pooled over runs, every run weighing the same
        (a jackknife interval). ``method="runs"`` (``scale`` defaults to :data:`RUNS_INTERVAL_SCALE`):
        ``q = ∓`` the largest magnitude among each run's own ``(1 ∓ level)/2`` residual quantiles
        (:func:`run_envelope`): the run, not the point, is the unit a new schedule resembles.
        """
        if not 0 < level < 1:
            raise CadenceError(f"the interval's level must lie in (0, 1), got {level}")
        if method not in INTERVAL_METHODS:
            raise CadenceError(f"the interval's method must be one of {list(INTERVAL_METHODS)}, got {method!r}")
        if not self.loo_residuals:
            raise CadenceError("a predictive interval needs a fit on two or more runs (leave-one-run-out residuals)")
        if method == "pooled":
            scale = INTERVAL_SCALE if scale is None else scale
            q_low, q_high = residual_quantiles(self.loo_residuals, ((1 - level) / 2, (1 + level) / 2))
        else:
            scale = RUNS_INTERVAL_SCALE if scale is None else scale
            q_high = run_envelope(self.loo_residuals, level)
            q_low = -q_high
        pred = self.law.predict(lr, at)
        return pred * (1 + scale * q_low), pred * (1 + scale * q_high)


    def final_interval(self, lr: np.ndarray, method: str = "runs", scale: float | None = None) -> tuple[float, float]:
        """``(low, high)``: an 80% interval for the loss at the last step of ``lr`` (the final loss).

        ``method="runs"`` (default): the run envelope at that step, ``interval(lr, method="runs")``
        (:data:`RUNS_INTERVAL_SCALE`). ``method="last"``: ``L̂·(1 ∓ scale·h)``, ``h`` =
        :func:`final_half_width`, the largest relative miss of a refit without a fitted run on that
        run's final loss (``scale`` defaults to :data:`FINAL_INTERVAL_SCALE`, decided on the 25M
        curves). Judged on three other model sizes, the run envelope held 12 of 16 held-out final
        losses and the last-point form 9 (docs/forecast-evidence.md), hence the default; with the 124M runs at
        peak 2e-3 and 5e-4, 18 of 28 and 15. Needs two or more fitted runs.

            >>> import numpy as np
            >>> from cadence.forecast.law import AnnealingLaw
            >>> law = AnnealingLaw(L0=2.0, A=1.0, alpha=0.5, C=0.0, lam=0.99, lr_ref=1e-3, steps_ref=100)
            >>> fit = FitResult(law, 0.0, loo_residuals=(np.array([0.0, 0.01]), np.array([0.0, -0.02])))
            >>> low, high = fit.final_interval(np.full(100, 1e-3), method="last", scale=1.0)
            >>> round(float(high / law.predict(np.full(100, 1e-3))[-1]) - 1, 6)
            0.02
        """
        if method not in ("runs", "last"):
            raise CadenceError(f"the final-loss interval's method must be 'runs' or 'last', got {method!r}")
        if not self.loo_residuals:
            raise CadenceError("a final-loss interval needs a fit on two or more runs (leave-one-run-out residuals)")
        if scale is not None and (not np.isfinite(scale) or scale < 0):
            raise CadenceError(f"the final-loss interval's scale must be finite and >= 0, got {scale}")
        lr = np.asarray(lr, dtype=float)
        if lr.ndim != 1 or len(lr) < 1:
            raise CadenceError("final_interval needs the LR of every step of the schedule (a 1-D array)")
        if method == "runs":
            low, high = self.interval(lr, np.array([len(lr)]), scale=scale, method="runs")
            return float(low[0]), float(high[0])
        final = float(self.law.predict(lr, np.array([len(lr)]))[0])
        h = (FINAL_INTERVAL_SCALE if scale is None else scale) * final_half_width(self.loo_residuals)
        return final * (1 - h), final * (1 + h)


def final_half_width(residuals: Sequence[np.ndarray]) -> float:
    """The largest magnitude among the runs' last residuals: how far a refit without a run misses
    that run's final loss, relative (the unit of :meth:`FitResult.final_interval`).

        >>> final_half_width([np.array([0.5, 0.01]), np.array([0.0, -0.03])])
        0.03
    """
    return float(max(abs(r[-1]) for r in residuals))


def run_envelope(residuals: Sequence[np.ndarray], level: float) -> float:
    """The largest magnitude among every run's own ``(1 ∓ level)/2`` residual quantiles.

    A forecast of a new schedule errs like one more left-out run, not like a point drawn from all
    runs' pooled residuals: a run's points share its errors (its residuals are correlated), and the
    run least like the others (whose left-out forecast is worst) shows how far a schedule unlike
    the fitted ones can be off. The sign of a law's bias on an unseen schedule is not known, so
    the width is the same on both sides.

        >>> round(run_envelope([np.linspace(-1, 1, 11), np.linspace(0.0, 3.0, 11)], 0.8), 6)
        2.7
    """
    return float(max(np.abs(np.quantile(r, ((1 - level) / 2, (1 + level) / 2))).max() for r in residuals))


def residual_quantiles(residuals: Sequence[np.ndarray], probs: Sequence[float]) -> np.ndarray:
    """Quantiles of pooled residual arrays, each array weighing the same (the inverse of their
    weighted empirical distribution function).

        >>> residual_quantiles([np.array([-1.0, 1.0]), np.array([0.0])], (0.25, 0.75)).tolist()
        [-1.0, 0.0]
    """
    values = np.concatenate(residuals)
    weights = np.concatenate([np.full(len(r), 1.0 / (len(r) * len(residuals))) for r in residuals])
    order = np.argsort(values, kind="stable")
    cdf = np.cumsum(weights[order])
    return np.array([values[order][min(int(np.searchsorted(cdf, p - 1e-12)), len(values) - 1)] for p in probs])


def exact_objective(law: Law, targets: Sequence[FitTarget], delta: float = 1e-3) -> float:
    """The fitting objective of ``law`` on ``targets``, computed exactly (no binned drops): the
    mean over runs of the mean Huber loss of log-loss residuals, divided by ``delta``."""
    total = 0.0
    for t in targets:
        pred = law.predict(t.lr, t.steps)
        if np.any(pred <= 0):
            return 1e6
        total += huber_log(pred, np.log(t.loss), delta)[0]
    return total / (delta * len(targets))


class _AnnealingProblem:
    """The annealing-law fit of some runs at one λ: all runs' points in one array, each run
    weighing the same; L-BFGS-B from any start."""

    def __init__(self, targets: Sequence[FitTarget], lam: float, lr_ref: float, steps_ref: float,
                 delta: float) -> None:
        norm = lr_ref * steps_ref
        self.lam, self.lr_ref, self.steps_ref, self.delta = lam, lr_ref, steps_ref, delta
        self.s1 = np.concatenate([forward_area(t.lr)[t.steps - 1] / norm for t in targets])
        if np.any(self.s1 <= 0):
            raise CadenceError("some fitted points lie before any LR was applied (S1 = 0); raise skip")
        self.log_s1 = np.log(self.s1)
        self.s2 = np.concatenate([annealing_area(t.lr, lam)[t.steps - 1] / norm for t in targets])
        self.logl = np.concatenate([np.log(t.loss) for t in targets])
        self.weight = np.concatenate([np.full(len(t.steps), 1.0 / (len(t.steps) * len(targets))) for t in targets])
        self.lowest = min(float(t.loss.min()) for t in targets)
        self.bounds = [(0.0, self.lowest), (0.0, None), (1e-3, 3.0), (0.0, None)]

    def objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean over runs of the mean Huber loss of log-loss residuals (over ``delta``), and its gradient."""
        L0, A, alpha, C = theta
        p = np.exp(-alpha * self.log_s1)
        pred = L0 + A * p - C * self.s2
        if np.any(pred <= 0):
            return 1e6, np.zeros(4)
        r = np.log(pred) - self.logl
        small = np.abs(r) <= self.delta
        huber = np.where(small, 0.5 * r * r, self.delta * (np.abs(r) - 0.5 * self.delta))
        dh = self.weight * np.where(small, r, self.delta * np.sign(r)) / pred
        grad = np.array([dh.sum(), dh @ p, -(dh * A * p) @ self.log_s1, -(dh @ self.s2)])
        return float(self.weight @ huber) / self.delta, grad / self.delta

    def solve(self, theta0: np.ndarray, maxiter: int) -> tuple[float, np.ndarray]:
        theta0 = np.clip(theta0, [b[0] for b in self.bounds], [np.inf if b[1] is None else b[1] for b in self.bounds])
        res = minimize(self.objective, theta0, jac=True, method="L-BFGS-B", bounds=self.bounds,
                       options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-10})
        return (float(res.fun) if np.isfinite(res.fun) else 1e6), res.x

    def law(self, theta: np.ndarray) -> AnnealingLaw:
        return AnnealingLaw(*map(float, theta), self.lam, self.lr_ref, self.steps_ref)

    @staticmethod
    def theta(law: AnnealingLaw) -> np.ndarray:
        return np.array([law.L0, law.A, law.alpha, law.C])


ANNEALING_SCREEN = 20
"""L-BFGS-B iterations every annealing start gets at each λ before the best one is run to convergence."""
LOO_ITERATIONS = 300
"""Most L-BFGS-B iterations of a leave-one-out refit (it starts from the full fit)."""
GOOD_FIT = 1.1
"""Candidates for the leave-one-out choice: fits whose objective is within this factor of the best."""
CHOICES = ("leave-one-out", "objective")


def _problem(law: str, targets: Sequence[FitTarget], lr_ref: float, steps_ref: float, delta: float,
             lam: float | None) -> Any:
    if law == "multi-power":
        return MultiPowerProblem([t.lr for t in targets], [t.steps for t in targets], [t.loss for t in targets],
                                 delta=delta, lr_ref=lr_ref, steps_ref=steps_ref)
    return _AnnealingProblem(targets, lam, lr_ref, steps_ref, delta)


def _candidates(law: str, targets: list[FitTarget], lam_grid: Sequence[float], lr_ref: float, steps_ref: float,
                delta: float) -> list[tuple[float, Law]]:
    """Distinct polished fits, best objective first: for the annealing law the best start at each
    λ, for the multi-power law the best polished starts."""
    if law == "multi-power":
        return search_multi_power([t.lr for t in targets], [t.steps for t in targets], [t.loss for t in targets],
                                  delta=delta, lr_ref=lr_ref, steps_ref=steps_ref, keep=POLISHED_STARTS)
    lowest = min(float(t.loss.min()) for t in targets)
    out = []
    for lm in lam_grid:
        problem = _AnnealingProblem(targets, lm, lr_ref, steps_ref, delta)
        starts = [np.array([L0, A, alpha, C]) for L0, alpha, A in power_starts(problem.s1, np.exp(problem.logl), lowest)
                  for C in (0.0, 1.0)]
        screened = min((problem.solve(theta0, ANNEALING_SCREEN) for theta0 in starts), key=lambda fx: fx[0])
        if screened[0] < 1e6:
            f, theta = problem.solve(screened[1], 3000)
            out.append((f, problem.law(theta)))
    return sorted(out, key=lambda fl: fl[0])


def _leave_one_out(law: str, fitted: Law, targets: list[FitTarget], lr_ref: float, steps_ref: float,
                   delta: float) -> tuple[float, tuple[Law, ...], tuple[np.ndarray, ...]]:
    """Refit ``fitted`` without each run in turn (starting from it); the mean held-out error, the
    refits and each left-out run's relative residuals ``L/L̂ − 1``."""
    errors, laws, residuals = [], [], []
    for i, held in enumerate(targets):
        rest = targets[:i] + targets[i + 1:]
        problem = _problem(law, rest, lr_ref, steps_ref, delta, getattr(fitted, "lam", None))
        f, theta = problem.solve(problem.theta(fitted), LOO_ITERATIONS)
        refit = problem.law(theta) if f < 1e6 else fitted
        pred = refit.predict(held.lr, held.steps)
        errors.append(float(np.mean(np.abs(pred - held.loss) / held.loss)))
        laws.append(refit)
        residuals.append(held.loss / pred - 1.0)
    return float(np.mean(errors)), tuple(laws), tuple(residuals)


def fit_law(runs: Iterable[FitTarget | RunLog], *, law: str = DEFAULT_LAW,
            lams: Sequence[float] | None = DEFAULT_LAMS, lam: float | None = None, delta: float = 1e-3,
            target: str = "auto", skip: float = DEFAULT_SKIP, choose: str = "leave-one-out") -> FitResult:
    """Fit a law to the runs: ``"annealing"`` fits ``L0, A, α, C`` (and λ from ``lams`` unless
    ``lam`` is fixed); ``"multi-power"`` fits ``L0, A, α, B, C, β, γ`` (``lam``/``lams`` do not apply).

    ``choose``: with two or more runs, ``"leave-one-out"`` (default) refits every good candidate
    (objective within :data:`GOOD_FIT` of the best: the annealing law's best fit at each λ, the
    multi-power law's polished starts) without each run in turn and keeps the one that predicts
    the left-out runs best; its refits give :meth:`FitResult.band`. ``"objective"`` keeps the
    lowest objective; its leave-one-out refits are still computed (for :meth:`FitResult.band`
    and :meth:`FitResult.interval`).

    Raises :class:`CadenceError` for an unknown law or choice, when no run has usable points or
    when no start gives a valid fit.
    """
    if law not in LAWS:
        raise CadenceError(f"unknown law {law!r}; choose one of {sorted(LAWS)}")
    if choose not in CHOICES:
        raise CadenceError(f"choose must be one of {list(CHOICES)}, got {choose!r}")
    if law != "annealing" and lam is not None:
        raise CadenceError("lam (the annealing momentum) applies to the annealing law only")
    targets = [r if isinstance(r, FitTarget) else FitTarget.from_log(r, target=target, skip=skip) for r in runs]
    if not targets:
        raise CadenceError("fit_law needs at least one run")
    lr_ref = max(float(t.lr.max()) for t in targets)
    steps_ref = float(max(len(t.lr) for t in targets))
    if lr_ref <= 0:
        raise CadenceError("every fitted run has a zero learning rate; nothing to fit")
    lam_grid = (lam,) if lam is not None else tuple(lams or ())
    if law == "annealing" and not lam_grid:
        raise CadenceError("give lam or a non-empty lams grid")
    with threadpool_limits(limits=1, user_api="blas"):  # BLAS threads only slow L-BFGS-B's small problem
        candidates = _candidates(law, targets, lam_grid, lr_ref, steps_ref, delta)
        if not candidates:
            raise CadenceError("no start gave a law with positive predictions; check the runs' losses and LRs")
        fitted, loo_score, loo_laws, residuals = candidates[0][1], float("nan"), (), ()
        good = [c for f, c in candidates if f <= GOOD_FIT * candidates[0][0]]
        if len(targets) > 1:
            scored = [(*_leave_one_out(law, c, targets, lr_ref, steps_ref, delta), c)
                      for c in (good if choose == "leave-one-out" else good[:1])]
            loo_score, loo_laws, residuals, fitted = min(scored, key=lambda s: s[0])
    r2, rms = {}, {}
    for t in targets:
        pred = fitted.predict(t.lr, t.steps)
        r2[t.name] = float(1 - np.sum((pred - t.loss) ** 2) / max(np.sum((t.loss - t.loss.mean()) ** 2), 1e-300))
        rms[t.name] = float(np.sqrt(np.mean(((pred - t.loss) / t.loss) ** 2)))
    return FitResult(fitted, exact_objective(fitted, targets, delta), r2, rms, Regime.of([t.lr for t in targets]),
                     loo_laws, loo_score, len(good), residuals)
