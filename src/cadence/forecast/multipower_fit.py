"""Fit the multi-power law (:mod:`cadence.forecast.multipower`) to measured points of logged runs.

The same fitting loss as the annealing law: the mean over runs of the mean Huber loss
(δ = 1e-3) between predicted and measured *log* loss, minimised by L-BFGS-B with analytic
gradients from a multi-start grid (every start screened for a few iterations, the best few run
to convergence); parameter sets that predict a non-positive loss are rejected.
Bounds: ``0 ≤ L0 ≤ min loss``, ``A ≥ 0``, ``0.001 ≤ α ≤ 3``, ``0 ≤ γ ≤ 2``, and ``B``, ``C``,
``β`` searched as logarithms, ``B ∈ [1e-6, 1e3]``, ``C ∈ [1e-3, 1e6]``, ``β ∈ [1e-4, 10]``.

**Speed.** Only the fitted steps need predictions, and the drop sum at a step ``t`` is binned
by the distance ``t − k`` (:data:`FIT_RATIO`, :meth:`~cadence.forecast.multipower.DropTable.build`):
a 24,000-step cosine run costs ~160 terms per fitted point instead of ~22,000, and changes the
objective by about 1e-5 of itself. The objective reported by :func:`~cadence.forecast.fit.fit_law`
is computed exactly.

    >>> from cadence.forecast.law import lr_per_step
    >>> from cadence.forecast.multipower import MultiPowerLaw
    >>> truth = MultiPowerLaw(1.2, 0.6, 0.4, 0.3, 30.0, 0.7, 0.5, lr_ref=1e-3, steps_ref=200)
    >>> specs = ("constant(1e-3)", "cosine(peak=1e-3)", "wsd(peak=1e-3, decay=30%)")
    >>> lrs = [lr_per_step(s, 200) for s in specs]
    >>> at = [np.arange(20, 201, 10)] * 3
    >>> [(_, law)] = search_multi_power(lrs, at, [truth.predict(lr)[a - 1] for lr, a in zip(lrs, at)], delta=1e-3)
    >>> round(law.alpha, 3), round(law.beta, 2)
    (0.4, 0.7)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from cadence.errors import CadenceError
from cadence.forecast.multipower import DropTable, MultiPowerLaw, WarmupRiseMultiPowerLaw
from cadence.forecast.objective import huber_log, power_starts

LOG_B_BOUNDS = (np.log(1e-6), np.log(1e3))
LOG_C_BOUNDS = (np.log(1e-3), np.log(1e6))
LOG_BETA_BOUNDS = (np.log(1e-4), np.log(10.0))
"""``B``, ``C`` and ``β`` are searched as logarithms: the fits drift towards ``β → 0`` with
``B·β`` fixed (``G`` turning logarithmic), a valley L-BFGS-B crosses in a few hundred iterations
in logs and not in a thousand in plain units."""
SCREEN_ITERATIONS = 30
"""L-BFGS-B iterations every start gets before the best ``POLISHED_STARTS`` are run on (at most
``POLISH_ITERATIONS``, stopping when an iteration gains less than 1e-12 of the objective)."""
POLISHED_STARTS = 3
POLISH_ITERATIONS = 1000
FIT_RATIO = 1.05
"""Drops are binned by distance with this ratio while fitting (:meth:`DropTable.build`) when the
exact drop tables would hold more than ``EXACT_TERMS`` terms; the reported objective is exact."""
EXACT_TERMS = 200_000
SCREEN_RATIO = 1.25
"""The coarser bins the starts are screened on."""


class _Run:
    """One run's fixed inputs: normalised forward areas and drop table at the fitted steps."""

    def __init__(self, lr: np.ndarray, at: np.ndarray, loss: np.ndarray, lr_ref: float, steps_ref: float,
                 ratio: float | None, warmup_rise: bool = False) -> None:
        u = np.asarray(lr, dtype=float) / lr_ref
        self.s1 = np.cumsum(u)[at - 1] / steps_ref
        if np.any(self.s1 <= 0):
            raise CadenceError("some fitted points lie before any LR was applied (S1 = 0); raise skip")
        self.log_s1 = np.log(self.s1)
        self.table = t = DropTable.build(u, steps_ref, at, ratio, warmup_rise)
        self.delta_log_lr = t.delta * t.log_lr
        self.delta_sum = t.delta.sum(axis=1)
        self.log_loss = np.log(loss)


