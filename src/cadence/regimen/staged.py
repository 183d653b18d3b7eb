"""One data stream whose curriculum changes with the stage: :class:`StageSampler`.

A host builds its data loader once, over one sampler. When the stages of a regimen draw their data
from different curricula, that one sampler is a :class:`StageSampler`: it holds one
:class:`~cadence.curricula.CurriculumSampler` per stage (stages that give no curriculum of their own
share the regimen-wide one, whose stream then simply continues) and hands out each id from the
sampler of the stage that id trains in. Its ``policy`` is the current stage's, so feedback
(``link.observe``) reaches the policy that drew the step's ids.

Which stage an id trains in:

* ``ids_per_step=None`` (a plain loop): the stage that is current when the id is drawn. Exact when
  a step's ids are drawn after the previous step moved the clock (``link.step()``), which is how a
  plain loop draws; stages that end on a rule switch at the next draw.
* ``ids_per_step=k`` (hosts whose data loaders draw ahead: HF Trainer, Lightning): the id at
  position ``n`` of this process's stream trains in step ``n // k``, in the stage whose planned span
  holds that step. Exact however far ahead the loader draws, for stages that end on their budget;
  the adapters refuse a stage that ends on a rule and is followed by another curriculum, since the
  loader has drawn past the rule's step before the rule is met.

The state is every stage sampler's state (policy and RNG included) and the number of ids drawn.

    >>> from cadence.clock import Clock
    >>> from cadence.curricula import Arms, CurriculumSampler, FixedMixture
    >>> from cadence.regimen.stages import Stage, StageRun
    >>> arms = Arms(["a", "a", "b", "b"])
    >>> first, second = (CurriculumSampler(FixedMixture(arms, w), batch_size=2) for w in ([1, 0], [0, 1]))
    >>> run = StageRun([Stage("one", budget=0.5), Stage("two")], Clock(budget=4))
    >>> stream = iter(StageSampler([first, second], run, ids_per_step=2))
    >>> [arms.names[arms.item_arm[next(stream)]] for _ in range(8)]
    ['a', 'a', 'a', 'a', 'b', 'b', 'b', 'b']
"""

from __future__ import annotations

import bisect
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from torch.utils.data import Sampler

from cadence.clock import Axis, Clock, Duration
from cadence.errors import CadenceError, StateError
from cadence.progressive.base import Plan
from cadence.progressive.sizes import BatchSizeSchedule, ScheduledBatchSampler, position_at_step
from cadence.regimen.link import PlanSet
from cadence.regimen.stages import StageRun

KIND = "cadence.StageSampler"


