"""Ordered curricula: pacing functions of training progress, and the :class:`Ordered` policy.

A pacing function maps progress ``u ∈ [0, 1]`` (``clock.progress``) to the fraction of the
difficulty-sorted data (easiest first) that may be sampled; formulas from "Competence-based Curriculum
Learning for Neural Machine Translation" (Platanios et al., arXiv 1903.09848) and "Cyclical Curriculum
Learning" (Kesgin & Amasyali, arXiv 2202.05531), with ``a = full_at`` the progress at which all data is
reached and ``b = start``:

* :class:`LinearPacing` ``b + (1 − b)·min(1, u/a)``
* :class:`RootPacing`   ``b + (1 − b)·min(1, u/a)^(1/p)``  (p = 2: root pacing)
* :class:`Competence`   ``min(1, (u·(1 − c0^p)/a + c0^p)^(1/p))``  (Platanios; p = 2: competence-sqrt)
* :class:`GeometricPacing` ``min(1, p0·inc^⌊u/L⌋)``  (Hacohen & Weinshall fixed exponential pacing)
* :class:`BabySteps`   ``min(1, (⌊u·k/a⌋ + 1)/k)``  (k equal-count difficulty buckets, one added per stage)
* :class:`CyclicalPacing` cycles ``sp → sp/α → … → ep → … → sp`` one stage per ``stage`` of progress
  (Kesgin & Amasyali sizes; here applied to the easiest-first prefix, not to loss-weighted draws).

Any cadence schedule (``"ramp(start=0.1, end=1, over=50%)"``) also works as a pacing function.

    >>> from cadence import Clock
    >>> from cadence.curricula import Arms, Ordered
    >>> clock = Clock(budget=100)
    >>> arms = Arms(["a"] * 10, difficulty=range(10))
    >>> policy = Ordered(arms, Competence(c0=0.1, power=2), clock=clock)
    >>> int(policy.window()[1])    # items admitted at step 0
    1
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

from cadence.clock import Clock
from cadence.curricula.arms import Arms
from cadence.curricula.policies.window import SortedWindow
from cadence.errors import CadenceError
from cadence.schedules.base import Schedule, as_schedule


def _check_fraction(name: str, value: float, *, open_low: bool = False) -> None:
    if not (0 < value <= 1 if open_low else 0 <= value <= 1):
        raise CadenceError(f"{name} must lie in {'(0, 1]' if open_low else '[0, 1]'}, got {value!r}")


@dataclass(frozen=True)
class LinearPacing:
    """``b + (1 − b)·min(1, u/a)``.  ``LinearPacing(0.2)(0.5) == 0.6``."""

    start: float = 0.1
    full_at: float = 1.0

    def __post_init__(self) -> None:
        _check_fraction("start", self.start)
        _check_fraction("full_at", self.full_at, open_low=True)

    def __call__(self, u: float) -> float:
        return self.start + (1 - self.start) * min(1.0, u / self.full_at)


@dataclass(frozen=True)
class RootPacing:
    """``b + (1 − b)·min(1, u/a)^(1/p)``.  ``RootPacing(0.0)(0.25) == 0.5``."""

    start: float = 0.1
    full_at: float = 1.0
    power: float = 2.0

    def __post_init__(self) -> None:
        _check_fraction("start", self.start)
        _check_fraction("full_at", self.full_at, open_low=True)
        if self.power <= 0:
            raise CadenceError(f"power must be positive, got {self.power!r}")

    def __call__(self, u: float) -> float:
        return self.start + (1 - self.start) * min(1.0, u / self.full_at) ** (1 / self.power)


@dataclass(frozen=True)
class Competence:
    """Platanios et al.: ``min(1, (u·(1 − c0^p)/a + c0^p)^(1/p))``; p = 1 linear, p = 2 sqrt.
    ``Competence(c0=0.01)(1.0) == 1.0``."""

    c0: float = 0.01
    full_at: float = 1.0
    power: float = 2.0

    def __post_init__(self) -> None:
        _check_fraction("c0", self.c0, open_low=True)
        _check_fraction("full_at", self.full_at, open_low=True)
        if self.power <= 0:
            raise CadenceError(f"power must be positive, got {self.power!r}")

    def __call__(self, u: float) -> float:
        c0p = self.c0 ** self.power
        return min(1.0, (u * (1 - c0p) / self.full_at + c0p) ** (1 / self.power))


@dataclass(frozen=True)
class GeometricPacing:
    """``min(1, p0·inc^⌊u/L⌋)`` with ``L = every`` (a fraction of the run).
    ``GeometricPacing(0.2, 2, 0.1)(0.25) == 0.8``."""

    start: float = 0.2
    factor: float = 2.0
    every: float = 0.1

    def __post_init__(self) -> None:
        _check_fraction("start", self.start, open_low=True)
        _check_fraction("every", self.every, open_low=True)
        if self.factor < 1:
            raise CadenceError(f"factor must be >= 1, got {self.factor!r}")

    def __call__(self, u: float) -> float:
        return min(1.0, self.start * self.factor ** math.floor(u / self.every + 1e-12))


@dataclass(frozen=True)
class BabySteps:
    """``k`` equal-count buckets, one more admitted per stage, all by ``u = a``.
    ``BabySteps(4)(0.3) == 0.5``."""

    buckets: int = 4
    full_at: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.buckets, int) or self.buckets < 1:
            raise CadenceError(f"buckets must be a positive integer, got {self.buckets!r}")
        _check_fraction("full_at", self.full_at, open_low=True)

    def __call__(self, u: float) -> float:
        stage = math.floor(u * self.buckets / self.full_at + 1e-12)
        return min(1.0, (stage + 1) / self.buckets)


@dataclass(frozen=True)
class CyclicalPacing:
    """Sizes ``sp, sp/α, …, ep, …, sp·/α`` repeating, one per ``stage`` of progress.
    ``CyclicalPacing()(0.25) == 1.0`` (defaults sp=0.25, ep=1, α=0.5, stage=0.1)."""

    start: float = 0.25
    end: float = 1.0
    multiplier: float = 0.5
    stage: float = 0.1

    def __post_init__(self) -> None:
        _check_fraction("start", self.start, open_low=True)
        _check_fraction("end", self.end, open_low=True)
        _check_fraction("stage", self.stage, open_low=True)
        if not 0 < self.multiplier < 1:
            raise CadenceError(f"multiplier must lie in (0, 1), got {self.multiplier!r}")
        if self.start > self.end:
            raise CadenceError(f"start ({self.start}) must not exceed end ({self.end})")

    def sizes(self) -> list[float]:
        """One period of the cycle, e.g. ``[0.25, 0.5, 1.0, 0.5]``."""
        up = [self.start]
        while up[-1] < self.end:
            up.append(min(up[-1] / self.multiplier, self.end))
        return up + up[-2:0:-1]

    def __call__(self, u: float) -> float:
        period = self.sizes()
        return period[math.floor(u / self.stage + 1e-12) % len(period)]


PacingLike = Union[Callable[[float], float], Schedule, str]


class Ordered(SortedWindow):
    """Ordered curriculum: sample uniformly from the easiest ``pacing(progress)`` fraction of the
    items (by the empirical CDF of ``difficulty``, ties admitted together).

    Args:
        arms: the arms (``arms.difficulty`` is used unless ``difficulty`` is given).
        pacing: a pacing function of ``clock.progress`` (classes above, or any callable), or a
            cadence schedule / spec read at the clock (then it may also run without a budget).
        clock: the run's clock.
        reverse: hardest first (anti-curriculum).
    """

    name = "ordered"

    def __init__(self, arms: Arms, pacing: PacingLike = Competence(), *, clock: Clock,
                 difficulty: Any = None, reverse: bool = False, seed: int = 0) -> None:
        if not isinstance(clock, Clock):
            raise CadenceError("Ordered needs clock=Clock(...): pacing is a function of training progress")
        d = arms.difficulty if difficulty is None else np.asarray(difficulty, dtype=np.float64)
        super().__init__(arms, None if d is None else (-d if reverse else d), seed=seed, clock=clock)
        self.reverse = reverse
        self.pacing = as_schedule(pacing) if isinstance(pacing, (str, dict)) else pacing
        if isinstance(self.pacing, Schedule):
            clock.check([self.pacing])
            clock.watch([self.pacing])
        elif not callable(self.pacing):
            raise CadenceError(f"pacing must be a pacing function, a schedule or a spec, got {pacing!r}")
        self.window()

    def fraction(self) -> float:
        """The admitted fraction now."""
        if isinstance(self.pacing, Schedule):
            value = float(self.pacing(self.clock))
        else:
            u = self.clock.progress
            if u is None:
                raise CadenceError("this pacing function needs the clock's progress, but the run has no budget; "
                                   "set a budget or pass a schedule with amounts (e.g. 'ramp(over=5000 steps)')")
            value = float(self.pacing(u))
        if not math.isfinite(value):
            raise CadenceError(f"pacing returned {value!r} at position {self.clock.position}")
        return min(max(value, 0.0), 1.0)

    def window(self) -> tuple[int, int]:
        return 0, self.prefix_for_fraction(self.fraction())
