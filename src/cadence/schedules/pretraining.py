"""Schedules from language-model pre-training: WSD and its MiniCPM variant, the Power scheduler,
and continual pre-training segments (re-warm + re-decay, the infinite schedule).

Formulas from the papers: WSD, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
Durations" (Hägele et al., arXiv 2405.18392); "MiniCPM: Unveiling the Potential of Small Language Models
with Scalable Training Strategies" (arXiv 2404.06395); "Power Scheduler: A Batch Size and Token Number
Agnostic Learning Rate Scheduler" (arXiv 2408.13359); "Simple and Scalable Strategies to Continually
Pre-train Large Language Models" (arXiv 2403.08763); "Beyond Cosine Decay: On the effectiveness of
Infinite Learning Rate Schedule for Continual Pre-training" (arXiv 2503.02844).

    >>> from cadence.clock import Axis
    >>> s = WSD(peak=3e-4, warmup="1%", decay="20%", shape="1-sqrt", floor=0.1)
    >>> s.value(500, Axis("steps", 1000)) == 3e-4
    True
"""

from __future__ import annotations

from typing import ClassVar

from cadence.clock import Axis, Duration
from cadence.errors import BudgetError
from cadence.schedules.base import Schedule, need_total, param
from cadence.schedules.shapes import DECAY_SHAPES, RISE_SHAPES, decay, needs_positive_floor, rise


def _fits(s: Schedule, axis: Axis, **parts: Duration) -> list[float]:
    """Resolve phase lengths and check that together they fit in the span."""
    lengths = [axis.length(d) for d in parts.values()]
    if axis.total is not None and sum(lengths) > axis.total:
        names = " plus ".join(f"{k} '{d}'" for k, d in parts.items())
        raise BudgetError(
            f"{s.name}: {names} ({sum(lengths):g} {axis.unit}) is longer than the budget ({axis.total:g} {axis.unit})"
        )
    return lengths


class WSD(Schedule):
    """Warmup–stable–decay: rise to ``peak``, hold it, and cool down over the last ``decay`` of the span.

    The warmup rises from ``floor·peak`` (as transformers' ``warmup_stable_decay`` does, with which it
    agrees); the cooldown follows ``shape`` down to ``floor·peak``. Default shape ``1-sqrt`` and
    decay 20% follow Hägele et al. 2024. In an open-ended run there is no end to cool down towards,
    so the schedule holds its peak after warmup until a budget is set.

    ``wsd(peak=3e-4, warmup=1%, decay=20%, shape=1-sqrt, floor=0.1)``
    """

    name: ClassVar[str] = "wsd"
    direction: ClassVar[int] = 0
    peak: float = param(1.0, lo=0.0)
    warmup: Duration = param(0.0)
    decay: Duration = param("20%")
    shape: str = param("1-sqrt", choices=DECAY_SHAPES)
    floor: float = param(0.0, lo=0.0, hi=1.0)
    warmup_shape: str = param("linear", choices=RISE_SHAPES)

    def validate(self) -> None:
        if needs_positive_floor(self.shape) and self.floor <= 0:
            raise self._err(f"the {self.shape} decay needs floor > 0")

    def value(self, t: float, axis: Axis) -> float:
        w = axis.length(self.warmup)
        if t < w:
            return self.peak * rise(self.warmup_shape, t / w, self.floor)
        if axis.total is None:
            return self.peak
        d = axis.length(self.decay)
        start = axis.total - d
        if t < start:
            return self.peak
        if t >= axis.total or d == 0:
            return self.peak * self.floor
        return self.peak * decay(self.shape, (t - start) / d, self.floor)

    def check(self, axis: Axis) -> None:
        if axis.total is None:
            axis.length(self.warmup)
        else:
            _fits(self, axis, warmup=self.warmup, decay=self.decay)

    def bounds(self) -> tuple[float, float]:
        return (self.peak * self.floor, self.peak)


class MiniCPM(Schedule):
    """MiniCPM's WSD: linear warmup, stable ``peak``, then exponential annealing with a half-life,
    ``peak · 0.5^((t − decay_start) / half_life)`` over the last ``decay`` of the span (Hu et al. 2024).

    The paper used a 5000-step half-life over a ~10% decay (about five half-lives); the default
    ``half_life=2%`` keeps that proportion.
    """

    name: ClassVar[str] = "minicpm"
    direction: ClassVar[int] = 0
    peak: float = param(1.0, lo=0.0)
    warmup: Duration = param(0.0)
    decay: Duration = param("10%")
    half_life: Duration = param("2%")

    def validate(self) -> None:
        if self.half_life.amount == 0:
            raise self._err("half_life must be positive")

    def value(self, t: float, axis: Axis) -> float:
        w = axis.length(self.warmup)
        if t < w:
            return self.peak * t / w
        if axis.total is None:
            return self.peak
        start = axis.total - axis.length(self.decay)
        if t < start:
            return self.peak
        return self.peak * 0.5 ** ((min(t, axis.total) - start) / axis.length(self.half_life))

    def check(self, axis: Axis) -> None:
        axis.length(self.half_life)
        if axis.total is None:
            axis.length(self.warmup)
        else:
            _fits(self, axis, warmup=self.warmup, decay=self.decay)

    def bounds(self) -> tuple[float, float]:
        return (0.0, self.peak)


