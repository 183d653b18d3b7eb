"""Published pre-training loss curves and the protocol to judge a loss law on them.

The package ships the curves of "A Multi-Power Law for Loss Curve Prediction Across Learning Rate
Schedules" (Luo et al., 2025, arXiv 2503.12811; MIT licence, in ``data/multipower/``): Llama-style
25M and 100M models under nine LR schedules, logged every 128 steps as ``step,lr,loss``.

Each curve's schedule is rebuilt as a cadence spec from its file name (:func:`schedule_spec`), so
a law sees the LR of every step, not only of the logged ones; the spec reproduces the logged
``lr`` column (tested). The paper's protocol (:data:`FIT_CURVES`): fit on ``cosine_24000``,
``constant_24000`` and ``wsdcon_9``, predict the other six; ``PredE`` is the mean of
``|L − L̂| / L`` over a curve's logged points and ``WorstE`` its largest value.

    >>> curves = load_curves("multipower-25m")
    >>> sorted(c.name for c in curves if c.fitted)
    ['constant_24000', 'cosine_24000', 'wsdcon_9']
    >>> curves[0].spec
    'warmup(constant(0.0003), 2160 steps)'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from cadence.errors import CadenceError
from cadence.forecast.fit import DEFAULT_SKIP, FitResult, FitTarget, fit_law
from cadence.forecast.law import lr_per_step
from cadence.forecast.multipower import WarmupRiseMultiPowerLaw
from cadence.forecast.runlog import RunLog

SHIPPED = {"multipower-25m": "25", "multipower-100m": "100"}
"""Names of the shipped curve sets and their folders under ``cadence/forecast/data/multipower``."""
FIT_CURVES = ("cosine_24000", "constant_24000", "wsdcon_9")
"""The curves the paper fits on; every other curve is predicted."""
OTHER = {"schaipp-124m": ("schaipp/124m", ("stable_50000", "cosine10_50000", "wsdlinear20_25000")),
         "schaipp-210m": ("schaipp/210m", ("stable_40000", "cosine10_44444", "wsdlinear20_22222")),
         "schaipp-124m-lr2e-3": ("schaipp/124m-lr2e-3", ("stable_50000", "cosine10_50000", "wsdlinear20_25000")),
         "schaipp-124m-lr5e-4": ("schaipp/124m-lr5e-4", ("stable_50000", "cosine10_50000", "wsdlinear20_25000"))}
"""Further shipped sets, each with its folder under ``cadence/forecast/data`` and the curves the
protocol fits (a constant, a cosine and one WSD run, as in the paper's protocol): a 124M model's
curves at peak LR 5e-4, 1e-3 and 2e-3 and a 210M model's, from "The Surprising Agreement Between Convex
Optimization Theory and Learning-Rate Scheduling for Large Model Training" (Schaipp et al., 2025, arXiv 2501.18965; MIT
licence, in ``data/schaipp/``). Their LRs are interpolated from the logged ones (every 50 steps
after the warmup)."""
PUBLISHED = {"multipower-25m": (0.00110, 0.00409), "multipower-100m": (0.00142, 0.00583)}
"""The paper's multi-power law ``(PredE, WorstE)`` on each set, as its repository's README
publishes them: the **means over the six held-out curves** of each curve's PredE and of each
curve's WorstE (its released log prints them so; :meth:`LawScores.paper_summary`), not over all
nine curves and not the largest WorstE."""
RELEASED = {"multipower-25m": (3.04045406, 0.52468604, 0.50786857, 363.78751622, 2.06560812, 0.58279013, 0.64142257),
            "multipower-100m": (2.6514477, 0.60115152, 0.45295811, 437.9464276, 2.13245612, 0.59785199, 0.65523644)}
"""The paper's released fit ``(L0, A, α, B, C, β, γ)`` of each set (its repository's README), in
raw units (LR, LR × steps) and in the released code's form (:func:`released_law`)."""


def released_law(name: str) -> WarmupRiseMultiPowerLaw:
    """The paper's own fitted law of a shipped set, in the form its code evaluates (the warmup's
    rise counts in the loss drop): its held-out figures are :data:`PUBLISHED` (tested).

        >>> round(released_law("multipower-25m").B, 2)
        363.79
    """
    if name not in RELEASED:
        raise CadenceError(f"no released fit for {name!r}; known: {sorted(RELEASED)}")
    return WarmupRiseMultiPowerLaw(*RELEASED[name], lr_ref=1.0, steps_ref=1.0)

