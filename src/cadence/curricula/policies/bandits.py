"""Bandit curricula over arms: DUMP, SEC, EXP3 and absolute learning progress.

Signals, for RL with G rollouts per prompt: pass each prompt id once per rollout, with that
response's (token-mean) advantage or reward. DUMP counts responses; SEC averages over the
category's responses in the batch; call ``observe`` once per training batch.

    >>> import numpy as np
    >>> from cadence.curricula import Arms, DUMP
    >>> policy = DUMP(Arms(["easy", "hard"]), temperature=0.1)
    >>> policy.observe([0, 0, 1], advantage=[0.5, -0.5, 0.0])
    >>> policy.probabilities().round(3).tolist()
    [0.945, 0.055]
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from cadence.clock import Clock
from cadence.curricula.arms import Arms
from cadence.curricula.base import Policy, active_mask, all_finite, arm_means, saturate, softmax
from cadence.errors import CadenceError


def _positive(name: str, value: float) -> None:
    if not np.isfinite(value) or value <= 0:
        raise CadenceError(f"{name} must be positive and finite, got {value!r}")


def _rate(name: str, value: float) -> None:
    if not 0 < value <= 1:
        raise CadenceError(f"{name} must lie in (0, 1], got {value!r}")


_shared_positions = np.arange(0)


def _positions(n: int) -> np.ndarray:
    """``np.arange(n)`` as a read-only view of one shared array, grown when a longer one is needed.

        >>> _positions(3).tolist()
        [0, 1, 2]
    """
    global _shared_positions
    if len(_shared_positions) < n:
        grown = np.arange(max(n, 2 * len(_shared_positions)))
        grown.flags.writeable = False
        _shared_positions = grown
    return _shared_positions[:n]


class DUMP(Policy):
    """DUMP ("DUMP: Automated Distribution-Level Curriculum Learning for RL-based LLM
    Post-training", Wang et al., arXiv 2504.09710): UCB over a sliding window of
    per-response |advantage| per arm, turned into probabilities by a softmax with temperature::

        μ_j = mean of the last `window` |a| of arm j,   N = Σ n_j
        UCB_j = μ_j + c·sqrt(2 ln(N + 1) / (n_j + 1)),   p = softmax(UCB / τ)

    Uniform until the first observation. ``advantage``: one value per response (signed).
    """

    name = "dump"
    requires = frozenset({"advantage"})
    _state = ("window_values", "window_sum", "responses", "mean_abs")

    def __init__(self, arms: Arms, *, window: int = 300, c: float = 1.0, temperature: float = 0.1, seed: int = 0,
                 clock: Clock | None = None) -> None:
        if not isinstance(window, int) or window < 1:
            raise CadenceError(f"window must be a positive integer, got {window!r}")
        if not np.isfinite(c) or c < 0:
            raise CadenceError(f"c must be non-negative, got {c!r}")
        _positive("temperature", temperature)
        super().__init__(arms, seed=seed, clock=clock)
        self.window, self.c, self.temperature = window, float(c), float(temperature)
        k = arms.num_arms
        self.window_values = np.zeros((k, window))   # a ring per arm; the next slot is responses mod window
        self.window_sum = np.zeros(k)          # running sums, re-summed exactly each time a ring completes a lap
        self.responses = np.zeros(k, dtype=np.int64)
        self.mean_abs = np.zeros(k)            # window_sum / min(responses, window)
        self._total = 0                        # caches kept up to date: responses.sum() and responses + 1
        self._responses_plus_one = np.ones(k)  # (as floats: the UCB divides by it without an int conversion)

    def _after_load(self) -> None:
        self.window_values = np.ascontiguousarray(self.window_values)   # _update writes through a flat view
        self._total = int(self.responses.sum())
        self._responses_plus_one = self.responses + 1.0

    def _update(self, ids: np.ndarray, arm: np.ndarray, signals: dict[str, np.ndarray], counts: np.ndarray) -> None:
        w, n = self.window, len(arm)
        position = _positions(n)
        small = np.int16 if self.arms.num_arms <= 1 << 15 else np.int64     # int16: numpy sorts by radix
        order = np.argsort(arm.astype(small), kind="stable")
        arm = arm[order]                                    # responses grouped by arm, in batch order
        values = signals["advantage"][order]
        np.abs(values, out=values)
        before = self.responses[arm]                        # the arm's responses before this batch
        slot = position - np.searchsorted(arm, arm)         # the response's place in its arm's run ...
        slot += before
        if n > w:                                           # only the last `window` of a run survive
            last = slot >= before + counts[arm] - w
            arm, values, slot = arm[last], values[last], slot[last]
        slot %= w                                           # ... as a ring-buffer slot (responses mod w)
        cell = arm * w
        cell += slot
        flat = self.window_values.reshape(-1)               # a view (the table is C-contiguous)
        change = flat[cell]
        with np.errstate(over="ignore", invalid="ignore"):  # huge |a| may overflow the sums: handled below
            np.subtract(values, change, out=change)         # new value minus the one it replaces
            flat[cell] = values
            self.window_sum += np.bincount(arm, weights=change, minlength=self.arms.num_arms)
            lapped = arm[slot == w - 1]                     # arms whose ring completed a lap
            if len(lapped):
                self.window_sum[lapped] = self.window_values[lapped].sum(axis=1)   # re-sum exactly once per lap
            if not all_finite(self.window_sum):             # re-sum every ring whose running sum overflowed
                bad = ~np.isfinite(self.window_sum)
                self.window_sum[bad] = self.window_values[bad].sum(axis=1)
        self.responses += counts
        self._total += n
        after = self.responses[arm]
        self.mean_abs[arm] = self.window_sum[arm] / np.minimum(after, w)
        if not all_finite(self.window_sum):                 # a window's sum exceeds the float range, not its mean
            self._scaled_means()
        self._responses_plus_one[arm] = after + 1.0

    def _scaled_means(self) -> None:
        """``mean_abs`` of the arms whose window sum overflows (values near 1e308), from the ring
        scaled by its maximum (the mean is at most that maximum, so it is finite)."""
        for j in np.flatnonzero(~np.isfinite(self.window_sum)):
            ring = self.window_values[j]
            scale = ring.max()
            mean = (ring / scale).sum() / min(int(self.responses[j]), self.window)
            with np.errstate(over="ignore"):
                self.mean_abs[j] = saturate(mean * scale)

    def ucb(self) -> np.ndarray:
        """The UCB score of every arm."""
        return self._ucb(self._total)

    def _ucb(self, total: int) -> np.ndarray:
        bonus = 2 * math.log(total + 1) / self._responses_plus_one      # = ... / (n_j + 1), exactly
        np.sqrt(bonus, out=bonus)
        if self.c != 1.0:                                              # 1.0·x is x exactly
            bonus *= self.c
        bonus += self.mean_abs                                         # (IEEE + and · commute exactly)
        return bonus

    def _arm_weights(self) -> np.ndarray:
        if self._total == 0:
            return np.ones(self.arms.num_arms)
        return softmax(self._ucb(self._total), self.temperature, active_mask(self.arms), normalize=False)

    def scores(self) -> dict[str, np.ndarray]:
        return {"mean_abs_advantage": self.mean_abs, "ucb": self.ucb(), "responses": self.responses}


class SEC(Policy):
    """SEC ("Self-Evolving Curriculum for LLM Reasoning", Chen et al., arXiv 2505.14970): Boltzmann sampling over a
    TD(0)/EMA value of the batch's mean |advantage| per arm::

        r(c) = mean |A| over arm c's responses in the batch
        Q(c) ← α·r(c) + (1 − α)·Q(c),     p = softmax(Q / τ)

    ``absent`` sets what happens to arms with no response in the batch: ``"keep"`` (default,
    the paper's equation, which defines the update only for observed arms) leaves Q unchanged;
    ``"decay"`` (the public code) applies the update with target 0, ``Q ← (1 − α)·Q``. Call
    ``observe`` once per batch: each call is one TD step. Defaults α = 0.1, τ = 1 (code defaults;
    the released scripts use α = 0.5 and τ ∈ {1, 0.4, 0.2}).
    """

    name = "sec"
    requires = frozenset({"advantage"})
    _state = ("q", "steps")

    def __init__(self, arms: Arms, *, alpha: float = 0.1, temperature: float = 1.0,
                 absent: Literal["keep", "decay"] = "keep", seed: int = 0, clock: Clock | None = None) -> None:
        _rate("alpha", alpha)
        _positive("temperature", temperature)
        if absent not in ("keep", "decay"):
            raise CadenceError(f"absent must be 'keep' (paper) or 'decay' (public code), got {absent!r}")
        super().__init__(arms, seed=seed, clock=clock)
        self.alpha, self.temperature, self.absent = float(alpha), float(temperature), absent
        self.q = np.zeros(arms.num_arms)
        self.steps = 0

    def _update(self, ids: np.ndarray, arm: np.ndarray, signals: dict[str, np.ndarray], counts: np.ndarray) -> None:
        reward = arm_means(arm, np.abs(signals["advantage"]), counts)
        seen = counts > 0
        kept = (1 - self.alpha) * self.q
        if reward.max() < 1e300 and kept.max() < 1e300:
            td = self.alpha * reward + kept          # computed for every arm, stored for the seen ones
        else:                                        # values near the float maximum: the sum saturates
            with np.errstate(over="ignore"):
                td = saturate(self.alpha * reward + kept)
        if self.absent == "decay":
            np.copyto(self.q, np.where(seen, td, kept))
        else:
            np.copyto(self.q, td, where=seen)
        self.steps += 1

    def _arm_weights(self) -> np.ndarray:
        return softmax(self.q, self.temperature, active_mask(self.arms), normalize=False)

    def scores(self) -> dict[str, np.ndarray]:
        return {"q": self.q}


def _scaled_signal(name: str, values: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """A signal mapped to [0, 1] by ``value_range`` (advantages by their absolute value)."""
    lo, hi = value_range
    x = np.abs(values) if name == "advantage" else values
    with np.errstate(over="ignore"):                 # a huge value overflows to ±inf, then clips to 0 or 1
        return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _check_signal(signal: str, value_range: tuple[float, float]) -> None:
    if signal not in ("reward", "advantage", "correct"):
        raise CadenceError(f"signal must be 'reward', 'advantage' (its absolute value) or 'correct', got {signal!r}")
    lo, hi = value_range
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise CadenceError(f"value_range must be finite with high > low, got {value_range!r}")


class EXP3(Policy):
    """EXP3 (Auer et al. 2002, the textbook form), batched: with
    ``K`` arms that have items and mixing ``γ``::

        p_j = (1 − γ)·w_j / Σ w + γ/K
        x_j = mean of the arm's signal in the batch, scaled to [0, 1] by value_range
        x̂_j = x_j / p_j  (p at update time);   w_j ← w_j·exp(γ·x̂_j / K)   (arms in the batch only)

    Weights are kept as logs. ``signal``: ``"reward"`` (default), ``"correct"`` or
    ``"advantage"`` (absolute value).
    """

    name = "exp3"
    _state = ("log_weights",)

    def __init__(self, arms: Arms, *, gamma: float = 0.1, signal: str = "reward",
                 value_range: tuple[float, float] = (0.0, 1.0), seed: int = 0, clock: Clock | None = None) -> None:
        _rate("gamma", gamma)
        _check_signal(signal, value_range)
        super().__init__(arms, seed=seed, clock=clock)
        self.gamma, self.signal, self.value_range = float(gamma), signal, (float(value_range[0]),
                                                                            float(value_range[1]))
        self.requires = frozenset({signal})
        self.log_weights = np.zeros(arms.num_arms)
        self._memo: tuple | None = None     # (arms, gamma, log-weights, probabilities) of the last computation

    def _arm_weights(self) -> np.ndarray:
        k = int(self.arms.active.sum())
        return ((1 - self.gamma) * softmax(self.log_weights, 1.0, active_mask(self.arms))
                + self.gamma / k * self.arms.active)

    def probabilities(self) -> np.ndarray:
        """As :meth:`Policy.probabilities`, reusing the last result while the log-weights (and
        ``gamma``) are unchanged: ``observe`` needs the distribution that was just read."""
        memo, lw = getattr(self, "_memo", None), self.log_weights    # (absent from pre-memo pickles)
        if (memo is not None and memo[0] is self.arms and memo[1] == self.gamma and memo[2].shape == lw.shape
                and type(self)._arm_weights is EXP3._arm_weights and (memo[2] == lw).all()):
            return memo[3].copy()
        p = super().probabilities()
        self._memo = (self.arms, self.gamma, lw.copy(), p.copy())
        return p

    def _update(self, ids: np.ndarray, arm: np.ndarray, signals: dict[str, np.ndarray], counts: np.ndarray) -> None:
        x = _scaled_signal(self.signal, signals[self.signal], self.value_range)
        mean = arm_means(arm, x, counts)
        p = self.probabilities()
        seen = (counts > 0).nonzero()[0]
        self.log_weights[seen] += self.gamma * mean[seen] / p[seen] / int(self.arms.active.sum())
        self.log_weights -= self.log_weights.max()

    def scores(self) -> dict[str, np.ndarray]:
        return {"log_weight": self.log_weights}


class LearningProgress(Policy):
    """Absolute learning progress (in the spirit of Portelas et al. 2019 and Kanitscheider et al.
    2021; defaults are cadence's): a fast and a slow EMA of each arm's mean
    signal; progress ``LP_j = |fast_j − slow_j|``; ``p = (1 − ε)·LP/ΣLP + ε/K`` (uniform while
    ΣLP = 0). Both EMAs start at an arm's first observed mean.
    """

    name = "learning_progress"
    _state = ("fast", "slow", "seen")

    def __init__(self, arms: Arms, *, fast: float = 0.1, slow: float = 0.02, epsilon: float = 0.1,
                 signal: str = "reward", value_range: tuple[float, float] = (0.0, 1.0), seed: int = 0,
                 clock: Clock | None = None) -> None:
        _rate("fast", fast)
        _rate("slow", slow)
        if slow >= fast:
            raise CadenceError(f"slow rate ({slow}) must be smaller than fast rate ({fast})")
        if not 0 <= epsilon <= 1:
            raise CadenceError(f"epsilon must lie in [0, 1], got {epsilon!r}")
        _check_signal(signal, value_range)
        super().__init__(arms, seed=seed, clock=clock)
        self.rates = (float(fast), float(slow))
        self.epsilon, self.signal, self.value_range = float(epsilon), signal, value_range
        self.requires = frozenset({signal})
        k = arms.num_arms
        self.fast, self.slow, self.seen = np.zeros(k), np.zeros(k), np.zeros(k, dtype=bool)

    def _update(self, ids: np.ndarray, arm: np.ndarray, signals: dict[str, np.ndarray], counts: np.ndarray) -> None:
        x = _scaled_signal(self.signal, signals[self.signal], self.value_range)
        mean = arm_means(arm, x, counts)
        observed = counts > 0
        old, new = observed & self.seen, observed & ~self.seen
        for ema, rate in zip((self.fast, self.slow), self.rates):   # computed for every arm, stored for `old`
            np.copyto(ema, ema + rate * (mean - ema), where=old)
            np.copyto(ema, mean, where=new)                         # a first observation starts both EMAs
        self.seen |= observed

    def progress(self) -> np.ndarray:
        """Absolute learning progress per arm."""
        return np.abs(self.fast - self.slow)

    def _arm_weights(self) -> np.ndarray:
        active = self.arms.active
        lp = self.progress() if active_mask(self.arms) is None else np.where(active, self.progress(), 0.0)
        uniform = active / active.sum()
        total = lp.sum()
        if total <= 0:
            return uniform
        return (1 - self.epsilon) * lp / total + self.epsilon * uniform

    def scores(self) -> dict[str, np.ndarray]:
        return {"learning_progress": self.progress(), "fast": self.fast, "slow": self.slow}
