"""The fitted regime of a loss law, and a warning when a prediction leaves it.

A law fitted on some runs has only seen their LRs and lengths. :class:`Regime` records what
they covered — the largest LR, the lowest LR after the warmup (the floors), whether any run
re-warmed (its LR rose again after falling) and the longest run — and :meth:`Regime.check`
names every way an LR sequence goes beyond that; :meth:`Regime.warn` raises each as a
:class:`ForecastWarning`.

    >>> import numpy as np
    >>> regime = Regime.of([np.full(100, 1e-3), np.linspace(1e-3, 1e-4, 100)])
    >>> regime.check(np.full(100, 2e-3))
    ['peak LR 0.002 > fitted 0.001']
    >>> regime.check(np.linspace(1e-3, 1e-4, 120))
    []
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from cadence.forecast.law import warmup_end

HORIZON_FACTOR = 2.0
"""A prediction longer than this many times the longest fitted run is out of the fitted regime."""
_TOL = 1e-3
"""LRs within this relative difference count as the same LR (a cosine never quite reaches its floor)."""


class ForecastWarning(UserWarning):
    """A prediction outside the regime the law was fitted on (see :class:`Regime`)."""


def rewarms(lr: np.ndarray) -> bool:
    """Whether the LR rises again after it first fell (beyond rounding).

        >>> rewarms(np.array([0.0, 1.0, 0.5, 0.8])), rewarms(np.array([0.0, 1.0, 0.5, 0.5]))
        (True, False)
    """
    lr = np.asarray(lr, dtype=float)
    end = warmup_end(lr)
    return bool(end < len(lr) and np.any(np.diff(lr[end - 1:]) > _TOL * max(float(lr.max()), 1e-300)))


def floor_of(lr: np.ndarray) -> float:
    """The lowest LR after the warmup (the whole run's lowest when it never falls)."""
    lr = np.asarray(lr, dtype=float)
    return float(lr[warmup_end(lr) - 1:].min())


@dataclass(frozen=True)
class Regime:
    """What the fitted runs covered: largest LR, lowest LR after warmup, re-warming, longest run."""

    peak: float
    floor: float
    rewarmed: bool
    steps: int

    @classmethod
    def of(cls, lrs: Sequence[np.ndarray]) -> Regime:
        """The regime of runs with these per-step LRs."""
        return cls(max(float(np.max(lr)) for lr in lrs), min(floor_of(lr) for lr in lrs),
                   any(rewarms(lr) for lr in lrs), max(len(lr) for lr in lrs))

    def check(self, lr: np.ndarray) -> list[str]:
        """Every way the LR sequence ``lr`` (one value per step) leaves this regime, in words."""
        lr = np.asarray(lr, dtype=float)
        out = []
        if lr.max() > self.peak * (1 + _TOL):
            out.append(f"peak LR {lr.max():.3g} > fitted {self.peak:.3g}")
        if rewarms(lr) and not self.rewarmed:
            out.append("re-warms (no fitted run did)")
        if floor_of(lr) < self.floor * (1 - _TOL):
            out.append(f"floor {floor_of(lr):.3g} < fitted {self.floor:.3g}")
        if len(lr) > HORIZON_FACTOR * self.steps:
            out.append(f"{len(lr)} steps > {HORIZON_FACTOR:g}x fitted {self.steps}")
        return out

    def warn(self, lr: np.ndarray, name: str = "schedule") -> list[str]:
        """:meth:`check`, each finding also raised as a :class:`ForecastWarning`."""
        found = self.check(lr)
        for message in found:
            warnings.warn(f"{name}: outside the fitted regime: {message}", ForecastWarning, stacklevel=3)
        return found

    def to_dict(self) -> dict[str, Any]:
        return {"peak": self.peak, "floor": self.floor, "rewarmed": self.rewarmed, "steps": self.steps}


TRANSIENT_WINDOW = 0.05
"""Length of a transient window, as a fraction of the run: the steps right after the warmup ends
and right after an abrupt LR drop, where both laws fail (docs/forecast-evidence.md, "Worst-case error and
final-loss error"). Fixed before any measurement, never tuned."""
ABRUPT_DROP = 0.2
"""An LR drop is abrupt when one step lowers the LR by more than this fraction of the run's peak
LR (a step schedule's drop; smooth decays lower it by far less per step)."""


def transient_mask(lr: np.ndarray, steps: np.ndarray, window: float = TRANSIENT_WINDOW) -> np.ndarray:
    """Which of the 1-based ``steps`` lie in a transient window of the run with per-step LRs
    ``lr``: within ``window·len(lr)`` steps after the warmup's end or after an abrupt drop.

        >>> lr = np.concatenate([np.linspace(0.1, 1, 10), np.ones(90), np.full(100, 0.1)])
        >>> transient_mask(lr, np.array([5, 12, 30, 101, 105, 120])).tolist()
        [False, True, False, True, True, False]
    """
    lr = np.asarray(lr, dtype=float)
    steps = np.asarray(steps, dtype=np.int64)
    width = window * len(lr)
    end = warmup_end(lr)
    peak = int(np.argmax(lr[:end] >= lr[:end].max()))  # 0-based first step at the initial stretch's top
    starts = [peak] if peak > 0 else []  # from the first step at the top; no warmup, no window
    falls = np.flatnonzero(lr[:-1] - lr[1:] > ABRUPT_DROP * lr.max()) + 1  # 0-based index of the lowered step
    starts += [int(k) for k in falls if k >= end]
    mask = np.zeros(len(steps), dtype=bool)
    for start in starts:  # 1-based: the steps after ``start``
        mask |= (steps > start) & (steps <= start + width)
    return mask
