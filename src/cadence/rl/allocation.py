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
* :class:`GVMAllocation` — GVM-RAFT ("Optimizing Chain-of-Thought Reasoners via Gradient Variance
  Minimization in Rejection Sampling and RL", arXiv 2505.02391): rollouts per prompt that minimise
  the variance of the gradient estimate, from each prompt's acceptance rate ``p`` and gradient norm
  ``G`` (see :func:`gvm_sizes`).

All three share one interface (:class:`Allocation`): ``sizes(prompt_ids)`` before generation,
``observe(ids_per_rollout, correct)`` after it, ``state_dict``/``load_state_dict``.

    >>> sizes_for_rates(np.array([0.01, 0.5, 0.97, 0.30]), total=32).tolist()
    [3, 11, 0, 18]
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from cadence.curricula.base import as_signal
from cadence.errors import CadenceError, StateError


class Allocation(Protocol):
    """How many rollouts each prompt of a step gets (the interface of every allocation here)."""

    def sizes(self, items: np.ndarray) -> np.ndarray:
        """Rollouts per prompt id (0 skips the prompt)."""

    def observe(self, item_ids: Any, correct: Any) -> None:
        """Learn from one round: one prompt id and one 0/1 correctness per rollout."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Any) -> None: ...


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
        wins = as_signal("correct", correct)
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


def largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Integers summing to ``total`` proportional to ``shares`` (floors, then one more to the largest
    remainders; ties to the earlier prompt); equal shares when all are zero.

        >>> largest_remainder(np.array([1.0, 1.0, 2.0]), 10).tolist()
        [3, 2, 5]
    """
    shares = np.asarray(shares, dtype=np.float64)
    if shares.sum() <= 0:
        shares = np.ones(len(shares))
    exact = total * shares / shares.sum()
    out = np.floor(exact).astype(np.int64)
    order = np.lexsort((np.arange(len(exact)), -(exact - out)))
    out[order[:total - int(out.sum())]] += 1
    return out


def gvm_weights(p: Any, g: Any, *, alpha: float = 1e-3, beta: float = 2.0) -> np.ndarray:
    """GVM-RAFT's weight ``w = G / sqrt(p + α·p^(1−β))`` (0 where ``p = 0`` or ``G = 0``); the
    defaults ``α = 1e-3, β = 2`` give ``G / sqrt(p + α/p)``.

        >>> gvm_weights([0.25, 1.0, 0.0], [1.0, 2.0, 5.0], alpha=0.0).tolist()
        [2.0, 2.0, 0.0]
    """
    p, g = np.asarray(p, dtype=np.float64), np.asarray(g, dtype=np.float64)
    live = (p > 0) & (g > 0)
    safe = np.where(live, p, 1.0)
    return np.where(live, g / np.sqrt(safe + alpha * safe ** (1.0 - beta)), 0.0)


def gvm_sizes(p: Any, g: Any, total: int, *, alpha: float = 1e-3, beta: float = 2.0) -> np.ndarray:
    """Rollouts per prompt for GVM-RAFT: ``n_i = N·w_i / Σ_j w_j`` (:func:`gvm_weights`), rounded by
    largest remainder so they sum to ``N = total`` exactly (equal shares if every weight is 0).

        >>> gvm_sizes([0.25, 0.5, 1.0], [1.0, 1.0, 1.0], 12, alpha=0.0).tolist()
        [5, 4, 3]
    """
    if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total < 0:
        raise CadenceError(f"the rollout total must be a non-negative integer, got {total!r}")
    return largest_remainder(gvm_weights(p, g, alpha=alpha, beta=beta), int(total))


class GVMAllocation:
    """GVM-RAFT: spread ``group × len(items)`` rollouts by :func:`gvm_sizes` (module docs).

    ``p_i`` is estimated per prompt as in :class:`KnapsackAllocation` (decayed counts, Beta prior
    centred on its arm); ``G_i`` is the decayed mean gradient norm of the prompt's *correct* rollouts
    (the paper: the norm of the gradient of the sequence's summed log-probability restricted to one
    weight matrix), an unseen prompt taking its arm's mean (1 before any). The paper re-estimates
    ``(p, G)`` in a pre-sampling pass on each data shard (``N₁ = 8`` samples per prompt) between
    training epochs; here they are updated online from the training rollouts themselves, so no extra
    rollouts are spent (a deviation; UNCONFIRMED whether it matters). The paper's optional filters
    (drop ``p > threshold``, drop ``p·n < floor``) are off, as in its released run.

    Args:
        arm_of: arm index of every prompt id.
        group: average rollouts per prompt; the step's total is ``group × prompts``.
        alpha, beta: the weight's constants (paper code: 1e-3, 2).
        decay: per-observation decay of a prompt's counts and gradient norms.
        prior_strength: pseudo-rollouts of the arm-centred prior on ``p``.

        >>> alloc = GVMAllocation(np.zeros(3, dtype=int), group=4)
        >>> alloc.observe(np.repeat([0, 1, 2], 4), np.r_[[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]],
        ...               grad_norm=np.ones(12))
        >>> alloc.sizes(np.arange(3)).tolist()    # the hard prompt gets the most
        [5, 4, 3]
    """

    kind = "cadence.GVMAllocation"
    needs_grad_norms = True

    def __init__(self, arm_of: Any, group: int, *, alpha: float = 1e-3, beta: float = 2.0, decay: float = 0.9,
                 prior_strength: float = 2.0) -> None:
        if isinstance(group, bool) or not isinstance(group, (int, np.integer)) or group < 1:
            raise CadenceError(f"group size must be a positive integer, got {group!r}")
        if not alpha >= 0 or not np.isfinite(beta) or not 0 < decay <= 1 or not prior_strength > 0:
            raise CadenceError(f"need alpha >= 0, finite beta, 0 < decay <= 1 and prior_strength > 0; got "
                               f"alpha={alpha}, beta={beta}, decay={decay}, prior_strength={prior_strength}")
        self.rates = KnapsackAllocation(arm_of, max(int(group), 2), decay=decay, prior_strength=prior_strength)
        self.arm_of, self.n_arms = self.rates.arm_of, self.rates.n_arms
        self.group, self.alpha, self.beta, self.decay = int(group), float(alpha), float(beta), float(decay)
        self.norm_sum = np.zeros(len(self.arm_of))     # decayed Σ G over correct rollouts
        self.norm_count = np.zeros(len(self.arm_of))

    def pass_rates(self, items: Any) -> np.ndarray:
        """Each prompt's estimated acceptance rate ``p`` (see :meth:`KnapsackAllocation.pass_rates`)."""
        return self.rates.pass_rates(items)

    def grad_norms(self, items: Any) -> np.ndarray:
        """Each prompt's estimated gradient norm ``G`` (its arm's mean when unseen, 1 with no data)."""
        items = np.asarray(items, dtype=np.int64)
        arm_sum = np.bincount(self.arm_of, weights=self.norm_sum, minlength=self.n_arms)
        arm_count = np.bincount(self.arm_of, weights=self.norm_count, minlength=self.n_arms)
        all_mean = self.norm_sum.sum() / self.norm_count.sum() if self.norm_count.sum() > 0 else 1.0
        arm_mean = np.divide(arm_sum, arm_count, out=np.full(self.n_arms, all_mean), where=arm_count > 0)
        own = self.norm_count[items] > 0
        mean = np.divide(self.norm_sum[items], self.norm_count[items], out=np.zeros(len(items)), where=own)
        return np.where(own, mean, arm_mean[self.arm_of[items]])

    def sizes(self, items: Any) -> np.ndarray:
        """Rollouts per prompt summing to ``group × len(items)`` (:func:`gvm_sizes`)."""
        items = np.asarray(items, dtype=np.int64)
        return gvm_sizes(self.pass_rates(items), self.grad_norms(items), self.group * len(items),
                         alpha=self.alpha, beta=self.beta)

    def observe(self, item_ids: Any, correct: Any, grad_norm: Any = None) -> None:
        """Record rollouts: one prompt id, one 0/1 correctness and (optionally) one gradient norm per
        rollout; only correct rollouts' norms count. Bad input changes nothing."""
        ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        wins = as_signal("correct", correct)
        norms = None
        if grad_norm is not None:
            norms = np.asarray(grad_norm, dtype=np.float64).reshape(-1)
            if norms.shape != ids.shape or not np.all(np.isfinite(norms[wins == 1])) or np.any(norms[wins == 1] < 0):
                raise CadenceError(f"grad_norm needs one finite, non-negative value per rollout ({len(ids)}), "
                                   f"at least for the correct ones")
        self.rates.observe(ids, wins)           # validates ids and correctness first
        if norms is not None:
            seen = np.unique(ids)
            self.norm_sum[seen] *= self.decay
            self.norm_count[seen] *= self.decay
            good = wins == 1
            np.add.at(self.norm_sum, ids[good], norms[good])
            np.add.at(self.norm_count, ids[good], 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rates": self.rates.state_dict(), "norm_sum": self.norm_sum.tolist(),
                "norm_count": self.norm_count.tolist()}

    def load_state_dict(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict")
        try:
            norm_sum = np.asarray(state["norm_sum"], dtype=np.float64)
            norm_count = np.asarray(state["norm_count"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed {self.kind} state_dict: {e!r}") from None
        if norm_sum.shape != self.norm_sum.shape or norm_count.shape != self.norm_count.shape:
            raise StateError(f"state is for {norm_sum.shape[0] if norm_sum.ndim else '?'} prompts, this allocation "
                             f"has {len(self.arm_of)}")
        self.rates.load_state_dict(state["rates"])
        self.norm_sum, self.norm_count = norm_sum, norm_count
