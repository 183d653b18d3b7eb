"""Search regimens with Ray Tune: population-based training (PBT, PB2) on cadence's clock.

Three pieces:

* :func:`search_space` — spec templates with ``{placeholders}`` plus the values or Tune domains that
  fill them: ``param_space`` for the ``Tuner``, ``mutations`` (PBT), ``bounds`` (PB2) and ``clip``
  (an explore function that keeps perturbed values inside their domains).
* :class:`RegimenTrial` — inside a Tune function trainable: builds the run's ``ScheduledLR`` and
  knobs from the trial's config, saves the whole regimen (clock, scheduler, knobs, curriculum,
  plans, and any objects given in ``save=``: model, optimizer, averagers, data) in each checkpoint
  it reports, and restores it from ``ray.tune.get_checkpoint()``.
* :func:`load_record` — the effective schedule specs and the recorded changes of a trial's checkpoint.

**Exploit and explore.** When PBT copies a trial, the trainable restarts with the donor's
checkpoint and a perturbed config: the regimen state (clock included) comes with the weights, and
every schedule whose filled spec changed continues from the current position under the *glide*
rule. With ``p`` the clock's position, ``c`` the value the run had there and ``S`` the new spec
over the whole run, the schedule from ``p`` on is ``glide(shift(S, by=p, total=T), start=c,
over=g)``: it starts at ``c`` (no jump) and reaches ``S``'s own values ``g`` later (``glide``,
default 2% of the budget; ``glide=0`` switches at once). Matching ``S`` to ``c`` by a constant
factor for the rest of the run was rejected: it cancels a change of the peak, the most searched
parameter. Parameters that are not in a spec (a curriculum's temperature) take their new value at
once; the curriculum keeps what it has learned. Each change is recorded (position, donor trial,
old and new values), and the schedule a trial ran is one spec, a ``join`` of the pieces, that a
plain run with the same budget replays value for value.

Ray is imported only here, lazily: importing this module needs only cadence.

    >>> space = search_space("wsd(peak={peak}, decay={decay})", peak=3e-3, decay=[0.1, 0.2])
    >>> space.param_space["cadence"]["schedules"]
    {'lr': 'wsd(peak={peak}, decay={decay})'}
    >>> fill("wsd(peak={peak}, decay={decay})", {"peak": 3e-3, "decay": 0.25})
    'wsd(peak=0.003, decay=0.25)'
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from cadence.clock import Clock, Duration
from cadence.errors import CadenceError, StateError
from cadence.integrations.jsonstate import decode, encode
from cadence.integrations.versions import check_version
from cadence.regimen.link import RegimenLink
from cadence.optim import ScheduledLR
from cadence.schedules.base import Schedule, as_schedule
from cadence.schedules.combinators import Glide, Join, Shift

CONFIG_KEY = "cadence"
"""The config entry holding the spec templates (set by :func:`search_space`)."""
KIND = "cadence.RegimenTrial"
REGIMEN_FILE = "cadence_regimen.json"
OBJECTS_FILE = "cadence_objects.pt"
TIME_ATTRS = {"steps": "cadence/steps", "samples": "cadence/samples", "tokens": "cadence/tokens",
              "seconds": "cadence/seconds", "progress": "cadence/progress"}
"""Result keys of the clock's counts, for a scheduler's ``time_attr`` (``progress``: budget fraction)."""


# ---------------------------------------------------------------------- search space
def _placeholders(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise CadenceError(f"bad placeholder in spec template {template!r}: {e}") from None


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def fill(template: str, values: Mapping[str, Any]) -> str:
    """A spec template with its ``{placeholders}`` replaced by ``values`` (numbers printed exactly)."""
    names = _placeholders(template)
    missing = sorted(set(names) - set(values))
    if missing:
        raise CadenceError(f"spec template {template!r} needs {missing}, which the config lacks")
    if any(not n or not n.isidentifier() for n in names):
        raise CadenceError(f"spec template {template!r}: placeholders must be names, e.g. {{peak}}")
    return template.format(**{n: _plain(values[n]) for n in names})


@dataclass(frozen=True)
class SearchSpace:
    """Spec templates and the parameters that fill them; see :func:`search_space`."""

    schedules: dict[str, str]
    knobs: dict[str, str]
    params: dict[str, Any]

    @property
    def param_space(self) -> dict[str, Any]:
        """The ``Tuner``'s ``param_space``: the parameters, and the templates under ``"cadence"``."""
        return {CONFIG_KEY: {"schedules": dict(self.schedules), "knobs": dict(self.knobs),
                             "params": sorted(self.params)},
                **self.params}

    @property
    def mutations(self) -> dict[str, Any]:
        """PBT's ``hyperparam_mutations``: every parameter given as a Tune domain or a list."""
        from ray.tune.search.sample import Domain

        return {k: v for k, v in self.params.items() if isinstance(v, (Domain, list))}

    @property
    def bounds(self) -> dict[str, list[float]]:
        """PB2's ``hyperparam_bounds``: ``[lower, upper]`` of every numeric domain."""
        from ray.tune.search.sample import Categorical, Domain

        out = {}
        for k, v in self.params.items():
            if isinstance(v, list) or isinstance(v, Categorical):
                raise CadenceError(f"PB2 searches numeric ranges only; parameter {k!r} is a list of choices")
            if isinstance(v, Domain):
                out[k] = [float(v.lower), float(v.upper)]
        return out

    def clip(self, config: dict[str, Any]) -> dict[str, Any]:
        """Put every numeric parameter back inside its domain (PBT's ``custom_explore_fn``:
        a perturbation by ×1.2 can push a decay fraction past 1)."""
        from ray.tune.search.sample import Float, Integer

        for k, v in self.params.items():
            if isinstance(v, (Float, Integer)) and k in config:
                x = min(max(config[k], v.lower), v.upper)
                config[k] = int(x) if isinstance(v, Integer) else float(x)
        return config


