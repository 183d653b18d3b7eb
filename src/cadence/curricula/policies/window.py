"""Policies that admit a window of the difficulty-sorted items and sample uniformly inside it.

Shared by the ordered curriculum (a growing prefix, easiest first) and PUDF (items whose IRT
difficulty lies in a band around the model's ability). Items are sorted once by difficulty
(stable, ties by item id); the window is a ``[start, end)`` range of that order.
"""

from __future__ import annotations

import abc

import numpy as np

from cadence.clock import Clock
from cadence.curricula.arms import Arms
from cadence.curricula.base import Policy
from cadence.errors import CadenceError


class SortedWindow(Policy):
    """Base class: subclasses implement :meth:`window` returning ``(start, end)`` positions."""

    def __init__(self, arms: Arms, difficulty: np.ndarray | None, *, seed: int = 0,
                 clock: Clock | None = None) -> None:
        super().__init__(arms, seed=seed, clock=clock)
        d = arms.difficulty if difficulty is None else np.asarray(difficulty, dtype=np.float64)
        if d is None:
            raise CadenceError(f"{type(self).__name__} needs a difficulty per item: pass difficulty=... "
                               f"here or to Arms(..., difficulty=...)")
        if d.shape != (arms.num_items,) or not np.all(np.isfinite(d)):
            raise CadenceError(f"difficulty must be {arms.num_items} finite values, got shape {d.shape}")
        self.item_difficulty = d
        self.order = np.argsort(d, kind="stable").astype(arms.by_arm.dtype)
        self.sorted_difficulty = d[self.order]
        self._cache: tuple[tuple[int, int], np.ndarray] | None = None

    @abc.abstractmethod
    def window(self) -> tuple[int, int]:
        """The admitted ``[start, end)`` range of the difficulty order (non-empty)."""

    def prefix_for_fraction(self, fraction: float) -> int:
        """How many of the easiest items have a difficulty CDF ≤ ``fraction`` (ties enter together,
        at least the easiest tie group)."""
        n = len(self.order)
        m = int(np.floor(min(max(fraction, 0.0), 1.0) * n + 1e-9))
        if m >= n:
            return n
        d = self.sorted_difficulty
        if m == 0:
            return int(np.searchsorted(d, d[0], side="right"))
        if d[m] != d[m - 1]:
            return m
        start = int(np.searchsorted(d, d[m - 1], side="left"))
        return start if start > 0 else int(np.searchsorted(d, d[0], side="right"))

    def admitted(self) -> np.ndarray:
        """Ids of the items the policy may draw now."""
        start, end = self.window()
        return self.order[start:end].astype(np.int64)

    def _arm_weights(self) -> np.ndarray:
        key = self.window()
        if self._cache is None or self._cache[0] != key:
            arm = self.arms.item_arm[self.order[key[0]:key[1]]]
            self._cache = (key, np.bincount(arm, minlength=self.arms.num_arms).astype(np.float64))
        return self._cache[1]

    def candidates(self, arm: int) -> np.ndarray:
        ids = self.admitted()
        return ids[self.arms.item_arm[ids] == arm]

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Uniform over the admitted window (so arm shares follow the window's composition)."""
        if n < 0:
            raise CadenceError(f"cannot draw a negative number of items ({n})")
        start, end = self.window()
        return self.order[start + (rng.random(n) * (end - start)).astype(np.int64)].astype(np.int64)

    def scores(self) -> dict[str, np.ndarray]:
        return {"admitted": self._arm_weights(), "admitted_share": self._arm_weights() / np.maximum(self.arms.sizes, 1)}
