"""Groups of sampled answers per prompt and GRPO's group-normalised advantages.

Rows are grouped consecutively: ``sizes[i]`` rows belong to prompt ``items[i]`` (sizes may differ
when rollouts are allocated per prompt). The shared fact behind every advantage-based curriculum
(GRPO, "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
arXiv 2402.03300): a group whose rewards are all equal has zero advantage and teaches nothing.

    >>> group_advantages(np.array([1.0, 0.0, 1.0, 1.0]), np.array([2, 2])).round(3).tolist()
    [1.0, -1.0, 0.0, 0.0]
    >>> informative(np.array([1.0, 0.0, 1.0, 1.0]), np.array([2, 2])).tolist()
    [True, False]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cadence.labs.rl.policy import Rollouts

ADVANTAGE_EPS = 1e-6


def group_advantages(rewards: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """GRPO advantages ``(r − group mean) / (group std + ε)`` (population std), rows grouped by
    ``sizes`` (consecutive rows per prompt). A group with equal rewards gets exactly 0."""
    group = np.repeat(np.arange(len(sizes)), sizes)
    counts = np.maximum(sizes, 1).astype(np.float64)
    mean = np.bincount(group, weights=rewards, minlength=len(sizes)) / counts
    centred = rewards - mean[group]
    std = np.sqrt(np.bincount(group, weights=centred**2, minlength=len(sizes)) / counts)
    spread = std[group] > 1e-9
    return np.where(spread, centred / (std[group] + ADVANTAGE_EPS), 0.0)


def informative(rewards: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per group: True when its rewards differ (so its advantages are non-zero)."""
    group = np.repeat(np.arange(len(sizes)), sizes)
    hi = np.full(len(sizes), -np.inf)
    lo = np.full(len(sizes), np.inf)
    np.maximum.at(hi, group, rewards)
    np.minimum.at(lo, group, rewards)
    return (sizes >= 2) & (hi - lo > 1e-9)


@dataclass
class Groups:
    """Sampled answers for a set of prompts: ``sizes[i]`` consecutive rows belong to ``items[i]``.
    ``behaviour_logp`` (rows × response length, or None): the token log-probs of the policy that
    generated each row, stored for replayed groups (NaN on rows generated this step)."""

    items: np.ndarray
    sizes: np.ndarray
    rollouts: Rollouts
    correct: np.ndarray
    rewards: np.ndarray
    advantages: np.ndarray
    lengths: np.ndarray
    behaviour_logp: torch.Tensor | None = None

    @property
    def row_items(self) -> np.ndarray:
        return np.repeat(self.items, self.sizes)

    @property
    def informative(self) -> np.ndarray:
        return informative(self.rewards, self.sizes)

    def select(self, keep: np.ndarray) -> Groups:
        """The groups where ``keep`` (one bool per prompt) is true."""
        rows = np.repeat(keep, self.sizes)
        t_rows = torch.from_numpy(rows)
        r = Rollouts(self.rollouts.tokens[t_rows], self.rollouts.mask[t_rows], self.rollouts.prompt_width)
        return Groups(self.items[keep], self.sizes[keep], r, self.correct[rows], self.rewards[rows],
                      self.advantages[rows], self.lengths[rows], self._behaviour(t_rows))

    def keep_rows(self, keep: np.ndarray) -> Groups:
        """The rollouts where ``keep`` (one bool per row) is true; a group left empty is dropped."""
        keep = np.asarray(keep, dtype=bool)
        group = np.repeat(np.arange(len(self.items)), self.sizes)
        sizes = np.bincount(group[keep], minlength=len(self.items))
        t_rows = torch.from_numpy(keep)
        r = Rollouts(self.rollouts.tokens[t_rows], self.rollouts.mask[t_rows], self.rollouts.prompt_width)
        return Groups(self.items[sizes > 0], sizes[sizes > 0], r, self.correct[keep], self.rewards[keep],
                      self.advantages[keep], self.lengths[keep], self._behaviour(t_rows))

    def _behaviour(self, rows: torch.Tensor) -> torch.Tensor | None:
        return None if self.behaviour_logp is None else self.behaviour_logp[rows]

    @staticmethod
    def concat(parts: list[Groups]) -> Groups:
        """All groups of ``parts`` in order (responses right-padded to the longest)."""
        width = max(p.rollouts.tokens.shape[1] for p in parts)
        prompt_width = parts[0].rollouts.prompt_width
        tokens = torch.cat([F.pad(p.rollouts.tokens, (0, width - p.rollouts.tokens.shape[1])) for p in parts])
        mask = torch.cat([F.pad(p.rollouts.mask, (0, width - p.rollouts.tokens.shape[1])) for p in parts])
        arrays = {name: np.concatenate([getattr(p, name) for p in parts])
                  for name in ("items", "sizes", "correct", "rewards", "advantages", "lengths")}
        behaviour = None
        if any(p.behaviour_logp is not None for p in parts):   # NaN where a part stored none
            behaviour = torch.cat([F.pad(p.behaviour_logp if p.behaviour_logp is not None
                                         else torch.full(p.rollouts.responses.shape, torch.nan),
                                         (0, width - p.rollouts.tokens.shape[1]), value=torch.nan) for p in parts])
        return Groups(rollouts=Rollouts(tokens, mask, prompt_width), behaviour_logp=behaviour, **arrays)
