"""Forecaster settings judged the way a user meets them: decided on one model size, judged on another.

A :class:`Setting` is every choice a forecast depends on — the law, how a fit is chosen among good
starts, the first fraction of each fitted run left out (``skip``) and the annealing law's λ grid.
:func:`held_out` fits a setting on the published protocol's fitted curves and scores it on the
held-out schedules only: PredE, WorstE, the final-loss error and the coverage of
:meth:`~cadence.forecast.fit.FitResult.interval`. :func:`size_out` does this on two or more model
sizes and, for every ordered pair, picks the setting (and the interval's scale) on the first and
reports how it does on the second, next to the shipped default — a choice never judged on the
curves it was made on.

    >>> from cadence.forecast.published import load_curves
    >>> curves = load_curves("multipower-25m")
    >>> score = held_out(curves, Setting(choose="objective"))
    >>> len(score.names), score.pred_e[0] < 0.01
    (6, True)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from cadence.errors import CadenceError
from cadence.forecast.fit import (DEFAULT_LAMS, DEFAULT_LEVEL, INTERVAL_METHODS, FitResult, FitTarget, final_half_width,
                                  fit_law, run_envelope)
from cadence.forecast.laws import DEFAULT_LAW
from cadence.forecast.regime import transient_mask

LONG_LAMS = (0.99, 0.995, 0.999, 0.9995)
"""The λ grid of public reproductions of arXiv 2408.11029 (long memory only), the alternative to
:data:`~cadence.forecast.fit.DEFAULT_LAMS`."""
SKIPS = (0.0, 0.15, 0.25)
SCALES = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
"""Candidate factors on the interval's residual quantiles."""


@dataclass(frozen=True)
class Setting:
    """Every choice a forecast depends on (defaults: the shipped ones)."""

    law: str = DEFAULT_LAW
    choose: str = "leave-one-out"
    skip: float = 0.0
    lams: tuple[float, ...] = DEFAULT_LAMS

    def __str__(self) -> str:
        lams = "" if self.law != "annealing" else (", λ long" if self.lams == LONG_LAMS else ", λ default")
        return f"{self.law}, {self.choose}, skip {self.skip:g}{lams}"

    def fit(self, targets: Sequence[FitTarget], exclude_transients: bool = False) -> FitResult:
        """Fit these runs under this setting (their points in the first ``skip`` of each run, and
        with ``exclude_transients`` those in a transient window, left out)."""
        kept = [trim(t, self.skip, exclude_transients) for t in targets]
        lams = {"lams": self.lams} if self.law == "annealing" else {}
        return fit_law(kept, law=self.law, choose=self.choose, **lams)


SETTINGS = tuple(
    Setting(law, choose, skip, lams)
    for law, choose, skip in itertools.product(("annealing", "multi-power"), ("leave-one-out", "objective"), SKIPS)
    for lams in ((DEFAULT_LAMS, LONG_LAMS) if law == "annealing" else (DEFAULT_LAMS,)))
"""The candidates :func:`size_out` decides among: both laws × both choices × :data:`SKIPS`, and
both λ grids for the annealing law."""


def trim(target: FitTarget, skip: float, exclude_transients: bool = False) -> FitTarget:
    """``target`` without its points in the first ``skip`` of the run (and, with
    ``exclude_transients``, without those in a transient window)."""
    keep = target.steps > skip * len(target.lr)
    if exclude_transients:
        keep &= ~transient_mask(target.lr, target.steps)
    if keep.sum() < 2:
        raise CadenceError(f"{target.name}: fewer than 2 points left after skip {skip:g}")
    return FitTarget(target.steps[keep], target.loss[keep], target.lr, target.name)


