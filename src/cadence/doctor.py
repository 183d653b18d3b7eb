"""The regimen doctor: find conflicts between a run's LR schedule, budget, curriculum and
continual-pre-training choices that the literature documents, before the compute is spent.

A regimen is a small YAML or JSON file (the format is in ``docs/doctor.md``)::

    budget: 20000 steps            # or "2B tokens"; omit or null for an open-ended run
    elapsed: 0                     # amount already trained on this clock (resumed/extended runs)
    tokens_per_step: 4096          # optional nominal rates, so token amounts resolve
    lr: wsd(peak=3e-4, warmup=1%, decay=20%)
    schedules: {weight_decay: "cosine(peak=0.1)"}   # optional: other scheduled knobs
    curriculum: {kind: quality-ascending}            # random, quality-ascending, ...
    averaging: {kind: tail}                          # optional: tail | ema
    continual: {rewarm: true, replay: 0.0}           # optional: continual pre-training; replay is a
                                                     # fraction or a Replay spec {kind: replay, fraction: 0.05}

Checks (each :class:`Finding` carries the reason, its source, and a fix):

* ``full-decay-quality-curriculum`` — quality-ascending data with the LR decayed below
  :data:`MODERATE_FLOOR` of its peak (Luo et al., arXiv 2511.18903);
* ``rewarm-without-replay`` — continual pre-training that re-warms the LR with no replay of the
  old data (Ibrahim et al., arXiv 2403.08763);
* ``decay-exceeds-remaining`` / ``schedule-does-not-fit`` — a cooldown longer than the budget
  left, or durations that do not fit the budget at all (Hägele et al., arXiv 2405.18392);
* ``fraction-in-open-ended`` — fraction-of-budget durations in a run with no budget (warning when
  the schedule cannot be evaluated, note when a phase just waits for a budget).

    >>> findings = diagnose(Regimen.from_dict({"budget": "1000 steps", "lr": "cosine(peak=1e-3)",
    ...                                        "curriculum": {"kind": "quality-ascending"}}))
    >>> [f.code for f in findings]
    ['full-decay-quality-curriculum']
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import numpy as np
import yaml

from cadence.clock import Axis, Duration, parse_budget
from cadence.errors import BudgetError, CadenceError
from cadence.schedules.base import Schedule, as_schedule

MODERATE_FLOOR = 0.1
"""Final LR / peak below which a decay counts as full. Luo et al. recommend a "moderate" decay; the
paper's sketch of moderate decay is read here as final factors of 0.1–0.3; the paper's ratio is UNCONFIRMED."""
REWARM_LEVEL = 0.5
"""A continual run re-warms when its LR starts below this fraction of its peak (unless stated)."""
CURVE_POINTS = 2001
"""Samples per schedule when locating its peak and the start of its cooldown."""

Severity = Literal["warning", "note"]


class RegimenError(CadenceError):
    """A regimen file that cannot be read or has a malformed field."""


@dataclass(frozen=True)
class Finding:
    """One problem: a stable ``code``, what is wrong, why (with its source) and how to fix it."""

    code: str
    severity: Severity
    message: str
    reason: str
    fix: str


@dataclass(frozen=True)
class Regimen:
    """What the doctor reads from a regimen file. Build with :meth:`from_dict` or :func:`load_regimen`."""

    lr: Schedule
    budget: Duration | None = None
    elapsed: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    curriculum: str = "random"
    averaging: str | None = None
    continual: bool = False
    rewarm: bool | None = None
    replay: float = 0.0

    _KEYS = ("name", "budget", "elapsed", "tokens_per_step", "samples_per_step", "lr", "schedules", "curriculum",
             "averaging", "continual")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Regimen:
        """Validate a regimen dict; errors name the field."""
        if not isinstance(d, Mapping):
            raise RegimenError(f"a regimen must be a mapping of fields, got {type(d).__name__}")
        unknown = [k for k in d if k not in cls._KEYS]
        if unknown:
            raise RegimenError(f"unknown regimen field(s) {unknown}; known: {', '.join(cls._KEYS)}")
        if "lr" not in d:
            raise RegimenError("a regimen needs an 'lr' schedule spec")
        try:
            lr = as_schedule(d["lr"])
            schedules = {str(k): as_schedule(v) for k, v in (d.get("schedules") or {}).items()}
            budget = parse_budget(d.get("budget"))
        except CadenceError as e:
            raise RegimenError(f"regimen: {e}") from None
        elapsed = _number(d.get("elapsed", 0), "elapsed", lo=0.0)
        if budget is not None and elapsed >= budget.amount:
            raise RegimenError(f"elapsed ({elapsed:g}) must be less than the budget ({budget})")
        rates = {"steps": 1.0} | {u: _number(d[f"{u}_per_step"], f"{u}_per_step", lo=0.0, open_lo=True)
                                  for u in ("tokens", "samples") if d.get(f"{u}_per_step") is not None}
        curriculum = _section(d, "curriculum")
        averaging = _section(d, "averaging")
        continual = _section(d, "continual") if d.get("continual") not in (None, False, True) else {}
        rewarm = continual.get("rewarm")
        if rewarm is not None and not isinstance(rewarm, bool):
            raise RegimenError(f"continual.rewarm must be true or false, got {rewarm!r}")
        return cls(lr=lr, budget=budget, elapsed=elapsed, rates=rates, schedules=schedules,
                   curriculum=str(curriculum.get("kind", "random")), averaging=averaging.get("kind"),
                   continual=bool(d.get("continual")), rewarm=rewarm,
                   replay=_replay_fraction(continual.get("replay", _replayed(curriculum))))

    def axis(self) -> Axis:
        """The frame the schedules are evaluated in: the budget's unit and total, and the given rates."""
        unit = self.budget.unit if self.budget else "steps"
        own = self.rates.get(unit)
        rates = {u: own / r for u, r in self.rates.items()} if own else {}
        return Axis(unit, self.budget.amount if self.budget else None, rates)


