"""The regimen file: a whole run's plan as one YAML/JSON document (the same as a Python dict).

:meth:`Regimen.from_dict` / :meth:`Regimen.from_file` validate every field when the file is
loaded: an unknown or malformed field is one :class:`~cadence.regimen.pieces.PathError` naming its
full path (``stages[1].lr``), and nothing is built. :meth:`Regimen.to_dict` gives the canonical
dict back (``from_dict(to_dict(r)) == r``). :meth:`Regimen.attach` puts it into a host: a torch
optimizer (a plain loop), a Hugging Face ``Trainer``, a TRL ``GRPOTrainer`` or a Lightning
``Trainer``. The field reference is ``docs/regimen.md``; the regimen doctor's format is a subset.

    >>> r = Regimen.from_dict({"budget": "100 steps", "lr": "cosine(peak=1e-3)",
    ...                        "stages": [{"name": "sft", "budget": "30%", "objective": "sft"},
    ...                                   {"name": "grpo", "objective": "grpo", "lr": "constant(1e-5)"}]})
    >>> Regimen.from_dict(r.to_dict()) == r
    True
    >>> import torch
    >>> link = r.attach(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0))
    >>> for _ in range(30):
    ...     link.step()
    >>> link.stages.current.name, link.scheduler.get_last_lr()
    ('grpo', [1e-05])
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from cadence.clock import Clock, Duration, parse_budget
from cadence.errors import CadenceError
from cadence.regimen.pieces import AVERAGING, CURRICULA, PLANS, RL, PathError, Piece
from cadence.regimen.stages import Rule, Stage, StageRun, plan_fractions
from cadence.schedules.base import Schedule, as_schedule

TOP = ("name", "budget", "elapsed", "tokens_per_step", "samples_per_step", "on_budget_change", "lr", "schedules",
       "knobs", "curriculum", "rl", "plans", "averaging", "continual", "stages")
STAGE = ("name", "budget", "objective", "lr", "schedules", "knobs", "until", "plateau", "curriculum", "rl", "plans",
         "averaging")
CURRICULUM = ("kind", "policy", "arms", "batch_size", "seed", "replacement")
ARMS = ("column", "items", "difficulty", "quality")
RL_HOST = ("correct", "correct_threshold", "guidance")  # how the host tells a correct completion; hints' column
UNTIL = ("metric", "above", "below", "times")
PLATEAU = ("metric", "delta", "window", "mode")


@dataclass(frozen=True)
class Section:
    """A piece named in a file: the registry name and its arguments (plain values, as written)."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Section) and (self.name, dict(self.args)) == (other.name, dict(other.args))

    def __hash__(self) -> int:
        return hash(self.name)


