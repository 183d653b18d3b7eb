"""PUDF ("A Psychology-based Unified Dynamic Framework for Curriculum Learning",
Meng et al., arXiv 2408.05326): 1-parameter IRT difficulties and
training on the items whose difficulty does not exceed the model's estimated ability.

* :func:`fit_rasch` fits item difficulties ``b`` (and model abilities ``θ``) to a response matrix of
  several models ("artificial crowd"), ``P(correct) = σ(θ − b)``. It is a joint MAP fit with
  N(0, prior_sd²) priors by block Newton steps, not py-irt's variational fit; both put ``b`` on
  the ability scale.
* :func:`estimate_ability` is the paper's MAP ability estimate from probe responses.
* :class:`PUDF` admits ``{i : θ̂ + lower ≤ b_i ≤ θ̂ + upper + bump}`` (defaults −∞, 0), where the
  bump grows by 0.1 whenever θ̂ has not increased for 2 estimates (cumulative: UNCONFIRMED).

    >>> import numpy as np
    >>> responses = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])   # 3 models × 4 items
    >>> fit = fit_rasch(responses)
    >>> bool(fit.difficulty[0] < fit.difficulty[3])
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cadence.clock import Clock
from cadence.curricula.arms import Arms
from cadence.curricula.policies.window import SortedWindow
from cadence.errors import CadenceError, StateError


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))


@dataclass(frozen=True)
class RaschFit:
    """Result of :func:`fit_rasch`: per-item ``difficulty``, per-model ``ability``, ``iterations``."""

    difficulty: np.ndarray
    ability: np.ndarray
    iterations: int


def fit_rasch(responses: Any, *, prior_sd: float = 1.0, max_iter: int = 200, tol: float = 1e-8) -> RaschFit:
    """Fit a 1PL (Rasch) model to a ``(models, items)`` 0/1 matrix (NaN = not answered)."""
    y = np.asarray(responses, dtype=np.float64)
    if y.ndim != 2 or y.size == 0:
        raise CadenceError(f"responses must be a non-empty (models, items) matrix, got shape {y.shape}")
    seen = np.isfinite(y)
    if np.any((y[seen] != 0) & (y[seen] != 1)):
        raise CadenceError("responses must be 0/1 (NaN for missing)")
    if prior_sd <= 0:
        raise CadenceError(f"prior_sd must be positive, got {prior_sd!r}")
    y = np.where(seen, y, 0.0)
    mask = seen.astype(np.float64)
    precision = 1.0 / prior_sd ** 2
    theta, b = np.zeros(y.shape[0]), np.zeros(y.shape[1])
    for it in range(1, max_iter + 1):
        p = _sigmoid(theta[:, None] - b[None, :])
        step_t = ((mask * (y - p)).sum(axis=1) - precision * theta) / ((mask * p * (1 - p)).sum(axis=1) + precision)
        theta = theta + step_t
        p = _sigmoid(theta[:, None] - b[None, :])
        step_b = (-(mask * (y - p)).sum(axis=0) - precision * b) / ((mask * p * (1 - p)).sum(axis=0) + precision)
        b = b + step_b
        if max(np.abs(step_t).max(), np.abs(step_b).max()) < tol:
            break
    return RaschFit(b, theta, it)


def estimate_ability(difficulty: Any, correct: Any, *, prior_sd: float = 1.0, tol: float = 1e-10) -> float:
    """MAP ability ``argmax_θ log N(θ; 0, prior_sd²) + Σ log(1 + (2σ(θ − b_i) − 1)·y_i)``, ``y = ±1``
    (arXiv 2408.05326), by Newton's method (the objective is concave).

        >>> round(estimate_ability([0.0, 0.0], [1, 0]), 6)
        0.0
    """
    b = np.asarray(difficulty, dtype=np.float64).reshape(-1)
    y = np.asarray(correct, dtype=np.float64).reshape(-1)
    if b.shape != y.shape or b.size == 0:
        raise CadenceError(f"need one response per difficulty, got {b.size} difficulties and {y.size} responses")
    theta = 0.0
    for _ in range(100):
        p = _sigmoid(theta - b)
        step = ((y - p).sum() - theta / prior_sd ** 2) / ((p * (1 - p)).sum() + 1 / prior_sd ** 2)
        theta += step
        if abs(step) < tol:
            break
    return float(theta)


class PUDF(SortedWindow):
    """Train on items with ``θ̂ + lower_offset ≤ b_i ≤ θ̂ + upper_offset + bump``.

    Feed probe results with ``observe(probe_ids, correct=...)`` (each call re-estimates θ̂ from
    those responses; :meth:`probe` draws a probe set). ``full_after`` (a fraction of the budget,
    needs ``clock``) switches to all data, as the paper does for its last epochs. If no item is
    admitted, the single nearest item is.
    """

    name = "pudf"
    requires = frozenset({"correct"})
    _state = ("ability", "stalled", "bump_total", "estimates")

    def __init__(self, arms: Arms, difficulty: Any = None, *, initial_ability: float = 0.0,
                 lower_offset: float = -np.inf, upper_offset: float = 0.0, bump: float = 0.1, patience: int = 2,
                 prior_sd: float = 1.0, full_after: float | None = None, seed: int = 0,
                 clock: Clock | None = None) -> None:
        super().__init__(arms, difficulty, seed=seed, clock=clock)
        if not lower_offset < upper_offset:
            raise CadenceError(f"lower_offset ({lower_offset}) must be below upper_offset ({upper_offset})")
        if full_after is not None and (clock is None or not 0 <= full_after <= 1):
            raise CadenceError("full_after needs clock=Clock(budget=...) and a fraction in [0, 1]")
        self.offsets = (float(lower_offset), float(upper_offset))
        self.bump, self.patience, self.prior_sd, self.full_after = float(bump), int(patience), prior_sd, full_after
        self.ability = float(initial_ability)
        self.stalled = 0
        self.bump_total = 0.0
        self.estimates = 0

    def probe(self, n: int = 1000) -> np.ndarray:
        """A random probe set of ``n`` distinct item ids (the paper uses 1000)."""
        return np.sort(self.rng.choice(self.arms.num_items, size=min(n, self.arms.num_items), replace=False))

    def _update(self, ids: np.ndarray, arm: np.ndarray, signals: dict[str, np.ndarray], counts: np.ndarray) -> None:
        theta = estimate_ability(self.item_difficulty[ids], signals["correct"], prior_sd=self.prior_sd)
        if self.estimates and theta <= self.ability:
            self.stalled += 1
            if self.stalled >= self.patience:
                self.bump_total += self.bump
                self.stalled = 0
        else:
            self.stalled = 0
        self.ability = theta
        self.estimates += 1

    def window(self) -> tuple[int, int]:
        n = len(self.order)
        if self.full_after is not None and (self.clock.progress or 0.0) >= self.full_after:
            return 0, n
        lo = self.ability + self.offsets[0]
        hi = self.ability + self.offsets[1] + self.bump_total
        start = int(np.searchsorted(self.sorted_difficulty, lo, side="left"))
        end = int(np.searchsorted(self.sorted_difficulty, hi, side="right"))
        if end <= start:
            pos = min(start, n - 1)
            return pos, pos + 1
        return start, end

    def _check_state(self, staged: dict[str, Any]) -> None:
        if not np.isfinite(staged["ability"]):
            raise StateError(f"PUDF state has a non-finite ability {staged['ability']!r}")
