"""Where a run is, measured against its budget.

Three pieces:

* :class:`Duration` — a length of training: a fraction of the budget (``"2%"``, ``0.02``) or an
  amount in a unit (``"500 steps"``, ``"2M tokens"``, ``"30 min"``).
* :class:`Axis` — what a schedule needs to turn durations into positions: the unit positions are
  counted in, the total length (``None`` for an open-ended run) and the conversion rates between
  units that the run has reported so far.
* :class:`Clock` — counts optimizer steps, samples, tokens and wall seconds, holds the budget, and
  gives every schedule the same ``(position, axis)``.

Example::

    >>> clock = Clock(budget="1000 steps")
    >>> clock.advance(samples=32, tokens=32 * 512)
    >>> clock.position, clock.progress
    (1.0, 0.001)
"""

from __future__ import annotations

import decimal
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

from cadence.errors import BudgetError, StateError

UNITS = ("steps", "samples", "tokens", "seconds")
"""The units a clock counts. A duration may also be a fraction of the budget."""

_UNIT_ALIASES = {
    "step": ("steps", 1.0), "steps": ("steps", 1.0), "ba": ("steps", 1.0),
    "sample": ("samples", 1.0), "samples": ("samples", 1.0), "sp": ("samples", 1.0),
    "token": ("tokens", 1.0), "tokens": ("tokens", 1.0), "tok": ("tokens", 1.0),
    "s": ("seconds", 1.0), "sec": ("seconds", 1.0), "secs": ("seconds", 1.0),
    "second": ("seconds", 1.0), "seconds": ("seconds", 1.0),
    "min": ("seconds", 60.0), "mins": ("seconds", 60.0), "minute": ("seconds", 60.0),
    "minutes": ("seconds", 60.0),
    "h": ("seconds", 3600.0), "hr": ("seconds", 3600.0), "hour": ("seconds", 3600.0),
    "hours": ("seconds", 3600.0),
}
_MAGNITUDES = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
_EXACT = decimal.Context(prec=100, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
"""Decimal arithmetic for unit conversions: exact for any number a spec can hold."""
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_DURATION_RE = re.compile(rf"^\s*({_NUMBER})\s*([kKMBGT]?)\s*(%|[A-Za-z]+)?\s*$")


def unit_alias(word: str) -> tuple[str, float] | None:
    """``(unit, multiplier)`` for a unit word such as ``"min"``, or ``None`` if unknown."""
    return _UNIT_ALIASES.get(word)


def _format_number(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and x == int(x) and abs(x) < 1e15 else repr(x)


@dataclass(frozen=True)
class Duration:
    """A length of training, as a fraction of the budget or an amount in a unit.

    ``unit`` is ``"%"`` (amount in percent), ``"fraction"`` (amount in [0, 1]) or one of
    :data:`UNITS`. Build one with :meth:`parse`::

        >>> Duration.parse("2%").fraction, Duration.parse("2M tokens").amount
        (0.02, 2000000.0)
    """

    amount: float
    unit: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, (int, float)) or isinstance(self.amount, bool):
            raise BudgetError(f"duration amount must be a number, got {self.amount!r}")
        if math.isnan(self.amount) or math.isinf(self.amount) or self.amount < 0:
            raise BudgetError(f"duration must be finite and non-negative, got {self.amount!r} {self.unit}")
        if self.unit not in UNITS and self.unit not in ("%", "fraction"):
            raise BudgetError(f"unknown duration unit {self.unit!r}; use %, or one of {', '.join(UNITS)}")
        if self.is_fraction and self.fraction > 1:
            raise BudgetError(f"a fraction of the budget must lie in [0, 1], got {self}")
        object.__setattr__(self, "amount", float(self.amount))

    @property
    def is_fraction(self) -> bool:
        """True when this duration is relative to the budget."""
        return self.unit in ("%", "fraction")

    @property
    def fraction(self) -> float:
        """The fraction of the budget (only for relative durations)."""
        return self.amount / 100.0 if self.unit == "%" else self.amount

    @classmethod
    def parse(cls, value: Duration | str | float | int) -> Duration:
        """Read ``"2%"``, ``0.02`` (a bare number is a fraction), ``"500 steps"``, ``"2M tokens"``,
        ``"30 min"``, ``"1.5h"``."""
        if isinstance(value, Duration):
            return value
        if isinstance(value, bool):
            raise BudgetError(f"cannot read a duration from {value!r}")
        if isinstance(value, (int, float)):
            if isinstance(value, int) and abs(value) > 1 << 1023:
                raise BudgetError("cannot read a duration from an integer beyond the float range")
            if not 0 <= value <= 1:
                fix = (f"; write an amount with its unit, e.g. '{_format_number(value)} steps'"
                       if math.isfinite(value) and value > 1 else "")
                raise BudgetError(f"a bare number is a fraction of the budget and must lie in [0, 1], got {value!r}{fix}")
            return cls(float(value), "fraction")
        if not isinstance(value, str):
            raise BudgetError(f"cannot read a duration from {value!r}")
        m = _DURATION_RE.match(value)
        if not m:
            raise BudgetError(f"cannot read a duration from {value!r}; examples: '2%', '0.02', '500 steps', '2M tokens', '30 min'")
        number, magnitude, unit = m.groups()
        try:
            exact = _EXACT.multiply(decimal.Decimal(number), decimal.Decimal(_MAGNITUDES[magnitude]))
        except decimal.DecimalException:  # an exponent beyond even the decimal range: 1e99999999999999999999
            raise BudgetError(f"duration must be finite and non-negative, got {number!r}: out of range") from None
        amount = float(exact)   # the float nearest the decimal value: 1.1M is 1100000, not 1.1·1e6
        if unit is None:
            if magnitude:
                raise BudgetError(f"{value!r} has no unit; write e.g. '{value} tokens'")
            return cls.parse(amount)
        if unit == "%":
            if magnitude:
                raise BudgetError(f"cannot read a duration from {value!r}")
            return cls(amount, "%")
        alias = unit_alias(unit)
        if alias is None:
            raise BudgetError(f"unknown unit {unit!r} in {value!r}; use %, steps, samples, tokens, s, min or h")
        name, factor = alias
        return cls(float(_EXACT.multiply(exact, decimal.Decimal(factor))), name)   # 1.1 h: 3960 s, not 1.1·3600

    def __str__(self) -> str:
        if self.unit == "%":
            return f"{_format_number(self.amount)}%"
        if self.unit == "fraction":
            return _format_number(self.amount)
        if self.unit == "seconds":
            for word, factor in (("h", 3600.0), ("min", 60.0)):
                if self.amount >= factor and (self.amount / factor) * factor == self.amount and self.amount % factor == 0:
                    return f"{_format_number(self.amount / factor)} {word}"
            return f"{_format_number(self.amount)} s"
        for suffix in ("T", "B", "M", "K"):
            scale = _MAGNITUDES[suffix]
            v = self.amount / scale
            if self.amount >= scale and v * scale == self.amount and len(repr(v)) <= 6:
                return f"{_format_number(v)}{suffix} {self.unit}"
        return f"{_format_number(self.amount)} {self.unit}"


class Axis:
    """The frame a schedule is evaluated in: unit of positions, total length, conversion rates.

    ``rates[u]`` is how many axis units one ``u`` is worth (e.g. steps per token). Schedules call
    :meth:`length` to turn a :class:`Duration` into axis units and :meth:`span` to evaluate a piece
    of themselves over a shorter total. Rates may be given lazily, as a function computing them on
    first use (most schedules never convert units). An ``Axis`` is immutable and cheap to make.

        >>> Axis("steps", 1000).length(Duration.parse("2%"))
        20.0
    """

    __slots__ = ("unit", "total", "_rates", "_spans")

    def __init__(self, unit: str = "steps", total: float | None = None,
                 rates: dict[str, float] | Callable[[], dict[str, float]] | None = None):
        self.unit = unit
        self.total = total
        self._rates = rates if rates is not None else {}
        self._spans: dict[float | None, Axis] = {}

    @property
    def rates_resolved(self) -> bool:
        """True once lazily given rates have been computed (they then describe one moment)."""
        return not callable(self._rates)

    @property
    def rates(self) -> dict[str, float]:
        """Axis units per one of each other unit, as far as the run has reported them."""
        if callable(self._rates):
            self._rates = self._rates()
        return self._rates

    def length(self, d: Duration) -> float:
        """``d`` in axis units. Raises :class:`BudgetError` if it cannot be resolved."""
        unit = d.unit
        if unit == self.unit:
            return d.amount
        if unit == "%" or unit == "fraction":
            if self.total is None:
                raise BudgetError(
                    f"'{d}' is a fraction of the budget, but this run is open-ended; "
                    f"give an amount such as '500 steps', or set a budget"
                )
            return d.fraction * self.total
        rate = self.rates.get(unit)
        if rate is None:
            missing = self.unit if unit == "steps" else unit
            raise BudgetError(
                f"cannot convert '{d}' to {self.unit}: the run has not reported {missing} yet; "
                f"report them to the clock (clock.advance) or give the clock a nominal {missing}_per_step"
            )
        return d.amount * rate

    def convert(self, position: float, unit: str) -> float:
        """A position on this axis expressed in ``unit`` (e.g. tokens seen at this position)."""
        if unit == self.unit:
            return position
        rate = self.rates.get(unit)
        if not rate:
            raise BudgetError(f"cannot express {self.unit} in {unit}: the run has not reported {unit} yet")
        return position / rate

    def span(self, total: float | None) -> Axis:
        """The same frame over a span of length ``total`` (used by joins and warmups; memoized)."""
        span = self._spans.get(total)
        if span is None:
            span = self._spans[total] = Axis(self.unit, total, self._rates)
        return span

    def __repr__(self) -> str:
        return f"Axis({self.unit!r}, total={self.total!r})"


BudgetChangeRule = Literal["rescale", "rederive"]


BUDGET_RULE = ("a budget is a positive amount with a unit ('10000 steps', '2M tokens', '30 min'); "
               "a bare number ('10000', '2.5e4') is a number of steps")
"""The one rule for budgets, quoted by the CLI's help and by every budget error."""


def parse_budget(budget: Duration | str | int | float | None) -> Duration | None:
    """A budget is a positive amount with a unit; a bare number (``10000``, ``2.5e4``, ``"10000"``) is a
    number of steps; ``None`` is an open-ended run.

        >>> parse_budget("2M tokens"), parse_budget("1e4"), parse_budget(500)
        (Duration(amount=2000000.0, unit='tokens'), Duration(amount=10000.0, unit='steps'), Duration(amount=500.0, unit='steps'))
    """
    if budget is None:
        return None
    if isinstance(budget, str):
        try:
            budget = float(budget.strip())  # a bare number, written as text: steps
        except ValueError:
            pass
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        if not math.isfinite(budget) or budget <= 0:
            raise BudgetError(f"{BUDGET_RULE}; got {budget!r} steps")
        return Duration(float(budget), "steps")
    try:
        d = Duration.parse(budget)
    except BudgetError as e:
        raise BudgetError(f"{BUDGET_RULE}; got {budget!r} ({e})") from None
    if d.is_fraction:
        raise BudgetError(f"{BUDGET_RULE}; got {budget!r}, a fraction")
    if d.amount <= 0:
        raise BudgetError(f"{BUDGET_RULE}; got {budget!r}")
    return d


class Clock:
    """Counts a run's progress in steps, samples, tokens and wall seconds against one budget.

    Args:
        budget: ``"10000 steps"``, ``10000`` (steps), ``"2M tokens"``, ``"30 min"``, or ``None``
            for an open-ended run (fractions of the budget then cannot resolve).
        on_budget_change: what schedules see when :meth:`set_budget` changes a budget mid-run.

            * ``"rescale"`` (default): progress is continuous; the part of every schedule still
              ahead is stretched or squeezed onto the budget that remains, so no value jumps at
              the moment of change. Amount durations that lie ahead are stretched with it.
            * ``"rederive"``: every schedule is re-derived as if the new budget had been set from
              the start. Values may jump (not in the stable phase of a WSD, say).
        tokens_per_step, samples_per_step, seconds_per_step: nominal rates used to convert
            between units before the run has reported any (measured averages win afterwards).
        timer: the wall-clock source (seconds); inject one for tests.

    Example::

        >>> clock = Clock(budget="2M tokens", tokens_per_step=4096)
        >>> clock.advance(tokens=4096)
        >>> clock.tokens, round(clock.progress, 6)
        (4096.0, 0.002048)
    """

    def __init__(
        self,
        budget: Duration | str | int | float | None = None,
        *,
        on_budget_change: BudgetChangeRule = "rescale",
        tokens_per_step: float | None = None,
        samples_per_step: float | None = None,
        seconds_per_step: float | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if on_budget_change not in ("rescale", "rederive"):
            raise BudgetError(f"on_budget_change must be 'rescale' or 'rederive', got {on_budget_change!r}")
        nominal = {"steps": 1.0}
        for unit, rate in (("tokens", tokens_per_step), ("samples", samples_per_step), ("seconds", seconds_per_step)):
            if rate is not None:
                if not math.isfinite(rate) or rate <= 0:
                    raise BudgetError(f"{unit}_per_step must be positive and finite, got {rate!r}")
                nominal[unit] = float(rate)
        self.budget = parse_budget(budget)
        self._unit = self.budget.unit if self.budget else "steps"
        self.on_budget_change: BudgetChangeRule = on_budget_change
        self.nominal_per_step = nominal
        self.counts = dict.fromkeys(UNITS, 0.0)
        self._pending = {"samples": 0.0, "tokens": 0.0}
        # position = anchor_position + (raw - anchor_raw) * slope; schedules see `schedule_total`
        self._anchor = (0.0, 0.0, 1.0)
        self.schedule_total = self.budget.amount if self.budget else None
        self._timer = timer
        self._mark = timer()
        self._axis: Axis | None = None
        self._dependents: list[Any] = []

    # ------------------------------------------------------------------ reading
    @property
    def unit(self) -> str:
        """The unit positions are counted in: the budget's (steps for a run that never had one)."""
        return self._unit

    @property
    def steps(self) -> float:
        return self.counts["steps"]

    @property
    def samples(self) -> float:
        return self.counts["samples"]

    @property
    def tokens(self) -> float:
        return self.counts["tokens"]

    @property
    def seconds(self) -> float:
        return self.counts["seconds"]

    @property
    def elapsed(self) -> float:
        """Progress in the budget's unit (raw, before any budget-change rescaling)."""
        return self.counts[self.unit]

    @property
    def position(self) -> float:
        """Where schedules are evaluated: the elapsed amount, mapped through budget changes."""
        x0, p0, slope = self._anchor
        return p0 + (self.counts[self.unit] - x0) * slope

    @property
    def progress(self) -> float | None:
        """Fraction of the budget done, in [0, 1] (``None`` for an open-ended run)."""
        if self.schedule_total is None:
            return None
        return min(1.0, self.position / self.schedule_total)

    @property
    def remaining(self) -> float | None:
        """Budget left in the budget's unit (``None`` for an open-ended run)."""
        if self.budget is None:
            return None
        return max(0.0, self.budget.amount - self.elapsed)

    @property
    def done(self) -> bool:
        """True once the budget is spent (never for an open-ended run)."""
        return self.budget is not None and self.elapsed >= self.budget.amount

    def rate(self, unit: str) -> float | None:
        """Measured (else nominal) amount of ``unit`` per step, or ``None`` if unknown."""
        if unit == "steps":
            return 1.0
        if self.counts["steps"] > 0 and self.counts[unit] > 0:
            return self.counts[unit] / self.counts["steps"]
        return self.nominal_per_step.get(unit)

    @property
    def axis(self) -> Axis:
        """The frame schedules are evaluated in (cached until the clock moves)."""
        if self._axis is None:
            self._axis = Axis(self.unit, self.schedule_total, self._rates)
        return self._axis

    def _rates(self) -> dict[str, float]:
        own = self.rate(self.unit)
        if not own:
            return {}
        return {u: own / r for u in UNITS if (r := self.rate(u))}

    def to(self, unit: str, amount: float | None = None) -> float:
        """Convert ``amount`` (default: the elapsed amount) from the budget's unit to ``unit``."""
        amount = self.elapsed if amount is None else amount
        own, other = self.rate(self.unit), self.rate(unit)
        if not own or not other:
            raise BudgetError(f"cannot convert {self.unit} to {unit}: no rate is known yet")
        return amount / own * other

    # ------------------------------------------------------------------ moving
    @property
    def pending(self) -> dict[str, float]:
        """Samples and tokens reported but not yet counted (the next :meth:`advance` counts them).

            >>> clock = Clock(); clock.report(tokens=512); clock.pending
            {'samples': 0.0, 'tokens': 512.0}
        """
        return dict(self._pending)

    def report(self, *, samples: float = 0, tokens: float = 0) -> None:
        """Queue samples and tokens to be counted with the next :meth:`advance` (for when another
        component, such as the LR binding, advances the clock)."""
        for name, value in (("samples", samples), ("tokens", tokens)):
            _check_amount(name, value)
        self._pending["samples"] += samples
        self._pending["tokens"] += tokens

    def advance(self, steps: float = 1, *, samples: float = 0, tokens: float = 0, seconds: float | None = None) -> None:
        """Move the clock: ``steps`` optimizer steps that consumed ``samples`` and ``tokens``.

        Wall seconds are measured since the previous call unless ``seconds`` is given.
        """
        try:  # one chained comparison on the hot path; NaN and non-numbers fail it
            valid = 0 <= steps < math.inf and 0 <= samples < math.inf and 0 <= tokens < math.inf
        except TypeError:
            valid = False
        if not valid:
            for name, value in (("steps", steps), ("samples", samples), ("tokens", tokens)):
                _check_amount(name, value)
        now = self._timer()
        if seconds is None:
            seconds = now - self._mark if now > self._mark else 0.0
        else:
            _check_amount("seconds", seconds)
        self._mark = now
        c = self.counts
        c["steps"] += steps
        c["samples"] += samples + self._pending["samples"]
        c["tokens"] += tokens + self._pending["tokens"]
        c["seconds"] += seconds
        self._pending["samples"] = self._pending["tokens"] = 0.0
        if self._axis is not None and self._axis.rates_resolved:
            self._axis = None  # its rates described the previous moment; otherwise it is still exact

    # ------------------------------------------------------------------ budget
    def watch(self, schedules: Iterable[Any]) -> None:
        """Register schedules to validate before any budget change is committed."""
        self._dependents.extend(schedules)

    def unwatch(self, schedules: Iterable[Any]) -> None:
        """Stop validating ``schedules`` (replaced ones) on budget changes."""
        gone = {id(s) for s in schedules}
        self._dependents = [s for s in self._dependents if id(s) not in gone]

    def check(self, schedules: Iterable[Any] | None = None) -> None:
        """Validate ``schedules`` (default: the watched ones) against the current budget."""
        axis = self.axis
        for s in self._dependents if schedules is None else schedules:
            s.check(axis)

    def set_budget(self, budget: Duration | str | int | float | None) -> None:
        """Extend or shorten the budget mid-run, re-deriving schedules by ``on_budget_change``.

        The new budget is validated first (same unit, beyond what is already done, every watched
        schedule still fits); on error nothing changes.
        """
        new = parse_budget(budget)
        old_state = (self.budget, self._unit, self._anchor, self.schedule_total, self._axis)
        if new is not None:
            if self.budget is not None and new.unit != self.budget.unit:
                raise BudgetError(f"a budget in {self.budget.unit} cannot change to one in {new.unit}")
            if new.unit != self._unit and self.counts[new.unit] == 0 and self.counts["steps"] > 0:
                raise BudgetError(f"cannot switch this open-ended run to a {new.unit} budget: no {new.unit} were reported")
            if new.amount <= self.counts[new.unit]:
                raise BudgetError(
                    f"the new budget '{new}' is not beyond the {_format_number(self.counts[new.unit])} {new.unit} already done"
                )
        try:
            if new is None:  # keep unit and position, drop the total
                self.schedule_total = None
            elif new.unit != self._unit or self.on_budget_change == "rederive":
                # a new unit, or re-derive: schedules are positioned by the amount done so far
                self._unit, self._anchor, self.schedule_total = new.unit, (0.0, 0.0, 1.0), new.amount
            else:
                x, p = self.counts[new.unit], self.position
                if self.budget is None:  # first budget: what remains is the new budget, 1:1
                    self._anchor, self.schedule_total = (x, p, 1.0), p + new.amount - x
                else:  # rescale: map what remains of the schedules onto what remains of the budget
                    self._anchor = (x, p, (self.schedule_total - p) / (new.amount - x))
            self.budget = new
            self._axis = None
            self.check()
        except Exception:
            self.budget, self._unit, self._anchor, self.schedule_total, self._axis = old_state
            raise

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (plain Python types, JSON-safe)."""
        return {
            "kind": "cadence.Clock",
            "budget": None if self.budget is None else [self.budget.amount, self.budget.unit],
            "unit": self._unit,
            "on_budget_change": self.on_budget_change,
            "nominal_per_step": dict(self.nominal_per_step),
            "counts": dict(self.counts),
            "pending": dict(self._pending),
            "anchor": list(self._anchor),
            "schedule_total": self.schedule_total,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; rejects foreign or malformed state before changing anything."""
        if not isinstance(state, dict) or state.get("kind") != "cadence.Clock":
            raise StateError("not a cadence Clock state_dict (missing kind='cadence.Clock')")
        try:
            budget = None if state["budget"] is None else Duration(*state["budget"])
            counts = {u: float(state["counts"][u]) for u in UNITS}
            pending = {u: float(state["pending"][u]) for u in ("samples", "tokens")}
            anchor = tuple(float(v) for v in state["anchor"])
            total = None if state["schedule_total"] is None else float(state["schedule_total"])
            rule = state["on_budget_change"]
            unit = state["unit"]
            nominal = {k: float(v) for k, v in state["nominal_per_step"].items()}
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed Clock state_dict: {e!r}") from e
        if len(anchor) != 3 or rule not in ("rescale", "rederive") or unit not in UNITS:
            raise StateError("malformed Clock state_dict: bad anchor, unit or on_budget_change")
        self.budget, self._unit, self.counts, self._pending = budget, unit, counts, pending
        self._anchor, self.schedule_total, self.on_budget_change = anchor, total, rule
        self.nominal_per_step = nominal
        self._mark = self._timer()
        self._axis = None

    def __repr__(self) -> str:
        budget = str(self.budget) if self.budget else "open-ended"
        return (
            f"Clock(budget={budget!r}, steps={_format_number(self.steps)}, samples={_format_number(self.samples)}, "
            f"tokens={_format_number(self.tokens)}, seconds={self.seconds:.1f})"
        )


def _check_amount(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise BudgetError(f"{name} must be a finite non-negative number, got {value!r}")
