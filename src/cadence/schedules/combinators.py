"""Combinators: build schedules from schedules.

* :class:`Warmup` — ramp up to a schedule, which then runs over what is left of the span.
* :class:`Join` — pieces one after another; each piece sees its own span (fractions inside a piece
  are fractions of the piece), optionally scaled to start where the previous one ended.
* :class:`Product`, :class:`Scale`, :class:`Min`, :class:`Max`, :class:`Clip`, :class:`Floor` —
  pointwise arithmetic.
* :class:`Restarts` — repeat a schedule in cycles that may grow (SGDR warm restarts).
* :class:`Shift` and :class:`Glide` — continue a schedule from a later position, and start it from
  another value without a jump: the pieces of a schedule changed mid-run (population-based training).

    >>> from cadence.clock import Axis
    >>> from cadence.schedules.basic import Cosine, Constant
    >>> s = Join((Constant(1.0), Cosine()), at=("50%",))
    >>> [round(s.value(t, Axis("steps", 100)), 3) for t in (0, 50, 75, 100)]
    [1.0, 1.0, 0.5, 0.0]
"""

from __future__ import annotations

import abc
import bisect
import math
from typing import ClassVar

from cadence.clock import Axis, Duration
from cadence.errors import BudgetError
from cadence.schedules.base import Schedule, param
from cadence.schedules.shapes import RISE_SHAPES, rise


class Warmup(Schedule):
    """Ramp from ``start × inner(0)`` up to ``inner(0)`` over ``duration``, then run ``inner`` over
    the rest of the span (its fractions are of what is left, as in transformers' schedules).

    ``warmup(cosine(peak=3e-4), 2%)``
    """

    name: ClassVar[str] = "warmup"
    inner: Schedule = param()
    duration: Duration = param("5%")
    start: float = param(0.0, lo=0.0, hi=1.0)
    shape: str = param("linear", choices=RISE_SHAPES)

    @property
    def direction(self) -> int:  # type: ignore[override]
        return 0

    def value(self, t: float, axis: Axis) -> float:
        w = axis.length(self.duration)
        rest = axis.span(None if axis.total is None else axis.total - w)
        if t < w:
            return rise(self.shape, t / w, self.start) * self.inner.value(0.0, rest)
        return self.inner.value(t - w, rest)

    def check(self, axis: Axis) -> None:
        w = axis.length(self.duration)
        if axis.total is not None and w > axis.total:
            raise BudgetError(f"warmup '{self.duration}' ({w:g} {axis.unit}) is longer than the budget ({axis.total:g})")
        self.inner.check(axis.span(None if axis.total is None else axis.total - w))

    def bounds(self) -> tuple[float, float]:
        lo, hi = self.inner.bounds()
        return (min(0.0, lo), max(0.0, hi))


class Join(Schedule):
    """Pieces one after another, switching at the boundaries ``at`` (one fewer than the pieces).

    Each piece is evaluated from its own start over its own length. With ``continuous=true`` every
    piece after the first is scaled so it starts where the previous one ended (multiplied; shifted
    instead when its own start is 0, or too small beside the previous end for a finite ratio).

    ``join(linear(peak=1), constant(0.1), at=[80%])``
    """

    name: ClassVar[str] = "join"
    pieces: tuple[Schedule, ...] = param()
    at: tuple[Duration, ...] = param(())
    continuous: bool = param(False)

    @property
    def direction(self) -> int:  # type: ignore[override]
        # carried scales keep a direction only when they cannot be negative
        dirs = {p.direction for p in self.pieces}
        nonnegative = all(p.bounds()[0] >= 0 for p in self.pieces)
        return dirs.pop() if len(dirs) == 1 and self.continuous and nonnegative else 0

    def validate(self) -> None:
        if len(self.at) != len(self.pieces) - 1:
            raise self._err(f"{len(self.pieces)} pieces need {len(self.pieces) - 1} boundaries in 'at', got {len(self.at)}")

    def _edges(self, axis: Axis) -> list[float]:
        return [axis.length(d) for d in self.at]

    def _span(self, edges: list[float], i: int, axis: Axis) -> Axis:
        end = axis.total if i == len(edges) else edges[i]
        return axis.span(None if end is None else end - (edges[i - 1] if i else 0.0))

    def value(self, t: float, axis: Axis) -> float:
        edges = self._edges(axis)
        i = bisect.bisect_right(edges, t)
        start = edges[i - 1] if i else 0.0
        v = self.pieces[i].value(t - start, self._span(edges, i, axis))
        if not self.continuous or i == 0:
            return v
        scale, shift = 1.0, 0.0
        for j in range(1, i + 1):  # carry each piece's end into the next piece's start
            prev = self.pieces[j - 1]
            prev_span = self._span(edges, j - 1, axis)
            prev_end = prev.value(prev_span.total, prev_span) * scale + shift
            head = self.pieces[j].value(0.0, self._span(edges, j, axis))
            ratio_is_finite = abs(head) > 1e-12 * abs(prev_end)
            scale, shift = (prev_end / head, 0.0) if ratio_is_finite else (1.0, prev_end - head)
        return v * scale + shift

    def check(self, axis: Axis) -> None:
        edges = self._edges(axis)
        if edges != sorted(edges):
            raise BudgetError(f"join boundaries must increase, got {[str(d) for d in self.at]}")
        if axis.total is not None and edges and edges[-1] > axis.total:
            raise BudgetError(f"join boundary '{self.at[-1]}' lies beyond the budget ({axis.total:g} {axis.unit})")
        for i, piece in enumerate(self.pieces):
            piece.check(self._span(edges, i, axis))

    def bounds(self) -> tuple[float, float]:
        if self.continuous:  # the carried scales depend on where the pieces end: no static envelope
            return (-math.inf, math.inf)
        los, his = zip(*(p.bounds() for p in self.pieces))
        return (min(los), max(his))