class StageSampler(Sampler[int]):
    """Each id from the sampler of the stage it trains in (see the module docs).

    Args:
        samplers: one curriculum sampler per stage, in stage order; one object may serve several
            stages (it continues its stream). All share ``batch_size``, ``replacement`` and ``num_replicas``.
        stages: the run's :class:`~cadence.regimen.stages.StageRun`.
        ids_per_step: ids of this process's stream per optimizer step, for hosts that draw ahead
            (needs a budget in steps); ``None``: the stage current at each draw.
    """

    def __init__(self, samplers: Sequence[Any], stages: StageRun, *, ids_per_step: int | None = None) -> None:
        if len(samplers) != len(stages.stages):
            raise CadenceError(f"give one sampler per stage: {len(samplers)} samplers for {len(stages.stages)} stages")
        parts: list[Any] = []
        for s in samplers:
            if all(s is not p for p in parts):
                parts.append(s)
        first = parts[0]
        for i, s in enumerate(samplers):
            for name in ("batch_size", "replacement", "num_replicas", "rank"):
                if getattr(s, name) != getattr(first, name):
                    raise CadenceError(f"stages[{i}].curriculum: {name} is {getattr(s, name)!r}, stage 0's is "
                                       f"{getattr(first, name)!r}; one data loader draws every stage's batches, so "
                                       f"the stages' curricula share it")
        if ids_per_step is not None:
            if isinstance(ids_per_step, bool) or not isinstance(ids_per_step, int) or ids_per_step < 1:
                raise CadenceError(f"ids_per_step must be a positive integer, got {ids_per_step!r}")
            if stages.clock.unit != "steps":
                raise CadenceError(f"a data loader that draws ahead learns a stage's span in steps; this run's budget "
                                   f"is in {stages.clock.unit}")
        self.parts, self.stages, self.ids_per_step = parts, stages, ids_per_step
        self.part_of = [next(j for j, p in enumerate(parts) if p is s) for s in samplers]  # stage → part
        self.batch_size, self.replacement = first.batch_size, first.replacement
        self.num_replicas, self.rank, self.local_batch_size = first.num_replicas, first.rank, first.local_batch_size
        self.drawn = 0  # ids this process's stream has handed out (position mode: the step they train in)
        self._last = 0  # the part that drew the latest ids
        self._iters: dict[int, Iterator[int]] = {}

    # ------------------------------------------------------------------ which stage
    def stage_of_next(self, count: int = 1) -> int:
        """The stage the next ``count`` ids train in (they must all train in one)."""
        if self.ids_per_step is None:
            return self.stages.index
        step = self.drawn // self.ids_per_step
        last = (self.drawn + max(count, 1) - 1) // self.ids_per_step
        ends = self.stages.boundaries()
        stage = bisect.bisect_right(ends, step)
        if bisect.bisect_right(ends, last) != stage:
            raise CadenceError(f"a draw of {count} ids crosses the end of stage {stage}; draw each step's ids "
                               f"separately")
        return max(stage, self.stages.index)

    @property
    def sampler(self) -> Any:
        """The current stage's sampler."""
        return self.parts[self.part_of[self.stages.index]]

    @property
    def policy(self) -> Any:
        """The current stage's curriculum policy (it receives the step's feedback)."""
        return self.sampler.policy

    # ------------------------------------------------------------------ drawing
    def __iter__(self) -> Iterator[int]:
        self._iters = {}  # a fresh iter() of a part continues its stream (its position is in its state)
        while True:
            j = self.part_of[self.stage_of_next()]
            if j not in self._iters:
                self._iters[j] = iter(self.parts[j])
            try:
                item = next(self._iters[j])
            except StopIteration:
                return
            self.drawn += 1
            self._last = j
            yield item

    def __len__(self) -> int:
        return len(self.parts[0])

    def next_batch(self, size: int | None = None) -> np.ndarray:
        """The next global batch (``size`` ids), from the sampler of the stage it trains in."""
        n = self.batch_size if size is None else size
        j = self.part_of[self.stage_of_next(n // self.num_replicas)]
        ids = self.parts[j].next_batch(size)
        self.drawn += n // self.num_replicas
        self._last = j
        return ids

    def local(self, global_batch: np.ndarray) -> np.ndarray:
        return self.parts[0].local(global_batch)

    def observe(self, item_ids: Any, **signals: Any) -> None:
        """Feedback for the current stage's policy."""
        self.sampler.observe(item_ids, **signals)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "parts": [p.state_dict() for p in self.parts], "drawn": self.drawn, "last": self._last}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Every stage sampler's state, or none (a mismatch raises, changing nothing)."""
        if not isinstance(state, Mapping) or state.get("kind") != KIND:
            raise StateError(f"not a cadence StageSampler state_dict (missing kind={KIND!r})")
        parts, drawn, last = state.get("parts"), state.get("drawn"), state.get("last")
        if not isinstance(parts, list) or len(parts) != len(self.parts):
            raise StateError(f"the state_dict holds {len(parts) if isinstance(parts, list) else 'no'} stage samplers, "
                             f"this one has {len(self.parts)}")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (drawn, last)) \
                or last >= len(self.parts):
            raise StateError(f"malformed StageSampler state: drawn={drawn!r}, last={last!r}")
        backup = [p.state_dict() for p in self.parts]
        try:
            for p, s in zip(self.parts, parts):
                p.load_state_dict(s)
        except Exception:
            for p, s in zip(self.parts, backup):
                p.load_state_dict(s)
            raise
        self.drawn, self._last, self._iters = drawn, last, {}

    def unyield_state(self, state: Mapping[str, Any], ids: Any) -> dict[str, Any] | None:
        """``state`` with ``ids``, the latest ids handed out (a loader prefetched them), counted as not yet
        drawn; ``None`` when they cannot be put back (see ``CurriculumSampler.unyield_state``)."""
        ids = list(ids)
        last = int(state["last"])
        if self.ids_per_step is None and ids:
            return None  # the stage of a put-back id would be decided anew by the clock
        folded = self.parts[last].unyield_state(state["parts"][last], ids)
        if folded is None:
            return None
        parts = list(state["parts"])
        parts[last] = folded
        return {**state, "parts": parts, "drawn": int(state["drawn"]) - len(ids)}


