"""Budget knobs of the RL lab: how many answers each prompt gets, and how long answers may be.

* :class:`FixedAllocation` — plain GRPO: ``group`` answers per prompt.
* :class:`KnapsackAllocation` — a fixed total of ``group × prompts`` answers per step spread over
  the step's prompts where a group is most likely to have non-zero advantage (Knapsack-RL style).
  The value of giving ``g`` answers to a prompt with pass rate ``p`` is the chance its group is
  informative, ``v(g) = 1 − p^g − (1 − p)^g`` (0 for ``g < min_group``); the allocation maximising
  ``Σ v`` under the total is found exactly by dynamic programming. ``p`` is estimated per arm from recent groups (decayed counts,
  Beta(1, 1) prior). This value function is our reading of the idea, not the paper's exact
  objective: UNCONFIRMED.
* :class:`LengthReward` — "Train Long, Think Short: Curriculum Learning for Efficient Reasoning"
  (Hammoud et al., arXiv 2508.08940): reward
  ``λ_c·correct + λ_ℓ·R_len(ℓ; L)`` with the triangular length reward and a target length
  ``L = budget(clock)`` from a cadence schedule (e.g. a step-wise exponential decay). ``ℓ`` counts
  the response's tokens including the end token. ``R_max = 1``; λ defaults are the paper's
  correctness-heavy pair (0.6, 0.3); no format term (answers are plain text).

    >>> alloc = KnapsackAllocation(arm_of=np.array([0, 1]), n_arms=2, group=4)
    >>> int(alloc.sizes(np.array([0, 1])).sum())
    8
    >>> triangular(np.array([2.0, 4.0, 6.0, 9.0]), 4.0).tolist()
    [0.5, 1.0, 0.5, 0.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cadence.clock import Clock
from cadence.errors import CadenceError, StateError
from cadence.labs.rl.groups import Groups
from cadence.schedules import Schedule, as_schedule


class FixedAllocation:
    """``group`` answers for every prompt (plain GRPO).

        >>> FixedAllocation(4).sizes(np.array([3, 5])).tolist()
        [4, 4]
    """

    kind = "cadence.rl.FixedAllocation"

    def __init__(self, group: int) -> None:
        if group < 1:
            raise CadenceError(f"group size must be >= 1, got {group}")
        self.group = group

    def sizes(self, items: np.ndarray) -> np.ndarray:
        return np.full(len(items), self.group, dtype=np.int64)

    def observe(self, groups: Groups) -> None:
        """A fixed allocation learns nothing."""

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "group": self.group}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("kind") != self.kind or state.get("group") != self.group:
            raise StateError(f"not a FixedAllocation(group={self.group}) state_dict")


def informative_chance(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``1 − p^g − (1 − p)^g``: the chance that ``g`` answers at pass rate ``p`` are not all equal."""
    g = np.asarray(g, dtype=np.float64)
    return np.where(g >= 2, 1.0 - p**g - (1.0 - p) ** g, 0.0)


