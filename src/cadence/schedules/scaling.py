"""Batch-size coupling: the LR factor that follows a batch-size schedule (linear or square-root scaling).

Used by :class:`cadence.progressive.BatchSizeSchedule`; usable on its own in any spec:

    >>> from cadence import parse
    >>> from cadence.clock import Axis
    >>> parse("batch_lr_scaling(ramp(start=32, end=128), base=32, rule=linear)").value(50, Axis("steps", 100))
    2.5
"""

from __future__ import annotations

import math
from typing import ClassVar

from cadence.clock import Axis
from cadence.schedules.base import Schedule, param

LR_RULES = ("linear", "sqrt")


def quantize(raw: float, multiple: int) -> int:
    """``raw`` rounded down to a multiple of ``multiple`` (at least ``multiple``); a relative
    tolerance of 1e-9 absorbs float error, so 63.9999999999 counts as 64."""
    return max(multiple, multiple * math.floor(raw / multiple + 1e-9))


def lr_scale(rule: str, ratio: float) -> float:
    """The LR multiplier for a batch ``ratio`` = batch / base: ``ratio`` (linear) or ``√ratio`` (sqrt)."""
    return ratio if rule == "linear" else math.sqrt(ratio)


class BatchLRScaling(Schedule):
    """The LR factor that couples to a batch-size schedule: ``(B(t)/base)`` under ``linear``,
    ``√(B(t)/base)`` under ``sqrt``, with ``B(t)`` rounded as the batch size is. Multiply an LR by it.

    ``product(cosine(peak=1e-3), batch_lr_scaling(ramp(start=32, end=128), base=32, rule=sqrt))``
    """

    name: ClassVar[str] = "batch_lr_scaling"
    batch: Schedule = param()
    base: float = param(1.0, lo=0.0, lo_open=True)
    rule: str = param("sqrt", choices=LR_RULES)
    multiple_of: float = param(1.0, lo=1.0)

    def validate(self) -> None:
        if self.multiple_of != int(self.multiple_of):
            raise self._err(f"multiple_of must be a whole number, got {self.multiple_of}")
        if self.batch.bounds()[0] <= 0:
            low = self.batch.bounds()[0]
            raise self._err(f"the batch-size schedule must stay positive, but {self.batch} reaches {low}")

    @property
    def direction(self) -> int:  # type: ignore[override]
        return self.batch.direction

    def batch_size(self, t: float, axis: Axis) -> int:
        return quantize(self.batch.value(t, axis), int(self.multiple_of))

    def value(self, t: float, axis: Axis) -> float:
        return lr_scale(self.rule, self.batch_size(t, axis) / self.base)

    def bounds(self) -> tuple[float, float]:
        m = int(self.multiple_of)
        lo, hi = self.batch.bounds()
        return (lr_scale(self.rule, quantize(lo, m) / self.base), lr_scale(self.rule, quantize(hi, m) / self.base))
