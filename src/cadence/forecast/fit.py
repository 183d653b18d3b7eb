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
from typing import Iterable, Sequence

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from cadence.errors import CadenceError
from cadence.forecast.law import AnnealingLaw, annealing_area, forward_area
from cadence.forecast.laws import DEFAULT_LAW, LAWS, Law
from cadence.forecast.multipower_fit import search_multi_power
from cadence.forecast.objective import huber_log, power_starts
from cadence.forecast.runlog import RunLog

DEFAULT_LAMS = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
"""λ grid searched when none is fixed (reproductions use 0.999 or a grid from 0.99 to 0.9995;
shorter runs need a shorter memory, hence the smaller values)."""


@dataclass(frozen=True)
class FitTarget:
    """Measured losses of one run at ``steps`` and the LR of every step ``1..len(lr)``."""

    steps: np.ndarray
    loss: np.ndarray
    lr: np.ndarray
    name: str = "run"

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
    def from_log(cls, log: RunLog, *, target: str = "auto", skip: float = 0.05, max_points: int = 400) -> FitTarget:
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
        return cls(steps, loss, lr, log.name)


@dataclass(frozen=True)
class FitResult:
    """The fitted law, its objective, and per-run fit quality (R² and RMS relative error)."""

    law: Law
    objective: float
    r2: dict[str, float] = field(default_factory=dict)
    rms_rel_error: dict[str, float] = field(default_factory=dict)


def _objective(theta: np.ndarray, x: list[np.ndarray], y: list[np.ndarray], logl: list[np.ndarray],
               delta: float) -> tuple[float, np.ndarray]:
    """Mean over runs of the mean Huber loss of log-loss residuals, and its gradient."""
    L0, A, alpha, C = theta
    total, grad = 0.0, np.zeros(4)
    for s1, s2, target in zip(x, y, logl):
        p = np.power(s1, -alpha)
        pred = L0 + A * p - C * s2
        if np.any(pred <= 0):
            return 1e6, np.zeros(4)
        value, dh = huber_log(pred, target, delta)
        total += value
        grad += np.array([dh.sum(), (dh * p).sum(), -(dh * A * p * np.log(s1)).sum(), -(dh * s2).sum()])
    scale = 1.0 / (delta * len(x))  # O(1) objective keeps L-BFGS-B's tolerances meaningful
    return total * scale, grad * scale


def fit_law(runs: Iterable[FitTarget | RunLog], *, law: str = DEFAULT_LAW,
            lams: Sequence[float] | None = DEFAULT_LAMS, lam: float | None = None, delta: float = 1e-3,
            target: str = "auto", skip: float = 0.05) -> FitResult:
    """Fit a law to the runs: ``"annealing"`` fits ``L0, A, α, C`` (and λ from ``lams`` unless
    ``lam`` is fixed); ``"multi-power"`` fits ``L0, A, α, B, C, β, γ`` (``lam``/``lams`` do not apply).

    Raises :class:`CadenceError` for an unknown law, when no run has usable points or when no start
    gives a valid fit.
    """
    if law not in LAWS:
        raise CadenceError(f"unknown law {law!r}; choose one of {sorted(LAWS)}")
    if law != "annealing" and lam is not None:
        raise CadenceError("lam (the annealing momentum) applies to the annealing law only")
    targets = [r if isinstance(r, FitTarget) else FitTarget.from_log(r, target=target, skip=skip) for r in runs]
    if not targets:
        raise CadenceError("fit_law needs at least one run")
    lr_ref = max(float(t.lr.max()) for t in targets)
    steps_ref = float(max(len(t.lr) for t in targets))
    if lr_ref <= 0:
        raise CadenceError("every fitted run has a zero learning rate; nothing to fit")
    with threadpool_limits(limits=1, user_api="blas"):  # BLAS threads only slow L-BFGS-B's small problem
        if law == "multi-power":
            objective, fitted = search_multi_power([t.lr for t in targets], [t.steps for t in targets],
                                                   [t.loss for t in targets], delta=delta, lr_ref=lr_ref,
                                                   steps_ref=steps_ref)
        else:
            lam_grid = (lam,) if lam is not None else tuple(lams or ())
            if not lam_grid:
                raise CadenceError("give lam or a non-empty lams grid")
            objective, fitted = _search(targets, lam_grid, lr_ref, steps_ref, delta)
    r2, rms = {}, {}
    for t in targets:
        pred = fitted.predict(t.lr)[t.steps - 1]
        r2[t.name] = float(1 - np.sum((pred - t.loss) ** 2) / max(np.sum((t.loss - t.loss.mean()) ** 2), 1e-300))
        rms[t.name] = float(np.sqrt(np.mean(((pred - t.loss) / t.loss) ** 2)))
    return FitResult(fitted, objective, r2, rms)


def _search(targets: list[FitTarget], lam_grid: Sequence[float], lr_ref: float, steps_ref: float,
            delta: float) -> tuple[float, AnnealingLaw]:
    """Best ``(objective, law)`` over the λ grid and the multi-start grid."""
    lowest = min(float(t.loss.min()) for t in targets)
    logl = [np.log(t.loss) for t in targets]
    norm = lr_ref * steps_ref
    x = [forward_area(t.lr)[t.steps - 1] / norm for t in targets]
    if any(np.any(s1 <= 0) for s1 in x):
        raise CadenceError("some fitted points lie before any LR was applied (S1 = 0); raise skip")
    starts = _starts(x, targets, lowest)
    best: tuple[float, AnnealingLaw] | None = None
    for lm in lam_grid:
        y = [annealing_area(t.lr, lm)[t.steps - 1] / norm for t in targets]
        for theta0 in starts:
            res = minimize(_objective, theta0, args=(x, y, logl, delta), jac=True, method="L-BFGS-B",
                           bounds=[(0.0, lowest), (0.0, None), (1e-3, 3.0), (0.0, None)],
                           options={"maxiter": 3000, "ftol": 1e-15, "gtol": 1e-10})
            if np.isfinite(res.fun) and res.fun < 1e6 and (best is None or res.fun < best[0]):
                best = (float(res.fun), AnnealingLaw(*map(float, res.x), lm, lr_ref, steps_ref))
    if best is None:
        raise CadenceError("no start gave a law with positive predictions; check the runs' losses and LRs")
    return best


def _starts(x: list[np.ndarray], targets: list[FitTarget], lowest: float) -> list[np.ndarray]:
    """Initial ``(L0, A, α, C)``: a grid over ``L0`` and ``α``, ``A`` matched to the data, ``C`` 0 or 1."""
    s1 = np.concatenate(x)
    loss = np.concatenate([t.loss for t in targets])
    return [np.array([L0, A, alpha, C]) for L0, alpha, A in power_starts(s1, loss, lowest) for C in (0.0, 1.0)]
