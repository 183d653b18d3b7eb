"""The annealing law of the loss curve (algorithms.md §2; Tissue et al., arXiv 2408.11029):

    L(s) = L0 + A · S1(s)^(−α) − C · S2(s)

* ``S1(s) = Σ_{i≤s} η_i`` — the forward area, every step counted, warmup included.
* ``S2(s) = Σ_{i≤s} m_i`` with ``m_i = λ·m_{i−1} + Δ_i`` and ``Δ_i = η_{i−1} − η_i`` — the
  annealing area with momentum λ (``Δ_1 = 0``).

**Warmup decision.** The LR's initial rise is left out of S2: ``Δ_i = 0`` for every step up to the
end of the initial non-decreasing stretch, so S2 only counts LR changes after the LR first falls.
Reason: with the rise counted, a warmup makes S2 negative and, with λ near 1, the negative
momentum keeps growing for about ``1/(1−λ)`` steps, so the law predicts a warmup *raises* the
loss long after it is over — an artefact, not a measurement; with the rise left out a warmup only
acts through S1 (the steps did move the weights), which is the paper's reading of S1. Later rises
(re-warming) still count, negatively, as the law intends. How the paper handles warmup is
UNCONFIRMED (algorithms.md §2).

The law works in normalised areas, ``S1 / (η_ref·N_ref)`` and ``S2 / (η_ref·N_ref)`` with the peak
LR and length of the fitted runs, which rescales ``A`` and ``C`` only and keeps the fit well
conditioned.

    >>> lr = lr_per_step("wsd(peak=1e-3, decay=20%)", 100)
    >>> law = AnnealingLaw(L0=1.0, A=0.5, alpha=0.5, C=0.3, lam=0.9, lr_ref=1e-3, steps_ref=100)
    >>> curve = law.predict(lr)
    >>> bool(curve[-1] < curve[79])   # the decay lowers the loss
    True
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.signal import lfilter

from cadence.clock import Axis
from cadence.errors import CadenceError, StateError
from cadence.schedules.base import Schedule, as_schedule

LAW_KIND = "cadence.forecast.AnnealingLaw"


def lr_per_step(schedule: Schedule | str | float | dict, steps: int) -> np.ndarray:
    """The LR each optimizer step ``1..steps`` uses under :class:`~cadence.optim.ScheduledLR` on a
    ``steps``-long budget: step ``i`` uses the schedule's value at position ``i − 1``."""
    if steps < 1:
        raise CadenceError(f"steps must be >= 1, got {steps}")
    s = as_schedule(schedule)
    axis = Axis("steps", float(steps))
    s.check(axis)
    return np.array([s.value(float(t), axis) for t in range(steps)])


def warmup_end(lr: np.ndarray) -> int:
    """Number of leading steps in the LR's initial non-decreasing stretch (the warmup and any
    plateau after it)."""
    falls = np.flatnonzero(np.diff(lr) < 0)
    return len(lr) if len(falls) == 0 else int(falls[0]) + 1


def forward_area(lr: np.ndarray) -> np.ndarray:
    """``S1(s) = Σ_{i≤s} η_i`` for ``s = 1..n``."""
    return np.cumsum(lr)


def annealing_area(lr: np.ndarray, lam: float) -> np.ndarray:
    """``S2(s)`` for ``s = 1..n``: the momentum recursion over LR drops as a first-order filter,
    then a cumulative sum; the initial rise is left out (see the module's warmup decision)."""
    if not 0.0 <= lam < 1.0:
        raise CadenceError(f"the annealing momentum lambda must lie in [0, 1), got {lam}")
    return np.cumsum(lfilter([1.0], [1.0, -lam], lr_drops(lr)))


def lr_drops(lr: np.ndarray) -> np.ndarray:
    """``Δ_i = η_{i−1} − η_i`` per step (``Δ_1 = 0``), zero through the initial rise (warmup).

        >>> lr_drops(np.array([1.0, 2.0, 2.0, 1.5])).tolist()
        [0.0, 0.0, 0.0, 0.5]
    """
    delta = np.zeros(len(lr))
    delta[1:] = lr[:-1] - lr[1:]
    delta[: warmup_end(lr)] = 0.0
    return delta


