"""Fit the multi-power law (:mod:`cadence.forecast.multipower`) to measured points of logged runs.

The same fitting loss as the annealing law: the mean over runs of the mean Huber loss
(δ = 1e-3) between predicted and measured *log* loss, minimised by L-BFGS-B with analytic
gradients from a multi-start grid (every start screened for a few iterations, the best few run
to convergence); parameter sets that predict a non-positive loss are rejected.
Bounds: ``0 ≤ L0 ≤ min loss``, ``A, B ≥ 0``, ``0.001 ≤ α ≤ 3``, ``0 ≤ β ≤ 10``, ``0 ≤ γ ≤ 2``,
and ``C`` searched as ``log C ∈ [log 1e-3, log 1e6]`` (the loss reduction spans many scales).

    >>> from cadence.forecast.law import lr_per_step
    >>> from cadence.forecast.multipower import MultiPowerLaw
    >>> truth = MultiPowerLaw(1.2, 0.6, 0.4, 0.3, 30.0, 0.7, 0.5, lr_ref=1e-3, steps_ref=200)
    >>> specs = ("constant(1e-3)", "cosine(peak=1e-3)", "wsd(peak=1e-3, decay=30%)")
    >>> lrs = [lr_per_step(s, 200) for s in specs]
    >>> at = [np.arange(20, 201, 10)] * 3
    >>> _, law = search_multi_power(lrs, at, [truth.predict(lr)[a - 1] for lr, a in zip(lrs, at)], delta=1e-3)
    >>> round(law.alpha, 3), round(law.beta, 2)
    (0.4, 0.7)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from cadence.errors import CadenceError
from cadence.forecast.multipower import DropTable, MultiPowerLaw
from cadence.forecast.objective import huber_log, power_starts

LOG_C_BOUNDS = (np.log(1e-3), np.log(1e6))
SCREEN_ITERATIONS = 30
"""L-BFGS-B iterations every start gets before the best ``POLISHED_STARTS`` are run on (at most
``POLISH_ITERATIONS``, stopping when an iteration gains less than 1e-12 of the objective)."""
POLISHED_STARTS = 3
POLISH_ITERATIONS = 1000


class _Run:
    """One run's fixed inputs: normalised forward areas and drop table at the fitted steps."""

    def __init__(self, lr: np.ndarray, at: np.ndarray, loss: np.ndarray, lr_ref: float, steps_ref: float) -> None:
        u = np.asarray(lr, dtype=float) / lr_ref
        self.s1 = np.cumsum(u)[at - 1] / steps_ref
        if np.any(self.s1 <= 0):
            raise CadenceError("some fitted points lie before any LR was applied (S1 = 0); raise skip")
        self.log_s1 = np.log(self.s1)
        self.table = DropTable.build(u, steps_ref, at)
        self.delta_log_lr = self.table.delta * self.table.log_lr
        self.delta_sum = float(self.table.delta.sum())
        self.log_loss = np.log(loss)
        # work buffers: the n × K temporaries are reused, not reallocated on every evaluation
        self.x, self.cx, self.g, self.q = (np.empty_like(self.table.area) for _ in range(4))


