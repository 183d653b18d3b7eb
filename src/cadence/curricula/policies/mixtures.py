"""Non-adaptive mixtures: uniform, fixed weights, and weights that are schedules of the clock.

    >>> from cadence import Clock
    >>> from cadence.curricula import Arms, ScheduledMixture
    >>> clock = Clock(budget=100)
    >>> mix = ScheduledMixture(Arms(["web", "code"]), {"web": "linear(peak=1)", "code": "ramp(start=0, end=1)"},
    ...                        clock=clock)
    >>> mix.probabilities().tolist()    # at step 0: all web
    [0.0, 1.0]
"""

from __future__ import annotations

from typing import Any, Hashable, Literal, Mapping

import numpy as np

from cadence.clock import Clock
from cadence.curricula.arms import Arms
from cadence.curricula.base import Policy, per_arm
from cadence.errors import CadenceError
from cadence.schedules.base import Schedule, as_schedule


class Uniform(Policy):
    """Uniform sampling: over items (``over="items"``, a plain shuffle) or over arms (``"arms"``).

        >>> Uniform(Arms(["a", "b", "b", "b"]), over="arms").probabilities().tolist()
        [0.5, 0.5]
    """

    name = "uniform"

    def __init__(self, arms: Arms, *, over: Literal["items", "arms"] = "items", seed: int = 0,
                 clock: Clock | None = None) -> None:
        if over not in ("items", "arms"):
            raise CadenceError(f"Uniform(over=...) must be 'items' or 'arms', got {over!r}")
        super().__init__(arms, seed=seed, clock=clock)
        self.over = over

    def _arm_weights(self) -> np.ndarray:
        return self.arms.sizes.astype(np.float64) if self.over == "items" else np.ones(self.arms.num_arms)


class FixedMixture(Policy):
    """Fixed arm weights (normalised), given as ``{arm name: weight}`` or one weight per arm.

        >>> FixedMixture(Arms(["a", "b"]), [1, 3]).probabilities().tolist()
        [0.25, 0.75]
    """

    name = "fixed"

    def __init__(self, arms: Arms, weights: Mapping[Hashable, float] | Any, *, seed: int = 0,
                 clock: Clock | None = None) -> None:
        super().__init__(arms, seed=seed, clock=clock)
        w = np.asarray(per_arm(arms, weights, "FixedMixture weights"), dtype=np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise CadenceError(f"FixedMixture weights must be finite and non-negative, got {w.tolist()}")
        self.weights = w
        self.probabilities()  # fail now if no arm with items has weight

    def _arm_weights(self) -> np.ndarray:
        return self.weights


class ScheduledMixture(Policy):
    """Arm weights that are cadence schedules of the clock (specs, schedules or numbers).

    Weights are read at ``clock``'s position each time, so resuming is exact by construction;
    negative values are an error, all-zero weights at some moment too.
    """

    name = "scheduled"

    def __init__(self, arms: Arms, weights: Mapping[Hashable, Any] | Any, *, clock: Clock, seed: int = 0) -> None:
        if not isinstance(clock, Clock):
            raise CadenceError("ScheduledMixture needs clock=Clock(...): its weights are schedules of the clock")
        super().__init__(arms, seed=seed, clock=clock)
        self.schedules: list[Schedule] = [as_schedule(s) for s in per_arm(arms, weights, "ScheduledMixture weights")]
        clock.check(self.schedules)
        clock.watch(self.schedules)
        self.probabilities()

    def _arm_weights(self) -> np.ndarray:
        w = np.array([s(self.clock) for s in self.schedules], dtype=np.float64)
        if np.any(w < 0):
            bad = int(np.flatnonzero(w < 0)[0])
            raise CadenceError(f"scheduled weight of arm {self.arms.names[bad]!r} is negative ({w[bad]}) "
                               f"at position {self.clock.position}")
        return w

    def scores(self) -> dict[str, np.ndarray]:
        return {"weight": self._arm_weights()}
