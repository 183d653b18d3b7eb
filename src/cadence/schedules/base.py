"""The :class:`Schedule` base: a frozen dataclass that maps a position on an :class:`Axis` to a number.

Every schedule is a pure function ``value(t, axis)``: no state, no counters, so resuming is exact
by construction. Subclasses declare their parameters as dataclass fields made with :func:`param`;
the base class coerces and validates them (durations from text, nested schedules from specs,
finite numbers in range) so a schedule that exists is a valid one.

    >>> from cadence.schedules import Cosine
    >>> s = Cosine(peak=1e-3, floor=0.1)
    >>> s.value(500, Axis("steps", 1000))
    0.00055
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

from cadence.clock import Axis, Clock, Duration
from cadence.errors import BudgetError, SpecError

REGISTRY: dict[str, type[Schedule]] = {}
"""Spec name → schedule class, filled as subclasses are defined."""


def param(default: Any = dataclasses.MISSING, *, lo: float | None = None, hi: float | None = None,
          lo_open: bool = False, choices: tuple[str, ...] | None = None) -> Any:
    """A schedule parameter: a dataclass field with a range (``lo``/``hi``) or ``choices``."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: tuple(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Schedule(abc.ABC):
    """Base class of all schedules. Subclasses set ``name`` and implement :meth:`value`.

    Call a schedule on a :class:`Clock` to read it at the clock's position, or use
    :meth:`value` with an explicit position and :class:`Axis`.
    """

    name: ClassVar[str] = ""
    #: +1 non-decreasing, -1 non-increasing, 0 no promise (used by property tests and plots).
    direction: ClassVar[int] = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True)(cls)  # every schedule is a frozen dataclass
        if cls.__dict__.get("name"):
            REGISTRY[cls.name] = cls

    # ------------------------------------------------------------------ evaluation
    @abc.abstractmethod
    def value(self, t: float, axis: Axis) -> float:
        """The schedule's value at position ``t`` (in ``axis.unit``) of a span ``axis.total`` long."""

    def __call__(self, clock: Clock) -> float:
        return self.value(clock.position, clock.axis)

    def check(self, axis: Axis) -> None:
        """Raise :class:`BudgetError` if the schedule cannot be evaluated on ``axis``
        (durations that do not resolve or do not fit). Called before a budget is committed."""
        for child in self.children():
            child.check(axis)

    def curve(self, total: float, points: int = 1001, *, unit: str = "steps",
              rates: dict[str, float] | None = None) -> tuple[list[float], list[float]]:
        """``(positions, values)`` sampled evenly over a span of ``total`` (for plots and tables)."""
        axis = Axis(unit, total, rates)
        self.check(axis)
        ts = [total * i / (points - 1) for i in range(points)]
        return ts, [self.value(t, axis) for t in ts]

    # ------------------------------------------------------------------ structure
    def children(self) -> tuple[Schedule, ...]:
        """Nested schedules (for combinators)."""
        out: list[Schedule] = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Schedule):
                out.append(v)
            elif isinstance(v, tuple) and v and isinstance(v[0], Schedule):
                out.extend(v)
        return tuple(out)

    @abc.abstractmethod
    def bounds(self) -> tuple[float, float]:
        """Declared ``(low, high)`` that every value lies within."""

    def __str__(self) -> str:
        from cadence.spec import to_spec

        return to_spec(self)

    def __mul__(self, other: Schedule | float) -> Schedule:
        from cadence.schedules.combinators import Product

        return Product((self, other))

    __rmul__ = __mul__

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(self, f, getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Cross-parameter checks; override and raise :class:`SpecError` naming the parameter."""

    def _err(self, message: str) -> SpecError:
        return SpecError(f"{self.name}: {message}")


def _coerce(owner: Schedule, f: dataclasses.Field, v: Any) -> Any:
    """Turn a field value into its declared type and check its range."""
    kind = str(f.type).replace("typing.", "")
    meta = f.metadata
    where = f"{owner.name}: parameter {f.name!r}"
    try:
        return _coerce_value(kind, meta, where, v)
    except SpecError as e:
        raise SpecError(str(e), param=f.name) from None
    except BudgetError as e:
        raise SpecError(f"{where}: {e}", param=f.name) from None


def _coerce_value(kind: str, meta: Any, where: str, v: Any) -> Any:
    """The value of one parameter of type ``kind`` (its annotation text)."""
    if kind == "Schedule":
        return as_schedule(v)
    if kind.startswith("tuple[Schedule"):
        items = tuple(as_schedule(x) for x in _as_tuple(v, where))
        if not items:
            raise SpecError(f"{where} needs at least one schedule")
        return items
    if kind.startswith("Duration"):
        if v is None and "None" in kind:
            return None
        return Duration.parse(v)
    if kind.startswith("tuple[Duration"):
        return tuple(Duration.parse(x) for x in _as_tuple(v, where))
    if kind.startswith("tuple[float"):
        return tuple(_coerce_value("float", meta, f"{where} item {i}", x) for i, x in enumerate(_as_tuple(v, where)))
    if kind == "str":
        if not isinstance(v, str) or (meta.get("choices") and v not in meta["choices"]):
            raise SpecError(f"{where} must be one of {', '.join(meta['choices'])}; got {v!r}")
        return v
    if kind == "bool":
        if isinstance(v, str) and v.lower() in ("true", "false"):
            return v.lower() == "true"
        if not isinstance(v, bool):
            raise SpecError(f"{where} must be true or false, got {v!r}")
        return v
    if kind.startswith("float"):
        if v is None and "None" in kind:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SpecError(f"{where} must be a number, got {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise SpecError(f"{where} must be finite, got {v!r}")
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is not None and (v < lo or (meta.get("lo_open") and v == lo)):
            raise SpecError(f"{where} must be {'>' if meta.get('lo_open') else '>='} {lo}, got {v!r}")
        if hi is not None and v > hi:
            raise SpecError(f"{where} must be <= {hi}, got {v!r}")
        return v
    raise TypeError(f"unsupported parameter type {kind!r} for {where}")  # a bug in a schedule class


def _as_tuple(v: Any, where: str) -> tuple:
    if isinstance(v, (list, tuple)):
        return tuple(v)
    raise SpecError(f"{where} must be a list, got {v!r}")


def as_schedule(x: Any) -> Schedule:
    """Coerce a schedule, a number (a constant), a spec string or a spec dict to a :class:`Schedule`."""
    if isinstance(x, Schedule):
        return x
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        from cadence.schedules.basic import Constant

        return Constant(float(x))
    if isinstance(x, str):
        from cadence.spec import parse

        return parse(x)
    if isinstance(x, dict):
        from cadence.spec import from_dict

        return from_dict(x)
    raise SpecError(f"expected a schedule, a number or a spec, got {x!r}")


def clamp01(x: float) -> float:
    """``x`` clipped to [0, 1]."""
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def need_total(s: Schedule, axis: Axis) -> float:
    """The span's total, or a clear error for schedules that need a budget."""
    if axis.total is None:
        raise BudgetError(f"{s.name} needs a budget: it spans the whole run, but this run is open-ended")
    return axis.total
