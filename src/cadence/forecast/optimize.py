"""Choose WSD parameters that minimise a fitted law's predicted final loss for a budget.

Searched: the decay fraction (a grid, then a bounded refinement), the decay shape, and a peak-LR
scale relative to a base peak. Works with either law (annealing or multi-power): each predicts
the final loss of a scaled LR sequence in closed form (``law.final_losses``), so every scale comes
from one LR array per (shape, fraction).

**Caveat (reviews of arXiv 2408.11029).** Neither law has a term for instability: scaling the whole schedule
up lowers the predicted loss, so the best scale is the upper end of its range. The default
range therefore stops at the largest LR the law was fitted on (``scale_range=(0.25, 1.0)`` of
that peak); :attr:`WSDChoice.at_bounds` names every parameter that ended on a bound.

    >>> from cadence.forecast.law import AnnealingLaw
    >>> law = AnnealingLaw(L0=1.0, A=0.5, alpha=0.5, C=0.3, lam=0.95, lr_ref=1e-3, steps_ref=200)
    >>> choice = optimize_wsd(law, steps=200, fractions=(0.1, 0.2, 0.3), shapes=("linear",), scales=(1.0,))
    >>> choice.shape, choice.schedule.peak
    ('linear', 0.001)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from cadence.clock import Duration
from cadence.errors import CadenceError
from cadence.forecast.law import lr_per_step
from cadence.forecast.laws import Law
from cadence.schedules import WSD

DEFAULT_SHAPES = ("linear", "cosine", "1-sqrt", "1-square")
DEFAULT_FRACTIONS = tuple(np.round(np.arange(0.02, 0.61, 0.02), 2))


@dataclass(frozen=True)
class WSDChoice:
    """The best WSD found, its predicted final loss, and the parameters that hit a search bound."""

    schedule: WSD
    predicted_final_loss: float
    decay_fraction: float
    shape: str
    peak_scale: float
    at_bounds: tuple[str, ...]


def optimize_wsd(law: Law, steps: int, *, peak: float | None = None, warmup: Duration | str | float = 0.0,
                 floor: float = 0.0, shapes: Sequence[str] = DEFAULT_SHAPES,
                 fractions: Sequence[float] = DEFAULT_FRACTIONS,
                 scales: Sequence[float] | None = None, scale_range: tuple[float, float] = (0.25, 1.0)) -> WSDChoice:
    """The WSD schedule with the lowest predicted final loss after ``steps`` steps.

    Args:
        law: a fitted law (:data:`~cadence.forecast.laws.Law`).
        steps: the budget.
        peak: the base peak LR that scales multiply (default: the law's ``lr_ref``, the largest
            LR it was fitted on).
        warmup, floor: kept fixed.
        shapes, fractions: decay shapes and decay fractions to search (the best fraction is then
            refined continuously between its grid neighbours).
        scales: peak-LR scales to search; default 25 log-spaced values over ``scale_range``.
    """
    if steps < 2:
        raise CadenceError(f"steps must be >= 2, got {steps}")
    if not fractions or not shapes:
        raise CadenceError("give at least one decay shape and one decay fraction")
    if any(not 0 < f <= 1 for f in fractions):
        raise CadenceError(f"decay fractions must lie in (0, 1], got {list(fractions)}")
    lo, hi = scale_range
    if not 0 < lo <= hi:
        raise CadenceError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    peak = law.lr_ref if peak is None else peak
    grid = np.asarray(scales if scales is not None else np.geomspace(lo, hi, 25), dtype=float)
    if np.any(grid <= 0):
        raise CadenceError("peak-LR scales must be positive")

    def final(shape: str, fraction: float) -> np.ndarray:
        """Predicted final loss for every scale in the grid."""
        return law.final_losses(lr_per_step(_wsd(peak, warmup, fraction, shape, floor), steps), grid)

    table = {(shape, f): final(shape, float(f)) for shape in shapes for f in fractions}
    (shape, fraction), values = min(table.items(), key=lambda kv: kv[1].min())
    k = int(np.argmin(values))
    scale, best = float(grid[k]), float(values[k])
    ordered = sorted(float(f) for f in fractions)
    i = ordered.index(float(fraction))
    a, b = ordered[max(i - 1, 0)], ordered[min(i + 1, len(ordered) - 1)]
    if b > a:
        res = minimize_scalar(lambda f: final(shape, f)[k], bounds=(a, b), method="bounded",
                              options={"xatol": 1e-3})
        refined = round(float(res.x), 4)
        value = float(final(shape, refined)[k])
        if value < best:
            fraction, best = refined, value
    bounds = []
    if np.isclose(fraction, ordered[0]) or np.isclose(fraction, ordered[-1]):
        bounds.append("decay_fraction")
    if len(grid) > 1 and k in (0, len(grid) - 1):
        bounds.append("peak_scale")
    schedule = _wsd(peak * scale, warmup, float(fraction), shape, floor)
    return WSDChoice(schedule, best, float(fraction), shape, scale, tuple(bounds))


def _wsd(peak: float, warmup: Duration | str | float, fraction: float, shape: str, floor: float) -> WSD:
    return WSD(peak=peak, warmup=warmup, decay=fraction, shape=shape, floor=floor)
