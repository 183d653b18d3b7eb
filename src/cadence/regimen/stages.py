"""Stages on one clock: ordered parts of a run, each with its own budget share and schedules.

A stage's schedules run on the stage's own progress (its warmup and decay are fractions of the
stage), while the clock keeps the run's global progress: the schedules of all stages become one
``join`` whose boundaries are the stages' ends. A stage ends on its budget, or earlier on a rule
over logged metrics (:class:`Rule`: ``until`` a metric is above/below a threshold for ``times``
evaluations in a row, or a ``plateau``: no improvement by ``delta`` over ``window`` evaluations,
the detector Scaf-GRPO, arXiv 2510.19807, uses). When a stage ends early, the stages after it
share what remains of the budget in proportion to their planned lengths; a budget change under the
clock's ``rescale`` rule stretches what lies ahead, so no value jumps.

The host is told through one event: :meth:`StageRun.on_transition` callbacks receive a
:class:`StageEvent` (``previous``, ``current`` names; ``current`` is ``None`` when the last stage
ended on a rule, and the run is done).

    >>> from cadence.clock import Clock
    >>> stages = [Stage("sft", budget=0.25, lr="cosine(peak=1e-3)"), Stage("rl", lr="constant(1e-5)")]
    >>> run = StageRun(stages, Clock(budget=100))
    >>> str(run.schedule("lr"))
    'join(cosine(peak=0.001), constant(level=1e-05), at=[0.25])'
    >>> run.current.name, run.boundaries()
    ('sft', [25.0])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

from cadence.clock import Clock, Duration
from cadence.errors import BudgetError, CadenceError, StateError
from cadence.schedules.base import Schedule, as_schedule
from cadence.schedules.combinators import Join

KIND = "cadence.StageRun"


@dataclass(frozen=True)
class Rule:
    """An early end for a stage, over one logged metric.

    ``kind="above"``/``"below"``: the metric beyond ``threshold`` for ``times`` evaluations in a row.
    ``kind="plateau"``: after at least ``window + 1`` evaluations, the best of the last ``window``
    does not improve on the best before them by more than ``delta`` (``mode="max"``: higher is
    better; ``"min"``: lower is better).

        >>> rule = Rule("reward", "above", threshold=0.8, times=2)
        >>> [rule.met(h) for h in ([0.9], [0.7, 0.9], [0.9, 0.85])]
        [False, False, True]
        >>> Rule("reward", "plateau", delta=0.01, window=2).met([0.1, 0.5, 0.505, 0.49])
        True
    """

    metric: str
    kind: Literal["above", "below", "plateau"]
    threshold: float | None = None
    times: int = 1
    delta: float = 0.0
    window: int = 5
    mode: Literal["max", "min"] = "max"

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise CadenceError(f"metric must be a metric name, got {self.metric!r}")
        if self.kind not in ("above", "below", "plateau"):
            raise CadenceError(f"kind must be above, below or plateau, got {self.kind!r}")
        if self.kind != "plateau" and not _finite(self.threshold):
            raise CadenceError(f"threshold must be a finite number, got {self.threshold!r}")
        for name, v in (("times", self.times), ("window", self.window)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CadenceError(f"{name} must be a positive integer, got {v!r}")
        if not _finite(self.delta) or self.delta < 0:
            raise CadenceError(f"delta must be a finite number ≥ 0, got {self.delta!r}")
        if self.mode not in ("max", "min"):
            raise CadenceError(f"mode must be max or min, got {self.mode!r}")

    @property
    def memory(self) -> int:
        """How many recent evaluations the rule reads (older ones are folded into ``best``)."""
        return self.times if self.kind != "plateau" else self.window + 1

    def met(self, history: Sequence[float], best_before: float | None = None) -> bool:
        """Whether the rule holds after ``history`` (oldest first); ``best_before`` is the best value
        of evaluations older than ``history`` (plateau only)."""
        if self.kind == "above":
            return len(history) >= self.times and all(v > self.threshold for v in history[-self.times:])
        if self.kind == "below":
            return len(history) >= self.times and all(v < self.threshold for v in history[-self.times:])
        sign = 1.0 if self.mode == "max" else -1.0
        older = [sign * v for v in history[:-self.window]] + ([sign * best_before] if best_before is not None else [])
        if not older or len(history) < self.window:
            return False
        return max(sign * v for v in history[-self.window:]) - max(older) <= self.delta


@dataclass(frozen=True)
class Stage:
    """One stage: a name, a budget (a fraction of the run or an amount in the budget's unit; ``None``:
    what the other stages leave), an ``objective`` tag the host reads (``sft``, ``grpo``, ...), its own
    ``lr``, param-group ``fields`` and ``knobs`` (schedules on the stage's progress), and ``rules``."""

    name: str
    budget: Duration | None = None
    objective: str | None = None
    lr: Schedule | None = None
    fields: Mapping[str, Schedule] = field(default_factory=dict)
    knobs: Mapping[str, Schedule] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget", None if self.budget is None else Duration.parse(self.budget))
        object.__setattr__(self, "lr", None if self.lr is None else as_schedule(self.lr))
        object.__setattr__(self, "fields", {k: as_schedule(v) for k, v in self.fields.items()})
        object.__setattr__(self, "knobs", {k: as_schedule(v) for k, v in self.knobs.items()})
        object.__setattr__(self, "rules", tuple(self.rules))

    def schedules(self) -> dict[str, Schedule]:
        """Its optimizer schedules: ``lr`` and the other fields."""
        return ({"lr": self.lr} if self.lr is not None else {}) | dict(self.fields)


@dataclass(frozen=True)
class StageEvent:
    """A transition: the stage that ended, the one that starts (``None``: the run is done), where and why."""

    previous: str
    current: str | None
    index: int
    position: float
    reason: str


def plan_fractions(stages: Sequence[Stage], unit: str, total: float | None) -> list[float]:
    """Each stage's planned length as a fraction of the run, checked to fill it exactly.

        >>> plan_fractions([Stage("a", budget="300 steps"), Stage("b")], "steps", 1000)
        [0.3, 0.7]

    Raises:
        BudgetError: for an open-ended run, an amount in another unit, stages that exceed the run or
            leave part of it unassigned, or more than one stage without a budget.
    """
    if total is None:
        raise BudgetError("stages share the run's budget; give the regimen a budget")
    shares: list[float | None] = []
    for i, s in enumerate(stages):
        if s.budget is None:
            shares.append(None)
        elif s.budget.is_fraction:
            shares.append(s.budget.fraction)
        elif s.budget.unit == unit:
            shares.append(s.budget.amount / total)
        else:
            raise BudgetError(f"stages[{i}].budget: '{s.budget}' is in {s.budget.unit}, the run's budget in {unit}; "
                              f"give a fraction or an amount in {unit}")
    open_ = [i for i, v in enumerate(shares) if v is None]
    given = math.fsum(v for v in shares if v is not None)
    if len(open_) > 1:
        raise BudgetError(f"stages {open_} have no budget; at most one stage takes what the others leave")
    if given > 1 + 1e-9:
        raise BudgetError(f"the stages' budgets add up to {given:.4g} of the run, more than its budget")
    if open_:
        shares[open_[0]] = 1.0 - given
    elif given < 1 - 1e-9:
        raise BudgetError(f"the stages' budgets add up to {given:.4g} of the run; give the last stage no budget "
                          f"to take the rest, or make them add up to the run")
    if any(v <= 0 for v in shares):
        raise BudgetError("every stage needs a positive share of the run")
    return [float(v) for v in shares]


class StageRun:
    """Where a run stands among its stages: the current stage, the ends of those that ended on a rule,
    the rules' recent evaluations. Its :meth:`schedule` joins are pure functions of the clock and this
    state, so a resumed run sees the same values.

    Args:
        stages: the ordered stages; a stage without ``lr`` (or a field, or a knob another stage has)
            runs ``defaults[name]`` on its own progress.
        clock: the run's clock (with a budget).
        defaults: ``{name: schedule}`` for stages that leave a schedule out.
    """

    def __init__(self, stages: Sequence[Stage], clock: Clock, defaults: Mapping[str, Schedule] | None = None) -> None:
        if not stages:
            raise CadenceError("a StageRun needs at least one stage")
        names = [s.name for s in stages]
        if len(set(names)) < len(names):
            raise CadenceError(f"stage names must differ, got {names}")
        self.stages, self.clock = list(stages), clock
        self.defaults = {k: as_schedule(v) for k, v in (defaults or {}).items()}
        self.shares = plan_fractions(self.stages, clock.unit, clock.schedule_total)
        self.planned = [math.fsum(self.shares[: i + 1]) for i in range(len(stages) - 1)]  # planned ends
        self.index = 0
        self.ended: dict[int, float] = {}  # stage index → position where a rule ended it
        self.finished = False
        self._history: list[float] = []
        self._best: float | None = None
        self._seen: set[str] = set()  # metric names logged during the current stage
        self._callbacks: list[Callable[[StageEvent], None]] = []
        self._listeners: list[Callable[[], None]] = []  # the link rebinding its joins
        for name in self.names():
            missing = [s.name for s in self.stages if self._piece(s, name) is None]
            if missing:
                raise CadenceError(f"{name!r} is scheduled in some stages but not in {missing}, and has no "
                                   f"regimen-wide schedule to run there")

    # ------------------------------------------------------------------ reading
    @property
    def current(self) -> Stage:
        return self.stages[self.index]

    def names(self) -> list[str]:
        """Every schedule name some stage (or a default) gives: ``lr``, fields, knobs."""
        found = dict.fromkeys(self.defaults)
        for s in self.stages:
            found.update(dict.fromkeys(s.schedules()))
            found.update(dict.fromkeys(s.knobs))
        return list(found)

    def _piece(self, stage: Stage, name: str) -> Schedule | None:
        return stage.schedules().get(name, stage.knobs.get(name, self.defaults.get(name)))

    def ends(self) -> list[Duration]:
        """The end of every stage but the last, as the join's boundaries: a position for a stage a
        rule ended, else a fraction of the run re-derived from the latest rule end before it."""
        out: list[Duration] = []
        anchor: tuple[float, float] | None = None  # (planned end, actual end as a fraction) of the latest rule end
        total = self.clock.schedule_total
        for i, planned in enumerate(self.planned):
            if i in self.ended:
                out.append(Duration(self.ended[i], self.clock.unit))
                anchor = (planned, self.ended[i] / total)
            elif anchor is None:
                out.append(Duration(planned, "fraction"))
            else:
                (f0, e) = anchor
                out.append(Duration(min(1.0, e + (planned - f0) * (1 - e) / (1 - f0)), "fraction"))
        return out

    def boundaries(self) -> list[float]:
        """The stages' ends as clock positions."""
        axis = self.clock.axis
        return [axis.length(d) for d in self.ends()]

    def schedule(self, name: str) -> Schedule:
        """The schedule ``name`` of the whole run: each stage's piece on its own progress, joined."""
        pieces = [self._piece(s, name) for s in self.stages]
        if len(pieces) == 1:
            return pieces[0]
        return Join(pieces=tuple(pieces), at=tuple(self.ends()))

    # ------------------------------------------------------------------ events
    def on_transition(self, callback: Callable[[StageEvent], None]) -> None:
        """Call ``callback(event)`` at every stage transition (the host's one stage event)."""
        self._callbacks.append(callback)

    def listen(self, rebind: Callable[[], None]) -> None:
        """Call ``rebind()`` whenever the joins change (a rule ended a stage, or state was loaded)."""
        self._listeners.append(rebind)

    def update(self) -> list[StageEvent]:
        """After a clock advance: end every stage whose (re-derived) budget is used up."""
        events = []
        position = self.clock.position
        ends = self.boundaries()
        while not self.finished and self.index < len(ends) and position >= ends[self.index]:
            self._check_logged()
            events.append(self._advance(ends[self.index], "budget"))
        if self.clock.done and not self.finished:
            self._check_logged()
        return events

    def _check_logged(self) -> None:
        """A stage whose rules never saw their metric is a misnamed metric, not a rule that never held."""
        missing = sorted({r.metric for r in self.current.rules} - self._seen)
        if missing:
            raise CadenceError(f"stage {self.current.name!r} ran its whole budget, but its rule's metric "
                               f"{missing[0]!r} was never logged (logged: {sorted(self._seen) or 'nothing'}); "
                               f"fix the metric name, or log it (link.log(metrics))")

    def log(self, metrics: Mapping[str, Any]) -> list[StageEvent]:
        """Feed one evaluation's metrics to the current stage's rules; a rule that holds ends the stage
        at the clock's position. Metrics the rules do not name are ignored; non-finite values raise."""
        rules = self.current.rules
        if self.finished or not rules:
            return []
        self._seen.update(k for k in metrics if isinstance(k, str))
        names = {r.metric for r in rules}
        if not names & set(metrics):
            return []
        if len(names) > 1:
            raise CadenceError(f"stage {self.current.name!r}: all rules of a stage read one metric, got {sorted(names)}")
        (name,) = names
        value = metrics[name]
        value = float(value.item() if hasattr(value, "item") else value)
        if not math.isfinite(value):
            raise CadenceError(f"stage {self.current.name!r}: metric {name!r} is {value}; rules need finite values")
        self._history.append(value)
        keep = max(r.memory for r in rules)
        if len(self._history) > keep:
            folded, self._history = self._history[:-keep], self._history[-keep:]
            sign = 1.0 if rules[0].mode == "max" else -1.0
            self._best = max([sign * v for v in folded] + ([sign * self._best] if self._best is not None else [])) * sign
        met = [r for r in rules if r.met(self._history, self._best)]
        if not met:
            return []
        return [self._advance(self.clock.position, f"{met[0].kind} on {name}")]

    def _advance(self, position: float, reason: str) -> StageEvent:
        previous = self.current.name
        last = self.index == len(self.stages) - 1
        if reason != "budget" and not last:
            self.ended[self.index] = float(position)
        if last:
            self.finished = True
        else:
            self.index += 1
        self._history, self._best, self._seen = [], None, set()
        event = StageEvent(previous, None if last else self.current.name, self.index, float(position), reason)
        if reason != "budget":
            for rebind in self._listeners:
                rebind()
        for callback in self._callbacks:
            callback(event)
        return event

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "stages": [s.name for s in self.stages], "index": self.index,
                "ended": [[i, p] for i, p in sorted(self.ended.items())], "finished": self.finished,
                "history": list(self._history), "best": self._best, "seen": sorted(self._seen)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or state.get("kind") != KIND:
            raise StateError(f"not a cadence StageRun state_dict (missing kind={KIND!r})")
        if list(state.get("stages", [])) != [s.name for s in self.stages]:
            raise StateError(f"the state_dict is for stages {state.get('stages')}, this run has "
                             f"{[s.name for s in self.stages]}")
        try:
            index, finished = int(state["index"]), bool(state["finished"])
            ended = {int(i): float(p) for i, p in state["ended"]}
            history = [float(v) for v in state["history"]]
            best = None if state["best"] is None else float(state["best"])
            seen = {str(k) for k in state["seen"]}
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed StageRun state_dict: {e!r}") from e
        if not 0 <= index < len(self.stages):
            raise StateError(f"stage index {index} outside the {len(self.stages)} stages")
        self.index, self.finished, self.ended, self._history, self._best = index, finished, ended, history, best
        self._seen = seen
        for rebind in self._listeners:
            rebind()


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
