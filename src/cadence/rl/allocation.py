"""How many rollouts each prompt of a step gets.

* :class:`FixedAllocation` — plain GRPO: ``group`` rollouts per prompt.
* :class:`KnapsackAllocation` — Knapsack RL ("Knapsack RL: Unlocking Exploration of LLMs via Optimizing
  Budget Allocation", arXiv 2509.25849): every prompt is a knapsack item whose cost is its rollouts ``N``
  and whose value is the chance its group has a non-zero gradient times the information it carries,

      value(N, p) = (1 − p^N − (1 − p)^N) · InfoGain(p),   InfoGain(p) = p·(1 − p)²,

  maximised under the step's total by dynamic programming, so rollouts move from prompts the policy
  already solves to the ones it still gets wrong. ``p`` is estimated **per prompt** from its own
  rollouts (decayed counts) under a Beta prior centred on the prompt's arm (pooled over its arm's
  prompts), so a prompt seen once is not judged on one group. The InfoGain form is the paper's as
  summarised (p(1 − p)²); its exact normalisation and the paper's estimator and prior are
  UNCONFIRMED, and are kept in :func:`knapsack_value` and :meth:`KnapsackAllocation.pass_rates` to
  be easy to correct.

    >>> sizes_for_rates(np.array([0.01, 0.5, 0.97, 0.30]), total=32).tolist()
    [3, 11, 0, 18]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cadence.errors import CadenceError, StateError


def nonzero_gradient_chance(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``1 − p^N − (1 − p)^N``: the chance that ``N`` binary rewards at success rate ``p`` are not all
    equal, i.e. that the group's advantages (and so its gradient) are not all zero (0 for ``N < 2``).

        >>> float(nonzero_gradient_chance(np.array(0.5), np.array(2)))
        0.5
    """
    n = np.asarray(n, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    return np.where(n >= 2, 1.0 - p**n - (1.0 - p) ** n, 0.0)


def knapsack_value(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Knapsack RL's value of ``N`` rollouts for a prompt at pass rate ``p``:
    ``nonzero_gradient_chance(p, N) · p(1 − p)²`` (InfoGain form UNCONFIRMED, see the module docs)."""
    p = np.asarray(p, dtype=np.float64)
    return nonzero_gradient_chance(p, n) * p * (1.0 - p) ** 2


def sizes_for_rates(p: np.ndarray, total: int, *, min_group: int = 2, max_group: int | None = None) -> np.ndarray:
    """Rollouts per prompt (0, or ``min_group..max_group``) summing to at most ``total`` that maximise
    ``Σ knapsack_value`` exactly (dynamic programming over prompts × rollouts spent). Ties keep the
    smaller allocation, so prompts of value 0 (pass rate 0 or 1) get nothing once others can use it."""
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    max_group = total if max_group is None else max_group
    if total < 0 or not 1 <= min_group <= max(max_group, min_group) or max_group < 0:
        raise CadenceError(f"need total >= 0 and 1 <= min_group <= max_group; got total={total}, "
                           f"min_group={min_group}, max_group={max_group}")
    options = np.concatenate([[0], np.arange(min_group, min(max_group, total) + 1)]).astype(np.int64)
    best = np.full(total + 1, -np.inf)
    best[0] = 0.0
    choice = np.zeros((len(p), total + 1), dtype=np.int64)
    for i, rate in enumerate(p):
        values = knapsack_value(np.full(len(options), rate), options)
        new = np.full(total + 1, -np.inf)
        for g, v in zip(options, values):
            candidate = np.full(total + 1, -np.inf)
            candidate[g:] = best[:total + 1 - g] + v
            better = candidate > new + 1e-15
            new[better], choice[i, better] = candidate[better], g
        best = new
    sizes, left = np.zeros(len(p), dtype=np.int64), int(np.argmax(best))
    for i in range(len(p) - 1, -1, -1):
        sizes[i] = choice[i, left]
        left -= sizes[i]
    return sizes


class FixedAllocation:
    """``group`` rollouts for every prompt (plain GRPO).

        >>> FixedAllocation(4).sizes(np.array([3, 5])).tolist()
        [4, 4]
    """

    kind = "cadence.FixedAllocation"

    def __init__(self, group: int) -> None:
        if not isinstance(group, (int, np.integer)) or group < 1:
            raise CadenceError(f"group size must be a positive integer, got {group!r}")
        self.group = int(group)

    def sizes(self, items: np.ndarray) -> np.ndarray:
        return np.full(len(items), self.group, dtype=np.int64)

    def observe(self, item_ids: Any, correct: Any) -> None:
        """A fixed allocation learns nothing."""

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "group": self.group}

    def load_state_dict(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get("kind") != self.kind or state.get("group") != self.group:
            raise StateError(f"not a FixedAllocation(group={self.group}) state_dict")


class KnapsackAllocation:
    """Spread ``group × len(items)`` rollouts over a step's prompts by Knapsack RL's value (module docs).

    Args:
        arm_of: arm index of every prompt id (the prior for a prompt is its arm's pooled pass rate).
        group: the average rollouts per prompt; the step's total is ``group × prompts``.
        min_group, max_group: a prompt gets 0 or between these many rollouts (default ``4 × group``).
        decay: per-observation decay of a prompt's counts (tracks a changing policy).
        prior_strength: pseudo-rollouts of the arm-centred Beta prior on each prompt's pass rate.

        >>> alloc = KnapsackAllocation(arm_of=np.zeros(4, dtype=int), group=8)
        >>> alloc.observe(np.repeat([0, 1, 2, 3], 8), np.repeat([0.0, 1.0, 1.0, 1.0], 8))
        >>> alloc.sizes(np.arange(4)).tolist()   # the solved prompts give their rollouts to the open one
        [30, 2, 0, 0]
    """

    kind = "cadence.KnapsackAllocation"

    def __init__(self, arm_of: Any, group: int, *, min_group: int = 2, max_group: int | None = None,
                 decay: float = 0.9, prior_strength: float = 2.0) -> None:
        max_group = 4 * group if max_group is None else max_group
        if not 2 <= min_group <= group <= max_group or not 0 < decay <= 1 or not prior_strength > 0:
            raise CadenceError(f"need 2 <= min_group <= group <= max_group, 0 < decay <= 1 and prior_strength > 0; "
                               f"got min_group={min_group}, group={group}, max_group={max_group}, decay={decay}, "
                               f"prior_strength={prior_strength}")
        self.arm_of = np.asarray(arm_of, dtype=np.int64).reshape(-1)
        self.n_arms = int(self.arm_of.max()) + 1 if len(self.arm_of) else 0
        self.group, self.min_group, self.max_group = group, min_group, max_group
        self.decay, self.prior_strength = float(decay), float(prior_strength)
        self.successes = np.zeros(len(self.arm_of))
        self.attempts = np.zeros(len(self.arm_of))

    def pass_rates(self, items: Any) -> np.ndarray:
        """Posterior-mean pass rate of each prompt: its own decayed counts under a Beta prior with mean
        its arm's pooled rate (itself under a Beta(1, 1) prior) and ``prior_strength`` pseudo-rollouts."""
        items = np.asarray(items, dtype=np.int64)
        arm_wins = np.bincount(self.arm_of, weights=self.successes, minlength=self.n_arms)
        arm_tries = np.bincount(self.arm_of, weights=self.attempts, minlength=self.n_arms)
        prior = (arm_wins + 1.0) / (arm_tries + 2.0)
        k = self.prior_strength
        return (self.successes[items] + k * prior[self.arm_of[items]]) / (self.attempts[items] + k)

    def sizes(self, items: Any) -> np.ndarray:
        """Rollouts per prompt summing to ``group × len(items)`` (see :func:`sizes_for_rates`)."""
        items = np.asarray(items, dtype=np.int64)
        total = self.group * len(items)
        sizes = sizes_for_rates(self.pass_rates(items), total, min_group=self.min_group, max_group=self.max_group)
        short = total - int(sizes.sum())
        if short:  # every prompt is settled (value 0): spread what is left evenly, so the budget is spent
            sizes += np.bincount(np.arange(short) % len(items), minlength=len(items))
            sizes = np.where((sizes > 0) & (sizes < self.min_group), self.min_group, sizes)
        return sizes

    def observe(self, item_ids: Any, correct: Any) -> None:
        """Record rollouts: one prompt id and one 0/1 correctness per rollout. Counts of the prompts
        observed decay by ``decay`` first (each observation is one round of the prompt)."""
        ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        wins = np.asarray(correct, dtype=np.float64).reshape(-1)
        if ids.shape != wins.shape or (len(ids) and (ids.min() < 0 or ids.max() >= len(self.arm_of))):
            raise CadenceError(f"observe needs one known prompt id per correctness value; got {len(ids)} ids for "
                               f"{len(wins)} values over {len(self.arm_of)} prompts")
        seen = np.unique(ids)
        self.successes[seen] *= self.decay
        self.attempts[seen] *= self.decay
        np.add.at(self.successes, ids, wins)
        np.add.at(self.attempts, ids, 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "items": len(self.arm_of), "successes": self.successes.tolist(),
                "attempts": self.attempts.tolist()}

    def load_state_dict(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict")
        if state.get("items") != len(self.arm_of):
            raise StateError(f"state is for {state.get('items')} prompts, this allocation has {len(self.arm_of)}")
        self.successes = np.asarray(state["successes"], dtype=np.float64).copy()
        self.attempts = np.asarray(state["attempts"], dtype=np.float64).copy()
