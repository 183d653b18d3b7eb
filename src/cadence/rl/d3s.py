"""D³S, dynamic dual-level down-sampling — "Dynamic Dual-level Down-Sampling for Policy Optimization
of LLMs" (arXiv 2509.22115).

Two filters on what a GRPO step trains on, both relaxed over training ("aggressive down-sampling
early, gradually relaxed"):

* rollout level: from each prompt's group keep the ``k = ⌈ρ_s·n⌉`` rollouts whose advantages have
  the largest variance (the paper ties Var(A) to an upper bound on the policy-gradient norm). The
  subset is exact and cheap: sorted, the best is the top ``j`` and bottom ``k − j`` values for some
  ``j`` (:func:`max_variance_subset`, the rule of PODS, arXiv 2504.13818);
* token level: of the kept rollouts' response tokens keep the share ``ρ_t`` with the largest
  ``|A_{i,t}|·H_{i,t}`` (``H`` the policy's entropy at that token) and mask the rest out of the loss.

Both ratios are cadence schedules on the run's clock. UNCONFIRMED (the paper's full text and code
were not read): the default ratios and their schedule (here both ramp linearly from 0.5 to 1 over
the run), that advantages stay those of the full group (not recomputed on the subset), that the
token share is taken over the whole batch, and the loss normalisation after masking (the host's
mean over the tokens kept).

    >>> max_variance_subset(np.array([0.0, 1.0, 1.0, 1.0, 0.0, 1.0]), 4).tolist()
    [0, 1, 2, 4]
    >>> d3s = DualDownsampling()
    >>> from cadence import Clock
    >>> clock = Clock(budget=10)
    >>> d3s.ratios(clock)
    (0.5, 0.5)
    >>> d3s.keep_rollouts(np.array([1.0, -1.0, 1.0, -1.0]), np.array([4]), clock).tolist()
    [False, True, True, False]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from cadence.clock import Clock
from cadence.errors import CadenceError
from cadence.schedules import Schedule, as_schedule


def max_variance_subset(values: Any, k: int) -> np.ndarray:
    """Indices (ascending) of the ``k`` entries of ``values`` with the largest (population)
    variance: the top ``j`` and bottom ``k − j`` of the sorted values for the best ``j`` (the
    smallest such ``j`` on ties; a stable sort keeps the earliest of equal values)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(v)):
        raise CadenceError("advantages for the rollout subset must be finite (got NaN or inf)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(v):
        raise CadenceError(f"a subset of {k!r} out of {len(v)} rollouts: k must be an integer in [1, {len(v)}]")
    order = np.argsort(v, kind="stable")
    best, best_var = None, -1.0
    for j in range(k + 1):  # j largest and k - j smallest values
        pick = np.concatenate([order[:k - j], order[len(v) - j:]])
        var = float(np.var(v[pick]))
        if var > best_var + 1e-12:
            best, best_var = pick, var
    return np.sort(best)


def top_share_mask(scores: torch.Tensor, mask: torch.Tensor, share: float) -> torch.Tensor:
    """Boolean mask of the ``⌈share·n⌉`` highest ``scores`` among the ``n`` positions where ``mask``
    is set (over the whole tensor); the rest, padding included, is False."""
    valid = mask.bool()
    n = int(valid.sum())
    keep = math.ceil(share * n - 1e-9)
    out = torch.zeros_like(valid)
    if keep >= n:
        return valid.clone()
    flat = torch.where(valid, scores.float(), torch.tensor(-math.inf)).reshape(-1)
    out.view(-1)[torch.topk(flat, keep, sorted=False).indices] = True
    return out


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last dimension (nats), e.g. rows × tokens from logits."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


class DualDownsampling:
    """D³S: which rollouts and which tokens of a GRPO batch enter the loss.

    Args:
        sample_ratio: share of each group's rollouts kept, a schedule or spec in (0, 1].
        token_ratio: share of the kept response tokens kept, a schedule or spec in (0, 1].
        min_keep: at least this many rollouts per group (at most the group) — a pair keeps a
            right and a wrong answer of a mixed group.
    """

    def __init__(self, sample_ratio: Schedule | str | float = "ramp(start=0.5, end=1)",
                 token_ratio: Schedule | str | float = "ramp(start=0.5, end=1)", *, min_keep: int = 2) -> None:
        self.sample_ratio, self.token_ratio = as_schedule(sample_ratio), as_schedule(token_ratio)
        for name, s in (("sample_ratio", self.sample_ratio), ("token_ratio", self.token_ratio)):
            lo, hi = s.bounds()
            if not (0 < lo and hi <= 1):
                raise CadenceError(f"D3S {name} {s} takes values in [{lo:g}, {hi:g}]; it must stay in (0, 1]")
        if isinstance(min_keep, bool) or not isinstance(min_keep, int) or min_keep < 1:
            raise CadenceError(f"min_keep must be a positive integer, got {min_keep!r}")
        self.min_keep = min_keep

    def ratios(self, clock: Clock) -> tuple[float, float]:
        """``(rollout share, token share)`` at the clock's position."""
        return float(self.sample_ratio(clock)), float(self.token_ratio(clock))

    def keep_rollouts(self, advantages: Any, sizes: Any, clock: Clock) -> np.ndarray:
        """One bool per rollout (groups consecutive, ``sizes`` rows each): the max-variance subset
        of ``max(min_keep, ⌈ρ_s·n⌉)`` rollouts of each group."""
        adv = np.asarray(advantages, dtype=np.float64).reshape(-1)
        sizes = np.asarray(sizes).reshape(-1)
        if not np.issubdtype(sizes.dtype, np.integer) or np.any(sizes < 0) or int(sizes.sum()) != len(adv):
            raise CadenceError(f"sizes must be non-negative integers summing to the {len(adv)} rollouts, got "
                               f"{sizes.tolist()}")
        if not np.all(np.isfinite(adv)):
            raise CadenceError("D3S needs finite advantages (got NaN or inf)")
        ratio = self.ratios(clock)[0]
        keep = np.zeros(len(adv), dtype=bool)
        start = 0
        for n in sizes.tolist():
            if n:
                k = min(n, max(self.min_keep, math.ceil(ratio * n - 1e-9)))
                keep[start + max_variance_subset(adv[start:start + n], k)] = True
            start += n
        return keep

    def keep_tokens(self, advantages: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor,
                    clock: Clock) -> torch.Tensor:
        """Boolean rows × tokens mask: the share ``ρ_t`` of the tokens in ``mask`` with the largest
        ``|A|·H`` (``advantages`` per row, or per token)."""
        if entropy.shape != mask.shape:
            raise CadenceError(f"entropy {tuple(entropy.shape)} and mask {tuple(mask.shape)} differ in shape")
        adv = advantages.reshape(-1, 1) if advantages.dim() == 1 else advantages
        if adv.shape[0] != mask.shape[0]:
            raise CadenceError(f"{adv.shape[0]} advantages for {mask.shape[0]} rows")
        if not (torch.isfinite(adv).all() and torch.isfinite(entropy).all()):
            raise CadenceError("D3S needs finite advantages and entropies (got NaN or inf)")
        return top_share_mask(adv.abs() * entropy, mask, self.ratios(clock)[1])

    def __repr__(self) -> str:
        return f"DualDownsampling(sample_ratio={self.sample_ratio}, token_ratio={self.token_ratio})"
