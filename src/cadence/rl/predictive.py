"""Predictive pre-rollout filtering — GRESO, "Act Only When It Pays: Efficient Reinforcement Learning
for LLM Reasoning via Selective Rollouts" (Zheng et al., arXiv 2506.02177).

A prompt whose group had zero reward variance (all rollouts correct, or all wrong) tends to stay so.
GRESO therefore skips such a prompt *before* generating for it, with a probability that grows with
its run of consecutive zero-variance rounds ``z``:

    keep probability = max(p^z, floor),   skip probability = 1 − keep probability,

where ``p`` is an exploration probability kept separately for all-correct ("easy", streak of
all-correct rounds) and all-wrong ("hard", streak of all-wrong rounds) prompts. After each training
step both are adapted toward a target share of zero-variance groups among the groups rolled out in
that step: if the easy share is at or above its target, ``p_easy ← max(p_easy − Δ, p_min)`` (skip
more), else ``p_easy ← min(p_easy + Δ, p_max)``; likewise for hard. The target share is split
1 : 2 between easy and hard (hard prompts are more likely to change as the policy improves).

Defaults are the authors' released settings: ``p = 0.5`` for both, ``Δ = 0.01``, ``[p_min, p_max] =
[0.05, 0.95]``, keep floor 0.01, target zero-variance share 0.25 (easy 1/3 of it, hard 2/3).
UNCONFIRMED against the paper's text (taken from its released training scripts): the 1 : 2 split, the
floor, the bounds; the released code tests "all correct" / "all wrong" as a mean reward ≥ 0.98 / ≤
0.11 on binary rewards, which here is exact correctness (pass rate 1 / 0); it starts adapting after
the first epoch, here after the first step (prompts drawn with replacement have no epochs).

The filter is framework-free and composes with any base curriculum and with dynamic sampling
(:class:`cadence.rl.PromptSelector` draws candidates from the curriculum and asks :meth:`admit`).

    >>> f = PredictiveFilter(3, seed=0)
    >>> f.observe([0, 0, 1, 1, 2, 2], correct=[1, 1, 0, 0, 1, 0])   # prompt 0 all right, 1 all wrong
    >>> f.easy_streak.tolist(), f.hard_streak.tolist(), f.keep_probability([0, 1, 2]).tolist()
    ([1, 0, 0], [0, 1, 0], [0.5, 0.5, 1.0])
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from cadence.errors import CadenceError, StateError


def group_pass_rates(item_ids: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(distinct ids in first-appearance order, pass rate of each)`` from one row per rollout.

        >>> [a.tolist() for a in group_pass_rates([5, 5, 2, 2], [1, 0, 1, 1])]
        [[5, 2], [0.5, 1.0]]
    """
    ids = np.asarray(item_ids).reshape(-1)
    wins = np.asarray(correct, dtype=np.float64).reshape(-1)
    if ids.shape != wins.shape:
        raise CadenceError(f"{len(ids)} prompt ids for {len(wins)} correctness values; pass one id per rollout")
    if ids.dtype.kind not in "iu":
        raise CadenceError(f"prompt ids must be integers, got dtype {ids.dtype}")
    if not np.all(np.isfinite(wins)) or not np.all((wins == 0) | (wins == 1)):
        raise CadenceError("correctness must be 0/1 per rollout (no NaN)")
    prompts, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rate = np.bincount(inverse, weights=wins) / np.bincount(inverse)
    order = np.argsort(first, kind="stable")
    return prompts[order].astype(np.int64), rate[order]


