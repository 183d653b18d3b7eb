"""A schedule given as a table: values at fractions of the budget, interpolated between them.

For shapes no formula describes, e.g. a schedule refined from a logged run
(:func:`cadence.forecast.refine.refine_schedule`).

    >>> from cadence.clock import Axis
    >>> s = Table(peak=1e-3, at=(0.0, 0.5, 1.0), values=(0.5, 1.0, 0.0))
    >>> s.value(250, Axis("steps", 1000)), s.value(1000, Axis("steps", 1000))
    (0.00075, 0.0)
    >>> str(s)
    'table(peak=0.001, at=[0, 0.5, 1], values=[0.5, 1, 0])'
"""

from __future__ import annotations

import bisect
from typing import ClassVar

from cadence.clock import Axis
from cadence.schedules.base import Schedule, clamp01, need_total, param


class Table(Schedule):
    """``peak`` times ``values[i]`` at fraction ``at[i]`` of the budget, linear in between
    (``interp=linear``) or holding each value until the next point (``interp=step``); before the
    first point the first value, after the last point the last value.

    ``table(peak=3e-4, at=[0, 0.1, 1], values=[0.2, 1, 0])``
    """

    name: ClassVar[str] = "table"
    peak: float = param(1.0, lo=0.0)
    at: tuple[float, ...] = param((0.0, 1.0), lo=0.0, hi=1.0)
    values: tuple[float, ...] = param((1.0, 1.0), lo=0.0)
    interp: str = param("linear", choices=("linear", "step"))

    def validate(self) -> None:
        if not self.at:
            raise self._err("needs at least one point in 'at'")
        if len(self.at) != len(self.values):
            raise self._err(f"'at' has {len(self.at)} points but 'values' has {len(self.values)}")
        if any(b <= a for a, b in zip(self.at, self.at[1:])):
            raise self._err(f"'at' must strictly increase, got {list(self.at)}")

    def value(self, t: float, axis: Axis) -> float:
        total = need_total(self, axis)
        u = clamp01(t / total) if total > 0 else 1.0
        i = bisect.bisect_right(self.at, u)  # points at or before u: 0..i-1
        if i == 0:
            return self.peak * self.values[0]
        if i == len(self.at) or self.interp == "step":
            return self.peak * self.values[i - 1]
        a0, a1, v0, v1 = self.at[i - 1], self.at[i], self.values[i - 1], self.values[i]
        return self.peak * (v0 + (v1 - v0) * (u - a0) / (a1 - a0))

    def check(self, axis: Axis) -> None:
        need_total(self, axis)

    def bounds(self) -> tuple[float, float]:
        return (self.peak * min(self.values), self.peak * max(self.values))