@dataclass(frozen=True)
class HeldOut:
    """One setting on one curve set, held-out schedules only: per curve PredE, WorstE, the final-loss
    error ``L̂/L − 1``, and per interval scale (:data:`SCALES`) the share of points inside the
    interval and whether the final loss is inside (``coverage``, ``final_covered``: the pooled
    interval; ``runs_coverage``, ``runs_final_covered``: ``interval(method="runs")``;
    ``final_interval_covered``: ``FitResult.final_interval(lr, "last")``), and the
    unscaled relative half-widths of the run envelope (``runs_width``) and of the final-loss
    interval (``final_width``)."""

    setting: Setting
    names: tuple[str, ...]
    pred_e: tuple[float, ...]
    worst_e: tuple[float, ...]
    final: tuple[float, ...]
    coverage: dict[float, tuple[float, ...]] = field(default_factory=dict)
    final_covered: dict[float, tuple[bool, ...]] = field(default_factory=dict)
    runs_coverage: dict[float, tuple[float, ...]] = field(default_factory=dict)
    runs_final_covered: dict[float, tuple[bool, ...]] = field(default_factory=dict)
    final_interval_covered: dict[float, tuple[bool, ...]] = field(default_factory=dict)
    runs_width: float = float("nan")
    final_width: float = float("nan")

    def covers(self, method: str = "pooled") -> tuple[dict[float, tuple[float, ...]], dict[float, tuple[bool, ...]]]:
        """Per scale, the share of points inside and whether each final loss is inside, for an interval
        method (``"final"``: the final-loss interval, whose "points" are the final losses)."""
        if method == "final":
            shares = {s: tuple(float(c) for c in v) for s, v in self.final_interval_covered.items()}
            return shares, self.final_interval_covered
        return (self.coverage, self.final_covered) if method == "pooled" else (self.runs_coverage,
                                                                               self.runs_final_covered)

    @property
    def criterion(self) -> float:
        """What :func:`size_out` minimises: mean PredE plus mean |final-loss error| (the whole curve
        and the number users act on, equally)."""
        return float(np.mean(self.pred_e) + np.mean(np.abs(self.final)))

    def mean_coverage(self, scale: float, method: str = "pooled") -> float:
        """Share of held-out points inside the interval, every curve weighing the same."""
        return float(np.mean(self.covers(method)[0][scale]))


def held_out(curves: Sequence, setting: Setting, *, exclude_transients: bool = False, level: float = DEFAULT_LEVEL,
             scales: Sequence[float] = SCALES) -> HeldOut:
    """Fit ``setting`` on the protocol's fitted curves (:func:`~cadence.forecast.published.load_curves`),
    score it on the others (with ``exclude_transients``, transient points are neither fitted nor scored)."""
    fit = setting.fit([c.target for c in curves if c.fitted], exclude_transients)
    names, pred_e, worst_e, final = [], [], [], []
    coverage: dict[tuple[str, float], list[float]] = {(m, s): [] for m in INTERVAL_METHODS for s in scales}
    covered: dict[tuple[str, float], list[bool]] = {(m, s): [] for m in INTERVAL_METHODS for s in scales}
    final_in: dict[float, list[bool]] = {s: [] for s in scales}
    for c in curves:
        if c.fitted:
            continue
        t = trim(c.target, 0.0, exclude_transients)
        pred = fit.law.predict(t.lr, t.steps)
        rel = np.abs(t.loss - pred) / t.loss
        names.append(c.name)
        pred_e.append(float(rel.mean()))
        worst_e.append(float(rel.max()))
        final.append(float(pred[-1] / t.loss[-1] - 1.0))
        for m, s in coverage:
            low, high = fit.interval(t.lr, t.steps, level, s, method=m)
            inside = (t.loss >= low) & (t.loss <= high)
            coverage[m, s].append(float(inside.mean()))
            covered[m, s].append(bool(inside[-1]))
        for s in scales:
            low, high = fit.final_interval(t.lr[:t.steps[-1]], "last", s)
            final_in[s].append(bool(low <= t.loss[-1] <= high))

    def of(d: dict, method: str) -> dict:
        return {s: tuple(v) for (m, s), v in d.items() if m == method}

    return HeldOut(setting, tuple(names), tuple(pred_e), tuple(worst_e), tuple(final), of(coverage, "pooled"),
                   of(covered, "pooled"), of(coverage, "runs"), of(covered, "runs"),
                   {s: tuple(v) for s, v in final_in.items()}, run_envelope(fit.loo_residuals, level),
                   final_half_width(fit.loo_residuals))