PEAK, FLOOR, WARMUP = 3e-4, 3e-5, 2160
"""The paper's runs: linear warmup from 0 over 2,160 steps to the peak; cosine and WSD decays end
at ``FLOOR``."""
_TWO_STAGE = (8000, 16000)  # wsdcon_k: the peak until step 8,000, then k·1e-5 until 16,000


def schedule_spec(name: str) -> tuple[str, int]:
    """The cadence spec and budget (steps) of a curve named as in the paper's repository.

        >>> schedule_spec("wsdcon_9")
        ('warmup(multistep(peak=0.0003, at=[5840 steps], gamma=0.3), 2160 steps)', 16000)
    """
    warm = lambda inner: f"warmup({inner}, {WARMUP} steps)"  # noqa: E731
    m = re.fullmatch(r"(cosine|constant)_(\d+)", name)
    if m:
        inner = f"constant({PEAK:g})" if m[1] == "constant" else f"cosine(peak={PEAK:g}, floor={FLOOR / PEAK:g})"
        return warm(inner), int(m[2])
    m = re.fullmatch(r"wsdcon_(\d+)", name)
    if m:
        switch, total = _TWO_STAGE
        return warm(f"multistep(peak={PEAK:g}, at=[{switch - WARMUP} steps], gamma={int(m[1]) * 1e-5 / PEAK:g})"), total
    m = re.fullmatch(r"(wsd|wsdld)_(\d+)_(\d+)", name)
    if m and int(m[2]) < int(m[3]):
        shape = "exponential" if m[1] == "wsd" else "linear"
        return (warm(f"wsd(peak={PEAK:g}, decay={int(m[3]) - int(m[2])} steps, shape={shape}, "
                     f"floor={FLOOR / PEAK:g})"), int(m[3]))
    raise CadenceError(f"no known schedule for a curve named {name!r} (cosine_N, constant_N, wsdcon_K, "
                       f"wsd_A_B, wsdld_A_B)")


@dataclass(frozen=True)
class Curve:
    """One measured curve: its points (steps after the budget's last dropped), the LR of every
    step (from the spec when known, else interpolated from the log) and whether the protocol fits it."""

    name: str
    spec: str | None
    target: FitTarget
    fitted: bool


def curves_dir(name_or_dir: str | Path) -> Path:
    """The folder of a shipped set (:data:`SHIPPED`, :data:`OTHER`) or the given folder."""
    data = resources.files("cadence.forecast") / "data"
    if str(name_or_dir) in SHIPPED:
        return Path(str(data / "multipower" / SHIPPED[str(name_or_dir)]))
    if str(name_or_dir) in OTHER:
        return Path(str(data / OTHER[str(name_or_dir)][0]))
    path = Path(name_or_dir)
    if not path.is_dir():
        raise CadenceError(f"--curves: {name_or_dir!r} is neither a folder nor one of {sorted([*SHIPPED, *OTHER])}")
    return path


def load_curves(name_or_dir: str | Path, fit: tuple[str, ...] | None = None) -> list[Curve]:
    """Every ``*.csv`` curve (``step,lr,loss``) of a set, sorted by name, marked fitted when in ``fit``
    (default: the set's protocol curves, :data:`OTHER`, else :data:`FIT_CURVES`).

    A curve whose name :func:`schedule_spec` knows gets the spec's per-step LRs over its budget and
    loses any row at or after the budget's end (the paper drops the 24,000-step runs' last row);
    any other curve's LR is interpolated linearly between its logged steps.
    """
    folder = curves_dir(name_or_dir)
    if fit is None:
        fit = OTHER[str(name_or_dir)][1] if str(name_or_dir) in OTHER else FIT_CURVES
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise CadenceError(f"no *.csv curves in {folder}")
    out = []
    for path in files:
        log = RunLog.read(path)
        if np.all(np.isnan(log.loss)):
            raise CadenceError(f"{path.name}: no 'loss' column values")
        name = path.stem
        try:
            spec, budget = schedule_spec(name)
        except CadenceError:
            spec, budget = None, int(log.step[-1])
        keep = (log.step < budget) & ~np.isnan(log.loss) if spec else ~np.isnan(log.loss)
        if str(name_or_dir) in OTHER:
            keep &= log.step > DEFAULT_SKIP * budget
        lr = lr_per_step(spec, budget) if spec else np.interp(np.arange(1, budget + 1), log.step, log.lr)
        out.append(Curve(name, spec, FitTarget(log.step[keep], log.loss[keep], lr, name), name in fit))
    missing = [n for n in fit if n not in {c.name for c in out}]
    if missing:
        raise CadenceError(f"{folder}: the fitted curves {missing} are missing")
    return out