@dataclass(frozen=True, eq=False)
class Regimen:
    """A validated regimen file. Build with :meth:`from_dict` or :meth:`from_file`."""

    data: Mapping[str, Any]
    budget: Duration | None = None
    schedules: Mapping[str, Schedule] = field(default_factory=dict)  # lr and other param-group fields
    knobs: Mapping[str, Schedule] = field(default_factory=dict)
    stages: tuple[Stage, ...] = ()
    curriculum: Section | None = None
    rl: Mapping[str, Section] = field(default_factory=dict)
    plans: Mapping[str, Section] = field(default_factory=dict)
    averaging: Section | None = None
    stage_pieces: tuple[Mapping[str, Any], ...] = ()  # per stage: {"curriculum"|"rl"|"plans"|"averaging": (built,
    #                                                    canonical)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Regimen) and self.to_dict() == other.to_dict()

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_file(cls, path: str | Path) -> Regimen:
        """Read a YAML or JSON regimen file."""
        from cadence.doctor import read_fields

        return cls.from_dict(read_fields(path))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Regimen:
        """Validate a regimen dict; the first bad field raises :class:`PathError` naming its path."""
        d = _mapping(d, "")
        _known(d, TOP, "")
        budget = _read(parse_budget, d.get("budget"), "budget")
        canon: dict[str, Any] = {}
        if d.get("name") is not None:
            canon["name"] = _text(d["name"], "name")
        if budget is not None:
            canon["budget"] = str(budget)
        if d.get("elapsed", 0) != 0:
            canon["elapsed"] = _number(d["elapsed"], "elapsed", lo=0)
        for k in ("tokens_per_step", "samples_per_step"):
            if d.get(k) is not None:
                canon[k] = _number(d[k], k, lo=0, open_lo=True)
        if d.get("on_budget_change") is not None:
            if d["on_budget_change"] not in ("rescale", "rederive"):
                raise PathError("on_budget_change", f"must be rescale or rederive, got {d['on_budget_change']!r}")
            canon["on_budget_change"] = d["on_budget_change"]
        schedules = _schedules(d, "")
        knobs = _named_schedules(d.get("knobs"), "knobs")
        canon.update(_schedule_dict(schedules, knobs))
        curriculum = _curriculum(d.get("curriculum"), "curriculum")
        if d.get("curriculum") is not None:
            canon["curriculum"] = _curriculum_dict(d["curriculum"])
        rl = _pieces(d.get("rl"), RL, "rl", extra=RL_HOST)
        if d.get("rl"):
            canon["rl"] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in d["rl"].items()}
        plans = _plans(d.get("plans"), "plans")
        if d.get("plans"):
            canon["plans"] = {k: dict(v) for k, v in d["plans"].items()}
        averaging = _averaging(d.get("averaging"))
        if d.get("averaging") is not None:
            canon["averaging"] = dict(averaging.args, kind=averaging.name)
        if d.get("continual") is not None:
            canon["continual"] = _continual(d["continual"])
        replayed = _replayed(d, curriculum)
        if replayed is not None:
            raise PathError("continual.replay", replayed)
        raw_stages = _list(d.get("stages"), "stages")
        stages = tuple(_stage(s, f"stages[{i}]") for i, s in enumerate(raw_stages))
        stage_pieces = []
        for i, s in enumerate(raw_stages):  # a stage's own curriculum / RL pieces / plans / averaging
            own = {}
            if s.get("curriculum") is not None:
                own["curriculum"] = (_curriculum(s["curriculum"], f"stages[{i}].curriculum"),
                                     _curriculum_dict(s["curriculum"]))
            if s.get("rl") is not None:
                own["rl"] = (_pieces(s["rl"], RL, f"stages[{i}].rl", extra=RL_HOST),
                             {k: dict(v) if isinstance(v, Mapping) else v for k, v in s["rl"].items()})
            if s.get("plans"):
                own["plans"] = (_plans(s["plans"], f"stages[{i}].plans"),
                                {k: dict(v) for k, v in s["plans"].items()})
            if s.get("averaging") is not None:
                section = _averaging(s["averaging"], f"stages[{i}].averaging")
                own["averaging"] = (section, dict(section.args, kind=section.name))
            stage_pieces.append(own)
        if stages:
            canon["stages"] = [_stage_dict(s) | {k: v[1] for k, v in own.items()}
                               for s, own in zip(stages, stage_pieces)]
            names = [s.name for s in stages]
            if len(set(names)) < len(names):
                raise PathError("stages", f"stage names must differ, got {names}")
            try:
                plan_fractions(stages, budget.unit if budget else "steps", budget.amount if budget else None)
            except CadenceError as e:
                raise PathError("stages", str(e)) from None
            for name in {n for s in stages for n in [*s.schedules(), *s.knobs]} - set(schedules) - set(knobs):
                for i, s in enumerate(stages):
                    if name not in s.schedules() and name not in s.knobs:
                        raise PathError(f"stages[{i}]", f"has no {name!r}, which other stages schedule and the "
                                                        f"top level does not; give it here or at the top level")
        both = set(schedules) & set(knobs) | {n for s in stages for n in set(s.schedules()) & set(s.knobs)}
        if both:
            raise PathError("knobs", f"{sorted(both)} name both an optimizer field and a knob; rename the knob")
        return cls(data=canon, budget=budget, schedules=schedules, knobs=knobs, stages=stages, curriculum=curriculum,
                   rl=rl, plans=plans, averaging=averaging, stage_pieces=tuple(stage_pieces))

    def to_dict(self) -> dict[str, Any]:
        """The canonical dict: what :meth:`from_dict` reads back into an equal regimen."""
        return json.loads(json.dumps(self.data))

    def to_file(self, path: str | Path) -> None:
        """Write the canonical dict as YAML (``.yaml``/``.yml``) or JSON."""
        p = Path(path)
        if p.suffix in (".yaml", ".yml"):
            import yaml

            p.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            p.write_text(json.dumps(self.to_dict(), indent=2))

    # ------------------------------------------------------------------ building
    def clock(self, default_budget: Any = None) -> Clock:
        """A fresh clock for this regimen (its budget, else ``default_budget``)."""
        d = self.data
        return Clock(budget=self.budget if self.budget is not None else default_budget,
                     on_budget_change=d.get("on_budget_change", "rescale"),
                     tokens_per_step=d.get("tokens_per_step"), samples_per_step=d.get("samples_per_step"))

    def stage_run(self, clock: Clock) -> StageRun | None:
        """The stages on ``clock`` (``None`` without stages); top-level schedules are their defaults."""
        if not self.stages:
            return None
        return StageRun(self.stages, clock, defaults={**self.schedules, **self.knobs})

    def stage_span(self, name: str) -> tuple[float, float]:
        """Where stage ``name`` is planned to start and end, in the budget's unit (a trainer that runs
        one stage trains ``end - start`` steps).

            >>> Regimen.from_dict({"budget": "100 steps", "lr": "constant(level=0.1)",
            ...                    "stages": [{"name": "sft", "budget": "30%"}, {"name": "grpo"}]}).stage_span("grpo")
            (30.0, 100.0)
        """
        names = [s.name for s in self.stages]
        if name not in names:
            raise CadenceError(f"no stage named {name!r}; the stages are {names}")
        shares = plan_fractions(self.stages, self.budget.unit, self.budget.amount)
        i = names.index(name)
        start = math.fsum(shares[:i]) * self.budget.amount
        return start, start + shares[i] * self.budget.amount

    def lr_schedules(self, stages: StageRun | None) -> dict[str, Schedule]:
        """The optimizer fields to schedule (the stages' joins when there are stages)."""
        names = dict.fromkeys(self.schedules)
        for s in self.stages:
            names.update(dict.fromkeys(s.schedules()))
        return {n: stages.schedule(n) if stages else self.schedules[n] for n in names}

    def knob_schedules(self, stages: StageRun | None) -> dict[str, Schedule]:
        names = dict.fromkeys(self.knobs)
        for s in self.stages:
            names.update(dict.fromkeys(s.knobs))
        return {n: stages.schedule(n) if stages else self.knobs[n] for n in names}

    def for_part(self, index: int | None) -> Regimen:
        """The regimen a trainer builds: with ``index``, the trainer runs stage ``index`` only (one trainer
        per stage), and that stage's own ``curriculum``/``rl`` replace the top-level ones (its own ``plans``
        and ``averaging`` stay the stage's: they run on the stage's progress); without, it runs every
        stage: a stage's own curriculum is switched in by :meth:`build_data`, a stage's own RL pieces by
        :meth:`stage_rl` (a plain loop) or the host's selector (TRL), its plans by :meth:`build_plans`;
        hosts that cannot switch them refuse them (:meth:`refuse`)."""
        if index is None:
            return self
        own = self.stage_pieces[index] if index < len(self.stage_pieces) else {}
        data = {k: v for k, v in self.data.items() if k != "stages"}
        kept = tuple({k: v for k, v in p.items() if k in ("plans", "averaging")} for p in self.stage_pieces)
        changes: dict[str, Any] = {"stage_pieces": kept if any(kept) else ()}
        if "curriculum" in own:
            changes["curriculum"], data["curriculum"] = own["curriculum"]
        if "rl" in own:
            changes["rl"], data["rl"] = own["rl"]
        if self.stages:
            data["stages"] = [{k: v for k, v in s.items() if k not in ("curriculum", "rl")}
                              for s in self.data["stages"]]
        return replace(self, data=data, **changes)

    def refuse(self, host: str) -> None:
        """Raise, naming the piece, if ``host`` cannot run a piece this regimen names."""
        if self.data.get("elapsed"):
            raise PathError("elapsed", "a run starts at 0 on the regimen's clock; resume from a checkpoint instead "
                                       "(elapsed is read by cadence check only)")
        named = [(f"rl.{k}", RL[k]) for k in self.rl]
        named += [(f"plans.{k}", PLANS[s.name]) for k, s in self.plans.items()]
        if self.averaging is not None:
            named.append(("averaging", AVERAGING[self.averaging.name]))
        self._refuse_batch_sizes(host)
        for i, own in enumerate(self.stage_pieces):
            if "rl" in own and host not in SWITCHES_RL:
                raise PathError(f"stages[{i}].rl", f"the {HOST_NAMES[host]} adapter runs no RL step (no rollouts for "
                                f"RL pieces to choose or filter); a stage's own RL pieces switch in a plain loop "
                                f"(link.rl), in TRL's GRPOTrainer and in verl")
            for k, s in own.get("plans", ({},))[0].items():
                named.append((f"stages[{i}].plans.{k}", PLANS[s.name]))
            if "curriculum" in own and host not in SWITCHES_CURRICULA:
                raise PathError(f"stages[{i}].curriculum", f"the {HOST_NAMES[host]} adapter draws its prompts from one "
                                f"curriculum built with the trainer; run the stage in a trainer of its own "
                                f"(attach(..., after=link), stop_on_transition=True)")
            named += [(f"stages[{i}].rl.{k}", RL[k]) for k in own.get("rl", ({},))[0]]
            if "averaging" in own:
                named.append((f"stages[{i}].averaging", AVERAGING[own["averaging"][0].name]))
        for path, piece in named:
            if piece.hosts is not None and host not in piece.hosts:
                raise PathError(path, f"{piece.name} cannot run in the {HOST_NAMES[host]} adapter "
                                      f"(it runs in: {', '.join(HOST_NAMES[h] for h in piece.hosts)})")

    def _refuse_batch_sizes(self, host: str) -> None:
        """One batch sampler sizes every stage's batches (``StagePlans.batch_sizes``): its stages' plans must
        share ``batches_per_step``, and a loader that draws ahead cannot follow a size change at a rule's end."""
        if not any("plans" in own for own in self.stage_pieces):
            return
        top = next(((f"plans.{k}", s) for k, s in self.plans.items() if s.name == "batch_size"), None)
        sizes = []  # per stage: (path, section) of the plan that sizes its batches, or None (the fixed size)
        for i, own in enumerate(self.stage_pieces):
            if "plans" not in own:
                sizes.append(top)
                continue
            mine = [(f"stages[{i}].plans.{k}", s) for k, s in own["plans"][0].items() if s.name == "batch_size"]
            if len(mine) > 1:
                raise PathError(mine[1][0], "a stage's batches are sized by one batch-size plan")
            sizes.append(mine[0] if mine else None)
        given = [p for p in sizes if p is not None]
        for path, section in given:
            if section.args.get("batches_per_step", 1) != given[0][1].args.get("batches_per_step", 1):
                raise PathError(f"{path}.batches_per_step", f"one batch sampler draws every stage's batches, so every "
                                f"stage's batch-size plan needs the same batches_per_step as {given[0][0]}")
        if host in ("hf", "lightning"):
            self._refuse_rule_before_change(sizes, host, "with this stage's batch size",
                                            "size its batches with the same plan")

    def _refuse_rule_before_change(self, per_stage: Sequence[Any], host: str, drawn: str, same: str) -> None:
        """A loader that draws ahead has drawn the next stage's first batches before a rule ends a stage: refuse,
        by the rule's path, a rule-ended stage whose next stage differs in ``per_stage``."""
        for i, (stage, now, then) in enumerate(zip(self.stages, per_stage, per_stage[1:])):
            if stage.rules and now is not then:
                rule = "until" if stage.rules[0].kind != "plateau" else "plateau"
                raise PathError(f"stages[{i}].{rule}", f"the {HOST_NAMES[host]}'s data loader draws batches ahead "
                                f"of training, so when this rule ends the stage, batches for the next stage are "
                                f"already drawn {drawn}; end the stage on its budget, or let the next stage {same}")

    def build_policy(self, arms: Any, clock: Clock) -> Any:
        return _policy(self.curriculum, arms, clock, "curriculum")

    def build_sampler(self, arms: Any, clock: Clock, **overrides: Any) -> Any:
        """The curriculum's ``CurriculumSampler`` over ``arms`` (policies that follow schedules read ``clock``)."""
        return _sampler(self.curriculum, self.data["curriculum"], arms, clock, overrides, "curriculum")

    def arms(self, dataset: Any = None) -> Any:
        """The curriculum's arms: from ``curriculum.arms.items``, or a column of ``dataset``."""
        return _arms(self.data["curriculum"], dataset, "curriculum")

    def curricula(self) -> list[tuple[str, Section, Mapping[str, Any]] | None]:
        """Per stage (one entry without stages): the curriculum it draws from as ``(path, section, data)``,
        its own or the top-level one (``None``: no curriculum)."""
        top = ("curriculum", self.curriculum, self.data["curriculum"]) if self.curriculum and self.curriculum.name \
            else None
        if not self.stages or not self.stage_pieces:  # (a trainer that runs one stage: its pieces are the top level)
            return [top]
        out = []
        for i, own in enumerate(self.stage_pieces):
            section = own.get("curriculum", (None,))[0]
            has = section is not None and section.name
            out.append((f"stages[{i}].curriculum", section, own["curriculum"][1]) if has else top)
        return out

    def build_data(self, dataset: Any, clock: Clock, stages: StageRun | None, *, ids_per_step: Any = None,
                   host: str = "loop", **overrides: Any) -> Any:
        """The sampler the host draws its data from: ``None`` without a curriculum; the curriculum's
        ``CurriculumSampler``; or, when stages have curricula of their own, a
        :class:`~cadence.regimen.staged.StageSampler` that switches curricula with the stage (stages
        without one share the top-level curriculum). ``ids_per_step``: for hosts whose loaders draw ahead
        (see :class:`~cadence.regimen.staged.StageSampler`; or a function of the first stage's sampler
        giving it); such a host refuses a stage that ends on a rule and is followed by another curriculum."""
        found = self.curricula()
        if all(c is None for c in found):
            return None
        if len(found) == 1 or all(c is found[0] for c in found):
            path, section, data = found[0]
            return _sampler(section, data, _arms(data, dataset, path), clock, overrides, path)
        from cadence.regimen.staged import StageSampler

        missing = next(i for i, c in enumerate(found) if c is None) if None in found else None
        if missing is not None:
            raise PathError(f"stages[{missing}].curriculum", "other stages draw their data from a curriculum, and the "
                            "host has one data stream: give this stage a curriculum, or give one at the top level")
        built: dict[int, Any] = {}
        for path, section, data in found:
            if id(section) not in built:
                built[id(section)] = _sampler(section, data, _arms(data, dataset, path), clock, overrides, path)
        if callable(ids_per_step):
            ids_per_step = ids_per_step(built[id(found[0][1])])
        if ids_per_step is not None:
            self._refuse_rule_before_change(found, host, "from this stage's curriculum", "draw from the same curriculum")
        try:
            return StageSampler([built[id(c[1])] for c in found], stages, ids_per_step=ids_per_step)
        except CadenceError as e:
            raise PathError("stages", str(e)) from None

    def stage_rl(self, stages: StageRun | None, *, exclude: Sequence[str] = (), **host: Any) -> Any:
        """The RL pieces per stage for a loop that runs them itself (:class:`~cadence.regimen.staged.StageRL`):
        each stage's own ``rl`` section, or the top-level one (built once, shared); ``current()`` gives the
        current stage's, ``clock()`` the clock their schedules run on (a stage's own: its own progress). ``host``: what the pieces need (``num_items``, ``arm_of``); ``exclude``: pieces the
        host builds once itself (TRL's ``d3s``)."""
        from cadence.regimen.staged import StageRL

        owns = (self.stage_pieces or [{}] * len(self.stages)) if stages else [{}]
        sections = [own["rl"][0] if "rl" in own else self.rl for own in owns]
        built: dict[int, dict[str, Any]] = {}
        for i, section in enumerate(sections):
            if id(section) not in built:
                at = "rl" if section is self.rl else f"stages[{i}].rl"
                built[id(section)] = {name: RL[name].build(s.args, host, f"{at}.{name}") for name, s in section.items()
                                      if name not in exclude}
        return StageRL([built[id(s)] for s in sections], stages, own=[s is not self.rl for s in sections])

    def has_plans(self) -> bool:
        """Whether the regimen has plans, at the top level or in a stage."""
        return bool(self.plans) or any("plans" in own for own in self.stage_pieces)

    def build_plans(self, clock: Clock, model: Any = None, stages: StageRun | None = None) -> Any:
        """The progressive plans on ``clock`` (``{name: plan}``); layer plans read their layers from ``model``
        by attribute path. With ``stages`` and a stage that has plans of its own, a
        :class:`~cadence.regimen.staged.StagePlans`: each stage's own plans on its
        :class:`~cadence.regimen.staged.StageClock` (its own progress), the top-level ones shared by the others."""
        top = _build_plans(self.plans, clock, model, "plans")
        own = [p.get("plans", (None,))[0] for p in self.stage_pieces]
        if stages is None or not any(own):
            return top
        from cadence.regimen.staged import StageClock, StagePlans

        per_stage = [top if section is None else _build_plans(section, StageClock(stages, i), model,
                                                                  f"stages[{i}].plans")
                     for i, section in enumerate(own)]
        return StagePlans(per_stage, stages)

    def build_rl(self, **host: Any) -> dict[str, Any]:
        """The ``rl`` section's pieces by name, built with what the host provides (``num_items``, ``arm_of``),
        for a loop that runs them itself (the RL lab, a plain loop); trainer adapters build their own."""
        return {name: RL[name].build(s.args, host, f"rl.{name}") for name, s in self.rl.items()}

    def build_averaging(self, model: Any, clock: Clock, stages: StageRun | None = None) -> Any:
        """The averager on ``clock`` over ``model`` (``None`` without one); ``update()`` it after each step.
        With ``stages`` (``link.stages``) and a stage that has its own ``averaging``, a
        :class:`~cadence.regimen.staged.StageAveraging`: each stage averages with its own averager (or the
        top-level one), which starts at the stage's planned start unless its ``start`` says otherwise."""
        own = [p.get("averaging", (None,))[0] for p in self.stage_pieces]
        if stages is None or not any(own):
            if self.averaging is None:
                return None
            return AVERAGING[self.averaging.name].build(self.averaging.args, {"model": model, "clock": clock},
                                                        "averaging")
        from cadence.regimen.staged import StageAveraging

        starts = [0.0] + [end * clock.schedule_total for end in stages.planned]
        built = []
        for i, section in enumerate(own):
            path = f"stages[{i}].averaging" if section is not None else "averaging"
            section = section or self.averaging
            args = {"start": Duration(starts[i], clock.unit)} | dict(section.args) if section else None
            built.append(None if section is None else
                         AVERAGING[section.name].build(args, {"model": model, "clock": clock}, path))
        return StageAveraging(built, stages)

    def attach(self, host: Any, **context: Any) -> Any:
        """Put this regimen into ``host`` and return what carries it.

        * a ``torch.optim.Optimizer`` (a plain loop): a :class:`~cadence.regimen.link.RegimenLink`
          whose ``step()`` steps the LR binding (``context``: ``model=`` for plans, ``dataset=`` for
          arms from a column);
        * a ``transformers.Trainer``: :func:`cadence.integrations.hf.attach` (the callback);
        * a ``trl.GRPOTrainer``: :func:`cadence.integrations.trl.attach` (the callback); TRL's other
          trainers (``SFTTrainer``, ...) are Trainers;
        * for these two, ``after=link`` continues a previous trainer's clock and stages (one trainer per
          stage), ``stop_on_transition=True`` stops the trainer when its stage ends;
        * a ``lightning.Trainer``: a :class:`cadence.integrations.lightning.CadenceCallback`, appended
          to its callbacks.

        Raises:
            PathError: a piece the host cannot run, named by its path, with the reason.
        """
        import torch

        if isinstance(host, torch.optim.Optimizer):
            return attach_loop(self, host, **context)
        kind = type(host).__module__.split(".")[0]
        if kind == "trl" and hasattr(host, "_generate_and_score_completions"):  # GRPO; other TRL trainers are HF Trainers
            from cadence.integrations.trl import attach_regimen
        elif kind in ("transformers", "trl"):
            from cadence.integrations.hf import attach_regimen
        elif kind in ("lightning", "pytorch_lightning"):
            from cadence.integrations.lightning import attach_regimen
        else:
            raise CadenceError(f"cannot attach a regimen to a {type(host).__name__}; give a torch optimizer, a "
                               f"transformers Trainer, a TRL GRPOTrainer or a Lightning Trainer")
        return attach_regimen(self, host, **context)