@dataclass(frozen=True)
class Decision:
    """A choice made on ``decided_on`` and judged on ``judged_on``: the chosen setting and interval
    scale (``scale``: the pooled interval's; ``runs_scale``: ``interval(method="runs")``'s), and the
    held-out scores on ``judged_on`` of the chosen and of the shipped setting."""

    decided_on: str
    judged_on: str
    chosen: Setting
    scale: float
    chosen_judged: HeldOut
    default_judged: HeldOut
    runs_scale: float = float("nan")


@dataclass(frozen=True)
class SizeOut:
    """Every setting's :class:`HeldOut` on every set, and one :class:`Decision` per ordered pair of sets."""

    scores: dict[str, dict[Setting, HeldOut]]
    decisions: tuple[Decision, ...]
    level: float


def choose_scale(score: HeldOut, level: float, method: str = "pooled") -> float:
    """The interval scale whose mean coverage on ``score`` is nearest ``level`` (the smaller on a tie)."""
    return min(score.covers(method)[0], key=lambda s: (abs(score.mean_coverage(s, method) - level), s))


def size_out(sets: Sequence[str], settings: Sequence[Setting] = SETTINGS, *, default: Setting = Setting(),
             exclude_transients: bool = False, level: float = DEFAULT_LEVEL, progress=None) -> SizeOut:
    """Score every setting on every curve set (``default`` included), then for each ordered pair
    ``(A, B)`` choose on A the setting with the lowest :attr:`HeldOut.criterion` and the interval
    scale nearest ``level``, and judge both on B."""
    from cadence.forecast.published import load_curves

    if len(sets) < 2:
        raise CadenceError("a leave-a-size-out evaluation needs at least two curve sets")
    candidates = list(dict.fromkeys([*settings, default]))
    scores: dict[str, dict[Setting, HeldOut]] = {}
    for name in sets:
        curves = load_curves(name)
        scores[name] = {}
        for s in candidates:
            scores[name][s] = held_out(curves, s, exclude_transients=exclude_transients, level=level)
            if progress is not None:
                progress(name, s)
    decisions = []
    for a, b in itertools.permutations(sets, 2):
        chosen = min(settings, key=lambda s: scores[a][s].criterion)
        decisions.append(Decision(a, b, chosen, choose_scale(scores[a][chosen], level), scores[b][chosen],
                                  scores[b][default], choose_scale(scores[a][chosen], level, "runs")))
    return SizeOut(scores, tuple(decisions), level)


FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Shares of a run seen by the partial-run evaluation."""


@dataclass(frozen=True)
class PartialScore:
    """The live forecast of one held-out curve from its first ``fraction`` of steps, alone or with
    the protocol's fitted curves: the final-loss error ``L̂/L − 1`` and whether the interval holds
    the measured final loss (``error`` is NaN and ``reason`` says why when no forecast could be made)."""

    curve: str
    fraction: float
    with_runs: bool
    error: float
    covered: bool
    reason: str = ""


def partial_runs(curves: Sequence, fractions: Sequence[float] = FRACTIONS, law: str = DEFAULT_LAW,
                 progress=None) -> list[PartialScore]:
    """:func:`~cadence.forecast.live.forecast_final` on every held-out curve cut after each
    fraction of its budget, without and with the protocol's fitted curves."""
    from cadence.forecast.live import forecast_final

    fitted = [c.target for c in curves if c.fitted]
    out = []
    for c in curves:
        if c.fitted:
            continue
        t = c.target
        for fraction, runs in itertools.product(fractions, ((), fitted)):
            seen = t.steps <= fraction * len(t.lr)
            try:
                f = forecast_final(t.steps[seen], t.loss[seen], t.lr, runs=runs, law=law)
            except CadenceError as e:
                out.append(PartialScore(c.name, fraction, bool(runs), float("nan"), False, str(e)))
            else:
                out.append(PartialScore(c.name, fraction, bool(runs), f.final_loss / t.loss[-1] - 1.0,
                                        bool(f.low <= t.loss[-1] <= f.high)))
            if progress is not None:
                progress()
    return out


__all__ = ["FRACTIONS", "PartialScore", "partial_runs", "Setting", "SETTINGS", "LONG_LAMS", "SKIPS", "SCALES", "HeldOut", "held_out", "Decision", "SizeOut",
           "size_out", "choose_scale", "trim"]