def _objective(theta: np.ndarray, runs: list[_Run], delta: float) -> tuple[float, np.ndarray]:
    """Mean over runs of the mean Huber loss of log-loss residuals, and its gradient in
    ``(L0, A, α, B, log C, β, γ)``."""
    L0, A, alpha, B, log_c, beta, gamma = theta
    C = np.exp(log_c)
    total, grad = 0.0, np.zeros(7)
    for run in runs:
        p = np.exp(-alpha * run.log_s1)
        t = run.table
        x = np.multiply(t.area, np.exp(-gamma * t.log_lr), out=run.x)
        cx = np.multiply(x, C, out=run.cx)
        lz = np.log1p(cx, out=run.cx)  # cx is not needed again
        g = np.exp(np.multiply(lz, -beta, out=run.g), out=run.g)  # (1 + C·x)^(−β) = 1 − G
        drop = run.delta_sum - g @ t.delta  # Σ Δ·G; after t the area is 0, so g = 1 and G = 0
        pred = L0 + A * p - B * drop
        if np.any(pred <= 0):
            return 1e6, np.zeros(7)
        value, dh = huber_log(pred, run.log_loss, delta)
        q = np.multiply(np.divide(g, np.expm1(lz, out=run.q) + 1.0, out=run.q), x, out=run.q)  # ∂G/∂C = β·q
        g_lz = np.multiply(g, lz, out=run.g)  # ∂G/∂β
        total += value
        grad += np.array([
            dh.sum(),
            dh @ p,
            -(dh * A * p) @ run.log_s1,
            -dh @ drop,
            -B * beta * C * (dh @ (q @ t.delta)),
            -B * (dh @ (g_lz @ t.delta)),
            B * beta * C * (dh @ (q @ run.delta_log_lr)),
        ])
    scale = 1.0 / (delta * len(runs))  # O(1) objective keeps L-BFGS-B's tolerances meaningful
    return total * scale, grad * scale


def search_multi_power(lrs: Sequence[np.ndarray], at: Sequence[np.ndarray], losses: Sequence[np.ndarray], *,
                       delta: float, lr_ref: float | None = None,
                       steps_ref: float | None = None) -> tuple[float, MultiPowerLaw]:
    """Best ``(objective, law)`` over the multi-start grid for runs with per-step LRs ``lrs``,
    measured ``losses`` at 1-based steps ``at``.

    Raises :class:`CadenceError` when no start gives a law with positive predictions.
    """
    lr_ref = max(float(np.max(lr)) for lr in lrs) if lr_ref is None else lr_ref
    steps_ref = float(max(len(lr) for lr in lrs)) if steps_ref is None else steps_ref
    runs = [_Run(lr, np.asarray(a), np.asarray(y, dtype=float), lr_ref, steps_ref) for lr, a, y in zip(lrs, at, losses)]
    lowest = min(float(np.min(y)) for y in losses)
    bounds = [(0.0, lowest), (0.0, None), (1e-3, 3.0), (0.0, None), LOG_C_BOUNDS, (0.0, 10.0), (0.0, 2.0)]

    def solve(theta0: np.ndarray, maxiter: int) -> tuple[float, np.ndarray]:
        res = minimize(_objective, theta0, args=(runs, delta), jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-10})
        return (float(res.fun) if np.isfinite(res.fun) else 1e6), res.x

    # every start briefly, then the most promising ones to convergence (the objective costs n × K);
    # BLAS threads only slow these small products down
    with threadpool_limits(limits=1, user_api="blas"):
        screened = sorted((solve(theta0, SCREEN_ITERATIONS) for theta0 in _starts(runs, losses, lowest)),
                          key=lambda fx: fx[0])
        polished = [solve(x, POLISH_ITERATIONS) for f, x in screened[:POLISHED_STARTS] if f < 1e6]
    if not polished:
        raise CadenceError("no start gave a law with positive predictions; check the runs' losses and LRs")
    objective, theta = min(polished, key=lambda fx: fx[0])
    L0, A, alpha, B, log_c, beta, gamma = map(float, theta)
    return objective, MultiPowerLaw(L0, A, alpha, B, float(np.exp(log_c)), beta, gamma, lr_ref, steps_ref)


def _starts(runs: list[_Run], losses: Sequence[np.ndarray], lowest: float) -> list[np.ndarray]:
    """Initial values: ``L0`` and ``α`` on a grid with ``A`` matched to the data (as for the
    annealing law), each with a weak and a strong drop term that saturates slowly or fast."""
    s1 = np.concatenate([r.s1 for r in runs])
    loss = np.concatenate([np.asarray(y, dtype=float) for y in losses])
    return [np.array([L0, A, alpha, B, np.log(C), 0.5, 0.5]) for L0, alpha, A in power_starts(s1, loss, lowest)
            for B in (0.02 * lowest, 0.2 * lowest) for C in (10.0, 1000.0)]