class _Pointwise(Schedule):
    """Combines the values of several schedules at the same position."""

    items: tuple[Schedule, ...] = param()

    def value(self, t: float, axis: Axis) -> float:
        return self.combine([s.value(t, axis) for s in self.items])

    @abc.abstractmethod
    def combine(self, values: list[float]) -> float:
        """The combined value of the items' values."""

    def bounds(self) -> tuple[float, float]:
        return self.combine_bounds([s.bounds() for s in self.items])

    def combine_bounds(self, bounds: list[tuple[float, float]]) -> tuple[float, float]:
        los, his = zip(*bounds)
        return (self.combine(list(los)), self.combine(list(his)))


class Product(_Pointwise):
    """The product of schedules: ``product(power(...), wsd(peak=1, decay=10%))``. Also ``a * b``."""

    name: ClassVar[str] = "product"

    def combine(self, values: list[float]) -> float:
        return math.prod(values)

    def combine_bounds(self, bounds: list[tuple[float, float]]) -> tuple[float, float]:
        def mul(x: float, y: float) -> float:  # 0 · ∞ is 0 here: a zero factor bounds the product
            return 0.0 if x == 0 or y == 0 else x * y

        lo, hi = 1.0, 1.0
        for a, b in bounds:
            corners = (mul(lo, a), mul(lo, b), mul(hi, a), mul(hi, b))
            lo, hi = min(corners), max(corners)
        return (lo, hi)


class Min(_Pointwise):
    """The smallest value of several schedules."""

    name: ClassVar[str] = "min"

    def combine(self, values: list[float]) -> float:
        return min(values)


class Max(_Pointwise):
    """The largest value of several schedules."""

    name: ClassVar[str] = "max"

    def combine(self, values: list[float]) -> float:
        return max(values)


class Scale(Schedule):
    """``inner`` multiplied by a constant ``by``: ``scale(cosine(), 3e-4)``."""

    name: ClassVar[str] = "scale"
    inner: Schedule = param()
    by: float = param(1.0, lo=None)

    @property
    def direction(self) -> int:  # type: ignore[override]
        return self.inner.direction * (1 if self.by >= 0 else -1)

    def value(self, t: float, axis: Axis) -> float:
        return self.by * self.inner.value(t, axis)

    def bounds(self) -> tuple[float, float]:
        lo, hi = self.inner.bounds()
        return tuple(sorted((lo * self.by, hi * self.by)))  # type: ignore[return-value]


class Clip(Schedule):
    """``inner`` clipped to ``[low, high]`` (either may be omitted)."""

    name: ClassVar[str] = "clip"
    inner: Schedule = param()
    low: float | None = param(None, lo=None)
    high: float | None = param(None, lo=None)

    @property
    def direction(self) -> int:  # type: ignore[override]
        return self.inner.direction

    def validate(self) -> None:
        if self.low is not None and self.high is not None and self.low > self.high:
            raise self._err(f"low ({self.low}) must be <= high ({self.high})")

    def value(self, t: float, axis: Axis) -> float:
        return self._clamp(self.inner.value(t, axis))

    def _clamp(self, v: float) -> float:
        if self.low is not None and v < self.low:
            return self.low
        if self.high is not None and v > self.high:
            return self.high
        return v

    def bounds(self) -> tuple[float, float]:
        lo, hi = self.inner.bounds()
        return (self._clamp(lo), self._clamp(hi))


class Floor(Schedule):
    """``inner`` never below ``level``: ``floor(cosine(peak=1e-3), 1e-5)``."""

    name: ClassVar[str] = "floor"
    inner: Schedule = param()
    level: float = param(0.0, lo=None)

    @property
    def direction(self) -> int:  # type: ignore[override]
        return self.inner.direction

    def value(self, t: float, axis: Axis) -> float:
        v = self.inner.value(t, axis)
        return v if v > self.level else self.level

    def bounds(self) -> tuple[float, float]:
        lo, hi = self.inner.bounds()
        return (max(lo, self.level), max(hi, self.level))