def prediction_errors(pred: np.ndarray, loss: np.ndarray) -> tuple[float, float, float]:
    """``(PredE, WorstE, final-loss error)``: mean and max of ``|L − L̂|/L``, and ``L̂/L − 1`` at the last point.

        >>> [round(e, 6) for e in prediction_errors(np.array([1.0, 2.2]), np.array([1.0, 2.0]))]
        [0.05, 0.1, 0.1]
    """
    rel = np.abs(loss - pred) / loss
    return float(rel.mean()), float(rel.max()), float(pred[-1] / loss[-1] - 1.0)


@dataclass(frozen=True)
class CurveScore:
    """One curve under one fitted law: ``PredE``, ``WorstE``, the final-loss error (``L̂/L − 1``),
    the width of the uncertainty band at the last point (relative), the step where the error is
    largest, any regime warnings, the share of points inside the pooled interval and the run
    envelope (``interval(method="runs")``), and whether the final loss is inside each of them and
    inside the last-point final-loss interval (``FitResult.final_interval(lr, "last")``)."""

    name: str
    fitted: bool
    pred_e: float
    worst_e: float
    final_error: float
    band: float
    worst_step: int
    outside: tuple[str, ...]
    coverage: float = float("nan")
    final_inside: bool = False
    runs_coverage: float = float("nan")
    runs_final_inside: bool = False
    final_interval_inside: bool = False


@dataclass(frozen=True)
class LawScores:
    """A law's fit on the protocol's curves, its per-curve scores and the fit's wall time."""

    law_name: str
    fit: FitResult
    curves: tuple[CurveScore, ...]
    seconds: float

    def coverage(self, method: str = "pooled") -> tuple[float, float]:
        """A predictive interval's coverage on the held-out curves (``"pooled"``, the default
        interval, or ``"runs"``, the run envelope): the mean share of points inside it (every curve
        weighing the same) and the share of final losses inside it."""
        rows = [c for c in self.curves if not c.fitted]
        if method == "runs":
            return float(np.mean([c.runs_coverage for c in rows])), float(np.mean([c.runs_final_inside for c in rows]))
        return float(np.mean([c.coverage for c in rows])), float(np.mean([c.final_inside for c in rows]))

    def final_coverage(self) -> float:
        """Share of the held-out curves' final losses inside the last-point final-loss interval
        (``FitResult.final_interval(lr, "last")``; the default method is the run envelope, :meth:`coverage`)."""
        return float(np.mean([c.final_interval_inside for c in self.curves if not c.fitted]))

    def summary(self, held_out_only: bool = False) -> tuple[float, float]:
        """``(PredE, WorstE)`` over all curves or over the held-out ones: the mean of the curves'
        PredE and the largest WorstE (stricter than the published figures, :meth:`paper_summary`)."""
        rows = [c for c in self.curves if not (held_out_only and c.fitted)]
        return float(np.mean([c.pred_e for c in rows])), float(max(c.worst_e for c in rows))

    def paper_summary(self) -> tuple[float, float]:
        """``(PredE, WorstE)`` as :data:`PUBLISHED` computes them: the means over the held-out
        curves of each curve's PredE and of each curve's WorstE."""
        rows = [c for c in self.curves if not c.fitted]
        return float(np.mean([c.pred_e for c in rows])), float(np.mean([c.worst_e for c in rows]))


@dataclass(frozen=True)
class PublishedBenchmark:
    """Every law's :class:`LawScores` on one curve set, the curves, and the paper's figures (if known)."""

    name: str
    curves: tuple[Curve, ...]
    scores: dict[str, LawScores]
    published: tuple[float, float] | None