def search_space(lr: str | None = None, *, knobs: Mapping[str, str] | None = None,
                 fields: Mapping[str, str] | None = None, **params: Any) -> SearchSpace:
    """Spec templates whose ``{placeholders}`` are searched, and the parameters that fill them.

    Args:
        lr: the LR spec template, e.g. ``"wsd(peak={peak}, decay={decay})"``.
        knobs: ``{name: template}`` for knob schedules (:meth:`RegimenTrial.knob`).
        fields: ``{field: template}`` for other optimizer fields (``weight_decay``, ...).
        **params: each placeholder's value: a Tune domain (``tune.loguniform(1e-3, 1e-2)``), a list
            of choices, or a constant. Parameters no template uses (a curriculum's temperature) are
            searched too; the trainable reads them from ``config``.

    Raises:
        CadenceError: a placeholder without a parameter, or a template that is not a valid spec
            at the ends of its ranges.
    """
    schedules = {**({"lr": lr} if lr is not None else {}), **dict(fields or {})}
    knobs = dict(knobs or {})
    names = set(schedules) | set(knobs)
    if len(names) < len(schedules) + len(knobs):
        raise CadenceError(f"a name is both an optimizer field and a knob: {sorted(set(schedules) & set(knobs))}")
    if CONFIG_KEY in params:
        raise CadenceError(f"{CONFIG_KEY!r} is reserved for the templates; name the parameter otherwise")
    for template in [*schedules.values(), *knobs.values()]:
        for corner in _corners(params):
            as_schedule(fill(template, corner))
    return SearchSpace(schedules, knobs, dict(params))


