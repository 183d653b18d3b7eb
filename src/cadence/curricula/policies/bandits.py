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

from typing import Literal

import numpy as np

from cadence.clock import Clock
from cadence.curricula.arms import Arms
from cadence.curricula.base import Policy, arm_means, softmax
from cadence.errors import CadenceError


def _positive(name: str, value: float) -> None:
    if not np.isfinite(value) or value <= 0:
        raise CadenceError(f"{name} must be positive and finite, got {value!r}")


def _rate(name: str, value: float) -> None:
    if not 0 < value <= 1:
        raise CadenceError(f"{name} must lie in (0, 1], got {value!r}")


class DUMP(Policy):
    """DUMP (Wang et al., arXiv 2504.09710; algorithms.md §3.1): UCB over a sliding window of
    per-response |advantage| per arm, turned into probabilities by a softmax with temperature::

        μ_j = mean of the last `window` |a| of arm j,   N = Σ n_j
        UCB_j = μ_j + c·sqrt(2 ln(N + 1) / (n_j + 1)),   p = softmax(UCB / τ)

    Uniform until the first observation. ``advantage``: one value per response (signed).
    """

    name = "dump"
    requires = frozenset({"advantage"})
    _state = ("window_values", "window_sum", "window_fill", "window_pos", "responses", "mean_abs")

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
        self.window_values = np.zeros((k, window))
        self.window_sum = np.zeros(k)          # running sums, re-summed exactly each time a window wraps
        self.window_fill = np.zeros(k, dtype=np.int64)
        self.window_pos = np.zeros(k, dtype=np.int64)
        self.responses = np.zeros(k, dtype=np.int64)
        self.mean_abs = np.zeros(k)

    def _update(self, ids: np.ndarray, arm: np.ndarray, signals: dict[str, np.ndarray]) -> None:
        values = np.abs(signals["advantage"])
        order = np.argsort(arm, kind="stable")
        arm, values = arm[order], values[order]
        first = np.flatnonzero(np.concatenate(([True], arm[1:] != arm[:-1])))   # start of each arm's run
        touched, counts = arm[first], np.diff(np.append(first, len(arm)))
        rank = np.arange(len(arm)) - np.repeat(first, counts)          # position within the arm's batch
        last = rank >= np.repeat(counts, counts) - self.window         # only the last `window` can survive
        arm, slot, values = arm[last], ((self.window_pos[arm] + rank) % self.window)[last], values[last]
        change = values - self.window_values[arm, slot]               # new value minus the one it replaces
        self.window_values[arm, slot] = values
        self.window_sum += np.bincount(arm, weights=change, minlength=self.arms.num_arms)
        wrapped = touched[(self.responses[touched] // self.window) != ((self.responses[touched] + counts)
                                                                        // self.window)]
        self.window_sum[wrapped] = self.window_values[wrapped].sum(axis=1)   # re-sum exactly once per lap
        self.window_pos[touched] = (self.window_pos[touched] + counts) % self.window
        self.window_fill[touched] = np.minimum(self.window_fill[touched] + counts, self.window)
        self.responses[touched] += counts
        self.mean_abs[touched] = self.window_sum[touched] / self.window_fill[touched]

    def ucb(self) -> np.ndarray:
        """The UCB score of every arm."""
        total = self.responses.sum()
        return self.mean_abs + self.c * np.sqrt(2 * np.log(total + 1) / (self.responses + 1))

    def _arm_weights(self) -> np.ndarray:
        if self.responses.sum() == 0:
            return np.ones(self.arms.num_arms)
        return softmax(self.ucb(), self.temperature, self.arms.active)

    def scores(self) -> dict[str, np.ndarray]:
        return {"mean_abs_advantage": self.mean_abs, "ucb": self.ucb(), "responses": self.responses}


class SEC(Policy):
    """SEC (Chen et al., arXiv 2505.14970; algorithms.md §3.2): Boltzmann sampling over a
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

    def _update(self, ids: np.ndarray, arm: np.ndarray, signals: dict[str, np.ndarray]) -> None:
        reward, counts = arm_means(arm, np.abs(signals["advantage"]), self.arms.num_arms)
        seen = counts > 0
        self.q[seen] = self.alpha * reward[seen] + (1 - self.alpha) * self.q[seen]
        if self.absent == "decay":
            self.q[~seen] = (1 - self.alpha) * self.q[~seen]
        self.steps += 1

    def _arm_weights(self) -> np.ndarray:
        return softmax(self.q, self.temperature, self.arms.active)

    def scores(self) -> dict[str, np.ndarray]:
        return {"q": self.q}


def _scaled_signal(name: str, values: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """A signal mapped to [0, 1] by ``value_range`` (advantages by their absolute value)."""
    lo, hi = value_range
    x = np.abs(values) if name == "advantage" else values
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _check_signal(signal: str, value_range: tuple[float, float]) -> None:
    if signal not in ("reward", "advantage", "correct"):
        raise CadenceError(f"signal must be 'reward', 'advantage' (its absolute value) or 'correct', got {signal!r}")
    lo, hi = value_range
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise CadenceError(f"value_range must be finite with high > low, got {value_range!r}")


class EXP3(Policy):
    """EXP3 (Auer et al. 2002, the textbook form; not in algorithms.md), batched: with
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

    def _arm_weights(self) -> np.ndarray:
        k = int(self.arms.active.sum())
        return (1 - self.gamma) * softmax(self.log_weights, 1.0, self.arms.active) + self.gamma / k * self.arms.active

    def _update(self, ids: np.ndarray, arm: np.ndarray, signals: dict[str, np.ndarray]) -> None:
        x = _scaled_signal(self.signal, signals[self.signal], self.value_range)
        mean, counts = arm_means(arm, x, self.arms.num_arms)
        p = self.probabilities()
        seen = counts > 0
        self.log_weights[seen] += self.gamma * mean[seen] / p[seen] / int(self.arms.active.sum())
        self.log_weights -= self.log_weights.max()

    def scores(self) -> dict[str, np.ndarray]:
        return {"log_weight": self.log_weights}


class LearningProgress(Policy):
    """Absolute learning progress (in the spirit of Portelas et al. 2019 and Kanitscheider et al.
    2021; not in algorithms.md, defaults are cadence's): a fast and a slow EMA of each arm's mean
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

    def _update(self, ids: np.ndarray, arm: np.ndarray, signals: dict[str, np.ndarray]) -> None:
        x = _scaled_signal(self.signal, signals[self.signal], self.value_range)
        mean, counts = arm_means(arm, x, self.arms.num_arms)
        new = (counts > 0) & ~self.seen
        old = (counts > 0) & self.seen
        self.fast[new] = self.slow[new] = mean[new]
        self.fast[old] += self.rates[0] * (mean[old] - self.fast[old])
        self.slow[old] += self.rates[1] * (mean[old] - self.slow[old])
        self.seen |= counts > 0

    def progress(self) -> np.ndarray:
        """Absolute learning progress per arm."""
        return np.abs(self.fast - self.slow)

    def _arm_weights(self) -> np.ndarray:
        active = self.arms.active
        lp = np.where(active, self.progress(), 0.0)
        uniform = active / active.sum()
        if lp.sum() <= 0:
            return uniform
        return (1 - self.epsilon) * lp / lp.sum() + self.epsilon * uniform

    def scores(self) -> dict[str, np.ndarray]:
        return {"learning_progress": self.progress(), "fast": self.fast, "slow": self.slow}
