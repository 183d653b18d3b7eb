"""Sampling responses, scoring their log-probabilities and evaluating the shared :class:`TinyGPT`.

A batch of prompts (left-padded to one width) is expanded to ``group`` copies per prompt and
decoded with the model's own ``generate`` using a private ``torch.Generator``. Log-probs of the
response tokens are recomputed with one forward pass, so the same function serves the policy
and the frozen warm-start (reference) model. :func:`evaluate` measures what GRPO optimises
(the chance that one sampled answer is right) next to greedy accuracy.

    >>> import torch
    >>> from cadence.labs.tinygpt import GPTConfig, TinyGPT
    >>> model = TinyGPT(GPTConfig(vocab_size=24, context=24, n_layer=1, n_head=2, d_model=16))
    >>> prompts = torch.zeros(2, 5, dtype=torch.long)
    >>> out = sample(model, prompts, group=3, max_new_tokens=4, eos_id=1, generator=torch.Generator().manual_seed(0))
    >>> out.tokens.shape[0], out.mask.shape == out.tokens[:, 5:].shape
    (6, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cadence.errors import CadenceError
from cadence.labs.rl.tasks import TaskSuite
from cadence.labs.rl.tokenizer import FILLER, CharTokenizer
from cadence.labs.tinygpt import TinyGPT
from cadence.rl.d3s import token_entropy


@dataclass(frozen=True)
class Rollouts:
    """``tokens``: prompt + response ids (rows = prompt-major groups); ``mask``: 1.0 on response
    tokens up to and including the first end token (shape: rows × response length)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    prompt_width: int

    @property
    def responses(self) -> torch.Tensor:
        return self.tokens[:, self.prompt_width:]

    @property
    def lengths(self) -> torch.Tensor:
        """Number of response tokens per row (end token included)."""
        return self.mask.sum(1)


def response_mask(responses: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1.0 on every token up to and including the first ``eos_id`` of each row (all if none)."""
    is_eos = (responses == eos_id).long()
    before = torch.cumsum(is_eos, dim=1) - is_eos  # number of end tokens strictly before
    return (before == 0).float()


@torch.no_grad()
def sample(model: TinyGPT, prompts: torch.Tensor, *, group: int | torch.Tensor, max_new_tokens: int, eos_id: int,
           generator: torch.Generator, temperature: float = 1.0) -> Rollouts:
    """``group`` sampled responses per prompt (an int, or one count per prompt); greedy when
    ``temperature == 0``."""
    was_training = model.training
    model.eval()
    idx = prompts.repeat_interleave(group, dim=0)
    out = model.generate(idx, max_new_tokens, temperature=temperature, generator=generator, stop_token=eos_id)
    model.train(was_training)
    width = prompts.shape[1]
    return Rollouts(out, response_mask(out[:, width:], eos_id), width)


def token_logprobs(model: TinyGPT, rollouts: Rollouts, *, entropy: bool = False):
    """Log-prob of every response token under ``model`` (rows × response length); differentiable.
    ``entropy=True``: ``(log-probs, entropy of the policy at each response token)``, one forward pass."""
    logits = model(rollouts.tokens[:, :-1])[:, rollouts.prompt_width - 1:, :]
    logp = -F.cross_entropy(logits.transpose(1, 2), rollouts.responses, reduction="none")
    return (logp, token_entropy(logits.detach())) if entropy else logp


@torch.no_grad()
def response_texts(rollouts: Rollouts, decode) -> np.ndarray:
    """The text of every response (up to its end token), via ``decode(ids) -> str``."""
    return np.array([decode(row) for row in rollouts.responses.tolist()])


def arm_accuracy(correct: np.ndarray, arm_of: np.ndarray, n_arms: int) -> np.ndarray:
    """Mean correctness per arm (NaN for an arm without items)."""
    totals = np.bincount(arm_of, minlength=n_arms).astype(np.float64)
    hits = np.bincount(arm_of, weights=correct, minlength=n_arms)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / totals


def answer_batch(prompts: np.ndarray, answers: np.ndarray, tokenizer: CharTokenizer, filler: np.ndarray,
                 length: int, *, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens, target_mask)`` for teacher forcing: each prompt left-padded to ``width``, then
    ``filler[i]`` filler characters, the answer and the end token, right-padded to ``length``
    response tokens; the mask is 1.0 on the response tokens."""
    rows = len(prompts)
    tokens = np.full((rows, width + length), tokenizer.pad_id, dtype=np.int64)
    mask = np.zeros((rows, width + length), dtype=np.float32)
    tokens[:, :width] = tokenizer.prompts(prompts, width)
    for r, (answer, k) in enumerate(zip(answers, filler)):
        response = tokenizer.encode(FILLER * int(k) + str(answer)).tolist() + [tokenizer.eos_id]
        if len(response) > length:
            raise CadenceError(f"answer {str(answer)!r} to prompt {str(prompts[r])!r} with {int(k)} filler characters "
                               f"needs {len(response)} response tokens, more than the {length} available")
        tokens[r, width:width + len(response)] = response
        mask[r, width:width + len(response)] = 1.0
    return torch.from_numpy(tokens), torch.from_numpy(mask)


@torch.no_grad()
def answer_probability(model: TinyGPT, prompts: np.ndarray, answers: np.ndarray, tokenizer: CharTokenizer,
                       max_new_tokens: int, temperature: float = 1.0, *, width: int) -> np.ndarray:
    """Per prompt, the probability that one answer sampled at ``temperature`` is exactly the answer
    followed by the end token: one teacher-forced forward pass, no sampling noise. It is pass@1
    without the answers that contain filler characters (also scored correct), so a lower bound,
    tight when the model emits no filler (the default warm start never shows it any). Prompts are
    left-padded to ``width`` (a suite's :attr:`~cadence.labs.rl.tasks.TaskSuite.prompt_len`)."""
    tokens, mask = answer_batch(prompts, answers, tokenizer, np.zeros(len(prompts), dtype=np.int64), max_new_tokens,
                                width=width)
    logits = model(tokens[:, :-1]) / temperature
    logp = -F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
    return torch.exp((logp * mask[:, 1:]).sum(1)).double().numpy()


@dataclass(frozen=True)
class Evaluation:
    """One evaluation on a suite's eval set, per arm: ``pass_at_1`` (:func:`answer_probability`
    at the sampling temperature, the quantity GRPO raises), ``greedy`` accuracy, and the mean
    greedy response length in tokens (end token included)."""

    pass_at_1: np.ndarray
    greedy: np.ndarray
    length: float


def evaluate(model: TinyGPT, suite: TaskSuite, tokenizer: CharTokenizer, max_new_tokens: int,
             temperature: float = 1.0) -> Evaluation:
    """Evaluate ``model`` on every arm of ``suite``'s eval set."""
    was_training = model.training
    model.eval()
    n_arms = len(suite.arm_names)
    p = answer_probability(model, suite.eval_prompts, suite.eval_answers, tokenizer, max_new_tokens, temperature,
                           width=suite.prompt_len)
    prompts = torch.from_numpy(tokenizer.prompts(suite.eval_prompts, suite.prompt_len))
    rollouts = sample(model, prompts, group=1, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id,
                      generator=torch.Generator(), temperature=0.0)
    correct = suite.score(response_texts(rollouts, tokenizer.response_text), suite.eval_answers)
    model.train(was_training)
    return Evaluation(arm_accuracy(p, suite.eval_arm_of, n_arms), arm_accuracy(correct, suite.eval_arm_of, n_arms),
                      float(rollouts.lengths.mean()))
