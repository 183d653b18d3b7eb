"""RL pass-rate band filter with batch refill (algorithms.md §3.3 balanced filtering, §3.4 DAPO).

Each prompt is rolled out ``G`` times; its group pass rate ``p̂ = #correct / G`` is kept if it lies
in the band. ``closed`` says which ends belong to it: ``"neither"`` (default, ``low < p̂ < high``;
with the default band (0, 1) this is DAPO's dynamic sampling), ``"both"`` (``low ≤ p̂ ≤ high``,
e.g. balanced filtering with [0.2, 0.8]), ``"low"`` or ``"high"``. :meth:`PassRateFilter.fill`
draws and rolls out more prompts until the batch is full or the bound on extra rollouts is hit.
Every result updates a per-prompt history (attempts, successes, last pass rate).

    >>> import numpy as np
    >>> from cadence.curricula import Arms, PassRateFilter
    >>> filt = PassRateFilter(Arms(["math"] * 3))
    >>> sel = filt.select([0, 0, 1, 1, 2, 2], correct=[1, 0, 1, 1, 0, 0])
    >>> sel.kept.tolist(), sel.pass_rate.tolist()
    ([0], [0.5, 1.0, 0.0])
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np

from cadence.clock import Clock
from cadence.curricula.arms import Arms
from cadence.curricula.base import Policy
from cadence.errors import CadenceError


def _distinct(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(ids, return_index=True, return_inverse=True)`` for a non-empty 1-D integer
    array, by the same stable sort without the wrapper's overhead.

        >>> [a.tolist() for a in _distinct(np.array([5, 2, 5]))]
        [[2, 5], [1, 0], [1, 0, 1]]
    """
    perm = np.argsort(ids, kind="stable")
    ordered = ids[perm]
    starts = np.empty(len(ids), dtype=bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    inverse = np.empty(len(ids), dtype=np.intp)
    inverse[perm] = np.cumsum(starts) - 1
    return ordered[starts], perm[starts], inverse


@dataclass(frozen=True)
class Selection:
    """Result of :meth:`PassRateFilter.select` for one round of rollouts.

    ``prompts``: the distinct prompt ids in first-appearance order; ``pass_rate``: their group pass
    rates; ``kept``: the prompts in the band (same order); ``mask``: per rollout, whether its
    prompt was kept (rows dropped for NaN are ``False``).
    """

    prompts: np.ndarray
    pass_rate: np.ndarray
    kept: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class Fill:
    """Result of :meth:`PassRateFilter.fill`: ``kept`` prompt ids (at most ``batch_size``), their
    ``correct`` rollouts (kept × G), ``rounds`` of generation, ``rollouts`` spent, ``extra_rollouts``
    (beyond the first round), ``full`` (whether ``batch_size`` prompts were kept) and ``repeated``
    (prompts rolled out again although already kept in this batch, because no other prompt could be
    drawn: 0 unless the pool is exhausted)."""

    kept: np.ndarray
    correct: np.ndarray
    rounds: int
    rollouts: int
    extra_rollouts: int
    full: bool
    repeated: int = 0


@dataclass(frozen=True)
class PassBand:
    """A band of group pass rates: ``[low, high]`` with the ends ``closed`` says belong to it
    (``"neither"``, ``"both"``, ``"low"`` or ``"high"``). The default (0, 1) with open ends holds the
    groups that are neither all correct nor all wrong.

        >>> band = PassBand(0.25, 0.75, closed="both")
        >>> band.contains([0.0, 0.25, 0.5, 1.0]).tolist(), band.distance([0.0, 0.5, 1.0]).tolist()
        ([False, True, True, False], [0.25, 0.0, 0.25])
    """

    low: float = 0.0
    high: float = 1.0
    closed: Literal["neither", "both", "low", "high"] = "neither"

    def __post_init__(self) -> None:
        if not (0 <= self.low <= self.high <= 1):
            raise CadenceError(f"need 0 <= low <= high <= 1, got low={self.low!r}, high={self.high!r}")
        if self.closed not in ("neither", "both", "low", "high"):
            raise CadenceError(f"closed must be 'neither', 'both', 'low' or 'high', got {self.closed!r}")
        if self.closed != "both" and self.low == self.high:
            raise CadenceError(f"the band ({self.low}, {self.high}) with closed={self.closed!r} keeps nothing")

    def contains(self, pass_rate: Any) -> np.ndarray:
        """Whether each pass rate lies in the band."""
        p = np.asarray(pass_rate, dtype=np.float64)
        above = p >= self.low if self.closed in ("both", "low") else p > self.low
        below = p <= self.high if self.closed in ("both", "high") else p < self.high
        return above & below

    def distance(self, pass_rate: Any) -> np.ndarray:
        """How far each pass rate lies outside ``[low, high]`` (0 inside or on an end)."""
        p = np.asarray(pass_rate, dtype=np.float64)
        return np.maximum(np.maximum(self.low - p, p - self.high), 0.0)


class PassRateFilter(Policy):
    """Keep prompt groups whose pass rate lies in ``[low, high]`` (ends per ``closed``).

    Args:
        low, high: the band; defaults (0, 1) with open ends keep groups that are neither all
            correct nor all wrong.
        closed: ``"neither"``, ``"both"``, ``"low"`` or ``"high"``: which band ends are kept.
        max_extra_rollouts: bound on rollouts :meth:`fill` may spend beyond its first round
            (``None``: unbounded; 0: never refill).

    Sampling is uniform over items. ``observe(ids, correct=...)`` only records history;
    :meth:`select` records and filters.
    """

    name = "pass_rate"
    requires = frozenset({"correct"})
    _state = ("attempts", "successes", "last_rate", "kept_count", "rounds", "rollouts")

    def __init__(self, arms: Arms, low: float = 0.0, high: float = 1.0, *,
                 closed: Literal["neither", "both", "low", "high"] = "neither", max_extra_rollouts: int | None = None,
                 seed: int = 0, clock: Clock | None = None) -> None:
        self.band = PassBand(float(low), float(high), closed)
        if max_extra_rollouts is not None and max_extra_rollouts < 0:
            raise CadenceError(f"max_extra_rollouts must be >= 0 or None, got {max_extra_rollouts!r}")
        super().__init__(arms, seed=seed, clock=clock)
        self.low, self.high, self.closed, self.max_extra_rollouts = float(low), float(high), closed, max_extra_rollouts
        n = arms.num_items
        self.attempts = np.zeros(n, dtype=np.int32)
        self.successes = np.zeros(n, dtype=np.int32)
        self.last_rate = np.full(n, -1.0, dtype=np.float32)
        self.kept_count = np.zeros(n, dtype=np.int32)
        self.rounds = 0
        self.rollouts = 0

    def in_band(self, pass_rate: Any) -> np.ndarray:
        """Whether each pass rate lies in the band (:meth:`PassBand.contains`)."""
        return self.band.contains(pass_rate)

    def _update(self, ids: np.ndarray, arm: np.ndarray, signals: dict[str, np.ndarray], counts: np.ndarray) -> None:
        self._record(ids, signals["correct"])

    def _record(self, ids: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Update the history; returns the distinct prompts (ascending), their index of first
        appearance in ``ids``, and their pass rates."""
        prompts, first, inverse = _distinct(ids)
        wins = np.bincount(inverse, weights=correct, minlength=len(prompts))
        tries = np.bincount(inverse, minlength=len(prompts))
        rate = wins / tries
        self.attempts[prompts] += tries.astype(np.int32)
        self.successes[prompts] += wins.astype(np.int32)
        self.last_rate[prompts] = rate.astype(np.float32)
        self.rollouts += len(ids)
        return prompts, first, rate

    def select(self, prompt_ids: Any, correct: Any) -> Selection:
        """Record one round of rollouts (``prompt_ids`` repeated once per rollout, ``correct`` 0/1
        per rollout) and return which prompt groups are kept."""
        n = len(np.asarray(prompt_ids).reshape(-1))
        checked = self.validate(prompt_ids, correct=correct)
        if checked is None:
            return Selection(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64), np.zeros(n, dtype=bool))
        ids, arm, signals = checked
        self.observed += np.bincount(arm, minlength=self.arms.num_arms)
        prompts, first, rate = self._record(ids, signals["correct"])
        order = np.argsort(first, kind="stable")                # first-appearance order
        prompts, rate = prompts[order], rate[order]
        keep = self.in_band(rate)
        kept = prompts[keep]
        self.kept_count[kept] += 1
        self.rounds += 1
        all_ids = self.arms.check_ids(prompt_ids)
        finite = np.isfinite(np.asarray(correct, dtype=np.float64).reshape(-1))
        return Selection(prompts, rate, kept, np.isin(all_ids, kept) & finite)

    def fill(self, batch_size: int, rollout: Callable[[np.ndarray], Any], *, chunk: int | None = None) -> Fill:
        """Draw ``chunk`` prompts (default ``batch_size``) per round, call ``rollout(prompt_ids)``
        → 0/1 array ``(len(prompt_ids), G)``, keep in-band groups, and repeat until ``batch_size``
        prompts are kept or another round would exceed ``max_extra_rollouts``.

        A prompt already kept is not drawn again for the same batch; only when the pool has no other
        prompt (after ``8 × chunk`` draws) is one repeated, counted in ``Fill.repeated`` and warned about."""
        if batch_size < 1:
            raise CadenceError(f"batch_size must be positive, got {batch_size}")
        chunk = batch_size if chunk is None else chunk
        kept: list[np.ndarray] = []
        results: list[np.ndarray] = []
        n_kept = rounds = spent = first_round = repeated = 0
        while n_kept < batch_size:
            prompts, again = self._fresh(chunk, np.concatenate(kept) if kept else np.zeros(0, np.int64))
            repeated += again
            correct = np.asarray(rollout(prompts), dtype=np.float64)
            if correct.ndim != 2 or correct.shape[0] != len(prompts):
                raise CadenceError(f"rollout must return a (prompts, G) array, got shape {correct.shape}")
            group = correct.shape[1]
            if rounds == 0:
                first_round = correct.size
            sel = self.select(np.repeat(prompts, group), correct.reshape(-1))
            position = {int(p): i for i, p in enumerate(prompts)}
            rows = np.array([position[int(p)] for p in sel.kept], dtype=np.int64)
            kept.append(sel.kept)
            results.append(correct[rows] if len(rows) else np.zeros((0, group)))
            n_kept += len(sel.kept)
            rounds += 1
            spent += correct.size
            if n_kept >= batch_size:
                break
            if self.max_extra_rollouts is not None and spent - first_round + chunk * group > self.max_extra_rollouts:
                break
        ids = np.concatenate(kept)[:batch_size]
        if repeated:
            warnings.warn(f"PassRateFilter.fill: the pool ran out of prompts not yet kept in this batch; "
                          f"{repeated} prompt(s) were rolled out again", stacklevel=2)
        return Fill(ids, np.concatenate(results)[:batch_size], rounds, spent, spent - first_round,
                    len(ids) >= batch_size, repeated)

    def _fresh(self, chunk: int, kept: np.ndarray) -> tuple[np.ndarray, int]:
        """Up to ``chunk`` distinct prompts (draw order) not in ``kept``, drawing again up to 8 times;
        if none is found, the draw with its repeats, and how many of them were already kept."""
        taken = np.zeros(0, dtype=np.int64)
        for _ in range(8):
            drawn = self.sample(chunk - len(taken))
            taken = np.concatenate([taken, drawn])
            taken = taken[np.sort(np.unique(taken, return_index=True)[1])]      # distinct, in draw order
            taken = taken[~np.isin(taken, kept)]
            if len(taken) >= chunk:
                return taken[:chunk], 0
        if len(taken):
            return taken, 0
        drawn = np.unique(self.sample(chunk))
        return drawn, int(np.isin(drawn, kept).sum())

    def pass_rate(self, item_ids: Any) -> np.ndarray:
        """Cumulative pass rate of each prompt over its history (NaN if never tried)."""
        ids = self.arms.check_ids(item_ids)
        tries = self.attempts[ids]
        return np.divide(self.successes[ids], tries, out=np.full(len(ids), np.nan), where=tries > 0)

    def _arm_weights(self) -> np.ndarray:
        return self.arms.sizes.astype(np.float64)

    def scores(self) -> dict[str, np.ndarray]:
        tries = np.bincount(self.arms.item_arm, weights=self.attempts, minlength=self.arms.num_arms)
        wins = np.bincount(self.arms.item_arm, weights=self.successes, minlength=self.arms.num_arms)
        return {"pass_rate": np.divide(wins, tries, out=np.zeros_like(wins), where=tries > 0)}