def _number(v: Any, name: str, *, lo: float | None = None, hi: float | None = None, open_lo: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise RegimenError(f"{name} must be a finite number, got {v!r}")
    if (lo is not None and (v < lo or (open_lo and v == lo))) or (hi is not None and v > hi):
        raise RegimenError(f"{name} must lie in {'(' if open_lo else '['}{lo}, {hi if hi is not None else 'inf'}], got {v!r}")
    return float(v)


def _replayed(curriculum: Mapping[str, Any]) -> Any:
    """The share a replay curriculum (``policy: replay``) draws from the old data; 0 for any other."""
    return curriculum.get("fraction", 0.0) if curriculum.get("policy") == "replay" else 0.0


def _replay_fraction(v: Any) -> float:
    """``continual.replay``: a fraction, or a :class:`~cadence.curricula.Replay` piece's spec (``{fraction: 0.05}``)."""
    if isinstance(v, Mapping):
        from cadence.curricula.replay import Replay   # the curricula package imports torch: only when used

        try:
            return Replay.from_dict(v).fraction
        except CadenceError as e:
            raise RegimenError(f"continual.replay: {e}") from None
    return _number(v, "continual.replay", lo=0.0, hi=1.0)


def _section(d: Mapping[str, Any], name: str) -> dict[str, Any]:
    v = d.get(name)
    if v is None:
        return {}
    if isinstance(v, str) and name != "continual":
        return {"kind": v}
    if not isinstance(v, Mapping):
        raise RegimenError(f"{name} must be a mapping (e.g. {{kind: ...}}), got {v!r}")
    return dict(v)


def load_regimen(path: str | Path) -> Regimen:
    """Read a regimen from a YAML or JSON file."""
    return Regimen.from_dict(read_fields(path))


def read_fields(path: str | Path) -> dict[str, Any]:
    """The mapping of fields a YAML or JSON regimen file holds; anything else is one error naming the file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise RegimenError(f"cannot read regimen file {str(p)!r}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise RegimenError(f"{p}: not a text file (a regimen is YAML or JSON)") from None
    except yaml.YAMLError as e:
        raise RegimenError(f"{p}: not valid YAML/JSON: {e}") from None
    if not isinstance(data, dict):
        what = ("the file is empty" if data is None else "it holds a list, not fields" if isinstance(data, list)
                else "it holds plain text, not fields")
        raise RegimenError(f"{p}: not a regimen: {what} (a regimen is a YAML or JSON mapping of fields such as "
                           f"'budget:' and 'lr:', in a .yaml, .yml or .json file; see docs/regimen.md)")
    return data


# ---------------------------------------------------------------------- checks
@dataclass(frozen=True)
class _Curve:
    """A schedule sampled over the budget: peak, final value, and where its cooldown starts."""

    peak: float
    final: float
    decay_start: float
    spacing: float


def _curve(s: Schedule, axis: Axis) -> _Curve:
    ts, vs = s.curve(axis.total, CURVE_POINTS, unit=axis.unit, rates=axis.rates)
    v = np.asarray(vs)
    peak = float(v.max())
    at_peak = np.flatnonzero(v >= peak * (1 - 1e-9))
    return _Curve(peak, float(v[-1]), float(ts[at_peak[-1]]), axis.total / (CURVE_POINTS - 1))


def _fits(r: Regimen, s: Schedule) -> BudgetError | None:
    try:
        s.check(r.axis())
    except BudgetError as e:
        return e
    return None


def check_quality_curriculum(r: Regimen) -> list[Finding]:
    """Full LR decay under a quality-ascending curriculum."""
    if r.curriculum != "quality-ascending" or r.budget is None or _fits(r, r.lr):
        return []
    c = _curve(r.lr, r.axis())
    if c.peak <= 0 or c.final / c.peak >= MODERATE_FLOOR:
        return []
    return [Finding(
        "full-decay-quality-curriculum", "warning",
        f"the LR ends at {c.final / c.peak:.0%} of its peak while the data gets cleaner towards the end "
        f"(curriculum: quality-ascending)",
        "Luo et al., 'How Learning Rate Decay Wastes Your Best Data in Curriculum-Based LLM Pretraining' "
        "(arXiv 2511.18903): ascending-quality order helps under a constant "
        "LR, but the advantage mostly vanishes under WSD/cosine decay because the best data arrives when the LR "
        "is tiny.",
        f"decay moderately (final LR >= {MODERATE_FLOOR:g}-0.3 x peak, e.g. floor=0.3 in the lr spec), or keep the "
        "LR constant and average the last checkpoints (averaging: {kind: tail}; cadence.averaging.CheckpointAverage)")]


def _starts_low(r: Regimen) -> bool:
    """Whether the LR starts below :data:`REWARM_LEVEL` of its peak (false if it cannot be evaluated)."""
    axis = r.axis()
    try:
        peak = _curve(r.lr, axis).peak if axis.total is not None else r.lr.bounds()[1]
        return r.lr.value(0.0, axis) < REWARM_LEVEL * peak
    except BudgetError:
        return False


def check_rewarm_replay(r: Regimen) -> list[Finding]:
    """Re-warming without replay in continual pre-training."""
    if not r.continual or r.replay > 0:
        return []
    rewarm = _starts_low(r) if r.rewarm is None else r.rewarm
    if not rewarm:
        return []
    return [Finding(
        "rewarm-without-replay", "warning",
        "continual pre-training re-warms the LR but replays none of the old data (continual.replay is 0)",
        "Ibrahim et al., 'Simple and Scalable Strategies to Continually Pre-train Large Language Models' "
        "(arXiv 2403.08763): re-warming a decayed model causes forgetting; "
        "compute-equivalent replay counters it: even 1% helps, 5% sufficed for a weak shift (Pile -> SlimPajama), "
        "25% for a strong one (English -> German).",
        "set continual.replay to 0.05 (weak shift) up to 0.25 (strong shift), or avoid the re-warm by continuing "
        "from a pre-decay WSD trunk checkpoint or with an infinite schedule (Singh et al., 'Beyond Cosine Decay', "
        "arXiv 2503.02844)")]


def check_decay_fits(r: Regimen) -> list[Finding]:
    """A cooldown longer than the budget left, or durations that do not fit the budget at all."""
    if r.budget is None:
        return []
    out = []
    for name, s in {"lr": r.lr, **r.schedules}.items():
        err = _fits(r, s)
        if err is not None:
            out.append(Finding(
                "schedule-does-not-fit", "warning", f"{name}: {s} does not fit the budget ({r.budget}): {err}",
                "a phase given as an amount must fit inside the budget; otherwise the schedule cannot be evaluated "
                "(cadence refuses it at the start of the run).",
                "shorten the phase, give it as a fraction of the budget (e.g. decay=20%), or raise the budget"))
    if out or r.elapsed == 0:
        return out
    c = _curve(r.lr, r.axis())
    if c.decay_start < r.elapsed - c.spacing:
        unit = r.axis().unit
        remaining = r.budget.amount - r.elapsed
        out.append(Finding(
            "decay-exceeds-remaining", "warning",
            f"the LR cooldown spans {r.budget.amount - c.decay_start:g} {unit} but only {remaining:g} {unit} remain "
            f"after {r.elapsed:g}: the LR drops at once to {r.lr.value(r.elapsed, r.axis()) / c.peak:.0%} of its peak",
            "Hägele et al., 'Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations' "
            "(arXiv 2405.18392): the cooldown is what turns a constant-LR checkpoint into a "
            "finished model; most of its gain needs ~10-20% of the run, and a cut-short cooldown starts with an LR "
            "jump.",
            f"give the cooldown as an amount that fits (e.g. decay={int(remaining)} {unit}), or raise the budget to at "
            f"least {r.elapsed + (r.budget.amount - c.decay_start):g} {unit}; with a WSD trunk, branch the cooldown "
            "from the trunk checkpoint instead (cadence.tree)"))
    return out


def _fraction_fields(s: Schedule) -> list[str]:
    """``schedule.param=value`` for every fraction-of-budget duration in ``s`` and its children."""
    out = []
    for f in dataclasses.fields(s):
        v = getattr(s, f.name)
        for d in v if isinstance(v, tuple) else (v,):
            if isinstance(d, Duration) and d.is_fraction and d.amount > 0:
                out.append(f"{s.name}.{f.name}={d}")
    for child in s.children():
        out.extend(_fraction_fields(child))
    return out


def check_open_ended(r: Regimen) -> list[Finding]:
    """Fraction-of-budget durations in a run with no budget."""
    if r.budget is not None:
        return []
    out = []
    for name, s in {"lr": r.lr, **r.schedules}.items():
        fractions = _fraction_fields(s)
        err = _fits(r, s)
        if err is None and not fractions:
            continue
        where = ", ".join(fractions) or str(s)
        out.append(Finding(
            "fraction-in-open-ended", "warning" if err else "note",
            f"{name}: {where} " + (f"cannot resolve: the run has no budget ({err})" if err else
                                  "waits for a budget: until one is set the schedule holds (e.g. a WSD keeps its peak)"),
            "a fraction of the budget has no length in an open-ended run (the WSD/continual setting: arXiv "
            "2405.18392, 2503.02844); only amounts such as '500 steps' or '2M tokens' resolve before a budget is set.",
            "write these durations as amounts (e.g. warmup=500 steps), or set a budget in the regimen"
            + ("" if err else "; this is fine for a WSD trunk whose cooldown you set later with Clock.set_budget")))
    return out


CHECKS: tuple[Callable[[Regimen], list[Finding]], ...] = (
    check_quality_curriculum, check_rewarm_replay, check_decay_fits, check_open_ended)
"""Every check, in the order findings are reported."""


def diagnose(regimen: Regimen) -> list[Finding]:
    """All findings for ``regimen`` (warnings and notes)."""
    return [f for check in CHECKS for f in check(regimen)]


def findings_json(findings: list[Finding]) -> str:
    """Findings as a JSON list of objects."""
    return json.dumps([dataclasses.asdict(f) for f in findings], indent=2)
