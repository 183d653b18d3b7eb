"""The framework-free part every adapter shares: one clock, its schedules, a curriculum, one state.

A :class:`RegimenLink` bundles what a host trainer needs from cadence:

* the :class:`~cadence.Clock` and, if given, the :class:`~cadence.optim.ScheduledLR` that drives
  the optimizer (the link advances the clock itself when there is no scheduler);
* named *knobs*: schedules read by other code (a response-length budget, a KL coefficient, ...);
* an optional curriculum policy and its sampler, fed per-item signals through :meth:`observe`
  (gathered across ranks first, so every rank's policy stays identical);
* progressive *plans* (``cadence.progressive``) on the same clock, updated by :meth:`begin_step`
  before each forward pass;
* optional *stages* (:class:`~cadence.regimen.stages.StageRun`): the scheduled fields and knobs
  follow the stages' joins, :meth:`after_step` and :meth:`log` end stages, on budget or on a rule;
* :meth:`values` for loggers and one :meth:`state_dict` for checkpoints.

    >>> link = RegimenLink(knobs={"max_len": "ramp(start=64, end=256)"}, clock=Clock(budget=100))
    >>> link.step(); link.values()["cadence/max_len"]
    65.92
"""

from __future__ import annotations

import copy
import re
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from cadence.clock import Clock
from cadence.errors import CadenceError, StateError
from cadence.optim import ScheduledLR
from cadence.progressive.base import Plan
from cadence.regimen.stages import StageEvent, StageRun
from cadence.schedules.base import Schedule, as_schedule

KIND = "cadence.RegimenLink"
Plans = Mapping[str, Plan] | Sequence[Plan]  # named plans, or plans named after their classes