class Restarts(Schedule):
    """Repeat ``inner`` in cycles: the first ``period`` long, each next one ``mult`` times longer,
    each scaled by ``decay`` more (SGDR). ``inner`` sees each cycle as its whole span.

    ``restarts(cosine(peak=0.1), period=1000 steps, mult=2)`` agrees with torch
    ``CosineAnnealingWarmRestarts(T_0=1000, T_mult=2)``.
    """

    name: ClassVar[str] = "restarts"
    inner: Schedule = param()
    period: Duration = param("10%")
    mult: float = param(1.0, lo=1.0)
    decay: float = param(1.0, lo=0.0, hi=1.0)

    def validate(self) -> None:
        self._check_period("period")

    def value(self, t: float, axis: Axis) -> float:
        length = axis.length(self.period)
        if self.mult == 1.0:
            cycle = math.floor(t / length)
            t_cur = t - cycle * length
        else:
            cycle, t_cur = 0, t
            while t_cur >= length:
                t_cur -= length
                length *= self.mult
                cycle += 1
        return self.decay**cycle * self.inner.value(t_cur, axis.span(length))

    def check(self, axis: Axis) -> None:
        length = axis.length(self.period)
        if length <= 0:
            raise BudgetError(f"restart period '{self.period}' resolves to no length")
        self.inner.check(axis.span(length))

    def bounds(self) -> tuple[float, float]:
        lo, hi = self.inner.bounds()
        return (min(0.0, lo), hi)

    @property
    def direction(self) -> int:  # type: ignore[override]
        return 0


class Shift(Schedule):
    """``inner`` from position ``by`` on: at position ``t`` the value ``inner`` has at ``by + t`` of a
    span ``total`` long (default: this span plus ``by``; with ``open=true`` an open-ended span).

    As a later piece of a :class:`Join` it continues a whole-run schedule where it stands, instead of
    starting it over: ``join(a, shift(b, by=300 steps, total=1000 steps), at=[300 steps])`` runs
    ``b``'s values of steps 300..1000 after ``a``. ``by`` and ``total`` given as fractions are
    fractions of this span.

    ``shift(cosine(peak=1e-3), by=300 steps, total=1000 steps)``
    """

    name: ClassVar[str] = "shift"
    inner: Schedule = param()
    by: Duration = param(0.0)
    total: Duration | None = param(None)
    open: bool = param(False)

    @property
    def direction(self) -> int:  # type: ignore[override]
        return self.inner.direction

    def validate(self) -> None:
        if self.open and self.total is not None:
            raise self._err("give total or open=true, not both")

    def _inner_axis(self, axis: Axis) -> tuple[float, Axis]:
        by = axis.length(self.by)
        if self.open:
            return by, axis.span(None)
        if self.total is not None:
            return by, axis.span(axis.length(self.total))
        return by, axis.span(None if axis.total is None else axis.total + by)

    def value(self, t: float, axis: Axis) -> float:
        by, inner = self._inner_axis(axis)
        return self.inner.value(by + t, inner)

    def check(self, axis: Axis) -> None:
        by, inner = self._inner_axis(axis)
        if inner.total is not None and axis.total is not None and by + axis.total > inner.total * (1 + 1e-12):
            raise BudgetError(f"shift: by '{self.by}' plus this span ({by + axis.total:g} {axis.unit}) runs past "
                              f"the shifted schedule's total '{self.total}' ({inner.total:g})")
        self.inner.check(inner)

    def bounds(self) -> tuple[float, float]:
        return self.inner.bounds()


class Glide(Schedule):
    """Start at ``start`` and close the gap to ``inner`` over ``over``, then follow ``inner``.

    The gap closes linearly: with ``a = max(0, 1 − t/over)``, the value is
    ``inner(t) · (1 + a·(start/inner(0) − 1))`` (a factor that fades to 1, so a schedule that never
    goes negative stays so), or ``inner(t) + a·(start − inner(0))`` when ``inner(0)`` is 0. At
    ``t = 0`` the value is ``start`` exactly. Used to change a schedule mid-run without a jump.

    ``glide(cosine(peak=2e-3), start=1e-3, over=50 steps)``
    """

    name: ClassVar[str] = "glide"
    inner: Schedule = param()
    start: float = param(0.0, lo=None)
    over: Duration = param("5%")

    @property
    def direction(self) -> int:  # type: ignore[override]
        return 0

    def value(self, t: float, axis: Axis) -> float:
        if t <= 0:
            return self.start
        v = self.inner.value(t, axis)
        w = axis.length(self.over)
        if t >= w:
            return v
        a = 1.0 - t / w
        head = self.inner.value(0.0, axis)
        if abs(head) > 1e-12 * abs(self.start):
            return v * (1.0 + a * (self.start / head - 1.0))
        return v + a * (self.start - head)

    def check(self, axis: Axis) -> None:
        axis.length(self.over)
        self.inner.check(axis)

    def bounds(self) -> tuple[float, float]:  # the fading factor may carry the inner schedule past its bounds
        lo, hi = self.inner.bounds()
        if lo >= 0 and self.start >= 0:
            return (0.0, math.inf)
        return (-math.inf, math.inf)