class PredictiveFilter:
    """GRESO's pre-rollout skip rule over ``num_items`` prompts (see the module docs).

    Args:
        num_items: number of prompts (ids ``0..num_items-1``).
        target_zero_variance: target share of zero-variance groups per step.
        easy_share: part of the target given to all-correct groups (the rest to all-wrong).
        p_easy, p_hard: initial exploration probabilities.
        step: adaptation step ``Δ``; ``p_min``, ``p_max``: their bounds.
        floor: the keep probability never falls below this.
        seed: seed of the filter's own generator (skip decisions).
    """

    kind = "cadence.PredictiveFilter"

    def __init__(self, num_items: int, *, target_zero_variance: float = 0.25, easy_share: float = 1 / 3,
                 p_easy: float = 0.5, p_hard: float = 0.5, step: float = 0.01, p_min: float = 0.05,
                 p_max: float = 0.95, floor: float = 0.01, seed: int = 0) -> None:
        if not isinstance(num_items, (int, np.integer)) or num_items < 1:
            raise CadenceError(f"num_items must be a positive integer, got {num_items!r}")
        checks = {"target_zero_variance": (target_zero_variance, 0, 1), "easy_share": (easy_share, 0, 1),
                  "p_min": (p_min, 0, 1), "p_max": (p_max, 0, 1), "floor": (floor, 0, 1), "step": (step, 0, 1)}
        for name, (value, low, high) in checks.items():
            if not low <= value <= high:
                raise CadenceError(f"{name} must lie in [{low}, {high}], got {value!r}")
        if not p_min <= p_easy <= p_max or not p_min <= p_hard <= p_max:
            raise CadenceError(f"p_easy and p_hard must lie in [p_min, p_max] = [{p_min}, {p_max}]")
        self.num_items = int(num_items)
        self.target_easy = target_zero_variance * easy_share
        self.target_hard = target_zero_variance * (1 - easy_share)
        self.step, self.p_min, self.p_max, self.floor = step, p_min, p_max, floor
        self.p_easy, self.p_hard = float(p_easy), float(p_hard)
        self.easy_streak = np.zeros(self.num_items, dtype=np.int64)
        self.hard_streak = np.zeros(self.num_items, dtype=np.int64)
        self.pending = np.zeros(3, dtype=np.int64)   # groups since the last adapt: easy, hard, all
        self.skipped = 0                             # prompts skipped before rollout, over the run
        self.admitted = 0
        self.rng = np.random.default_rng(seed)

    def _ids(self, item_ids: Any) -> np.ndarray:
        ids = np.asarray(item_ids).reshape(-1)
        if ids.dtype.kind not in "iu" or (len(ids) and (ids.min() < 0 or ids.max() >= self.num_items)):
            raise CadenceError(f"prompt ids must be integers in [0, {self.num_items}), got {ids[:5].tolist()}…")
        return ids.astype(np.int64)

    def keep_probability(self, item_ids: Any) -> np.ndarray:
        """``max(p^z, floor)`` per prompt (1 for a prompt with no zero-variance streak)."""
        ids = self._ids(item_ids)
        easy, hard = self.easy_streak[ids], self.hard_streak[ids]
        p = np.ones(len(ids))
        p = np.where(easy > 0, np.maximum(self.p_easy ** easy, self.floor), p)
        return np.where(hard > 0, np.maximum(self.p_hard ** hard, self.floor), p)

    def admit(self, item_ids: Any) -> np.ndarray:
        """Decide before rollout which prompts to generate for (a bool mask; one draw per prompt)."""
        keep = self.rng.random(len(np.asarray(item_ids).reshape(-1))) < self.keep_probability(item_ids)
        self.admitted += int(keep.sum())
        self.skipped += int(len(keep) - keep.sum())
        return keep

    def observe(self, item_ids: Any, correct: Any) -> None:
        """Record one round: one prompt id and one 0/1 correctness per rollout. A prompt's easy
        (hard) streak grows by one when all its rollouts were right (wrong) and resets otherwise."""
        prompts, rate = group_pass_rates(self._ids(item_ids), correct)
        easy, hard = rate == 1.0, rate == 0.0
        self.easy_streak[prompts] = np.where(easy, self.easy_streak[prompts] + 1, 0)
        self.hard_streak[prompts] = np.where(hard, self.hard_streak[prompts] + 1, 0)
        self.pending += (int(easy.sum()), int(hard.sum()), len(prompts))

    def adapt(self) -> None:
        """Move ``p_easy`` and ``p_hard`` one step toward their targets (call once per training step,
        after its rounds were observed); nothing happens if no group was observed since the last call."""
        easy, hard, total = self.pending
        if total == 0:
            return
        self.p_easy = self._moved(self.p_easy, easy / total >= self.target_easy)
        self.p_hard = self._moved(self.p_hard, hard / total >= self.target_hard)
        self.pending[:] = 0

    def _moved(self, p: float, too_many: bool) -> float:
        return max(p - self.step, self.p_min) if too_many else min(p + self.step, self.p_max)

    def values(self) -> dict[str, float]:
        """Logged values: the two exploration probabilities and the share of prompts skipped."""
        seen = self.admitted + self.skipped
        return {"p_easy": self.p_easy, "p_hard": self.p_hard,
                "skipped_share": self.skipped / seen if seen else 0.0}

    def state_dict(self) -> dict[str, Any]:
        """Plain data: streaks, probabilities, counters and the generator's state."""
        return {"kind": self.kind, "num_items": self.num_items, "p_easy": self.p_easy, "p_hard": self.p_hard,
                "easy_streak": self.easy_streak.tolist(), "hard_streak": self.hard_streak.tolist(),
                "pending": self.pending.tolist(), "skipped": self.skipped, "admitted": self.admitted,
                "rng": copy.deepcopy(self.rng.bit_generator.state)}

    def load_state_dict(self, state: Any) -> None:
        """Restore :meth:`state_dict` output; another kind or prompt count is rejected, changing nothing."""
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict")
        if state.get("num_items") != self.num_items:
            raise StateError(f"state is for {state.get('num_items')} prompts, this filter has {self.num_items}")
        try:
            easy = np.asarray(state["easy_streak"], dtype=np.int64)
            hard = np.asarray(state["hard_streak"], dtype=np.int64)
            pending = np.asarray(state["pending"], dtype=np.int64)
            rng = np.random.default_rng()
            rng.bit_generator.state = copy.deepcopy(state["rng"])
            p_easy, p_hard = float(state["p_easy"]), float(state["p_hard"])
            skipped, admitted = int(state["skipped"]), int(state["admitted"])
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed {self.kind} state_dict: {e!r}") from None
        if easy.shape != (self.num_items,) or hard.shape != (self.num_items,) or pending.shape != (3,):
            raise StateError(f"{self.kind} state arrays do not match {self.num_items} prompts")
        self.easy_streak, self.hard_streak, self.pending, self.rng = easy, hard, pending, rng
        self.p_easy, self.p_hard, self.skipped, self.admitted = p_easy, p_hard, skipped, admitted
