"""HBPO, hierarchical budget policy optimisation — "Hierarchical Budget Policy Optimization for
Adaptive Reasoning" (arXiv 2507.15844).

A prompt's group of rollouts is split into subgroups, one per token budget ``b`` (the paper:
512, 1024, 2048, 2560 of at most 4096), each with its budget stated in the prompt (the paper: a forced
response prefix "I will answer the question with b tokens"). With ``L`` the response length,
``M`` the longest allowed response and the ceiling ``f(x) = 4·cos(π·x / (2M))``:

* reward: correct and ``L ≤ M`` → ``min(f(L) − |b − L|/M, f(b))``; wrong (or longer than ``M``)
  → 0; unformatted (no answer could be extracted) → −1; a correct answer with no budget → ``f(L)``;
* advantage: ``A_i = (r_i − mean_G r)/(std_G r + 1e-6) + (mean_{subgroup(b_i)} r − f(b_i))``, the
  group-wide ("inter") term plus each subgroup's distance to its budget's ceiling ("intra").

From the authors' code (``f`` with ``M = 4096``; ``std`` unbiased as in verl's GRPO estimator); the
code adds the subgroup term twice, a bug not copied here. UNCONFIRMED: the paper's exact piecewise
reward and advantage weights, and the ceiling for another ``M`` (here the code's curve rescaled so
that ``f(M) = 0``, as with ``M = 4096``).

    >>> hb = HierarchicalBudget(budgets=(4, 8), max_length=16)
    >>> hb.subgroup_budgets(4).tolist()
    [4.0, 4.0, 8.0, 8.0]
    >>> round(float(hb.ceiling(8)), 4)                       # 4·cos(π/4)
    2.8284
    >>> hb.reward([1, 1, 0], [4, 6, 4], [4, 4, 8]).round(4).tolist()
    [3.6955, 3.2009, 0.0]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cadence.errors import CadenceError

ADVANTAGE_EPS = 1e-6
PAPER_BUDGETS = (512, 1024, 2048, 2560)
PAPER_MAX_LENGTH = 4096


class HierarchicalBudget:
    """HBPO's budget subgroups, budget-aware reward and hierarchical advantage.

    Args:
        budgets: the token budgets, one subgroup each (paper: 512, 1024, 2048, 2560).
        max_length: ``M``, the longest response rewarded (paper: 4096).
        template: the budget statement, with ``{budget}``.
    """

    def __init__(self, budgets: Sequence[float] = PAPER_BUDGETS, max_length: float = PAPER_MAX_LENGTH, *,
                 template: str = "I will answer the question with {budget} tokens.") -> None:
        b = np.asarray(budgets, dtype=np.float64).reshape(-1)
        if not len(b) or not np.all(np.isfinite(b)) or np.any(b < 1) or np.any(np.diff(b) <= 0):
            raise CadenceError(f"HBPO budgets must be increasing token counts >= 1, got {list(budgets)!r}")
        if not (np.isfinite(max_length) and max_length >= b[-1]):
            raise CadenceError(f"max_length must be at least the largest budget {b[-1]:g}, got {max_length!r}")
        if "{budget}" not in template:
            raise CadenceError(f"the budget template must contain '{{budget}}', got {template!r}")
        self.budgets, self.max_length, self.template = b, float(max_length), template

    def ceiling(self, x: Any) -> np.ndarray:
        """``f(x) = 4·cos(π·x / (2M))``: the most a response of ``x`` tokens (or budget ``x``) earns."""
        return 4.0 * np.cos(np.pi * np.asarray(x, dtype=np.float64) / (2.0 * self.max_length))

    def subgroup_budgets(self, group: int) -> np.ndarray:
        """The budget of each of ``group`` rollouts: equal consecutive subgroups, smallest budget first."""
        k = len(self.budgets)
        if isinstance(group, bool) or not isinstance(group, (int, np.integer)) or group < k or group % k:
            raise CadenceError(f"a group of {group!r} rollouts cannot be split into {k} equal budget subgroups; "
                               f"use a multiple of {k}")
        return np.repeat(self.budgets, group // k)

    def statement(self, budget: float) -> str:
        """The budget stated as text."""
        return self.template.format(budget=int(round(budget)))

    def reward(self, correct: Any, lengths: Any, budgets: Any, formatted: Any = None) -> np.ndarray:
        """HBPO's reward per rollout; a budget of NaN means none was stated; ``formatted`` (default:
        all) False gives −1."""
        c = _finite("correct", correct)
        ell, b = _finite("lengths", lengths), np.asarray(budgets, dtype=np.float64).reshape(-1)
        if not (len(c) == len(ell) == len(b)):
            raise CadenceError(f"correct, lengths and budgets differ in length: {len(c)}, {len(ell)}, {len(b)}")
        if np.any((c != 0) & (c != 1)) or np.any(ell < 0) or np.any(np.isinf(b)) or np.any(b < 0):
            raise CadenceError("HBPO needs correct in {0, 1}, lengths >= 0 and budgets >= 0 (NaN: none stated)")
        ok = np.ones(len(c), bool) if formatted is None else np.asarray(formatted, dtype=bool).reshape(-1)
        if len(ok) != len(c):
            raise CadenceError(f"formatted has {len(ok)} values for {len(c)} rollouts")
        budgeted = np.minimum(self.ceiling(ell) - np.abs(np.nan_to_num(b) - ell) / self.max_length,
                              self.ceiling(np.nan_to_num(b)))
        won = (c == 1) & (ell <= self.max_length)
        r = np.where(won, np.where(np.isnan(b), self.ceiling(ell), budgeted), 0.0)
        return np.where(ok, r, -1.0)

    def advantages(self, rewards: Any, sizes: Any, budgets: Any) -> np.ndarray:
        """Per rollout: the group-normalised reward (unbiased std) plus its subgroup's mean reward
        minus its budget's ceiling. Groups are consecutive (``sizes`` rows each); a subgroup is the
        rows of a group with the same budget."""
        r = _finite("rewards", rewards)
        b = _finite("budgets", budgets)
        sizes = np.asarray(sizes).reshape(-1)
        if not np.issubdtype(sizes.dtype, np.integer) or np.any(sizes < 1) or int(sizes.sum()) != len(r) \
                or len(b) != len(r):
            raise CadenceError(f"sizes must be positive integers summing to the {len(r)} rewards (and one budget per "
                               f"reward), got sizes {sizes.tolist()} and {len(b)} budgets")
        out = np.empty(len(r))
        start = 0
        for n in sizes.tolist():
            g, gb = r[start:start + n], b[start:start + n]
            std = float(np.std(g, ddof=1)) if n > 1 else 1.0
            inter = (g - g.mean()) / (std + ADVANTAGE_EPS)
            sub = np.array([g[gb == x].mean() for x in gb])
            out[start:start + n] = inter + sub - self.ceiling(gb)
            start += n
        return out

    def __repr__(self) -> str:
        return f"HierarchicalBudget(budgets={self.budgets.tolist()}, max_length={self.max_length:g})"


def _finite(name: str, values: Any) -> np.ndarray:
    try:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise CadenceError(f"{name} must be numbers, got {type(values).__name__}") from None
    if not np.all(np.isfinite(v)):
        raise CadenceError(f"{name} must be finite (got NaN or inf)")
    return v