# hosts whose data stream switches curricula at a stage transition
SWITCHES_CURRICULA = ("loop", "hf", "trl", "lightning", "verl")
SWITCHES_RL = ("loop", "trl", "verl")  # hosts that switch a stage's own RL pieces at its transition
HOST_NAMES = {"loop": "plain-loop", "hf": "HF Trainer", "trl": "TRL", "lightning": "Lightning", "verl": "verl"}


def attach_loop(r: Regimen, optimizer: Any, *, model: Any = None, dataset: Any = None, **rl_host: Any) -> Any:
    """A plain loop's link: the LR binding on the regimen's clock, knobs, stages, curriculum (switched
    with the stage when stages have their own), plans, and ``link.rl`` (:meth:`Regimen.stage_rl`) when
    a stage has RL pieces of its own or ``rl_host`` (``num_items=``, ``arm_of=``) is given."""
    from cadence.optim import ScheduledLR
    from cadence.regimen.link import RegimenLink

    unknown = set(rl_host) - {"num_items", "arm_of"}
    if unknown:
        raise CadenceError(f"attach(optimizer) takes model=, dataset=, num_items=, arm_of=; got {sorted(unknown)}")
    r.refuse("loop")
    clock = r.clock()
    stages = r.stage_run(clock)
    fields = r.lr_schedules(stages)
    scheduler = ScheduledLR(optimizer, clock=clock, **fields) if fields else None
    sampler = r.build_data(dataset, clock, stages)
    rl = r.stage_rl(stages, **rl_host) if rl_host or any("rl" in own for own in r.stage_pieces) else None
    return RegimenLink(scheduler=scheduler, clock=None if scheduler else clock, knobs=r.knob_schedules(stages),
                       policy=getattr(sampler, "policy", None), sampler=sampler,
                       plans=r.build_plans(clock, model, stages) if r.has_plans() else None, stages=stages,
                       owns_scheduler=True,
                       rl=rl)