class StageRL:
    """A plain loop's RL pieces per stage: :meth:`current` is the current stage's ``{name: piece}``
    (a stage without an ``rl`` section of its own shares the top-level pieces, which keep their state).
    :meth:`clock` is the clock the current pieces' schedules (a length budget's) run on: the stage's own
    progress (a :class:`StageClock`) for a stage's own pieces (``own``), the run's for shared ones.
    Built by ``Regimen.stage_rl``; the link checkpoints it (role ``"rl"``).

        >>> from cadence.clock import Clock
        >>> from cadence.regimen.stages import Stage, StageRun
        >>> from cadence.rl import DynamicSampling
        >>> run = StageRun([Stage("easy", budget=0.5), Stage("hard")], Clock(budget=4))
        >>> rl = StageRL([{}, {"dynamic": DynamicSampling()}], run)
        >>> list(rl.current()), run.clock.advance(), run.clock.advance(), run.update()[0].current, list(rl.current())
        ([], None, None, 'hard', ['dynamic'])
    """

    def __init__(self, pieces: Sequence[Mapping[str, Any]], stages: StageRun | None,
                 own: Sequence[bool] | None = None) -> None:
        if len(pieces) != (len(stages.stages) if stages is not None else 1):
            raise CadenceError("give one set of RL pieces per stage")
        self.own = [False] * len(pieces) if own is None else [bool(o) for o in own]
        if len(self.own) != len(pieces) or (stages is None and any(self.own)):
            raise CadenceError("own: one flag per stage (a stage's own pieces), and stages to run them on")
        self._clocks = {i: StageClock(stages, i) for i, o in enumerate(self.own) if o}
        parts: list[Mapping[str, Any]] = []
        for p in pieces:
            if all(p is not q for q in parts):
                parts.append(p)
        self.parts, self.stages = parts, stages
        self.part_of = [next(j for j, q in enumerate(parts) if q is p) for p in pieces]

    def current(self) -> dict[str, Any]:
        """The current stage's pieces by name."""
        return dict(self.parts[self.part_of[self.stages.index if self.stages is not None else 0]])

    def clock(self) -> Any:
        """The clock to read the current pieces' schedules on (``LengthBudget(rl.clock())``): the current
        stage's :class:`StageClock` when they are its own, else the run's clock."""
        if self.stages is None:
            raise CadenceError("RL pieces without stages have no clock of their own; read them on the run's clock")
        return self._clocks.get(self.stages.index, self.stages.clock)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "cadence.StageRL", "parts": [{name: piece.state_dict() for name, piece in part.items()
                                                       if hasattr(piece, "state_dict")} for part in self.parts]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Every stateful piece's state, or none (a mismatch raises, changing nothing)."""
        mine = self.state_dict()["parts"]
        if not isinstance(state, Mapping) or state.get("kind") != "cadence.StageRL" \
                or not isinstance(state.get("parts"), list) \
                or [sorted(p) for p in state["parts"] if isinstance(p, Mapping)] != [sorted(p) for p in mine]:
            raise StateError(f"not the state of these RL pieces per stage: {[sorted(p) for p in mine]}")
        done: list[tuple[Any, Any]] = []
        try:
            for part, saved, backup in zip(self.parts, state["parts"], mine):
                for name, s in saved.items():
                    part[name].load_state_dict(s)
                    done.append((part[name], backup[name]))
        except Exception:
            for piece, backup in done:
                piece.load_state_dict(backup)
            raise