class Power(Schedule):
    """The Power scheduler (Shen et al. 2024): ``min(peak, batch·a·n^b)`` with ``n`` the tokens seen,
    after a linear warmup to the value at the warmup's end.

    ``batch`` is the batch size in samples; when omitted it is read from the clock (samples per
    step), so a batch-size change is followed. ``a`` and ``b = −0.51`` follow IBM's code; the
    fitted ``a ≈ 4.6`` and the paper's final decay are UNCONFIRMED (arXiv 2408.13359). For a final
    decay multiply by a WSD: ``product(power(...), wsd(peak=1, decay=10%))``.
    """

    name: ClassVar[str] = "power"
    direction: ClassVar[int] = 0
    peak: float = param(0.02, lo=0.0, lo_open=True)
    a: float = param(4.6, lo=0.0, lo_open=True)
    b: float = param(-0.51, lo=None, hi=0.0)
    warmup: Duration = param(0.0)
    batch: float | None = param(None, lo=0.0, lo_open=True)

    def _law(self, t: float, axis: Axis) -> float:
        tokens = axis.convert(t, "tokens")
        batch = self.batch if self.batch is not None else axis.convert(1.0, "samples") / axis.convert(1.0, "steps")
        return self.peak if tokens <= 0 else min(self.peak, batch * self.a * tokens**self.b)

    def value(self, t: float, axis: Axis) -> float:
        w = axis.length(self.warmup)
        if t < w:
            return t / w * self._law(w, axis)
        return self._law(t, axis)

    def check(self, axis: Axis) -> None:
        axis.length(self.warmup)
        axis.convert(1.0, "tokens")
        if self.batch is None:
            axis.convert(1.0, "samples")

    def bounds(self) -> tuple[float, float]:
        return (0.0, self.peak)


class Rewarm(Schedule):
    """One continual pre-training segment: re-warm from ``start·peak`` to ``peak`` over ``warmup``,
    then re-decay along ``shape`` to ``floor·peak`` over the rest (Ibrahim et al. 2024: 1% warmup,
    cosine to 0.1·peak). Chain segments for successive datasets with :class:`Join`.

    ``join(rewarm(peak=3e-4), rewarm(peak=3e-4), at=[50%])``
    """

    name: ClassVar[str] = "rewarm"
    direction: ClassVar[int] = 0
    peak: float = param(1.0, lo=0.0)
    warmup: Duration = param("1%")
    floor: float = param(0.1, lo=0.0, hi=1.0)
    start: float = param(0.0, lo=0.0, hi=1.0)
    shape: str = param("cosine", choices=DECAY_SHAPES)

    def validate(self) -> None:
        if needs_positive_floor(self.shape) and self.floor <= 0:
            raise self._err(f"the {self.shape} decay needs floor > 0")

    def value(self, t: float, axis: Axis) -> float:
        total = need_total(self, axis)
        w = axis.length(self.warmup)
        if t < w:
            return self.peak * rise("linear", t / w, self.start)
        rest = total - w
        s = min(1.0, (t - w) / rest) if rest > 0 else 1.0
        return self.peak * decay(self.shape, s, self.floor)

    def check(self, axis: Axis) -> None:
        need_total(self, axis)
        _fits(self, axis, warmup=self.warmup)

    def bounds(self) -> tuple[float, float]:
        return (0.0, self.peak)


class Infinite(Schedule):
    """The infinite schedule for continual pre-training: warmup, cosine cooldown to ``constant·peak``,
    hold it indefinitely, and anneal exponentially to ``floor·peak`` over the last ``anneal`` of the
    budget (held constant while the run is open-ended).

    UNCONFIRMED (arXiv 2503.02844): the default ``constant`` level and the anneal normalisation;
    here the anneal is ``c·(floor/c)^s`` with ``s`` the fraction of the anneal done.
    """

    name: ClassVar[str] = "infinite"
    direction: ClassVar[int] = 0
    peak: float = param(1.0, lo=0.0)
    warmup: Duration = param("1%")
    cooldown: Duration = param("10%")
    constant: float = param(0.5, lo=0.0, lo_open=True, hi=1.0)
    anneal: Duration = param("10%")
    floor: float = param(0.01, lo=0.0, lo_open=True, hi=1.0)

    def validate(self) -> None:
        if self.floor > self.constant:
            raise self._err(f"floor ({self.floor}) must not exceed the constant level ({self.constant})")

    def value(self, t: float, axis: Axis) -> float:
        w, c = axis.length(self.warmup), axis.length(self.cooldown)
        if t < w:
            return self.peak * t / w
        if t < w + c:
            return self.peak * decay("cosine", (t - w) / c, self.constant)
        if axis.total is None:
            return self.peak * self.constant
        a = axis.length(self.anneal)
        start = axis.total - a
        if t < start:
            return self.peak * self.constant
        s = min(1.0, (t - start) / a) if a > 0 else 1.0
        return self.peak * self.constant * (self.floor / self.constant) ** s

    def check(self, axis: Axis) -> None:
        if axis.total is None:
            _fits(self, axis, warmup=self.warmup, cooldown=self.cooldown)
        else:
            _fits(self, axis, warmup=self.warmup, cooldown=self.cooldown, anneal=self.anneal)

    def bounds(self) -> tuple[float, float]:
        return (0.0, self.peak)
