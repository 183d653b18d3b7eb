"""cadence — a training-regimen engine for PyTorch: one clock, one budget, schedules for every knob.

    >>> import cadence
    >>> clock = cadence.Clock(budget="1000 steps")
    >>> lr = cadence.parse("wsd(peak=3e-4, warmup=1%, decay=20%, shape=1-sqrt, floor=0.1)")
    >>> clock.advance(500)
    >>> lr(clock)
    0.0003
"""

from cadence.clock import Axis, Clock, Duration
from cadence.errors import BudgetError, CadenceError, SpecError, StateError
from cadence.schedules import Schedule, as_schedule
from cadence.spec import from_dict, parse, to_dict, to_spec

__version__ = "0.1.0"

__all__ = [
    "Axis", "Clock", "Duration", "Schedule", "as_schedule", "parse", "to_spec", "to_dict", "from_dict",
    "CadenceError", "SpecError", "BudgetError", "StateError", "__version__",
]
