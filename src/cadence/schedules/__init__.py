"""Schedules: pure functions of the clock, for the learning rate or any other knob.

    >>> from cadence.schedules import WSD, Warmup, Cosine
    >>> lr = WSD(peak=3e-4, warmup="1%", decay="20%")
    >>> kl = Warmup(Cosine(peak=0.1), "10%")

Every class is also reachable by its spec name (``REGISTRY``); see :mod:`cadence.spec`.
"""

from cadence.schedules.base import REGISTRY, Schedule, as_schedule
from cadence.schedules.basic import (
    REX, UBA, Constant, Cosine, Cyclic, Exponential, InverseSqrt, Linear, MultiStep, Polynomial, Ramp, Step,
)
from cadence.schedules.combinators import Clip, Floor, Join, Max, Min, Product, Restarts, Scale, Warmup
from cadence.schedules.pretraining import WSD, Infinite, MiniCPM, Power, Rewarm
from cadence.schedules.scaling import BatchLRScaling
from cadence.schedules.table import Table

__all__ = [
    "REGISTRY", "Schedule", "as_schedule",
    "Constant", "Ramp", "Linear", "Cosine", "Polynomial", "Exponential", "InverseSqrt", "Step", "MultiStep",
    "Cyclic", "REX", "UBA", "WSD", "MiniCPM", "Power", "Rewarm", "Infinite",
    "Warmup", "Join", "Product", "Scale", "Min", "Max", "Clip", "Floor", "Restarts", "BatchLRScaling", "Table",
]