def _corners(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Two configs to test templates with: every range at its lower, then its upper end."""
    from ray.tune.search.sample import Categorical, Domain

    def end(v: Any, i: int) -> Any:
        if isinstance(v, list):
            return v[-i]
        if isinstance(v, Categorical):
            return v.categories[-i]
        if isinstance(v, Domain):
            return v.upper if i else v.lower
        return v

    return [{k: end(v, i) for k, v in params.items()} for i in (0, 1)]


# ---------------------------------------------------------------------- schedule history
class ScheduleHistory:
    """The pieces one schedule ran: the first spec, then ``(position, spec, start, glide)`` per change.

    :meth:`effective` is the schedule the run follows (the first spec itself until it changes),
    a ``join`` of ``shift``-ed pieces over the run's total, each later piece wrapped in a ``glide``
    from the value the run had at its start.

        >>> from cadence.clock import Axis
        >>> h = ScheduleHistory("constant(1)")
        >>> h.change(10.0, "constant(3)", axis=Axis("steps", 100), glide=4.0)
        >>> s = h.effective(total=100.0, unit="steps")
        >>> [s.value(t, Axis("steps", 100)) for t in (9, 10, 12, 14)]
        [1.0, 1.0, 2.0, 3.0]
    """

    def __init__(self, spec: str) -> None:
        self.first = str(as_schedule(spec))
        self.changes: list[tuple[float, str, float, float]] = []

    @property
    def spec(self) -> str:
        """The spec in effect now (the last one given)."""
        return self.changes[-1][1] if self.changes else self.first

    def effective(self, *, total: float | None, unit: str) -> Schedule:
        """The whole run's schedule: pieces joined at their positions (``total=None``: open-ended)."""
        if not self.changes:
            return as_schedule(self.first)

        def whole(spec: str, by: float) -> Shift:
            span = {"open": True} if total is None else {"total": Duration(total, unit)}
            return Shift(as_schedule(spec), **({"by": Duration(by, unit)} if by else {}), **span)

        pieces: list[Schedule] = [whole(self.first, 0.0)]
        for p, spec, start, glide in self.changes:
            piece = whole(spec, p)
            pieces.append(Glide(piece, start=start, over=Duration(glide, unit)) if glide > 0 else piece)
        return Join(tuple(pieces), at=tuple(Duration(p, unit) for p, *_ in self.changes))

    def change(self, position: float, spec: str, *, axis: Any, glide: float) -> None:
        """Run ``spec`` from ``position`` on, gliding from the current value over ``glide`` (axis units).
        A piece that has not run yet (it starts at ``position`` too) is replaced."""
        spec = str(as_schedule(spec))
        start = self.effective(total=axis.total, unit=axis.unit).value(position, axis)
        if self.changes and self.changes[-1][0] == position:
            self.changes.pop()
        self.changes.append((float(position), spec, float(start), float(glide)))

    def state_dict(self) -> dict[str, Any]:
        return {"first": self.first, "changes": [list(c) for c in self.changes]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ScheduleHistory:
        try:
            h = cls(state["first"])
            h.changes = [(float(p), str(s), float(c), float(g)) for p, s, c, g in state["changes"]]
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed schedule history: {e!r}") from None
        return h


# ---------------------------------------------------------------------- the trial
class RegimenTrial:
    """A cadence regimen inside one Ray Tune trial (function API), checkpointed with the model.

    Build it at the top of the trainable, after the model and optimizer: it reads the templates and
    parameters from ``config`` (see :func:`search_space`), restores everything from
    ``ray.tune.get_checkpoint()`` if Tune hands one over, and applies a changed config from the
    clock's position (module docstring). Then train with ``optimizer.step(); trial.step()`` and
    call :meth:`report` with the metrics; every report carries a checkpoint unless told not to,
    so PBT always copies the latest weights.

    Args:
        config: the trial's config.
        optimizer: driven by a :class:`~cadence.optim.ScheduledLR` with the ``lr`` and field
            templates (one schedule for every param group).
        clock: the run's clock (its budget is the schedules' total).
        save: ``{name: object}`` with ``state_dict``/``load_state_dict`` saved in every checkpoint
            and restored from it: the model, the optimizer, averagers, the data stream. Their
            states must load with ``torch.load(weights_only=True)``.
        policy, sampler, tracker, plans: a curriculum and progressive plans, as in
            :class:`~cadence.regimen.link.RegimenLink`.
        glide: how long a changed schedule takes to reach its own values (a duration: ``"2%"`` of
            the budget, ``"50 steps"``; ``0`` switches at once).
        trial_id: this trial's id (default: Tune's).
        checkpoint: restore from this Tune ``Checkpoint`` or directory instead of
            ``ray.tune.get_checkpoint()`` (outside Tune: to continue a trial in a plain run).
    """

    def __init__(self, config: Mapping[str, Any], optimizer: torch.optim.Optimizer | None = None, *,
                 clock: Clock | None = None, save: Mapping[str, Any] | None = None, policy: Any = None,
                 sampler: Any = None, tracker: Any = None, plans: Any = None,
                 glide: Duration | str | float = "2%", trial_id: str | None = None,
                 checkpoint: Any = None) -> None:
        check_version("ray")
        cadence = config.get(CONFIG_KEY)
        if not isinstance(cadence, Mapping):
            raise CadenceError(f"the config has no {CONFIG_KEY!r} entry; build param_space with search_space(...)")
        self.clock = clock if clock is not None else Clock()
        self.glide = Duration.parse(glide)
        if self.glide.is_fraction and self.clock.budget is None:
            raise CadenceError(f"glide '{self.glide}' is a fraction of the budget, but the clock is open-ended; "
                               "give an amount such as '50 steps'")
        self.save = dict(save or {})
        for name, obj in self.save.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise CadenceError(f"save[{name!r}] has no state_dict/load_state_dict")
        self.param_names = list(cadence.get("params", []))
        self.params = {k: _plain(config[k]) for k in self.param_names if k in config}
        specs = {k: fill(t, config) for k, t in cadence.get("schedules", {}).items()}
        knob_specs = {k: fill(t, config) for k, t in cadence.get("knobs", {}).items()}
        if specs and optimizer is None:
            raise CadenceError(f"the config schedules optimizer fields {sorted(specs)}; pass the optimizer")
        self.trial_id = trial_id if trial_id is not None else _tune_trial_id()
        self.changes: list[dict[str, Any]] = []

        saved = _read_checkpoint(checkpoint)
        if saved is not None:
            state, objects = saved
            self._check(state)
            self.clock.load_state_dict(decode(state["link"])["clock"])
            self.histories = {k: ScheduleHistory.from_state(h) for k, h in state["histories"].items()}
            self.changes = list(state["changes"])
            if set(self.histories) != set(specs) | set(knob_specs):
                raise StateError(f"the checkpoint's regimen schedules {sorted(self.histories)}, this config "
                                 f"{sorted(set(specs) | set(knob_specs))}")
            self._apply(specs | knob_specs, state)
        else:
            self.histories = {k: ScheduleHistory(s) for k, s in (specs | knob_specs).items()}
        total, unit = self.clock.schedule_total, self.clock.unit
        effective = {k: h.effective(total=total, unit=unit) for k, h in self.histories.items()}
        scheduler = None
        if specs:
            scheduler = ScheduledLR(optimizer, clock=self.clock, **{k: effective[k] for k in specs})
        self.link = RegimenLink(scheduler=scheduler, clock=None if scheduler else self.clock,
                                knobs={k: effective[k] for k in knob_specs}, policy=policy, sampler=sampler,
                                tracker=tracker, plans=plans)
        self.scheduler = scheduler
        if saved is not None:
            self._load(state, objects)

    # ------------------------------------------------------------------ restore
    def _check(self, state: Any) -> None:
        if not isinstance(state, Mapping) or state.get("kind") != KIND:
            raise StateError(f"the Tune checkpoint holds no cadence regimen (missing kind={KIND!r})")
        missing = set(self.save) ^ set(state.get("objects", []))
        if missing:
            raise StateError(f"the checkpoint saved objects {sorted(state.get('objects', []))}, "
                             f"this trial saves {sorted(self.save)}")

    def _apply(self, specs: Mapping[str, str], state: Mapping[str, Any]) -> None:
        """Continue every schedule whose spec changed from the clock's position; record the change."""
        axis = self.clock.axis
        glide = axis.length(self.glide)
        changed = {}
        for name, spec in specs.items():
            if str(as_schedule(spec)) != self.histories[name].spec:
                changed[name] = [self.histories[name].spec, str(as_schedule(spec))]
                self.histories[name].change(self.clock.position, spec, axis=axis, glide=glide)
        old = state["params"]
        params = {k: [old.get(k), v] for k, v in self.params.items() if old.get(k) != v}
        donor = state["trial_id"] if state["trial_id"] != self.trial_id else None
        if changed or params or donor is not None:
            self.changes.append({"position": self.clock.position, "unit": self.clock.unit,
                                 "steps": self.clock.steps, "tokens": self.clock.tokens,
                                 "from_trial": donor, "params": params, "schedules": changed})

    def _load(self, state: Mapping[str, Any], objects: Mapping[str, Any]) -> None:
        for name, obj in self.save.items():
            obj.load_state_dict(objects[name])
        link_state = decode(state["link"])
        if self.scheduler is not None:  # the specs may have changed on purpose: keep the saved counters only
            link_state["scheduler"] = dict(link_state["scheduler"], specs=self.scheduler.state_dict()["specs"])
        self.link.load_state_dict(link_state)

    # ------------------------------------------------------------------ training
    def step(self, *, samples: float = 0, tokens: float = 0) -> None:
        """Count one optimizer step (after ``optimizer.step()``) that used ``samples`` and ``tokens``:
        the clock advances and every schedule is applied at its new position."""
        if self.scheduler is None:
            self.link.step(samples=samples, tokens=tokens)
        else:
            self.clock.report(samples=samples, tokens=tokens)
            self.scheduler.step()

    def knob(self, name: str) -> float:
        """The value of knob ``name`` at the clock's position."""
        return self.link.knob(name)

    def specs(self) -> dict[str, str]:
        """The spec of every schedule as run so far: replays this trial's values in a plain run."""
        return {k: str(s) for k, s in self.schedules().items()}

    def schedules(self) -> dict[str, Schedule]:
        total, unit = self.clock.schedule_total, self.clock.unit
        return {k: h.effective(total=total, unit=unit) for k, h in self.histories.items()}

    def state_dict(self) -> dict[str, Any]:
        """The regimen part of a checkpoint (JSON-safe; objects in ``save`` go separately)."""
        return {"kind": KIND, "trial_id": self.trial_id, "link": encode(self.link.state_dict()),
                "histories": {k: h.state_dict() for k, h in self.histories.items()},
                "params": dict(self.params), "changes": copy.deepcopy(self.changes),
                "specs": self.specs(), "objects": sorted(self.save)}

    def metrics(self) -> dict[str, Any]:
        """The clock's counts (:data:`TIME_ATTRS`), the regimen's values and the specs run so far."""
        out: dict[str, Any] = {TIME_ATTRS[u]: self.clock.counts[u] for u in ("steps", "samples", "tokens", "seconds")}
        out.update(self.link.values())
        if self.clock.progress is not None:
            out[TIME_ATTRS["progress"]] = float(self.clock.progress)
        out.update({f"cadence/spec/{k}": v for k, v in self.specs().items()})
        out["cadence/changes"] = len(self.changes)
        return out

    def report(self, metrics: Mapping[str, Any] | None = None, *, checkpoint: bool = True) -> None:
        """``ray.tune.report`` of ``metrics`` plus :meth:`metrics`, with a checkpoint of the whole
        regimen and the ``save`` objects (unless ``checkpoint=False``)."""
        from ray import tune

        merged = {**self.metrics(), **dict(metrics or {})}
        if not checkpoint:
            tune.report(merged)
            return
        with tempfile.TemporaryDirectory() as tmp:
            self.write(tmp)
            tune.report(merged, checkpoint=tune.Checkpoint.from_directory(tmp))

    def write(self, directory: str | Path) -> None:
        """Write the checkpoint files into ``directory``."""
        directory = Path(directory)
        (directory / REGIMEN_FILE).write_text(json.dumps(self.state_dict()))
        torch.save({k: obj.state_dict() for k, obj in self.save.items()}, directory / OBJECTS_FILE)


@contextlib.contextmanager
def quiet_local_ray(num_cpus: int | None = None) -> Iterator[bool]:
    """A local Ray for Tune that prints only errors, shut down on exit; yields whether it started one
    (an already running Ray is used as it is, and left running).

    Without it, ``Tuner.fit()`` starts Ray with its defaults: INFO lines and coloured worker logs on
    the console, a dashboard, usage statistics, a notice that token authentication is on, and a
    "Remote file not found ... result.json" warning each time PBT copies a trial whose result file
    is not written yet (harmless). Here: Ray's and Tune's loggers are at ERROR while the block runs
    (from before Ray starts: its authentication notice is a warning), Tune's console output off
    (``RAY_AIR_NEW_OUTPUT=0`` unless set: with ``verbose=0`` Tune then prints no configuration box
    and no results folder), no dashboard or usage statistics, worker logs not forwarded. Token
    authentication is left as Ray sets it.

        >>> with quiet_local_ray(num_cpus=2):        # doctest: +SKIP
        ...     results = tune.Tuner(trainable, param_space=space.param_space, ...).fit()
    """
    import logging

    import ray

    started = not ray.is_initialized()
    loggers = [logging.getLogger(name) for name in ("ray", "ray.tune", "ray.train", "ray.air")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    output = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        if started:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     configure_logging=False)
        yield started
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if output is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        if started:
            ray.shutdown()


def _tune_trial_id() -> str:
    from ray import tune

    try:
        return str(tune.get_context().get_trial_id())
    except Exception:  # outside a Tune session
        return ""


def _read_checkpoint(ckpt: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    if isinstance(ckpt, (str, Path)):
        return read_files(ckpt)
    if ckpt is None:
        from ray import tune

        ckpt = tune.get_checkpoint()
        if ckpt is None:
            return None
    with ckpt.as_directory() as d:
        return read_files(d)


def read_files(directory: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(regimen state, objects' states)`` from a checkpoint directory written by :meth:`RegimenTrial.write`."""
    directory = Path(directory)
    if not (directory / REGIMEN_FILE).exists():
        raise StateError(f"{directory} holds no {REGIMEN_FILE}: not a checkpoint of a cadence RegimenTrial")
    state = json.loads((directory / REGIMEN_FILE).read_text())
    objects = torch.load(directory / OBJECTS_FILE, weights_only=True) if (directory / OBJECTS_FILE).exists() else {}
    return state, objects


def load_record(checkpoint: Any) -> dict[str, Any]:
    """What a trial's checkpoint (a Tune ``Checkpoint`` or its directory) says about its regimen:
    ``specs`` (each schedule as run, replayable), ``changes`` (what changed where, from which
    donor trial), ``params`` (the parameters in effect), ``clock`` (its counts)."""
    path = checkpoint if isinstance(checkpoint, (str, Path)) else None
    if path is None:
        with checkpoint.as_directory() as d:
            state, _ = read_files(d)
    else:
        state, _ = read_files(path)
    if state.get("kind") != KIND:
        raise StateError(f"not a cadence RegimenTrial checkpoint (missing kind={KIND!r})")
    return {"specs": state["specs"], "changes": state["changes"], "params": state["params"],
            "clock": state["link"]["clock"]["counts"], "trial_id": state["trial_id"]}


__all__ = ["CONFIG_KEY", "TIME_ATTRS", "quiet_local_ray", "SearchSpace", "search_space", "fill", "ScheduleHistory",
           "RegimenTrial", "load_record", "read_files"]


FORECAST_WIDEN = 4.0
""":class:`ForecastStopper`'s default ``widen``. Decided on the pre-training lab's searches of seeds
0–4 by a rule registered before any number (the most trial-steps saved among the settings that
kept every search's best trial) and judged on new searches: the best trial kept in 9 of 10 (seeds
5–14; the intervals as reported, ``widen=1``: 3 of 10), 9% of trial-steps saved
(docs/forecast-evidence.md, "Forecast-driven early stopping in Ray Tune")."""


class ForecastStopper:
    """A Ray Tune stopper (``tune.RunConfig(stop=ForecastStopper())``) that stops a trial once its
    forecast final loss is clearly worse than the best trial's: the low end of its interval lies
    above the high end of the best trial's (the forecast with the lowest final loss).

    Each trial reports its live forecast (``cadence/forecast/final_loss``, ``…/low``, ``…/high``,
    e.g. the ``values()`` of ``link.live_forecast()``) with its results; results without one are
    never stopped, nor any before ``min_iterations`` (``training_iteration``). A stopped trial's
    forecast is forgotten: a trial that will not finish is never the best one to compare with.

    ``widen`` multiplies both half-widths of every reported interval around its forecast
    (``low → final − widen·(final − low)``, ``high → final + widen·(high − final)``) before the
    comparison: ``widen=1`` uses the intervals as reported, ``widen=2`` stops only trials twice as
    clearly worse. The default, :data:`FORECAST_WIDEN`, was decided on one block of lab searches
    and judged on others (:mod:`cadence.labs.pretrain.stopper_choice`).

        >>> stopper = ForecastStopper(widen=2)
        >>> def result(final):
        ...     return {"training_iteration": 3, "cadence/forecast/final_loss": final,
        ...             "cadence/forecast/low": final - 0.01, "cadence/forecast/high": final + 0.01}
        >>> stopper("best", result(3.0)), stopper("worse", result(3.03)), stopper("worst", result(3.05))
        (False, False, True)
    """

    def __init__(self, *, prefix: str = "cadence/", min_iterations: int = 1,
                 widen: float = FORECAST_WIDEN) -> None:
        if not (isinstance(widen, (int, float)) and math.isfinite(widen) and widen > 0):
            raise CadenceError(f"widen must be a finite number > 0 (1: the intervals as reported), got {widen!r}")
        self.key = prefix + "forecast/"
        self.min_iterations = int(min_iterations)
        self.widen = float(widen)
        self.latest: dict[str, tuple[float, float, float]] = {}  # trial → (final, low, high)
        self.stopped: list[str] = []

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        try:
            forecast = tuple(float(result[self.key + k]) for k in ("final_loss", "low", "high"))
        except (KeyError, TypeError, ValueError):
            return False
        if self.widen != 1.0:  # 1: exactly the reported bounds (no rounding through the arithmetic)
            final, low, high = forecast
            forecast = (final, final - self.widen * (final - low), final + self.widen * (high - final))
        self.latest[trial_id] = forecast
        if result.get("training_iteration", self.min_iterations) < self.min_iterations:
            return False
        best = min(self.latest, key=lambda t: self.latest[t][0])
        if best == trial_id or forecast[1] <= self.latest[best][2]:
            return False
        self.stopped.append(trial_id)
        del self.latest[trial_id]
        return True

    def stop_all(self) -> bool:
        return False

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the settings, every running trial's latest (widened) forecast, the trials stopped."""
        return {"kind": "cadence.ForecastStopper", "settings": [self.key, self.min_iterations, self.widen],
                "latest": {t: list(f) for t, f in self.latest.items()}, "stopped": list(self.stopped)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a stopper with the same settings (else a ``StateError``)."""
        _expect_stopper_state(state, "cadence.ForecastStopper", [self.key, self.min_iterations, self.widen])
        try:
            latest = {str(t): tuple(float(v) for v in f) for t, f in state["latest"].items()}
            stopped = [str(t) for t in state["stopped"]]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise StateError(f"malformed ForecastStopper state: {e!r}") from None
        if any(len(f) != 3 or not all(math.isfinite(v) for v in f) for f in latest.values()):
            raise StateError("malformed ForecastStopper state: a forecast is not three finite numbers")
        self.latest, self.stopped = latest, stopped


def _expect_stopper_state(state: Any, kind: str, settings: list[Any]) -> None:
    """Refuse a state that is not a dict of ``kind`` or was saved by a stopper with other settings."""
    if not isinstance(state, Mapping) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, Mapping) else type(state).__name__
        raise StateError(f"not a {kind.split('.')[-1]} state (found {found!r})")
    if list(state.get("settings", ())) != settings:
        raise StateError(f"this {kind.split('.')[-1]} state was saved with settings {state.get('settings')!r}, "
                         f"this stopper has {settings!r}")


class EarlyRankingStopper:
    """The early-ranking rule of "Secret Recipe" (arXiv 2412.13337) as a Ray Tune stopper: at the
    first result at or after ``at_iteration``, a trial is stopped when an earlier-reported trial
    has both a lower gradient norm and a higher loss there (the paper: lower early gradient norms
    and higher early losses indicate better final performance). Compare only trials on the same
    data and token budget. UNCONFIRMED: how early, the smoothing (here: the reported values as
    they are) and whether the rule holds beyond the paper's 3B–7B SFT runs.
    """

    def __init__(self, *, at_iteration: int, grad_norm: str = "grad_norm", loss: str = "loss") -> None:
        self.at, self.grad_norm, self.loss = int(at_iteration), grad_norm, loss
        self.seen: dict[str, tuple[float, float]] = {}
        self.stopped: list[str] = []

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        if trial_id in self.seen or result.get("training_iteration", 0) < self.at:
            return False
        if self.grad_norm not in result or self.loss not in result:
            return False
        mine = (float(result[self.grad_norm]), float(result[self.loss]))
        self.seen[trial_id] = mine
        if any(g < mine[0] and l > mine[1] for t, (g, l) in self.seen.items() if t != trial_id):
            self.stopped.append(trial_id)
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the settings, every ranked trial's (gradient norm, loss), the trials stopped."""
        return {"kind": "cadence.EarlyRankingStopper", "settings": [self.at, self.grad_norm, self.loss],
                "seen": {t: list(v) for t, v in self.seen.items()}, "stopped": list(self.stopped)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a stopper with the same settings (else a ``StateError``)."""
        _expect_stopper_state(state, "cadence.EarlyRankingStopper", [self.at, self.grad_norm, self.loss])
        try:
            seen = {str(t): (float(g), float(l)) for t, (g, l) in state["seen"].items()}
            stopped = [str(t) for t in state["stopped"]]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise StateError(f"malformed EarlyRankingStopper state: {e!r}") from None
        self.seen, self.stopped = seen, stopped

    def stop_all(self) -> bool:
        return False
