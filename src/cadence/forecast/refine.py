"""Schedule refinement from a logged run's gradient norms.

From "When, Why and How Much? Adaptive Learning Rate Scheduling by Refinement" (Defazio,
Cutkosky, Mehta, Mishchenko; arXiv 2310.07831): the last-iterate bound of SGD is smallest, for
the observed gradient norms ``g_1..g_T``, with step sizes

    η_t ∝ w_t · Σ_{p>t} w_p,      w_t = ‖g_t‖₂⁻²  (SGD)   or   w_t = ‖g_t‖₁⁻¹  (Adam-type methods),

normalised to a peak of 1 (the last step gets 0). With constant norms this is linear decay, the
paper's worst-case optimum; growing norms towards the end give a faster final anneal, small
early norms a warmup. The norms are smoothed first with a median filter.

UNCONFIRMED: the smoothing's width (a tenth of the run) and its edge handling (the sequence
reflected past its end, the nearest value before its start) follow the authors' public code, not
text confirmed in the paper. The ℓ1 form for Adam takes ℓ1 gradient norms (``grad_norm_l1``);
given only ℓ2 norms of an Adam run, the ℓ2 (SGD) form is used, an approximation the paper does
not evaluate.

    >>> s = refine_schedule([1.0] * 100, peak=1e-3, width=0.0, points=5)
    >>> str(s)
    'table(peak=0.001, at=[0, 0.25, 0.5, 0.75, 1], values=[1, 0.75, 0.5, 0.25, 0])'
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cadence.errors import CadenceError
from cadence.forecast.runlog import RunLog
from cadence.schedules.table import Table

NORMS = ("l2", "l1")


def smooth_norms(grad_norms: Sequence[float] | np.ndarray, width: float = 0.1) -> np.ndarray:
    """Median filter over ``width`` (a fraction of the run; an odd number of steps, at least 1), the
    sequence reflected past its end so the filter does not flatten the final rise, the nearest value
    repeated before its start (UNCONFIRMED: from the authors' code).

        >>> smooth_norms([1, 9, 1, 1, 1], width=0.6).tolist()
        [1.0, 1.0, 1.0, 1.0, 1.0]
    """
    from scipy.ndimage import median_filter

    g = np.asarray(grad_norms, dtype=float)
    if not 0 <= width <= 1:
        raise CadenceError(f"width must be a fraction of the run in [0, 1], got {width}")
    size = 2 * int(width * len(g) // 2) + 1
    if size == 1:
        return g.copy()
    pad = min(2 * size, len(g) - 1)
    padded = np.pad(g, (0, pad), mode="reflect") if pad > 0 else g
    return median_filter(padded, size=size, mode="nearest")[: len(g)]


def refined_multipliers(grad_norms: Sequence[float] | np.ndarray, *, norm: str = "l2",
                        width: float = 0.1) -> np.ndarray:
    """The refined LR multiplier of each logged step (peak 1, last 0) from its gradient norm.

    ``norm``: ``"l2"`` (weights ``g⁻²``, the SGD form) or ``"l1"`` (``g⁻¹``, the form for Adam-type
    methods, given ℓ1 norms). Norms that are zero or not finite are left out (a step without a
    gradient, an overflow); negative ones are an error.

        >>> refined_multipliers([1.0, 2.0, 1.0], width=0.0).tolist()  # w = 1, 1/4, 1: 1·1.25, 0.25·1, 0
        [1.0, 0.2, 0.0]
    """
    if norm not in NORMS:
        raise CadenceError(f"norm must be 'l2' (SGD) or 'l1' (Adam-type), got {norm!r}")
    try:
        g = np.asarray(grad_norms, dtype=float).ravel()
    except (TypeError, ValueError) as e:
        raise CadenceError(f"gradient norms must be numbers: {e}") from None
    if np.any(g < 0):
        raise CadenceError(f"gradient norms cannot be negative; found {g[g < 0][0]!r}")
    g = g[np.isfinite(g) & (g > 0)]  # a zero or infinite norm has no finite weight
    if len(g) < 2:
        raise CadenceError(f"need at least 2 finite, positive gradient norms, got {len(g)}")
    w = smooth_norms(g, width) ** (-2.0 if norm == "l2" else -1.0)
    later = np.concatenate([np.cumsum(w[::-1])[::-1][1:], [0.0]])  # Σ_{p>t} w_p
    eta = w * later
    return eta / eta.max()


def refine_schedule(grad_norms: Sequence[float] | np.ndarray, *, peak: float, norm: str = "l2",
                    width: float = 0.1, points: int = 51) -> Table:
    """The refined schedule as a :class:`~cadence.schedules.table.Table` over fractions of the budget:
    the multipliers of :func:`refined_multipliers` (step ``t`` of ``T`` at fraction ``t/(T−1)``), read at
    ``points`` evenly spaced fractions, scaled so the largest is 1 and rounded to 4 significant digits,
    times ``peak``.

    ``grad_norms`` are one value per logged step, evenly spaced over the run (resample first if not).
    """
    if not (isinstance(points, int) and points >= 2):
        raise CadenceError(f"points must be an integer >= 2, got {points!r}")
    if not (np.isfinite(peak) and peak > 0):
        raise CadenceError(f"peak must be a positive number, got {peak!r}")
    eta = refined_multipliers(grad_norms, norm=norm, width=width)
    at = np.linspace(0.0, 1.0, points)
    values = np.interp(at, np.linspace(0.0, 1.0, len(eta)), eta)
    values = values / values.max()
    return Table(peak=float(peak), at=tuple(float(f"{a:.4g}") for a in at),
                 values=tuple(float(f"{v:.4g}") for v in values))


def log_grad_norms(log: RunLog, norm: str = "auto") -> tuple[np.ndarray, str]:
    """``(norms on every step from the first to the last logged one, norm)`` from a run log:
    ``grad_norm_l1`` (the ℓ1 form) when logged and ``norm`` is ``"auto"`` or ``"l1"``, else ``grad_norm``.
    Steps between logged ones are interpolated linearly."""
    if norm not in ("auto", *NORMS):
        raise CadenceError(f"norm must be 'auto', 'l2' or 'l1', got {norm!r}")
    has = {c: np.count_nonzero(np.isfinite(getattr(log, c))) >= 2 for c in ("grad_norm", "grad_norm_l1")}
    if norm == "auto":
        norm = "l1" if has["grad_norm_l1"] else "l2"
    column = "grad_norm_l1" if norm == "l1" else "grad_norm"
    if not has[column]:
        raise CadenceError(f"{log.name}: the log has no {column} values to refine from (log per-step gradient "
                           f"norms: cadence's labs and HF/Lightning adapters do)")
    values = getattr(log, column)
    keep = np.isfinite(values)
    steps = log.step[keep]
    return np.interp(np.arange(steps[0], steps[-1] + 1), steps, values[keep]), norm