class RegimenLink:
    """One clock, an optional LR scheduler, named knob schedules and an optional curriculum.

    Args:
        scheduler: a :class:`~cadence.optim.ScheduledLR`; its clock becomes the link's clock.
        clock: the run's clock when there is no scheduler (default: an open-ended step clock).
        knobs: ``{name: schedule | spec}`` for values other code reads with :meth:`knob`.
        policy: a curriculum policy (``cadence.curricula``) that receives :meth:`observe` feedback.
        sampler: the curriculum's sampler, checkpointed with the link.
        tracker: the :class:`~cadence.integrations.tracking.TrackedSampler` wrapping ``sampler``
            in the host's DataLoader, checkpointed with the link (its pending ids).
        plans: progressive plans on the link's clock, as ``{name: plan}`` or a sequence (named after
            their classes: ``LayerFreezing`` → ``layer_freezing``); see :meth:`begin_step`. Or a
            :class:`~cadence.regimen.staged.StagePlans` (plans per stage, each on its stage's progress).
        prefix: prefix of the keys :meth:`values` returns.
        stages: a :class:`~cadence.regimen.stages.StageRun` on the link's clock; the scheduler's fields
            and the knobs it names are replaced by its joins (again whenever a rule ends a stage).
        owns_scheduler: if true, :meth:`step` steps the scheduler (a plain loop); else the host does.
        rl: a :class:`~cadence.regimen.staged.StageRL`: the RL pieces a plain loop runs, per stage
            (``link.rl.current()``), checkpointed with the link.

    With a :class:`~cadence.regimen.staged.StageSampler` (stages with curricula of their own),
    :attr:`policy` is the current stage's: feed a step's signals before the step that may end its stage.
    """

    def __init__(
        self,
        *,
        scheduler: ScheduledLR | None = None,
        clock: Clock | None = None,
        knobs: Mapping[str, Schedule | str | float | dict] | None = None,
        policy: Any = None,
        sampler: Any = None,
        tracker: Any = None,
        plans: Plans | None = None,
        prefix: str = "cadence/",
        stages: StageRun | None = None,
        owns_scheduler: bool = False,
        rl: Any = None,
    ) -> None:
        if scheduler is not None and clock is not None and scheduler.clock is not clock:
            raise CadenceError("the scheduler runs on another clock; pass one clock to both, or leave clock out")
        self.scheduler = scheduler
        self.clock = scheduler.clock if scheduler is not None else (clock if clock is not None else Clock())
        self.knobs = {name: as_schedule(s) for name, s in (knobs or {}).items()}
        self.clock.check(self.knobs.values())
        self.clock.watch(self.knobs.values())
        self._policy = policy
        self.sampler = sampler
        self.rl = rl
        self.averaging: Any = None  # a trainer adapter's averager, handed on with after=link (it checkpoints it)
        self.tracker = tracker
        self.plans = plans if isinstance(plans, PlanSet) else PlanSet(plans or {}, self.clock)
        self.prefix = prefix
        self.owns_scheduler = owns_scheduler and scheduler is not None
        self.stages = stages
        if stages is not None:
            if stages.clock is not self.clock:
                raise CadenceError("the stages run on another clock; build them with the link's clock")
            self._bind_stages()
            stages.listen(self._bind_stages)

    @property
    def policy(self) -> Any:
        """The curriculum policy that receives :meth:`observe` (the current stage's, when it switches)."""
        from cadence.regimen.staged import StageSampler

        switching = isinstance(self.sampler, StageSampler) or isinstance(getattr(self.sampler, "sampler", None),
                                                                          StageSampler)  # a prompt selector over one
        return self.sampler.policy if switching else self._policy

    @policy.setter
    def policy(self, policy: Any) -> None:
        self._policy = policy

    # ------------------------------------------------------------------ time
    def begin_step(self) -> None:
        """Put this step's plan configuration in place; adapters call it before the forward pass
        (again per micro-batch is harmless: a plan changes nothing twice in one clock step)."""
        self.plans.update()

    def shape(self, batch: Any) -> Any:
        """A batch taken for training in this step, as the plans shape it (after :meth:`begin_step`)."""
        return self.plans.apply(batch)

    def count_global_step(self, *, samples: float = 0.0, tokens: float = 0.0, queued_tokens: float = 0.0) -> None:
        """Report the step's samples and tokens summed over processes, so every rank's clock counts
        the global step: ``samples`` and ``tokens`` are this process's own, not yet reported;
        ``queued_tokens`` its own already reported (by plans). One all-gather under torch.distributed
        (every rank calls it once per step); without it, just the local amounts."""
        from cadence.curricula.distributed import gather_values  # the curricula layer owns rank-order gathering

        total_samples, total_tokens, total_queued = gather_values([samples, tokens, queued_tokens])[0].reshape(-1, 3).sum(axis=0)
        self.clock.report(samples=float(total_samples), tokens=float(total_tokens + total_queued) - queued_tokens)

    def step(self, *, samples: float = 0, tokens: float = 0) -> None:
        """Count one optimizer step. The scheduler advances the clock if there is one; else the link does.
        With ``owns_scheduler`` the link steps the scheduler itself. Then :meth:`after_step`."""
        if self.scheduler is None:
            self.clock.advance(samples=samples, tokens=tokens)
        elif self.owns_scheduler:
            self.clock.report(samples=samples, tokens=tokens)
            self.scheduler.step()
        elif samples or tokens:
            raise CadenceError("report samples/tokens with clock.report() before the scheduler steps")
        self.after_step()

    def after_step(self) -> list[StageEvent]:
        """After the clock has moved: end the stages whose budget is used up (their events)."""
        return self.stages.update() if self.stages is not None else []

    def log(self, metrics: Mapping[str, Any]) -> list[StageEvent]:
        """One evaluation's metrics for the current stage's rules (events of a stage they end)."""
        return self.stages.log(metrics) if self.stages is not None else []

    @property
    def done(self) -> bool:
        """True once the last stage has ended on a rule (the host should stop)."""
        return self.stages is not None and self.stages.finished

    def _bind_stages(self) -> None:
        """Put the stages' joins in place of the scheduled fields and knobs they name, and re-apply."""
        joins = {name: self.stages.schedule(name) for name in self.stages.names()}
        old = []
        if self.scheduler is not None:
            for name, per_group in self.scheduler.schedules.items():
                if name in joins:
                    old += [s for s in per_group if s is not None]
                    self.scheduler.schedules[name] = [None if s is None else joins[name] for s in per_group]
        missing = set(joins) - set(self.knobs) - set(self.scheduler.schedules if self.scheduler else ())
        if missing:
            raise CadenceError(f"the stages schedule {sorted(missing)}, which are neither scheduled optimizer "
                               f"fields nor knobs of this link")
        for name in set(joins) & set(self.knobs):
            old.append(self.knobs[name])
            self.knobs[name] = joins[name]
        self.clock.unwatch(old)
        self.clock.watch(joins.values())
        if self.scheduler is not None and self.scheduler.last_epoch >= 0:
            self.scheduler._write_lr(self.scheduler.get_lr())
            self.scheduler._apply_other_fields()

    def knob(self, name: str) -> float:
        """The value of knob ``name`` at the clock's position."""
        if name not in self.knobs:
            raise CadenceError(f"no knob named {name!r}; this link has {sorted(self.knobs)}")
        return self.knobs[name](self.clock)

    # ------------------------------------------------------------------ feedback
    def observe(self, item_ids: Any, **signals: Any) -> None:
        """Feed per-item signals (loss, reward, advantage, correct) to the policy.

        Under torch.distributed every rank must call this: ids and signals are all-gathered in rank
        order first, so every rank's policy sees the whole global batch and stays identical."""
        if self.policy is None:
            raise CadenceError("this link has no curriculum policy to observe signals")
        from cadence.curricula.distributed import gather_feedback  # the curricula layer owns rank-order gathering

        ids, gathered = gather_feedback(item_ids, {k: v for k, v in signals.items() if v is not None})
        missing = set(getattr(self.policy, "requires", ())) - set(gathered)
        if missing:
            raise CadenceError(f"{type(self.policy).__name__} needs signal(s) {sorted(missing)}, got {sorted(gathered)}")
        self.policy.observe(ids, **gathered)

    # ------------------------------------------------------------------ logging
    def values(self) -> dict[str, float]:
        """Every regimen value for a logger: scheduled optimizer fields, knobs, progress, arm probabilities."""
        p = self.prefix
        out: dict[str, float] = {}
        if self.scheduler is not None:
            out.update({p + k: v for k, v in self.scheduler.values().items()})
        out.update({p + name: float(s(self.clock)) for name, s in self.knobs.items()})
        if self.clock.progress is not None:
            out[p + "progress"] = float(self.clock.progress)
        if self.stages is not None:
            out[p + "stage"] = float(self.stages.index)
        if self.policy is not None:
            out.update(flatten_stats(self.policy.stats(), self.policy.arms.names, p + "curriculum/"))
        out.update({p + "plan/" + k: v for k, v in self.plans.values().items()})
        return out

    def live_forecast(self, *, every: int = 100, **options: Any) -> Any:
        """A :class:`~cadence.forecast.live.LiveForecast` of this run's final loss under its LR
        schedule (the first param group's, over the step budget); feed it ``(step, loss)`` from a
        plain loop with ``observe`` and log its ``values()``. ``options``: ``runs``, ``law``, ``level``,
        ``worker``, ``max_share``."""
        from cadence.forecast.law import lr_per_step
        from cadence.forecast.live import LiveForecast

        schedules = (self.scheduler.schedules.get("lr") or [None])[0] if self.scheduler is not None else None
        budget = self.clock.budget
        if schedules is None or budget is None or budget.unit != "steps":
            raise CadenceError("a live forecast needs the link's LR scheduler and a budget in steps")
        lr = lr_per_step(schedules, int(budget.amount))
        if self.scheduler.relative:
            lr = lr * self.scheduler.optimizer.param_groups[0]["initial_lr"]
        return LiveForecast(lr, every=every, prefix=self.prefix, **options)

    # ------------------------------------------------------------------ state
    def _parts(self) -> dict[str, Any]:
        # a sampler's state holds its policy's, so the policy is stored on its own only without one
        parts = {"stages": self.stages, "scheduler": self.scheduler, "sampler": self.sampler, "tracker": self.tracker,
                 "policy": self.policy if self.sampler is None else None, "plans": self.plans or None,
                 "rl": self.rl}
        return {k: v for k, v in parts.items() if v is not None}

    def state_dict(self) -> dict[str, Any]:
        """The clock and every stateful part, keyed by role."""
        state = {"kind": KIND, "clock": self.clock.state_dict()}
        state.update({name: part.state_dict() for name, part in self._parts().items()})
        return state

    def load_state_dict(self, state: Mapping[str, Any], *, only: Collection[str] | None = None) -> None:
        """Restore a :meth:`state_dict`. All parts load or none does: on any error every part is put back.

        ``only`` restricts the load to some roles (``"clock"``, ``"stages"``, ``"scheduler"``, ``"sampler"``,
        ``"tracker"``, ``"policy"``, ``"plans"``, ``"rl"``), for hosts that need the data side back before the optimizer exists.
        """
        if not isinstance(state, Mapping) or state.get("kind") != KIND:
            raise StateError(f"not a cadence RegimenLink state_dict (missing kind={KIND!r})")
        parts = self._parts()
        saved = set(state) - {"kind", "clock"}
        if only is None and saved != set(parts):
            raise StateError(f"state_dict holds {sorted(saved)}, this link has {sorted(parts)}")
        wanted = set(parts) | {"clock"} if only is None else set(only)
        missing = wanted - set(state) - {"kind"}
        unknown = wanted - set(parts) - {"clock"}
        if missing or unknown:
            raise StateError(f"cannot load {sorted(missing | unknown)}: the state_dict holds {sorted(saved)}, "
                             f"this link has {sorted(parts)}")
        parts = {name: part for name, part in parts.items() if name in wanted}
        backup = {name: copy.deepcopy(part.state_dict()) for name, part in parts.items()}
        backup_clock = self.clock.state_dict()
        try:
            if "clock" in wanted:
                self.clock.load_state_dict(state["clock"])
            for name, part in parts.items():
                part.load_state_dict(copy.deepcopy(state[name]))
        except Exception:
            self.clock.load_state_dict(backup_clock)
            for name, part in parts.items():
                part.load_state_dict(backup[name])
            raise


