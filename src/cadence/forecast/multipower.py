"""The multi-power law of the loss curve (Luo et al., "A Multi-Power Law for Loss Curve Prediction
Across Learning Rate Schedules", arXiv 2503.12811):

    L(t)  = L0 + A · (S1(t) + S_W)^(−α) − LD(t)
    LD(t) = B · Σ_{k=1..t} (η_{k−1} − η_k) · G(η_k^(−γ) · S_k(t)),   S_k(t) = Σ_{τ=k..t} η_τ
    G(x)  = 1 − (C·x + 1)^(−β)

``S1(t) + S_W`` is the LR area of every step so far, the warmup's included; ``t`` counts the
steps after the warmup, and ``η_0`` is the LR the warmup ended on. Unlike the annealing law's
``C·S2``, the credit ``B·Δ·G`` of one LR drop **saturates**: it grows with the area trained at the
lower LR but never beyond ``B·Δ`` (``G < 1``), so a longer cooldown cannot keep earning credit.

**Sources and what is unconfirmed (the only place this is stated).** Confirmed from the paper's
abstract: a power law in the sum of LRs plus further power laws for the loss reduction caused by
LR decay, fitted on a few schedules. The exact form above (``G``, ``η_k^(−γ)``, ``S_k(t)``
summed from ``k`` to ``t`` inclusive) and the fitting loss (Huber, δ = 1e-3, on log loss) agree
in two independent third-party reproductions (zkshan2002/ScalingLaw ``main.py``;
Jihang-Li/-Final ``src/models.py``). The paper's released code (github.com/thu-yao-01-luo/
MultiPowerLaw) and the figures and constants its README publishes were checked against this
module (docs/forecast-evidence.md, "Why the published figures are lower"): it fits the same Huber loss by
AdamW stopped early, and it counts the **warmup's rise** in ``LD`` as negative drops, from a
zero LR at step 0 (:class:`WarmupRiseMultiPowerLaw`, which reproduces its published figures from
its published constants). UNCONFIRMED: whether the paper's text counts the warmup in ``LD``
(third-party summaries of the text give ``t`` as the steps after the warmup and ``η_0`` as the
peak, as here; the text itself was not read).

**Warmup.** As for the annealing law (:mod:`cadence.forecast.law`), the LR's initial
non-decreasing stretch contributes no drops (``Δ = 0`` there, i.e. the sum starts after the
warmup) and counts fully in the forward area. Later rises (re-warming) are negative drops and
raise the loss. :class:`WarmupRiseMultiPowerLaw` counts the warmup's rise too, as the paper's
released code does.

**Units.** LRs are divided by ``lr_ref`` and areas by ``lr_ref · steps_ref`` (the peak LR and
length of the fitted runs): ``B`` is then the largest loss reduction of a drop from ``lr_ref`` to
zero; ``A``, ``B`` and ``C`` change with the units, the exponents do not
(:meth:`MultiPowerLaw.in_units`; the paper's constants are in raw units, ``lr_ref = steps_ref =
1``). A zero LR is read as ``1e-12·lr_ref`` in ``η_k^(−γ)`` (its drop term is then 0 or
saturated, never NaN).

**Cost.** ``LD`` at ``n`` steps is an ``n × K`` sum over the ``K`` steps whose LR changed,
evaluated in row chunks: a 1500-step cosine curve is ~2M terms (milliseconds).

    >>> from cadence.forecast.law import lr_per_step
    >>> law = MultiPowerLaw(L0=1.0, A=0.5, alpha=0.5, B=0.4, C=50.0, beta=0.6, gamma=0.5,
    ...                     lr_ref=1e-3, steps_ref=100)
    >>> curve = law.predict(lr_per_step("wsd(peak=1e-3, decay=20%)", 100))
    >>> bool(curve[-1] < curve[79])   # the decay lowers the loss
    True
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from cadence.errors import CadenceError
from cadence.forecast.law import FittedLaw, forward_area, lr_drops

LAW_KIND = "cadence.forecast.MultiPowerLaw"
LR_FLOOR = 1e-12
"""A zero LR is read as this fraction of ``lr_ref`` inside ``η_k^(−γ)``."""
_CHUNK_TERMS = 1 << 21  # rows × drops evaluated at once


@dataclass(frozen=True)
class DropTable:
    """The LR drops of one normalised LR sequence and the areas after them, at chosen steps.

    Row ``i`` is the fitted step ``t_i``, column ``j`` a drop step ``k`` (or, binned, a group of
    them): ``area[i, j]`` is ``S_k(t_i)`` (normalised; 0 when ``k > t_i``), ``delta[i, j]`` the
    drop ``u_{k−1} − u_k`` and ``log_lr[i, j]`` is ``log u_k``. Exact tables share one drop row
    across all rows (broadcast views).
    """

    area: np.ndarray
    delta: np.ndarray
    log_lr: np.ndarray

    @classmethod
    def build(cls, u: np.ndarray, steps_ref: float, at: np.ndarray, ratio: float | None = None,
              warmup_rise: bool = False) -> DropTable:
        """Drops of the normalised LRs ``u`` (step ``i`` uses ``u[i−1]``), areas at 1-based ``at``;
        with ``warmup_rise`` the warmup's rise counts too (:func:`lr_changes`).

        With ``ratio`` the drops before each ``t`` are grouped by their distance ``t − k`` into
        bins whose edges grow geometrically by ``ratio`` (one step wide while that is finer): a
        bin is one term with its summed drop and the drop-weighted mean area and log LR
        (drops and rises binned apart). A bin's spread of areas is then at most ``ratio − 1``
        of its distance, so ``G``'s midpoint error is of order ``β(β+1)(ratio − 1)²/24`` of its
        drop (1.05: about 1e-4·β(β+1)), and a ``t`` costs ``O(log(t) / log(ratio))`` terms
        instead of one per drop (:func:`binned_error` measures it).
        """
        at = np.asarray(at, dtype=np.int64)
        delta = lr_changes(u) if warmup_rise else lr_drops(u)  # neither moves when the LRs are rescaled
        k = np.flatnonzero(delta)  # 0-based index of each drop step
        cum = np.concatenate([[0.0], np.cumsum(u)]) / steps_ref
        log_u = np.log(np.maximum(u[k], LR_FLOOR))
        if ratio is None or len(k) == 0:
            area = cum[at][:, None] - cum[k][None, :]  # S_k(t) = Σ_{τ=k..t} u_τ
            area[at[:, None] <= k[None, :]] = 0.0  # drops after t do not count yet
            shape = area.shape
            return cls(area, np.broadcast_to(delta[k], shape), np.broadcast_to(log_u, shape))
        if ratio <= 1:
            raise CadenceError(f"the bin ratio must exceed 1, got {ratio}")
        edges = _distance_edges(int(at.max()), ratio)
        parts = [_binned(at, k[sign * delta[k] > 0], delta, cum, log_u[sign * delta[k] > 0], edges)
                 for sign in (1, -1) if np.any(sign * delta[k] > 0)]
        area, d, log_lr = (np.concatenate(cols, axis=1) for cols in zip(*parts))
        # each row's non-empty bins moved to the front, then the columns no row uses dropped
        order = np.argsort(d == 0, axis=1, kind="stable")[:, : int(np.count_nonzero(d, axis=1).max())]
        return cls(*(np.take_along_axis(a, order, axis=1) for a in (area, d, log_lr)))


def _distance_edges(longest: int, ratio: float) -> np.ndarray:
    """Bin edges over the distance ``t − k`` (1 up to past ``longest``): unit steps, then geometric."""
    unit = int(np.ceil(1.0 / (ratio - 1.0)))  # while ratio·d − d < 1, bins are single steps
    if longest <= unit:
        return np.arange(1, longest + 2)
    count = int(np.ceil(np.log((longest + 1) / unit) / np.log(ratio))) + 1
    geometric = np.ceil(unit * ratio ** np.arange(1, count + 1)).astype(np.int64)
    return np.unique(np.concatenate([np.arange(1, unit + 1), geometric]))


def _binned(at: np.ndarray, k: np.ndarray, delta: np.ndarray, cum: np.ndarray, log_u: np.ndarray,
            edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binned ``(area, delta, log_lr)`` of drops ``k`` (all of one sign) at 1-based steps ``at``."""
    d = delta[k]
    prefix = [np.concatenate([[0.0], np.cumsum(v)]) for v in (d, d * cum[k], d * log_u)]
    # drops with distance t − k in [e_j, e_{j+1}) have k in (t − e_{j+1}, t − e_j]
    hi = np.searchsorted(k, at[:, None] - edges[None, :-1], side="right")
    lo = np.searchsorted(k, at[:, None] - edges[None, 1:], side="right")
    s_d, s_dc, s_dl = (p[hi] - p[lo] for p in prefix)
    full = s_d != 0
    safe = np.where(full, s_d, 1.0)
    area = np.where(full, cum[at][:, None] - s_dc / safe, 0.0)
    return np.maximum(area, 0.0), s_d, np.where(full, s_dl / safe, 0.0)