def published_benchmark(curves: str | Path = "multipower-25m", laws: tuple[str, ...] = ("annealing", "multi-power"),
                        choose: str = "leave-one-out", exclude_transients: bool = False) -> PublishedBenchmark:
    """The paper's protocol on a curve set (:func:`load_curves`): fit each law on the fitted
    curves (all their logged points), predict every curve at its logged steps, score it (with its
    predictive interval at the default level). With ``exclude_transients`` the points in a
    transient window (:func:`~cadence.forecast.regime.transient_mask`) are neither fitted nor scored.

    The published figures are means over the held-out curves (:data:`PUBLISHED`,
    :meth:`LawScores.paper_summary`); :meth:`LawScores.summary` is the stricter all-curves form.
    """
    import time
    import warnings

    from cadence.forecast.evaluate import trim

    loaded = load_curves(curves)
    scores = {}
    for law in laws:
        started = time.perf_counter()
        fit = fit_law([trim(c.target, 0.0, exclude_transients) for c in loaded if c.fitted], law=law, choose=choose)
        seconds = time.perf_counter() - started
        rows = []
        for c in loaded:
            t = trim(c.target, 0.0, exclude_transients)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the findings are kept in the row instead
                pred = fit.predict(t.lr, t.steps, name=c.name)
            low, high = fit.band(t.lr, t.steps[-1:])
            outside = tuple(fit.regime.check(t.lr)) if fit.regime is not None else ()
            worst = int(t.steps[np.argmax(np.abs(pred - t.loss) / t.loss)])
            inside = runs_inside = np.ones(len(t.steps), dtype=bool)
            final_in = True
            if fit.loo_residuals:
                i_low, i_high = fit.interval(t.lr, t.steps)
                inside = (t.loss >= i_low) & (t.loss <= i_high)
                i_low, i_high = fit.interval(t.lr, t.steps, method="runs")
                runs_inside = (t.loss >= i_low) & (t.loss <= i_high)
                f_low, f_high = fit.final_interval(t.lr[:t.steps[-1]], "last")
                final_in = bool(f_low <= t.loss[-1] <= f_high)
            rows.append(CurveScore(c.name, c.fitted, *prediction_errors(pred, t.loss),
                                   float((high[0] - low[0]) / t.loss[-1]), worst, outside, float(inside.mean()),
                                   bool(inside[-1]), float(runs_inside.mean()), bool(runs_inside[-1]), final_in))
        scores[law] = LawScores(law, fit, tuple(rows), seconds)
    name = str(curves)
    return PublishedBenchmark(name, tuple(loaded), scores, PUBLISHED.get(name))


def plot_published(bench: PublishedBenchmark, path: str | Path) -> Path:
    """Measured curves (points) and each law's predictions (lines; fitted solid, held-out dashed,
    with the predictive interval shaded), one panel per law, LRs below."""
    from cadence.plotting import loss_panels_over_lrs, save_with_lrs

    fig, axes = loss_panels_over_lrs(len(bench.scores), width=9, panel_height=4.5)
    lowest = min(float(c.target.loss.min()) for c in bench.curves)
    for ax, (law, scores) in zip(axes, bench.scores.items()):
        for i, c in enumerate(bench.curves):
            t, colour = c.target, f"C{i % 10}"
            ax.scatter(t.steps, t.loss, s=3, color=colour)
            ax.plot(t.steps, scores.fit.law.predict(t.lr, t.steps), color=colour, ls="-" if c.fitted else "--",
                    lw=1, label=f"{c.name} ({'fitted' if c.fitted else 'predicted'})")
            if scores.fit.loo_residuals:
                low, high = scores.fit.interval(t.lr, t.steps)
                ax.fill_between(t.steps, low, high, color=colour, alpha=0.2, lw=0,
                                label="predictive interval (shaded)" if i == 0 else None)
        pred_e, worst_e = scores.summary()
        ax.set_ylim(lowest * 0.99, lowest * 1.12)
        ax.set_ylabel("loss")
        ax.set_title(f"{bench.name}, {law} law: PredE {pred_e:.3%}, WorstE {worst_e:.3%} over all curves", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
    lrs = [(np.arange(1, len(c.target.lr) + 1), c.target.lr) for c in bench.curves]
    return save_with_lrs(fig, axes[-1], lrs, path, dpi=110)
