"""Classic schedules: constant, ramps and decays over the span, and the step/cyclic families.

Decays go from ``peak`` to ``floor * peak`` over the span they are given (the whole budget, or
one piece of a join). Formulas: the standard warmup/linear/cosine forms as in "Scaling Laws and
Compute-Optimal Training Beyond Fixed Training Durations" (Hägele et al., arXiv 2405.18392); the torch
and transformers peers they agree with are named on each class.

    >>> from cadence.clock import Axis
    >>> Linear(peak=2.0).value(250, Axis("steps", 1000))
    1.5
"""

from __future__ import annotations

import abc
import bisect
import math
from typing import ClassVar

from cadence.clock import Axis, Duration
from cadence.errors import BudgetError
from cadence.schedules.base import Schedule, clamp01, need_total, param
from cadence.schedules.shapes import RISE_SHAPES, rise

_POS = dict(lo=0.0)


class Constant(Schedule):
    """A fixed value. ``constant(3e-4)``."""

    name: ClassVar[str] = "constant"
    level: float = param(1.0)

    def value(self, t: float, axis: Axis) -> float:
        return self.level

    def bounds(self) -> tuple[float, float]:
        return (self.level, self.level)


class Ramp(Schedule):
    """Goes from ``start`` to ``end`` along ``shape`` over ``over`` (default: the whole span), then
    holds ``end``. For knobs that grow or shrink: a KL coefficient, a sequence length, a budget.

    ``ramp(start=64, end=512, over=30%)``
    """

    name: ClassVar[str] = "ramp"
    start: float = param(0.0)
    end: float = param(1.0)
    over: Duration | None = param(None)
    shape: str = param("linear", choices=RISE_SHAPES)

    @property
    def direction(self) -> int:  # type: ignore[override]
        return 1 if self.end >= self.start else -1

    def value(self, t: float, axis: Axis) -> float:
        length = axis.length(self.over) if self.over is not None else need_total(self, axis)
        p = clamp01(t / length) if length > 0 else 1.0
        return self.start + (self.end - self.start) * rise(self.shape, p, 0.0)

    def check(self, axis: Axis) -> None:
        if self.over is not None:
            axis.length(self.over)
        else:
            need_total(self, axis)

    def bounds(self) -> tuple[float, float]:
        return (min(self.start, self.end), max(self.start, self.end))


class _Decay(Schedule):
    """A decay from ``peak`` to ``floor * peak`` over the whole span; subclasses give ``factor``."""

    direction: ClassVar[int] = -1
    peak: float = param(1.0, **_POS)
    floor: float = param(0.0, lo=0.0, hi=1.0)

    @abc.abstractmethod
    def factor(self, u: float) -> float:
        """The decay's shape: 1 at ``u = 0`` falling to 0 at ``u = 1``."""

    def value(self, t: float, axis: Axis) -> float:
        total = axis.total
        if total is None:
            need_total(self, axis)
        u = (t / total if t < total else 1.0) if total > 0 and t > 0 else (0.0 if total > 0 else 1.0)
        return self.peak * (self.floor + (1.0 - self.floor) * self.factor(u))

    def check(self, axis: Axis) -> None:
        need_total(self, axis)

    def bounds(self) -> tuple[float, float]:
        return (self.peak * self.floor, self.peak)


class Linear(_Decay):
    """Linear decay. Agrees with transformers' ``linear`` (under :class:`Warmup`) and torch ``LinearLR``."""

    name: ClassVar[str] = "linear"

    def factor(self, u: float) -> float:
        return 1.0 - u


class Cosine(_Decay):
    """Cosine decay ``½(1 + cos 2π·cycles·u)``; ``cycles=0.5`` is one half-wave.

    Agrees with transformers' ``cosine`` and torch ``CosineAnnealingLR`` (``floor = eta_min / peak``).
    """

    name: ClassVar[str] = "cosine"
    cycles: float = param(0.5, lo=0.0, lo_open=True, hi=0.5)

    def factor(self, u: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * self.cycles * 2.0 * u))


class Polynomial(_Decay):
    """``(1 − u)^power`` decay. Agrees with transformers' ``polynomial`` and torch ``PolynomialLR``."""

    name: ClassVar[str] = "polynomial"
    power: float = param(1.0, lo=0.0, lo_open=True)

    def factor(self, u: float) -> float:
        return (1.0 - u) ** self.power


class REX(_Decay):
    """REX, the reflected exponential profile ``(1 − z) / (1 − β·z/2)`` ("REX: Revisiting Budgeted
    Training with an Improved Schedule", Chen et al., arXiv 2107.04197).

    ``beta=1`` is the paper's form; the authors' reference code uses 0.9.
    """

    name: ClassVar[str] = "rex"
    beta: float = param(1.0, lo=0.0, hi=1.0)

    def factor(self, u: float) -> float:
        return (1.0 - u) / (1.0 - self.beta * u / 2.0)


class UBA(_Decay):
    """UBA, the unified budget-aware schedule ("Stepsize anything: A unified learning rate
    schedule for budgeted-iteration training", Tang et al., arXiv 2505.24452), one parameter ``phi``.

    UNCONFIRMED: the form ``2c / (2φ + (2 − φ)c)`` with ``c = 1 + cos(πu)`` comes from a third-party
    implementation, not the paper; ``phi = 2`` is exactly cosine. The default
    ``phi`` is likewise unconfirmed. The formula lives only in :meth:`factor`.
    """

    name: ClassVar[str] = "uba"
    phi: float = param(1.0, lo=0.0, lo_open=True)

    def factor(self, u: float) -> float:
        c = 1.0 + math.cos(math.pi * u)
        return 2.0 * c / (self.phi * (2.0 - c) + 2.0 * c)  # = 2c / (2φ + (2 − φ)c), no inf − inf for a huge φ