def _rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row sums of ``a * b``."""
    return np.einsum("ij,ij->i", a, b)


def _objective(theta: np.ndarray, runs: list[_Run], delta: float) -> tuple[float, np.ndarray]:
    """Mean over runs of the mean Huber loss of log-loss residuals, and its gradient in
    ``(L0, A, α, log B, log C, log β, γ)``."""
    L0, A, alpha, log_b, log_c, log_beta, gamma = theta
    B, C, beta = np.exp(log_b), np.exp(log_c), np.exp(log_beta)
    total, grad = 0.0, np.zeros(7)
    for run in runs:
        p = np.exp(-alpha * run.log_s1)
        t = run.table
        x = t.area * np.exp(-gamma * t.log_lr)
        lz = np.log1p(C * x)
        g = np.exp(-beta * lz)  # (1 + C·x)^(−β) = 1 − G
        drop = run.delta_sum - _rows(g, t.delta)  # Σ Δ·G; after t the area is 0, so g = 1 and G = 0
        pred = L0 + A * p - B * drop
        if np.any(pred <= 0):
            return 1e6, np.zeros(7)
        value, dh = huber_log(pred, run.log_loss, delta)
        q = g * x / (1.0 + C * x)  # ∂G/∂C = β·q
        total += value
        grad += np.array([
            dh.sum(),
            dh @ p,
            -(dh * A * p) @ run.log_s1,
            -B * (dh @ drop),
            -B * beta * C * (dh @ _rows(q, t.delta)),
            -B * beta * (dh @ _rows(g * lz, t.delta)),
            B * beta * C * (dh @ _rows(q, run.delta_log_lr)),
        ])
    scale = 1.0 / (delta * len(runs))  # O(1) objective keeps L-BFGS-B's tolerances meaningful
    return total * scale, grad * scale


class MultiPowerProblem:
    """The multi-power fit of some runs: the objective (binned drops, :data:`FIT_RATIO`), its
    bounds, and L-BFGS-B from any start; :meth:`law` turns a parameter vector into a law (with
    ``warmup_rise``, a :class:`~cadence.forecast.multipower.WarmupRiseMultiPowerLaw`)."""

    def __init__(self, lrs: Sequence[np.ndarray], at: Sequence[np.ndarray], losses: Sequence[np.ndarray], *,
                 delta: float, lr_ref: float, steps_ref: float, ratio: float | None = FIT_RATIO,
                 warmup_rise: bool = False) -> None:
        self.lr_ref, self.steps_ref, self.delta, self.warmup_rise = lr_ref, steps_ref, delta, warmup_rise
        terms = sum(len(a) * np.count_nonzero(np.diff(lr)) for lr, a in zip(lrs, at))
        ratio = None if terms <= EXACT_TERMS else ratio  # small problems are fitted exactly
        self.runs = [_Run(lr, np.asarray(a), np.asarray(y, dtype=float), lr_ref, steps_ref, ratio, warmup_rise)
                     for lr, a, y in zip(lrs, at, losses)]
        self.losses = [np.asarray(y, dtype=float) for y in losses]
        self.lowest = min(float(np.min(y)) for y in losses)
        self.bounds = [(0.0, self.lowest), (0.0, None), (1e-3, 3.0), LOG_B_BOUNDS, LOG_C_BOUNDS, LOG_BETA_BOUNDS,
                       (0.0, 2.0)]

    def solve(self, theta0: np.ndarray, maxiter: int) -> tuple[float, np.ndarray]:
        """``(objective, θ)`` after L-BFGS-B from ``theta0`` (clipped into the bounds)."""
        lo = [b[0] for b in self.bounds]
        hi = [np.inf if b[1] is None else b[1] for b in self.bounds]
        theta0 = np.clip(theta0, lo, hi)
        res = minimize(_objective, theta0, args=(self.runs, self.delta), jac=True, method="L-BFGS-B",
                       bounds=self.bounds, options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-12})
        return (float(res.fun) if np.isfinite(res.fun) else 1e6), res.x

    def starts(self) -> list[np.ndarray]:
        return _starts(self.runs, self.losses, self.lowest)

    def law(self, theta: np.ndarray) -> MultiPowerLaw:
        L0, A, alpha, log_b, log_c, log_beta, gamma = map(float, theta)
        cls = WarmupRiseMultiPowerLaw if self.warmup_rise else MultiPowerLaw
        return cls(L0, A, alpha, float(np.exp(log_b)), float(np.exp(log_c)), float(np.exp(log_beta)), gamma,
                   self.lr_ref, self.steps_ref)

    @staticmethod
    def theta(law: MultiPowerLaw) -> np.ndarray:
        """The search's parameter vector of a law (logs of ``B``, ``C``, ``β``)."""
        logs = np.log(np.maximum([law.B, law.C, law.beta], 1e-300))
        return np.array([law.L0, law.A, law.alpha, logs[0], logs[1], logs[2], law.gamma])