def drop_saturation(area: np.ndarray, log_lr: np.ndarray, C: float, beta: float, gamma: float) -> np.ndarray:
    """``G(η_k^(−γ)·S_k(t)) = 1 − (C·x + 1)^(−β)`` elementwise (0 where the area is 0)."""
    x = np.exp(-gamma * log_lr) * area
    return -np.expm1(-beta * np.log1p(C * x))


def lr_changes(lr: np.ndarray) -> np.ndarray:
    """``η_{i−1} − η_i`` for every step (``Δ_1 = 0``), the warmup's rise included as negative drops
    (unlike :func:`~cadence.forecast.law.lr_drops`).

        >>> lr_changes(np.array([0.0, 1.0, 2.0, 1.5])).tolist()
        [0.0, -1.0, -1.0, 0.5]
    """
    delta = np.zeros(len(lr))
    delta[1:] = lr[:-1] - lr[1:]
    return delta


def loss_drop(lr: np.ndarray, B: float, C: float, beta: float, gamma: float, *, lr_ref: float,
              steps_ref: float, at: np.ndarray | None = None, ratio: float | None = None,
              warmup_rise: bool = False) -> np.ndarray:
    """``LD(t)`` in loss units for every step ``t = 1..len(lr)``, or for the 1-based steps ``at``;
    exact, or with the drops binned by ``ratio`` (:meth:`DropTable.build`); with ``warmup_rise``
    the warmup's rise counts as negative drops (:class:`WarmupRiseMultiPowerLaw`).

        >>> lr = np.array([1.0, 1.0, 0.5, 0.5])
        >>> ld = loss_drop(lr, B=2.0, C=1.0, beta=1.0, gamma=0.0, lr_ref=1.0, steps_ref=1.0)
        >>> np.round(ld, 6).tolist()   # a drop of 0.5 at step 3: 2·0.5·(1 − 1/(1 + S)), S = 0.5 then 1.0
        [0.0, 0.0, 0.333333, 0.5]
    """
    u = np.asarray(lr, dtype=float) / lr_ref
    at = np.arange(1, len(u) + 1) if at is None else np.asarray(at, dtype=np.int64)
    if len(at) and (at.min() < 1 or at.max() > len(u)):
        raise CadenceError(f"steps to predict must lie in 1..{len(u)}")
    out = np.zeros(len(at))
    drops = np.count_nonzero(lr_changes(u) if warmup_rise else lr_drops(u))
    if drops == 0:
        return out
    rows = max(1, _CHUNK_TERMS // (drops if ratio is None else 1000))
    for start in range(0, len(at), rows):
        table = DropTable.build(u, steps_ref, at[start: start + rows], ratio, warmup_rise)
        if ratio is None:  # one drop row shared by every row: a matrix-vector product
            out[start: start + rows] = drop_saturation(table.area, table.log_lr[0], C, beta, gamma) @ table.delta[0]
        else:
            g = drop_saturation(table.area, table.log_lr, C, beta, gamma)
            out[start: start + rows] = np.einsum("ij,ij->i", g, table.delta)
    return B * out


@dataclass(frozen=True)
class MultiPowerLaw(FittedLaw):
    """Fitted constants of the multi-power law, with the units they were fitted in.

    ``predict(lr)`` gives the loss after each step ``1..len(lr)``; steps before any LR give ``inf``.
    """

    KIND: ClassVar[str] = LAW_KIND
    TITLE: ClassVar[str] = "multi-power law"
    WARMUP_RISE: ClassVar[bool] = False
    """Whether the warmup's rise counts in ``LD`` (:class:`WarmupRiseMultiPowerLaw`)."""

    L0: float
    A: float
    alpha: float
    B: float
    C: float
    beta: float
    gamma: float
    lr_ref: float
    steps_ref: float

    def forward_area(self, lr: np.ndarray) -> np.ndarray:
        """Normalised ``S1 + S_W`` after each step."""
        return forward_area(np.asarray(lr, dtype=float)) / (self.lr_ref * self.steps_ref)

    def predict(self, lr: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """Predicted loss after each step of an LR sequence, or after the 1-based steps ``at``
        (the cost grows with the steps asked for times the drops: ask only for the steps needed)."""
        lr = np.asarray(lr, dtype=float)
        drop = loss_drop(lr, self.B, self.C, self.beta, self.gamma, lr_ref=self.lr_ref, steps_ref=self.steps_ref,
                         at=at, warmup_rise=self.WARMUP_RISE)
        s1 = self.forward_area(lr)
        return self.L0 + self.A * self._power(s1 if at is None else s1[np.asarray(at) - 1]) - drop

    def final_losses(self, lr: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """Predicted final loss of ``scale · lr`` for every scale (the WSD optimiser's inner loop):
        areas and drops scale by ``s`` and ``η_k^(−γ)`` by ``s^(−γ)``."""
        lr = np.asarray(lr, dtype=float)
        scales = np.asarray(scales, dtype=float)
        u = lr / self.lr_ref
        table = DropTable.build(u, self.steps_ref, np.array([len(u)]), warmup_rise=self.WARMUP_RISE)
        s1 = self.forward_area(lr)[-1]
        drops = np.array([drop_saturation(s ** (1.0 - self.gamma) * table.area[0], table.log_lr[0], self.C,
                                          self.beta, self.gamma) @ table.delta[0] for s in scales])
        return self.L0 + self.A * np.power(scales * s1, -self.alpha) - self.B * scales * drops

    def in_units(self, lr_ref: float, steps_ref: float) -> MultiPowerLaw:
        """The same law with LRs in units of ``lr_ref`` and areas of ``lr_ref · steps_ref`` (its
        predictions do not change): ``A`` scales by the area unit's ratio to the power ``−α``,
        ``B`` by the LR unit's ratio, ``C`` by ``(LR ratio)^(1−γ) · (steps ratio)``."""
        r, q = lr_ref / self.lr_ref, steps_ref / self.steps_ref
        return replace(self, A=self.A * (r * q) ** -self.alpha, B=self.B * r, C=self.C * r ** (1.0 - self.gamma) * q,
                       lr_ref=lr_ref, steps_ref=steps_ref)

    def __str__(self) -> str:
        return (f"L = {self.L0:.4g} + {self.A:.4g}·S1^(−{self.alpha:.4g}) − {self.B:.4g}·Σ Δ_k·"
                f"[1 − (1 + {self.C:.4g}·η_k^(−{self.gamma:.4g})·S_k)^(−{self.beta:.4g})]  "
                f"(LR in units of {self.lr_ref:.3g}, areas of {self.lr_ref:.3g} LR × {self.steps_ref:g} steps)")


@dataclass(frozen=True)
class WarmupRiseMultiPowerLaw(MultiPowerLaw):
    """The multi-power law as the paper's released code evaluates it: the warmup's rise counts in
    ``LD`` as negative drops (:func:`lr_changes`), so the loss-drop sum runs over every step, the
    warmup's included. This is the form the paper's published constants and figures belong to
    (tested: its held-out PredE is reproduced from its constants); the paper's text is summarised
    by third parties as starting the sum after the warmup (:class:`MultiPowerLaw`). A rise from a
    zero LR adds up to ``B·η_peak`` to the loss, less as its area ``S_k(t)`` grows.

        >>> lr = np.array([0.5, 1.0, 1.0, 0.5])   # a rise of 0.5 at step 2, a drop of 0.5 at step 4
        >>> law = WarmupRiseMultiPowerLaw(L0=1.0, A=0.0, alpha=0.5, B=2.0, C=1.0, beta=1.0, gamma=0.0,
        ...                               lr_ref=1.0, steps_ref=1.0)
        >>> [round(float(v), 6) for v in law.predict(lr) - 1.0]   # 2·0.5·S/(1 + S), S = 1, 2, 2.5; drop at 4
        [0.0, 0.5, 0.666667, 0.380952]
    """

    KIND: ClassVar[str] = "cadence.forecast.WarmupRiseMultiPowerLaw"
    TITLE: ClassVar[str] = "multi-power law (warmup rise in LD)"
    WARMUP_RISE: ClassVar[bool] = True

    def __str__(self) -> str:
        return f"{super().__str__()}; the warmup's rise counts in the sum"