class StageAveraging:
    """Weight averaging per stage: each stage's averager (``None``: none in that stage) is updated until its
    stage ends and then kept; before its stage it has not started (it tracks the parameters). :meth:`averaged`
    is the current stage's average (the last averaging stage's once a stage without one runs).
    Built by ``Regimen.build_averaging(model, clock, link.stages)``; call :meth:`update` after each step.

        >>> import torch
        >>> from cadence.averaging import EMA
        >>> from cadence.clock import Clock
        >>> from cadence.regimen.stages import Stage, StageRun
        >>> clock, model = Clock(budget=4), torch.nn.Linear(1, 1, bias=False)
        >>> run = StageRun([Stage("train", budget=0.5), Stage("anneal")], clock)
        >>> averaging = StageAveraging([None, EMA(model, clock, half_life="1 steps", start="2 steps")], run)
        >>> for step in range(4):
        ...     with torch.no_grad():
        ...         _ = model.weight.fill_(float(step + 1))
        ...     clock.advance(); _ = run.update(); averaging.update()
        >>> averaging.averaged()["weight"].item()     # weights 1, 2 | 3, 4: halved toward each from the anneal's start
        3.125
    """

    def __init__(self, averagers: Sequence[Any], stages: StageRun) -> None:
        if len(averagers) != len(stages.stages):
            raise CadenceError("give one averager (or None) per stage")
        if all(a is None for a in averagers):
            raise CadenceError("no stage has an averager")
        self.averagers, self.stages = list(averagers), stages
        self._unique = [a for i, a in enumerate(self.averagers) if a is not None and
                        all(a is not b for b in self.averagers[:i])]

    def update(self) -> None:
        """Fold the parameters into the averagers of the current stage and the stages to come."""
        for a in self._unique:
            if any(a is b for b in self.averagers[self.stages.index:]):
                a.update()

    def current(self) -> Any:
        """The averager whose average :meth:`averaged` gives."""
        found = [a for a in self.averagers[: self.stages.index + 1] if a is not None]
        return found[-1] if found else next(a for a in self.averagers if a is not None)

    def averaged(self) -> dict[str, Any]:
        return self.current().averaged()

    def copy_to(self, model: Any) -> None:
        self.current().copy_to(model)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "cadence.StageAveraging", "averagers": [a.state_dict() for a in self._unique]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Every averager's state, or none (a mismatch raises, changing nothing)."""
        saved = state.get("averagers") if isinstance(state, Mapping) else None
        if not isinstance(state, Mapping) or state.get("kind") != "cadence.StageAveraging" \
                or not isinstance(saved, list) or len(saved) != len(self._unique):
            raise StateError(f"not the state of these {len(self._unique)} stage averagers")
        backup = [a.state_dict() for a in self._unique]
        try:
            for a, s in zip(self._unique, saved):
                a.load_state_dict(s)
        except Exception:
            for a, s in zip(self._unique, backup):
                a.load_state_dict(s)
            raise