class FittedLaw(abc.ABC):
    """What every fitted law shares: predictions for a schedule spec and a plain-dict round trip.
    A subclass is a frozen dataclass of floats with ``KIND`` (its saved ``kind``) and ``TITLE``
    (its name in error messages), and defines ``predict(lr)`` and ``final_losses``."""

    KIND: ClassVar[str]
    TITLE: ClassVar[str]

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not np.isfinite(v) or v < 0:
                raise CadenceError(f"{type(self).__name__}.{f.name} must be finite and >= 0, got {v}")
        if self.lr_ref <= 0 or self.steps_ref <= 0:
            raise CadenceError(f"{type(self).__name__} needs lr_ref > 0 and steps_ref > 0")

    @abc.abstractmethod
    def predict(self, lr: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """Predicted loss after each step of an LR sequence (or after the 1-based steps ``at``)."""

    def _power(self, s1: np.ndarray) -> np.ndarray:
        """``S1^(−α)``, ``inf`` where ``S1 = 0`` (before any LR)."""
        power = np.full(len(s1), np.inf)
        positive = s1 > 0
        with np.errstate(over="ignore"):  # a tiny first area may overflow to inf, which is the right limit
            power[positive] = np.power(s1[positive], -self.alpha)
        return power

    def predict_schedule(self, schedule: Schedule | str | float | dict, steps: int) -> np.ndarray:
        """Predicted loss after each step of a ``steps``-long run under ``schedule``."""
        return self.predict(lr_per_step(schedule, steps))

    def final_loss(self, schedule: Schedule | str | float | dict, steps: int) -> float:
        """Predicted loss after the last step."""
        return float(self.predict_schedule(schedule, steps)[-1])

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed constants (JSON-safe)."""
        return {"kind": self.KIND, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        if not isinstance(d, dict) or d.get("kind") != cls.KIND:
            raise StateError(f"not a fitted {cls.TITLE} (missing kind={cls.KIND!r})")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in d]
        if missing:
            raise StateError(f"{cls.TITLE} dict lacks {missing}")
        return cls(**{n: float(d[n]) for n in names})


@dataclass(frozen=True)
class AnnealingLaw(FittedLaw):
    """Fitted constants of the law, with the normalisation they were fitted under.

    ``predict(lr)`` gives the loss after each step ``1..len(lr)``; steps with ``S1 = 0`` (before
    any LR) give ``inf``.
    """

    KIND: ClassVar[str] = LAW_KIND
    TITLE: ClassVar[str] = "annealing law"

    L0: float
    A: float
    alpha: float
    C: float
    lam: float
    lr_ref: float
    steps_ref: float

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lam >= 1:
            raise CadenceError(f"AnnealingLaw needs lam < 1, got {self.lam}")

    def areas(self, lr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised ``(S1, S2)`` of an LR sequence."""
        lr = np.asarray(lr, dtype=float)
        norm = self.lr_ref * self.steps_ref
        return forward_area(lr) / norm, annealing_area(lr, self.lam) / norm

    def predict(self, lr: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """Predicted loss after each step of an LR sequence (or after the 1-based steps ``at``)."""
        s1, s2 = self.areas(lr)
        if at is not None:
            s1, s2 = s1[np.asarray(at) - 1], s2[np.asarray(at) - 1]
        return self.L0 + self.A * self._power(s1) - self.C * s2

    def final_losses(self, lr: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """Predicted final loss of ``scale · lr`` for every scale (the WSD optimiser's inner loop):
        both areas scale linearly with the LR."""
        s1, s2 = (a[-1] for a in self.areas(lr))
        scales = np.asarray(scales, dtype=float)
        return self.L0 + self.A * np.power(scales * s1, -self.alpha) - self.C * scales * s2

    def __str__(self) -> str:
        return (f"L = {self.L0:.4g} + {self.A:.4g}·S1^(−{self.alpha:.4g}) − {self.C:.4g}·S2  "
                f"(λ={self.lam:g}; areas in units of {self.lr_ref:.3g} LR × {self.steps_ref:g} steps)")
