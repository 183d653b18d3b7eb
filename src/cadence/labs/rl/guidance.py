"""Guided re-rolls for the lab's hint policy: GHPO's tiers ("GHPO: Adaptive Guidance for Stable and
Efficient LLM Reinforcement Learning", arXiv 2507.10628) as the beginning of the answer.

At tier ``l`` the first ``round(ω_l · len(answer))`` characters of the reference answer (``ω`` =
0.25, 0.5, 0.75, :data:`cadence.rl.hints.GHPO_FRACTIONS`; capped one character short of the whole
answer) follow the prompt, and the model writes the rest. The given characters sit in the response
region with loss mask 0 — the same as a longer prompt (GHPO trains on the hinted prompt), but the
batch keeps one prompt width. Correctness is judged on the given characters plus the response.

    >>> hint_length("123", 0.5), hint_length("7", 0.75), hint_length("4567", 0.75)
    (2, 0, 3)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cadence.labs.rl.groups import Groups, group_advantages
from cadence.labs.rl.policy import Rollouts, response_texts, sample
from cadence.rl.hints import GHPO_FRACTIONS


def hint_length(answer: str, fraction: float) -> int:
    """Characters of ``answer`` given at a tier: ``round(fraction · len)``, at most ``len − 1``."""
    return max(0, min(round(fraction * len(answer)), len(answer) - 1))


def hinted_groups(trainer: Any, items: np.ndarray, levels: np.ndarray,
                  fractions: tuple[float, ...] = GHPO_FRACTIONS) -> Groups:
    """``trainer.config.group`` answers per prompt with the answer's first characters given at each
    prompt's tier (1-based into ``fractions``), scored and rewarded as the trainer does."""
    parts = []
    width = trainer._prompts.shape[1]
    for item, level in zip(np.asarray(items, dtype=np.int64), np.asarray(levels, dtype=np.int64)):
        answer = str(trainer.suite.answers[item])
        given = answer[:hint_length(answer, fractions[int(level) - 1])]
        prompt = torch.cat([trainer._prompts[item:item + 1], torch.from_numpy(trainer.tokenizer.encode(given))[None]], 1)
        group = trainer.config.group
        out = sample(trainer.model, prompt, group=group, max_new_tokens=trainer.max_new_tokens - len(given),
                     eos_id=trainer.tokenizer.eos_id, generator=trainer.generator,
                     temperature=trainer.config.temperature)
        mask = torch.cat([torch.zeros(group, len(given), dtype=out.mask.dtype), out.mask], 1)
        texts = np.array([given + t for t in response_texts(out, trainer.tokenizer.response_text)], dtype=object)
        correct = trainer.suite.score(texts, np.repeat(trainer.suite.answers[[item]], group))
        lengths = out.lengths.numpy().astype(np.float64)
        rewards = np.asarray(trainer.reward(correct, lengths, trainer.clock), dtype=np.float64)
        sizes = np.array([group])
        parts.append(Groups(np.array([item]), sizes, Rollouts(out.tokens, mask, width), correct, rewards,
                            group_advantages(rewards, sizes), lengths))
    return Groups.concat(parts)