def search_multi_power(lrs: Sequence[np.ndarray], at: Sequence[np.ndarray], losses: Sequence[np.ndarray], *,
                       delta: float, lr_ref: float | None = None, steps_ref: float | None = None,
                       keep: int = 1, warmup_rise: bool = False,
                       polish: int = POLISH_ITERATIONS) -> list[tuple[float, MultiPowerLaw]]:
    """The best ``keep`` distinct ``(objective, law)`` of the multi-start search, best first, for
    runs with per-step LRs ``lrs``, measured ``losses`` at 1-based steps ``at`` (with
    ``warmup_rise``, of :class:`~cadence.forecast.multipower.WarmupRiseMultiPowerLaw`).
    ``polish``: the most L-BFGS-B iterations of each polished start (fewer stop the fit early).

    Raises :class:`CadenceError` when no start gives a law with positive predictions.
    """
    lr_ref = max(float(np.max(lr)) for lr in lrs) if lr_ref is None else lr_ref
    steps_ref = float(max(len(lr) for lr in lrs)) if steps_ref is None else steps_ref
    problem = MultiPowerProblem(lrs, at, losses, delta=delta, lr_ref=lr_ref, steps_ref=steps_ref,
                                warmup_rise=warmup_rise)
    coarse = MultiPowerProblem(lrs, at, losses, delta=delta, lr_ref=lr_ref, steps_ref=steps_ref, ratio=SCREEN_RATIO,
                               warmup_rise=warmup_rise)
    # every start briefly on coarser bins, then the most promising ones to convergence; BLAS
    # threads only slow these small products down
    with threadpool_limits(limits=1, user_api="blas"):
        screened = sorted((coarse.solve(theta0, SCREEN_ITERATIONS) for theta0 in problem.starts()),
                          key=lambda fx: fx[0])
        polished = [problem.solve(x, polish) for f, x in screened[:max(POLISHED_STARTS, keep)] if f < 1e6]
    if not polished:
        raise CadenceError("no start gave a law with positive predictions; check the runs' losses and LRs")
    polished.sort(key=lambda fx: fx[0])
    return [(f, problem.law(x)) for f, x in polished[:keep]]


def _starts(runs: list[_Run], losses: Sequence[np.ndarray], lowest: float) -> list[np.ndarray]:
    """Initial values: ``L0`` and ``α`` on a grid with ``A`` matched to the data (as for the
    annealing law), each with a weak and a strong drop term that saturates slowly or fast."""
    s1 = np.concatenate([r.s1 for r in runs])
    loss = np.concatenate([np.asarray(y, dtype=float) for y in losses])
    return [np.array([L0, A, alpha, np.log(B), np.log(C), np.log(0.5), 0.5]) for L0, alpha, A in power_starts(s1, loss, lowest)
            for B in (0.02 * lowest, 0.2 * lowest) for C in (10.0, 1000.0)]