class Exponential(Schedule):
    """Exponential decay, either by ``half_life`` (open-ended: ``peak·0.5^(t/half_life)``, levelling at
    ``floor·peak``) or, without a half-life, ``peak·floor^u`` reaching ``floor`` at the end of the span.

    torch ``ExponentialLR(gamma)`` is ``half_life = ln 0.5 / ln gamma`` steps.
    """

    name: ClassVar[str] = "exponential"
    direction: ClassVar[int] = -1
    peak: float = param(1.0, **_POS)
    half_life: Duration | None = param(None)
    floor: float = param(0.0, lo=0.0, hi=1.0)

    def validate(self) -> None:
        if self.half_life is None and self.floor <= 0:
            raise self._err("without a half_life the decay runs to the floor, so floor must be > 0")
        if self.half_life is not None and self.half_life.amount == 0:
            raise self._err("half_life must be positive")

    def value(self, t: float, axis: Axis) -> float:
        if self.half_life is None:
            total = need_total(self, axis)
            return self.peak * self.floor ** (clamp01(t / total) if total > 0 else 1.0)
        return self.peak * (self.floor + (1.0 - self.floor) * 0.5 ** (t / axis.length(self.half_life)))

    def check(self, axis: Axis) -> None:
        if self.half_life is None:
            need_total(self, axis)
        else:
            axis.length(self.half_life)

    def bounds(self) -> tuple[float, float]:
        return (self.peak * self.floor, self.peak)


class InverseSqrt(Schedule):
    """``peak / sqrt((t + timescale) / timescale)``: 1 at ``t = 0``, then ``∝ 1/√t``. Open-ended.

    Under :class:`Warmup` with ``timescale`` = the warmup it agrees with transformers' ``inverse_sqrt``.
    """

    name: ClassVar[str] = "inverse_sqrt"
    direction: ClassVar[int] = -1
    peak: float = param(1.0, **_POS)
    timescale: Duration = param("10000 steps")

    def validate(self) -> None:
        if self.timescale.amount == 0:
            raise self._err("timescale must be positive")

    def value(self, t: float, axis: Axis) -> float:
        tau = axis.length(self.timescale)
        return self.peak * (1.0 / math.sqrt((t + tau) / tau))

    def check(self, axis: Axis) -> None:
        axis.length(self.timescale)

    def bounds(self) -> tuple[float, float]:
        return (0.0, self.peak)


class Step(Schedule):
    """Multiply by ``gamma`` every ``every``. Agrees with torch ``StepLR``."""

    name: ClassVar[str] = "step"
    direction: ClassVar[int] = -1
    peak: float = param(1.0, **_POS)
    every: Duration = param("30%")
    gamma: float = param(0.1, lo=0.0, hi=1.0)

    def validate(self) -> None:
        self._check_period("every")

    def value(self, t: float, axis: Axis) -> float:
        return self.peak * self.gamma ** math.floor(t / axis.length(self.every))

    def check(self, axis: Axis) -> None:
        axis.length(self.every)

    def bounds(self) -> tuple[float, float]:
        return (0.0, self.peak)


class MultiStep(Schedule):
    """Multiply by ``gamma`` at each milestone in ``at``. Agrees with torch ``MultiStepLR``.

    ``multistep(peak=0.1, at=[50%, 75%], gamma=0.1)``
    """

    name: ClassVar[str] = "multistep"
    direction: ClassVar[int] = -1
    peak: float = param(1.0, **_POS)
    at: tuple[Duration, ...] = param(("50%", "75%"))
    gamma: float = param(0.1, lo=0.0, hi=1.0)

    def value(self, t: float, axis: Axis) -> float:
        milestones = [axis.length(d) for d in self.at]
        return self.peak * self.gamma ** bisect.bisect_right(milestones, t)

    def check(self, axis: Axis) -> None:
        milestones = [axis.length(d) for d in self.at]
        if milestones != sorted(milestones):
            raise BudgetError(f"{self.name}: milestones must increase, got {[str(d) for d in self.at]}")

    def bounds(self) -> tuple[float, float]:
        return (self.peak * self.gamma ** len(self.at), self.peak)


class Cyclic(Schedule):
    """Triangular cycles between ``low`` and ``high``, each ``period`` long (up half, down half).

    ``triangular2`` halves the amplitude every cycle. Agrees with torch ``CyclicLR``.
    """

    name: ClassVar[str] = "cyclic"
    low: float = param(0.0, lo=0.0)
    high: float = param(1.0, lo=0.0)
    period: Duration = param("10%")
    mode: str = param("triangular", choices=("triangular", "triangular2"))

    def validate(self) -> None:
        if self.high < self.low:
            raise self._err(f"high ({self.high}) must be >= low ({self.low})")
        self._check_period("period")

    def value(self, t: float, axis: Axis) -> float:
        half = axis.length(self.period) / 2.0
        cycle = math.floor(1 + t / (2 * half))
        x = abs(t / half - 2 * cycle + 1)
        scale = 1.0 if self.mode == "triangular" else math.ldexp(1.0, 1 - cycle)   # 1/2^(cycle-1), 0 past ~1075 cycles
        return self.low + (self.high - self.low) * max(0.0, 1.0 - x) * scale

    def check(self, axis: Axis) -> None:
        axis.length(self.period)

    def bounds(self) -> tuple[float, float]:
        return (self.low, self.high)