# ---------------------------------------------------------------------- validation helpers
def _read(fn: Any, value: Any, path: str) -> Any:
    try:
        return fn(value)
    except CadenceError as e:
        raise PathError(path, " ".join(str(e).split()) if "\n" not in str(e) else str(e).splitlines()[0]) from None


def _mapping(v: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise PathError(path, f"must be a mapping of fields, got {type(v).__name__}")
    for k in v:
        if not isinstance(k, str):
            raise PathError(path, f"field names must be text, got {k!r}")
    return v


def _list(v: Any, path: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise PathError(path, f"must be a list, got {type(v).__name__}")
    return v


def _known(d: Mapping[str, Any], known: Sequence[str], path: str) -> None:
    for k in d:
        if k not in known:
            raise PathError(f"{path}.{k}" if path else k, f"unknown field; known: {', '.join(known)}")


def _text(v: Any, path: str) -> str:
    if not isinstance(v, str) or not v:
        raise PathError(path, f"must be non-empty text, got {v!r}")
    return v


def _number(v: Any, path: str, *, lo: float | None = None, hi: float | None = None, open_lo: bool = False,
            integer: bool = False) -> float | int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (integer and v != int(v)):
        raise PathError(path, f"must be a finite {'integer' if integer else 'number'}, got {v!r}")
    if (lo is not None and (v < lo or (open_lo and v == lo))) or (hi is not None and v > hi):
        raise PathError(path, f"must lie in {'(' if open_lo else '['}{lo}, {hi if hi is not None else 'inf'}], got {v!r}")
    return int(v) if integer else v


def _schedule(v: Any, path: str) -> Schedule:
    if isinstance(v, bool) or v is None:
        raise PathError(path, f"must be a schedule spec, got {v!r}")
    return _read(as_schedule, v, path)


def _schedules(d: Mapping[str, Any], path: str) -> dict[str, Schedule]:
    """``lr`` and ``schedules`` (other param-group fields) of a top level or a stage."""
    at = f"{path}." if path else ""
    out = {"lr": _schedule(d["lr"], f"{at}lr")} if d.get("lr") is not None else {}
    extra = _named_schedules(d.get("schedules"), f"{at}schedules")
    if "lr" in extra:
        raise PathError(f"{at}schedules.lr", "give the LR as lr:, not under schedules")
    return out | extra


def _named_schedules(v: Any, path: str) -> dict[str, Schedule]:
    if v is None:
        return {}
    return {_text(k, path): _schedule(s, f"{path}.{k}") for k, s in _mapping(v, path).items()}


def _schedule_dict(schedules: Mapping[str, Schedule], knobs: Mapping[str, Schedule]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "lr" in schedules:
        out["lr"] = str(schedules["lr"])
    others = {k: str(s) for k, s in schedules.items() if k != "lr"}
    if others:
        out["schedules"] = others
    if knobs:
        out["knobs"] = {k: str(s) for k, s in knobs.items()}
    return out


def _curriculum(v: Any, path: str) -> Section | None:
    if v is None:
        return None
    if isinstance(v, str):  # the doctor's short form: the data ordering's kind
        return Section("", {})
    d = _mapping(v, path)
    fixed = {k: d[k] for k in CURRICULUM if k in d}
    args = {k: x for k, x in d.items() if k not in CURRICULUM}
    if "kind" in fixed:
        _text(fixed["kind"], f"{path}.kind")
    if "policy" not in fixed:
        if args:
            raise PathError(f"{path}.{next(iter(args))}", "unknown field; a curriculum without a policy takes only kind")
        return Section("", {})
    name = _text(fixed["policy"], f"{path}.policy").lower().replace("-", "_")
    if name not in CURRICULA:
        raise PathError(f"{path}.policy", f"unknown policy {fixed['policy']!r}; choose from {sorted(CURRICULA)}")
    if "batch_size" not in fixed:
        raise PathError(f"{path}.batch_size", "a curriculum needs the batch size it draws")
    _number(fixed["batch_size"], f"{path}.batch_size", lo=1, integer=True)
    _number(fixed.get("seed", 0), f"{path}.seed", lo=0, integer=True)
    if not isinstance(fixed.get("replacement", True), bool):
        raise PathError(f"{path}.replacement", f"must be true or false, got {fixed['replacement']!r}")
    piece = CURRICULA[name]
    if getattr(piece.make, "exact_batches", False) and fixed.get("replacement") is False:
        raise PathError(f"{path}.replacement", f"{name} counts each draw as one batch; it draws with replacement")
    arms = fixed.get("arms")
    if arms is None:
        raise PathError(f"{path}.arms", "give the arms: {column: <dataset column>} or {items: [...]}")
    arms = _mapping(arms, f"{path}.arms")
    _known(arms, ARMS, f"{path}.arms")
    if ("column" in arms) == ("items" in arms):
        raise PathError(f"{path}.arms", "give exactly one of column (a dataset column) or items (one arm key per item)")
    if "items" in arms:
        from cadence.curricula import Arms

        items = _list(arms["items"], f"{path}.arms.items")
        built = _read(lambda x: Arms(x), items, f"{path}.arms.items")
        piece.build(args, {"arms": built, "clock": Clock(budget=100)}, path)  # every argument checked on the real arms
    else:
        for k in ("column", "difficulty", "quality"):
            if k in arms:
                _text(arms[k], f"{path}.arms.{k}")
        piece.check_names(args, path)  # values are checked when the host's dataset gives the arms
    return Section(name, args)


def _curriculum_dict(v: Any) -> Any:
    if isinstance(v, str):
        return {"kind": v}
    out = dict(v)
    if "policy" in out:
        out["policy"] = out["policy"].lower().replace("-", "_")
    return out


def _pieces(v: Any, registry: Mapping[str, Piece], path: str, extra: Sequence[str] = ()) -> dict[str, Section]:
    if v is None:
        return {}
    d = _mapping(v, path)
    out = {}
    for k, args in d.items():
        if k in extra:
            continue
        if k not in registry:
            raise PathError(f"{path}.{k}", f"unknown piece; choose from {sorted(registry) + list(extra)}")
        args = _mapping(args if args is not None else {}, f"{path}.{k}")
        piece = registry[k]
        dummy = {"num_items": 2, "arm_of": [0, 1], "clock": Clock(budget=100)}
        if set(piece.needs) <= set(dummy):
            piece.build(args, dummy, f"{path}.{k}")
        else:
            piece.check_names(args, f"{path}.{k}")
        out[k] = Section(k, dict(args))
    if "correct" in d and not isinstance(d["correct"], str):
        raise PathError(f"{path}.correct", f"must name one of the trainer's reward functions, got {d['correct']!r}")
    if "correct_threshold" in d:
        _number(d["correct_threshold"], f"{path}.correct_threshold")
    if "guidance" in d and not isinstance(d["guidance"], str):
        raise PathError(f"{path}.guidance", f"must name the dataset column of each row's guidance texts, "
                                            f"got {d['guidance']!r}")
    if "guidance" in d and "hints" not in out:
        raise PathError(f"{path}.guidance", "guidance is for hints: add rl.hints too")
    return out


def _plans(v: Any, at: str) -> dict[str, Section]:
    if v is None:
        return {}
    out = {}
    for key, spec in _mapping(v, at).items():
        path = f"{at}.{key}"
        spec = dict(_mapping(spec, path))
        name = _text(spec.pop("plan", None), f"{path}.plan") if "plan" in spec else None
        if name not in PLANS:
            raise PathError(f"{path}.plan", f"unknown plan {name!r}; choose from {sorted(PLANS)}")
        piece = PLANS[name]
        if "layers" in piece.needs:
            _text(spec.get("layers"), f"{path}.layers")
            layers = spec.pop("layers")
            import torch

            with torch.random.fork_rng(devices=[]):  # checking a file leaves the run's random stream alone
                dummy = [torch.nn.Linear(1, 1) for _ in range(4)]
            piece.build(spec, {"clock": Clock(budget=100), "layers": dummy}, path)
            spec["layers"] = layers
        else:
            piece.build(spec, {"clock": Clock(budget=100)}, path)
        out[key] = Section(name, spec)
    return out


def _averaging(v: Any, path: str = "averaging") -> Section | None:
    if v is None:
        return None
    d = dict(_mapping({"kind": v} if isinstance(v, str) else v, path))
    name = d.pop("kind", None)
    if name not in AVERAGING:
        raise PathError(f"{path}.kind", f"unknown averaging {name!r}; choose from {sorted(AVERAGING)}")
    piece = AVERAGING[name]
    if d:  # the doctor's {kind: ...} names the kind only; its arguments are checked when built
        import torch

        with torch.random.fork_rng(devices=[]):  # checking a file leaves the run's random stream alone
            dummy = torch.nn.Linear(1, 1)
        piece.build(d, {"model": dummy, "clock": Clock(budget=100)}, path)
    return Section(name, d)


def _continual(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    d = _mapping(v, "continual")
    _known(d, ("rewarm", "replay"), "continual")
    if "rewarm" in d and not isinstance(d["rewarm"], bool):
        raise PathError("continual.rewarm", f"must be true or false, got {d['rewarm']!r}")
    if "replay" in d:
        _number(d["replay"], "continual.replay", lo=0, hi=1)
    return dict(d)


def _replayed(d: Mapping[str, Any], curriculum: Section | None) -> str | None:
    """Why ``continual.replay`` disagrees with a replay curriculum's fraction (``None``: it agrees)."""
    c = d.get("continual")
    told = c.get("replay") if isinstance(c, Mapping) else None
    if told is None or curriculum is None or curriculum.name != "replay":
        return None
    if isinstance(told, Mapping):
        told = told.get("fraction")
    drawn = curriculum.args.get("fraction")
    return None if told == drawn else (f"is {told!r}, but the replay curriculum draws {drawn!r}; "
                                       f"give one value (the doctor reads the curriculum's when this is left out)")


def _stage(v: Any, path: str) -> Stage:
    d = _mapping(v, path)
    _known(d, STAGE, path)
    name = _text(d.get("name"), f"{path}.name")
    budget = _read(Duration.parse, d["budget"], f"{path}.budget") if d.get("budget") is not None else None
    objective = _text(d["objective"], f"{path}.objective") if d.get("objective") is not None else None
    schedules = _schedules(d, path)
    knobs = _named_schedules(d.get("knobs"), f"{path}.knobs")
    rules = []
    if d.get("until") is not None:
        u = _mapping(d["until"], f"{path}.until")
        _known(u, UNTIL, f"{path}.until")
        if ("above" in u) == ("below" in u):
            raise PathError(f"{path}.until", "give exactly one of above or below")
        kind = "above" if "above" in u else "below"
        rules.append(_rule(lambda: Rule(_text(u.get("metric"), f"{path}.until.metric"), kind,
                                        threshold=_number(u[kind], f"{path}.until.{kind}"),
                                        times=_number(u.get("times", 1), f"{path}.until.times", lo=1, integer=True)),
                           f"{path}.until"))
    if d.get("plateau") is not None:
        p = _mapping(d["plateau"], f"{path}.plateau")
        _known(p, PLATEAU, f"{path}.plateau")
        rules.append(_rule(lambda: Rule(_text(p.get("metric"), f"{path}.plateau.metric"), "plateau",
                                        delta=_number(p.get("delta", 0.0), f"{path}.plateau.delta", lo=0),
                                        window=_number(p.get("window", 5), f"{path}.plateau.window", lo=1, integer=True),
                                        mode=p.get("mode", "max")), f"{path}.plateau"))
    if len({r.metric for r in rules}) > 1:
        raise PathError(f"{path}.plateau", "until and plateau of one stage must read the same metric")
    return Stage(name, budget=budget, objective=objective, lr=schedules.pop("lr", None), fields=schedules,
                 knobs=knobs, rules=tuple(rules))


def _rule(make: Any, path: str) -> Rule:
    try:
        return make()
    except PathError:
        raise
    except CadenceError as e:
        raise PathError(path, str(e)) from None


def _stage_dict(s: Stage) -> dict[str, Any]:
    out: dict[str, Any] = {"name": s.name}
    if s.budget is not None:
        out["budget"] = str(s.budget)
    if s.objective is not None:
        out["objective"] = s.objective
    out.update(_schedule_dict(s.schedules(), s.knobs))
    for r in s.rules:
        if r.kind == "plateau":
            out["plateau"] = {"metric": r.metric, "delta": r.delta, "window": r.window, "mode": r.mode}
        else:
            out["until"] = {"metric": r.metric, r.kind: r.threshold, "times": r.times}
    return out


def _build_plans(sections: Mapping[str, Section], clock: Clock, model: Any, at: str) -> dict[str, Any]:
    out = {}
    for key, s in sections.items():
        args = dict(s.args)
        host: dict[str, Any] = {"clock": clock}
        if "layers" in PLANS[s.name].needs:
            host["layers"] = _attribute(model, args.pop("layers"), f"{at}.{key}.layers")
        out[key] = PLANS[s.name].build(args, host, f"{at}.{key}")
    return out


def _attribute(model: Any, path: str, where: str) -> Any:
    if model is None:
        raise PathError(where, "layer plans need the host's model (attach(..., model=model) in a plain loop)")
    obj = model
    for part in path.split("."):
        if not hasattr(obj, part):
            raise PathError(where, f"the model has no attribute path {path!r} (stopped at {part!r})")
        obj = getattr(obj, part)
    return obj


def _policy(section: Section, arms: Any, clock: Clock, path: str) -> Any:
    return CURRICULA[section.name].build(section.args, {"arms": arms, "clock": clock}, path)


def _sampler(section: Section, data: Mapping[str, Any], arms: Any, clock: Clock, overrides: Mapping[str, Any],
             path: str) -> Any:
    from cadence.curricula import CurriculumSampler

    opts = {"seed": data.get("seed", 0), "replacement": data.get("replacement", True)} | dict(overrides)
    try:
        return CurriculumSampler(_policy(section, arms, clock, path), data["batch_size"], **opts)
    except PathError:
        raise
    except CadenceError as e:
        raise PathError(path, str(e)) from None


def _arms(data: Mapping[str, Any], dataset: Any, path: str) -> Any:
    from cadence.curricula import Arms

    spec = data.get("arms")
    if spec is None:
        raise PathError(f"{path}.arms", "give the arms: {column: <dataset column>} or {items: [...]}")
    if "items" in spec:
        return Arms(spec["items"])
    if dataset is None:
        raise PathError(f"{path}.arms.column", "arms from a column need the host's dataset")
    columns = {k: spec[k] for k in ("column", "difficulty", "quality") if k in spec}
    for k, c in columns.items():
        try:
            columns[k] = list(dataset[c])
        except (KeyError, TypeError, IndexError) as e:
            raise PathError(f"{path}.arms.{k}", f"the dataset has no column {c!r} ({e})") from None
    return Arms(columns.pop("column"), **columns)