class PlanSet:
    """Named progressive plans on one clock, driven, logged and checkpointed as one part.

        >>> import torch
        >>> from cadence.progressive import LayerFreezing
        >>> clock = Clock(budget=10)
        >>> plans = PlanSet([LayerFreezing([torch.nn.Linear(2, 2) for _ in range(3)], clock=clock)], clock)
        >>> plans.update(); plans.values()["layer_freezing/frozen_layers"]
        0.0
    """

    def __init__(self, plans: Plans, clock: Clock) -> None:
        if isinstance(plans, Mapping):
            named = dict(plans)
        else:
            plans = list(plans)
            named = {plan_name(plan): plan for plan in plans}
            if len(named) < len(plans):
                raise CadenceError(f"two plans of one class would share a name; pass them as {{name: plan}}: "
                                   f"{[plan_name(p) for p in plans]}")
        for name, plan in named.items():
            if not isinstance(plan, Plan):
                raise CadenceError(f"plan {name!r} is a {type(plan).__name__}, not a cadence.progressive plan")
            if not name or "/" in name:
                raise CadenceError(f"plan name {name!r} must be non-empty and contain no '/'")
            if plan.clock is not clock:
                raise CadenceError(f"plan {name!r} runs on another clock; build every plan with the run's clock")
        self.plans = named

    def __bool__(self) -> bool:
        return bool(self.plans)

    def __iter__(self) -> Any:
        return iter(self.plans.values())

    def release(self) -> None:
        """Every layer plan lets go of its layers (all trainable again): a trainer that stops at a stage's
        end calls it, so the next trainer's plans, built over the same model, set the layers from the clock."""
        for plan in self:
            if hasattr(plan, "release"):
                plan.release()

    def update(self) -> None:
        """``plan.update()`` for every plan, in the order given."""
        for plan in self.plans.values():
            plan.update()

    def apply(self, batch: Any) -> Any:
        """``batch`` through every plan's ``apply`` (sequence-length warmup cuts it), in the order given."""
        for plan in self.plans.values():
            batch = plan.apply(batch)
        return batch

    def values(self) -> dict[str, float]:
        """Every plan's values as ``<name>/<key>``."""
        return {f"{name}/{k}": float(v) for name, plan in self.plans.items() for k, v in plan.values().items()}

    def state_dict(self) -> dict[str, Any]:
        return {name: plan.state_dict() for name, plan in self.plans.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load every plan's state; a different set of names is rejected before anything changes.
        (A plan that rejects its state changes nothing; :class:`RegimenLink` puts the others back.)"""
        if not isinstance(state, Mapping) or set(state) != set(self.plans):
            found = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise StateError(f"the state_dict holds plans {found}, this link has {sorted(self.plans)}")
        for name, plan in self.plans.items():
            plan.load_state_dict(state[name])


def plan_name(plan: Plan) -> str:
    """A plan's default name: its class name in snake case.

        >>> from cadence.progressive import SequenceLengthWarmup
        >>> plan_name(SequenceLengthWarmup(clock=Clock(budget=10), length=8))
        'sequence_length_warmup'
    """
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(plan).__name__).lower()


def plans_clock(plans: Plans | None) -> Clock | None:
    """The clock the plans run on (``None`` without plans), for adapters that build the link's clock.

    Raises:
        CadenceError: if the plans run on different clocks.
    """
    if isinstance(plans, PlanSet) and hasattr(plans, "stages"):  # a StagePlans: its stages run on the run's clock
        return plans.stages.clock
    found = list((plans.values() if isinstance(plans, Mapping) else plans) or ())
    clocks = {id(getattr(p, "clock", None)): getattr(p, "clock", None) for p in found}
    if len(clocks) > 1:
        raise CadenceError("the plans run on different clocks; build every plan with the run's one clock")
    return next(iter(clocks.values()), None)


def flatten_stats(stats: Mapping[str, Any], arm_names: list[Any], prefix: str) -> dict[str, float]:
    """Numeric entries of ``policy.stats()`` as ``prefix+key``; per-arm arrays as ``prefix+key/arm``;
    nested mappings recurse.

        >>> flatten_stats({"probabilities": [0.25, 0.75], "t": 3, "note": "x", "s": {"u": [1, 2]}}, ["a", "b"], "c/")
        {'c/probabilities/a': 0.25, 'c/probabilities/b': 0.75, 'c/t': 3.0, 'c/s/u/a': 1.0, 'c/s/u/b': 2.0}
    """
    out: dict[str, float] = {}
    labels = [_label(a) for a in arm_names]
    for key, value in stats.items():
        if isinstance(value, Mapping):
            out.update(flatten_stats(value, arm_names, f"{prefix}{key}/"))
            continue
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            continue
        if arr.ndim == 0:
            out[f"{prefix}{key}"] = float(arr)
        elif arr.shape == (len(labels),):
            out.update({f"{prefix}{key}/{label}": float(v) for label, v in zip(labels, arr)})
    return out


def _label(arm: Any) -> str:
    return "-".join(map(str, arm)) if isinstance(arm, tuple) else str(arm)