class KnapsackAllocation:
    """Spread ``group × len(items)`` answers over a step's prompts to maximise the expected number
    of informative groups (see the module docstring).

    Args:
        arm_of: arm index of every prompt id; ``n_arms``: number of arms.
        group: the average answers per prompt (the total per step is ``group × prompts``).
        min_group, max_group: a prompt gets 0 or between these many answers.
        decay: per-step decay of the per-arm success counts (tracks a changing policy).
    """

    kind = "cadence.rl.KnapsackAllocation"

    def __init__(self, arm_of: np.ndarray, n_arms: int, group: int, *, min_group: int = 2,
                 max_group: int | None = None, decay: float = 0.9) -> None:
        max_group = 4 * group if max_group is None else max_group
        if not 2 <= min_group <= group <= max_group or not 0 < decay <= 1:
            raise CadenceError(f"need 2 <= min_group <= group <= max_group and 0 < decay <= 1; got min_group="
                               f"{min_group}, max_group={max_group}, group={group}, decay={decay}")
        self.arm_of, self.n_arms = np.asarray(arm_of, dtype=np.int64), n_arms
        self.group, self.min_group, self.max_group, self.decay = group, min_group, max_group, decay
        self.successes = np.zeros(n_arms)
        self.attempts = np.zeros(n_arms)

    def pass_rates(self, items: np.ndarray) -> np.ndarray:
        """Posterior-mean pass rate of each prompt's arm."""
        arm = self.arm_of[items]
        return (self.successes[arm] + 1.0) / (self.attempts[arm] + 2.0)

    def sizes(self, items: np.ndarray) -> np.ndarray:
        """Answers per prompt, summing to ``group × len(items)``: the exact optimum of the expected
        number of informative groups (dynamic programming over prompts × answers spent)."""
        p = self.pass_rates(np.asarray(items, dtype=np.int64))
        total = self.group * len(p)
        options = np.concatenate([[0], np.arange(self.min_group, self.max_group + 1)])
        best = np.full(total + 1, -np.inf)
        best[0] = 0.0
        choice = np.zeros((len(p), total + 1), dtype=np.int64)
        for i, rate in enumerate(p):
            values = informative_chance(np.full(len(options), rate), options)
            new = np.full(total + 1, -np.inf)
            for g, v in zip(options[options <= total], values):
                candidate = np.full(total + 1, -np.inf)
                candidate[g:] = best[:total + 1 - g] + v
                better = candidate > new + 1e-12
                new[better], choice[i, better] = candidate[better], g
            best = new
        sizes, left = np.zeros(len(p), dtype=np.int64), total
        for i in range(len(p) - 1, -1, -1):
            sizes[i] = choice[i, left]
            left -= sizes[i]
        return sizes

    def observe(self, groups: Groups) -> None:
        arm = self.arm_of[groups.row_items]
        self.successes *= self.decay
        self.attempts *= self.decay
        self.successes += np.bincount(arm, weights=groups.correct, minlength=self.n_arms)
        self.attempts += np.bincount(arm, minlength=self.n_arms)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_arms": self.n_arms, "successes": self.successes.copy(),
                "attempts": self.attempts.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict")
        if state.get("n_arms") != self.n_arms:
            raise StateError(f"state is for {state.get('n_arms')} arms, this allocation has {self.n_arms}")
        self.successes = np.asarray(state["successes"], dtype=np.float64).copy()
        self.attempts = np.asarray(state["attempts"], dtype=np.float64).copy()


def triangular(length: np.ndarray, target: float) -> np.ndarray:
    """The triangular length reward of arXiv 2508.08940: ``ℓ/L`` up to ``L``, falling to 0 at ``2L``."""
    ell = np.asarray(length, dtype=np.float64)
    return np.where(ell <= target, ell / target, np.clip(1.0 - (ell - target) / target, 0.0, None))


class LengthReward:
    """``λ_c·correct + λ_ℓ·triangular(ℓ, budget(clock))``; ``budget`` is a schedule (spec text
    allowed) in tokens, e.g. ``"step(peak=16, every=25%, gamma=0.72)"`` or ``"constant(6)"``.

        >>> reward = LengthReward("constant(4)")
        >>> reward(np.array([1.0, 0.0]), np.array([4.0, 8.0]), Clock(budget=10)).tolist()
        [0.8999999999999999, 0.0]
    """

    def __init__(self, budget: Schedule | str | float, *, correct_weight: float = 0.6,
                 length_weight: float = 0.3) -> None:
        self.budget = as_schedule(budget)
        self.correct_weight, self.length_weight = correct_weight, length_weight

    def __call__(self, correct: np.ndarray, lengths: np.ndarray, clock: Clock) -> np.ndarray:
        target = self.budget(clock)
        if not target >= 1:
            raise CadenceError(f"the length budget {self.budget} is {target} tokens at step {clock.steps:g}; it must be >= 1")
        return self.correct_weight * correct + self.length_weight * triangular(lengths, target)
