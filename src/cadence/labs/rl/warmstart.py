"""A short supervised warm start so the tiny model answers in format before RL.

Next-token cross-entropy on the response part only (answer, optionally preceded by filler
characters, then the end token), prompts drawn uniformly from the suite's train pool with a
private RNG, LR from a cadence schedule on a :class:`~cadence.Clock`. Deterministic for a seed.

    >>> from cadence.labs.rl.tasks import TaskSuite
    >>> suite = TaskSuite(families=("add",), levels=(1,), items_per_arm=8, eval_per_arm=2)
    >>> model = warm_start(suite, WarmStartConfig(steps=2, batch=4), seed=0)
    >>> model.cfg.vocab_size, model.cfg.context      # the suite's alphabet; prompt + response tokens
    (22, 22)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cadence.clock import Clock
from cadence.labs.rl.policy import answer_batch
from cadence.labs.rl.tasks import TaskSuite
from cadence.labs.tinygpt import GPTConfig, TinyGPT
from cadence.optim import ScheduledLR


@dataclass(frozen=True)
class WarmStartConfig:
    """Model size and the supervised warm start. ``filler_max > 0`` puts 0..filler_max filler
    characters before each answer (so responses have a length a budget can shrink). The prompt
    width, answer length and alphabet come from the suite the model is for."""

    steps: int = 400
    batch: int = 64
    lr: str = "warmup(cosine(peak=3e-3, floor=0.1), 5%)"
    filler_max: int = 0
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 64

    def max_new_tokens(self, suite: TaskSuite) -> int:
        """Longest response on ``suite``: filler, its longest answer, the end token."""
        return self.filler_max + suite.answer_len + 1

    def model_config(self, suite: TaskSuite) -> GPTConfig:
        """The model for ``suite``: its tokenizer's vocabulary, context = prompt + longest response."""
        return GPTConfig(vocab_size=suite.tokenizer.vocab_size, context=suite.prompt_len + self.max_new_tokens(suite),
                         n_layer=self.n_layer, n_head=self.n_head, d_model=self.d_model)


def warm_start(suite: TaskSuite, config: WarmStartConfig = WarmStartConfig(), *, seed: int = 0) -> TinyGPT:
    """A fresh :class:`TinyGPT` trained ``config.steps`` supervised steps on ``suite``; pure in ``seed``."""
    tokenizer = suite.tokenizer
    with torch.random.fork_rng(devices=[]):  # seeds parameter init without touching global RNG state
        torch.manual_seed(seed)
        model = TinyGPT(config.model_config(suite))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.0)
    scheduler = ScheduledLR(optimizer, lr=config.lr, clock=Clock(budget=config.steps))
    model.train()
    for _ in range(config.steps):
        items = rng.integers(0, len(suite.prompts), size=config.batch)
        filler = rng.integers(0, config.filler_max + 1, size=config.batch)
        tokens, mask = answer_batch(suite.prompts[items], suite.answers[items], tokenizer, filler,
                                    config.max_new_tokens(suite), width=suite.prompt_len)
        logits = model(tokens[:, :-1])
        losses = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
        loss = (losses * mask[:, 1:]).sum() / mask[:, 1:].sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    model.eval()
    return model
