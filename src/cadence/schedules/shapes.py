"""Decay shapes: how a value falls from its peak to its floor over ``s`` in [0, 1].

``decay(shape, s, floor)`` returns the ratio to the peak (1 at ``s = 0``, ``floor`` at ``s = 1``);
``rise(shape, p, start)`` is the same shape run backwards, for warmups. Formulas follow
"Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations" (Hägele et al., arXiv 2405.18392).

    >>> decay("1-sqrt", 0.25, 0.0)
    0.5
"""

from __future__ import annotations

import math

#: shapes whose ratio is ``floor + (1 - floor) * f(s)``
_UNIT_SHAPES = {
    "linear": lambda s: 1.0 - s,
    "cosine": lambda s: 0.5 * (1.0 + math.cos(math.pi * s)),
    "1-sqrt": lambda s: 1.0 - math.sqrt(s),
    "1-square": lambda s: 1.0 - s * s,
}
DECAY_SHAPES = (*_UNIT_SHAPES, "exponential", "inverse-linear")
"""All decay shapes. ``exponential`` is ``floor**s``; ``inverse-linear`` interpolates ``1/lr``
linearly (the WSD-S shape, UNCONFIRMED: from third-party code); both need ``floor > 0``."""
RISE_SHAPES = tuple(_UNIT_SHAPES)
"""Shapes a warmup can take (the unit shapes, time-reversed)."""


def decay(shape: str, s: float, floor: float) -> float:
    """Ratio to the peak at fraction ``s`` of a decay that ends at ``floor``."""
    f = _UNIT_SHAPES.get(shape)
    if f is not None:
        return floor + (1.0 - floor) * f(s)
    if shape == "exponential":
        return floor**s
    if shape == "inverse-linear":
        return 1.0 / ((1.0 - s) + s / floor)
    raise ValueError(f"unknown decay shape {shape!r}")


def rise(shape: str, p: float, start: float) -> float:
    """Ratio to the peak at fraction ``p`` of a warmup that starts at ``start``."""
    return start + (1.0 - start) * _UNIT_SHAPES[shape](1.0 - p)


def needs_positive_floor(shape: str) -> bool:
    """True for the shapes that cannot reach a zero floor."""
    return shape in ("exponential", "inverse-linear")