class StageSelector:
    """A prompt selector whose RL pieces are the current stage's: before each :meth:`select` the
    :class:`~cadence.rl.PromptSelector`'s parts (``predictive``, ``dynamic``, ``pcl``, ``replay``,
    ``hints``) become :meth:`StageRL.current`'s, so a host that draws through one selector (TRL)
    switches them at the transition exactly as a plain loop switches ``link.rl.current()``. The
    curriculum sampler (one, or a :class:`StageSampler`) is shared; the state is the sampler's, the
    selector's counters and every stage's pieces (:class:`StageRL`; pieces other than the selector's,
    such as a length budget, are the host's to read from ``rl.current()``).

        >>> from cadence.clock import Clock
        >>> from cadence.curricula import Arms, CurriculumSampler, Uniform
        >>> from cadence.regimen.stages import Stage, StageRun
        >>> from cadence.rl import DynamicSampling, PromptSelector
        >>> run = StageRun([Stage("plain", budget=0.5), Stage("dynamic")], Clock(budget=2))
        >>> sampler = CurriculumSampler(Uniform(Arms(["a"] * 4)), batch_size=2, num_replicas=1)
        >>> staged = StageSelector(PromptSelector(sampler), StageRL([{}, {"dynamic": DynamicSampling()}], run))
        >>> staged.current().dynamic is None, run.clock.advance(), run.update()[0].current
        (True, None, 'dynamic')
        >>> type(staged.current().dynamic).__name__
        'DynamicSampling'
    """

    kind = "cadence.StageSelector"

    def __init__(self, selector: Any, rl: StageRL) -> None:
        from cadence.rl.selector import PARTS

        self.selector, self.rl, self.parts = selector, rl, PARTS  # (other pieces, a length budget, are the host's)
        self.sampler = selector.sampler

    def current(self) -> Any:
        """The selector with the current stage's pieces in place."""
        pieces = self.rl.current()
        for name in self.parts:
            setattr(self.selector, name, pieces.get(name))
        return self.selector

    @property
    def policy(self) -> Any:
        return self.selector.policy

    def select(self, n: int, rollout: Any, hinted: Any = None) -> Any:
        return self.current().select(n, rollout, hinted=hinted)

    def values(self) -> dict[str, float]:
        return self.current().values()

    def every(self, name: str) -> list[Any]:
        """Every stage's piece ``name`` (each once), e.g. every replay buffer whose groups are kept."""
        return [part[name] for part in self.rl.parts if part.get(name) is not None]

    def state_dict(self) -> dict[str, Any]:
        s = self.selector
        return {"kind": self.kind, "sampler": s.sampler.state_dict(), "forced": s.forced, "repeated": s.repeated,
                "rl": self.rl.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """The sampler's, the counters and every stage's pieces, or none (a mismatch raises, changing nothing)."""
        if not isinstance(state, Mapping) or state.get("kind") != self.kind:
            raise StateError(f"not a cadence StageSelector state_dict (missing kind={self.kind!r})")
        s = self.selector
        backup = self.state_dict()
        try:
            s.sampler.load_state_dict(state["sampler"])
            self.rl.load_state_dict(state["rl"])
            s.forced, s.repeated = int(state["forced"]), int(state["repeated"])
        except (KeyError, TypeError, ValueError) as e:
            s.sampler.load_state_dict(backup["sampler"])
            self.rl.load_state_dict(backup["rl"])
            raise StateError(f"malformed StageSelector state_dict: {e!r}") from None
        except Exception:
            s.sampler.load_state_dict(backup["sampler"])
            self.rl.load_state_dict(backup["rl"])
            raise


class StageClock(Clock):
    """The run's clock seen from inside one stage, for the stage's own plans: position 0 at the stage's
    start (where it really started, also after a rule ended the stage before it), the stage's span as
    the budget, so a plan's fractions and schedules run on the stage's own progress. Counts, reports
    and budget-change checks are the run clock's; the view has no state of its own and never moves.

        >>> from cadence.regimen.stages import Stage, StageRun
        >>> run = StageRun([Stage("a", budget=0.25), Stage("b")], Clock(budget=100))
        >>> view = StageClock(run, 1)
        >>> run.clock.advance(40)
        >>> view.position, view.progress, str(view.budget)
        (15.0, 0.2, '75 steps')
    """

    def __init__(self, run: StageRun, index: int) -> None:  # no Clock.__init__: every count lives in run.clock
        if not 0 <= index < len(run.stages):
            raise CadenceError(f"no stage {index}: the run has {len(run.stages)}")
        self.run, self.index = run, index

    def _span(self) -> tuple[float, float]:
        ends = self.run.boundaries()
        start = ends[self.index - 1] if self.index else 0.0
        end = ends[self.index] if self.index < len(ends) else self.run.clock.schedule_total
        return start, end

    # what a plan reads
    unit = property(lambda self: self.run.clock.unit)
    counts = property(lambda self: self.run.clock.counts)
    _pending = property(lambda self: self.run.clock._pending)
    nominal_per_step = property(lambda self: self.run.clock.nominal_per_step)
    on_budget_change = property(lambda self: self.run.clock.on_budget_change)

    @property
    def schedule_total(self) -> float:  # type: ignore[override]
        start, end = self._span()
        return end - start

    @property
    def budget(self) -> Duration:  # type: ignore[override]
        return Duration(self.schedule_total, self.unit)

    @property
    def position(self) -> float:
        start, end = self._span()
        return min(max(self.run.clock.position - start, 0.0), end - start)

    @property
    def elapsed(self) -> float:
        return self.position

    @property
    def axis(self) -> Axis:
        return Axis(self.unit, self.schedule_total, self.run.clock._rates)

    def watch(self, schedules: Any) -> None:
        self.run.clock.watch(schedules)

    def unwatch(self, schedules: Any) -> None:
        self.run.clock.unwatch(schedules)

    def advance(self, *args: Any, **kwargs: Any) -> None:
        raise CadenceError("a stage's clock is a view of the run's clock; advance the run's clock")

    def set_budget(self, budget: Any) -> None:
        raise CadenceError("a stage's clock is a view of the run's clock; change the run's budget")

    def state_dict(self) -> dict[str, Any]:
        raise CadenceError("a stage's clock has no state of its own; save the run's clock")

    def load_state_dict(self, state: Any) -> None:
        raise CadenceError("a stage's clock has no state of its own; load the run's clock")

    def __repr__(self) -> str:
        name = self.run.stages[self.index].name
        return f"StageClock(stage={name!r}, position={self.position:g} of {self.schedule_total:g})"


class StagePlans(PlanSet):
    """Progressive plans per stage: each stage's own plans (built on its :class:`StageClock`, so they run
    on the stage's own progress) or the top-level ones (on the run's clock, shared by every stage that
    has none). :meth:`update` updates the current stage's plans; at a transition the previous stage's
    layer plans first release their layers. :attr:`plans` is the current stage's ``{name: plan}``.

        >>> import torch
        >>> from cadence.progressive import LayerFreezing
        >>> from cadence.regimen.stages import Stage, StageRun
        >>> run = StageRun([Stage("all", budget=0.5), Stage("top")], Clock(budget=4))
        >>> layers = [torch.nn.Linear(1, 1) for _ in range(2)]
        >>> late = "join(constant(level=0), constant(level=1), at=[50%])"    # from the middle of the stage
        >>> plans = StagePlans([{}, {"freeze": LayerFreezing(layers, clock=StageClock(run, 1), fraction=late)}], run)
        >>> frozen = []
        >>> for _ in range(4):
        ...     plans.update(); frozen.append(plans.values().get("freeze/frozen_layers"))
        ...     run.clock.advance(); _ = run.update()
        >>> frozen
        [None, None, 0.0, 1.0]
    """

    kind = "cadence.StagePlans"

    def __init__(self, plans: Sequence[Mapping[str, Plan]], stages: StageRun) -> None:
        if len(plans) != len(stages.stages):
            raise CadenceError("give one set of plans per stage")
        parts: list[PlanSet] = []
        self._by_id: dict[int, int] = {}
        self.part_of = []
        for i, p in enumerate(plans):
            if id(p) not in self._by_id:
                own = {name: plan for name, plan in p.items()}
                for name, plan in own.items():
                    clock = getattr(plan, "clock", None)
                    ok = clock is stages.clock or (isinstance(clock, StageClock) and clock.run is stages
                                                   and clock.index == i)
                    if not ok:
                        raise CadenceError(f"stage {i}'s plan {name!r} runs on another clock; build it on "
                                           f"StageClock(stages, {i}) (or on the run's clock, shared by every stage)")
                self._by_id[id(p)] = len(parts)
                parts.append(PlanSet(own, getattr(next(iter(own.values()), None), "clock", stages.clock)))
            self.part_of.append(self._by_id[id(p)])
        self.parts, self.stages = parts, stages
        self._last = self.part_of[stages.index]  # the part updated last (its layer plans hold the layers)

    @property
    def plans(self) -> dict[str, Plan]:  # type: ignore[override]
        """The current stage's plans by name."""
        return self.parts[self.part_of[self.stages.index]].plans

    @plans.setter
    def plans(self, value: Any) -> None:  # PlanSet.__init__ is not called; nothing to set
        raise CadenceError("StagePlans holds one PlanSet per stage")

    def __bool__(self) -> bool:
        return any(self.parts)

    def __iter__(self) -> Any:
        """Every plan of every stage (each once)."""
        return iter([plan for part in self.parts for plan in part.plans.values()])

    def update(self) -> None:
        """Release the previous stage's layer plans at a transition, then update the current stage's."""
        self.release_ended()
        self.parts[self.part_of[self.stages.index]].update()

    def release_ended(self) -> None:
        """At a transition, make the layers the ended stage's plans froze trainable again (plans the current
        stage shares keep theirs)."""
        now = self.part_of[self.stages.index]
        if now != self._last:
            current = {id(p) for p in self.parts[now].plans.values()}
            for plan in self.parts[self._last].plans.values():
                if id(plan) not in current and hasattr(plan, "release"):
                    plan.release()
            self._last = now

    def apply(self, batch: Any) -> Any:
        return self.parts[self.part_of[self.stages.index]].apply(batch)

    def batch_sizes(self, fixed: int | None = None) -> StageBatchSizes | None:
        """The stages' batch sizes (:class:`StageBatchSizes`; ``fixed`` in stages without a batch-size plan),
        or ``None`` when no stage has one. Draw with ``plans.batch_sizes(fixed).batch_sampler(len(dataset))``."""
        found = []
        for j in self.part_of:
            sized = [p for p in self.parts[j].plans.values() if isinstance(p, BatchSizeSchedule)]
            if len(sized) > 1:
                raise CadenceError("a stage has two batch-size plans; one sizes its batches")
            found.append(sized[0] if sized else None)
        return StageBatchSizes(found, self.stages, fixed=fixed) if any(found) else None

    def values(self) -> dict[str, float]:
        return self.parts[self.part_of[self.stages.index]].values()

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "parts": [part.state_dict() for part in self.parts], "last": self._last}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Every stage's plans, the part that was updated last loaded last (its layer plans set the layers);
        a mismatch raises (:class:`RegimenLink` puts every part back)."""
        parts = state.get("parts") if isinstance(state, Mapping) else None
        last = state.get("last") if isinstance(state, Mapping) else None
        if not isinstance(state, Mapping) or state.get("kind") != self.kind or not isinstance(parts, list) \
                or len(parts) != len(self.parts) or not isinstance(last, int) or not 0 <= last < len(self.parts):
            raise StateError(f"not the state of these plans per stage ({len(self.parts)} sets)")
        order = [j for j in range(len(self.parts)) if j != last] + [last]
        for j in order:
            self.parts[j].load_state_dict(parts[j])
        self._last = last


class StageBatchSizes:
    """One batch size per step for a run whose stages size their batches differently: the size of step
    ``t`` is the plan of the stage ``t`` trains in (its own :class:`~cadence.progressive.BatchSizeSchedule`
    on its :class:`StageClock`, so it runs on the stage's progress), or ``fixed`` in a stage without one.
    It stands in for the plan of a :class:`~cadence.progressive.ScheduledBatchSampler` (:meth:`batch_sampler`):
    one sampler, one stream of rows for the whole run. The stage of a step ahead of the clock is read from
    the planned ends (:meth:`StageRun.boundaries`): exact for stages that end on their budget; a stage
    that ends on a rule is exact only when each batch is drawn in the step it trains in (a plain loop).
    It has no state of its own (the plans' and the clock's are saved).

        >>> from cadence.progressive import BatchSizeSchedule
        >>> from cadence.regimen.stages import Stage, StageRun
        >>> run = StageRun([Stage("a", budget=0.5), Stage("b")], Clock(budget=4))
        >>> ramp = BatchSizeSchedule(clock=StageClock(run, 1), batch_size="ramp(start=2, end=6)")
        >>> sizes = StageBatchSizes([None, ramp], run, fixed=3)
        >>> [sizes.size_at_step(t) for t in range(4)]
        [3, 3, 2, 4]
    """

    def __init__(self, plans: Sequence[Any], stages: StageRun, *, fixed: int | None = None) -> None:
        if len(plans) != len(stages.stages):
            raise CadenceError("give one batch-size plan (or None) per stage")
        for i, plan in enumerate(plans):
            clock = None if plan is None else plan.clock
            if plan is not None and clock is not stages.clock and not (
                    isinstance(clock, StageClock) and clock.run is stages and clock.index == i):
                raise CadenceError(f"stage {i}'s batch-size plan runs on another clock; build it on "
                                   f"StageClock(stages, {i}) (or on the run's clock)")
            if plan is None and (isinstance(fixed, bool) or not isinstance(fixed, int) or fixed < 1):
                raise CadenceError(f"stage {i} has no batch-size plan: give the fixed batch size of such stages "
                                   f"(a positive integer), got {fixed!r}")
        counts = {p.batches_per_step for p in plans if p is not None}
        if len(counts) > 1:
            raise CadenceError(f"the stages' batch-size plans have different batches_per_step {sorted(counts)}; "
                               f"one batch sampler draws every stage's batches, so they must be equal")
        self.plans, self.stages, self.fixed = list(plans), stages, fixed
        self.batches_per_step = counts.pop() if counts else 1
        self.clock = stages.clock

    def stage_at_step(self, step: int) -> int:
        """The stage step ``step`` trains in: the current one at the clock's step, else by the planned ends."""
        if step == self.clock.steps:
            return self.stages.index
        position = position_at_step(self.clock, step)
        return min(bisect.bisect_right(self.stages.boundaries(), position), len(self.stages.stages) - 1)

    def size_at_step(self, step: int) -> int:
        """The batch size of optimizer step ``step`` (see the class docs)."""
        i = self.stage_at_step(step)
        plan = self.plans[i]
        if plan is None:
            return int(self.fixed)  # type: ignore[arg-type]
        if not isinstance(plan.clock, StageClock):
            return plan.size_at_step(step)  # the top-level plan, on the run's clock
        if step == self.clock.steps:
            return plan.current()
        ends = self.stages.boundaries()
        start = ends[i - 1] if i else 0.0
        local = min(max(position_at_step(self.clock, step) - start, 0.0), plan.clock.schedule_total)
        return plan.scaling.batch_size(local, plan.clock.axis)

    def batch_sampler(self, data: Any, **options: Any) -> Any:
        """One endless :class:`~cadence.progressive.ScheduledBatchSampler` for the whole run, sized by stage."""
        return ScheduledBatchSampler(self, data, **options)  # type: ignore[arg-type]
