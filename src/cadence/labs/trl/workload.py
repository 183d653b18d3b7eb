"""The RL lab's tasks as a Hugging Face / TRL workload: prompts as a ``datasets.Dataset``, a reward
function that scores exactly as :meth:`~cadence.labs.rl.tasks.TaskSuite.score`, a fast tokenizer over
the suite's alphabet, a small Llama built from a ``transformers`` config, and the lab's evaluation
(pass@1 at the sampling temperature, greedy accuracy) for that model.

Token ids equal the lab's :class:`~cadence.labs.rl.tokenizer.CharTokenizer` ids (one per character of
the suite's alphabet), plus one padding token after them that never appears in a prompt: prompts are
left-padded with the lab's ``_`` character to the suite's width, as the lab does, so TRL never pads
them and every prompt has the same positions.

    >>> from cadence.labs.rl.tasks import TaskSuite
    >>> suite = TaskSuite(families=("add",), levels=(1,), items_per_arm=4, eval_per_arm=2)
    >>> tokenizer = suite_tokenizer(suite)
    >>> tokenizer.decode(tokenizer("12+3=")["input_ids"])
    '12+3='
    >>> reward = correctness_reward(suite)
    >>> ids = [list(suite.tokenizer.encode(a + "$")) for a in suite.answers[:2]]
    >>> reward(completions=["", ""], completion_ids=ids, answer=list(suite.answers[:2]))
    [1.0, 1.0]
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from cadence.labs.rl.policy import Evaluation, answer_batch, arm_accuracy
from cadence.labs.rl.tasks import TaskSuite
from cadence.labs.rl.tokenizer import EOS, PAD
from cadence.labs.rl.warmstart import WarmStartConfig

PAD_TOKEN = "<pad>"
"""The tokenizer's padding token (after the alphabet; TRL pads completions with it)."""


def suite_tokenizer(suite: TaskSuite) -> Any:
    """A ``PreTrainedTokenizerFast``: one token per character of the suite's alphabet (the lab's ids),
    ``$`` as the end token, :data:`PAD_TOKEN` as padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(suite.alphabet)}
    vocab[PAD_TOKEN] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD_TOKEN, eos_token=EOS,
                                   padding_side="left")


def padded_prompt(suite: TaskSuite, prompt: str) -> str:
    """``prompt`` left-padded with ``_`` to the suite's prompt width (as the lab feeds it)."""
    return PAD * (suite.prompt_len - len(prompt)) + prompt


def train_dataset(suite: TaskSuite) -> Any:
    """The suite's train pool as a ``datasets.Dataset`` (columns ``prompt``, ``answer``, ``arm``); row
    ``i`` is item ``i``, so a curriculum's arms are ``suite_arms(suite)``."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [padded_prompt(suite, str(p)) for p in suite.prompts],
                              "answer": [str(a) for a in suite.answers],
                              "arm": [suite.arm_names[a] for a in suite.arm_of]})


def answer_prefix_guidance(suite: TaskSuite) -> Callable[[dict, int], str]:
    """Hints' guidance as the lab gives it (:mod:`cadence.labs.rl.guidance`, GHPO's tiers): at tier ``l``
    the answer's first ``round(ω_l · len)`` characters follow the prompt (``ω`` = 0.25, 0.5, 0.75), and
    the model writes the rest; :func:`correctness_reward` scores those characters plus the completion.

        >>> from cadence.labs.rl.tasks import TaskSuite
        >>> guide = answer_prefix_guidance(TaskSuite(families=("add",), levels=(1,), items_per_arm=4, eval_per_arm=2))
        >>> guide({"prompt": "__7+5=", "answer": "12"}, 2)
        '__7+5=1'
    """
    from cadence.labs.rl.guidance import hint_length
    from cadence.rl.hints import GHPO_FRACTIONS

    def guidance(row: dict, level: int) -> str:
        answer = str(row["answer"])
        return row["prompt"] + answer[:hint_length(answer, GHPO_FRACTIONS[min(level, len(GHPO_FRACTIONS)) - 1])]

    return guidance


def correctness_reward(suite: TaskSuite, counter: list[int] | None = None) -> Callable[..., list[float]]:
    """A TRL reward function named ``correctness``: :meth:`TaskSuite.score` of each completion's
    tokens read as the lab reads a response (up to its first end token), after the answer characters
    a hint gave in the prompt (what follows the suite's prompt width; none without hints). ``counter``,
    if given, gets the number of completions of every call appended (every rollout TRL scores)."""
    tokenizer = suite.tokenizer

    def correctness(completions: list, completion_ids: list, answer: list, prompts: list | None = None,
                    **kwargs: Any) -> list[float]:
        given = [""] * len(completion_ids) if prompts is None else [str(p)[suite.prompt_len:] for p in prompts]
        texts = np.array([g + tokenizer.response_text([i for i in ids if i < tokenizer.vocab_size])
                          for g, ids in zip(given, completion_ids)], dtype=object)
        if counter is not None:
            counter.append(len(completion_ids))
        return suite.score(texts.astype(str), np.asarray(answer, dtype=str)).tolist()

    return correctness


def model_config(suite: TaskSuite, warm: WarmStartConfig) -> Any:
    """A ``LlamaConfig`` the lab's model size: ``warm.n_layer`` layers, ``warm.d_model`` wide,
    ``warm.n_head`` heads, 4× MLP, context = prompt + longest response."""
    from transformers import LlamaConfig

    vocab = suite.tokenizer.vocab_size + 1
    return LlamaConfig(vocab_size=vocab, hidden_size=warm.d_model, intermediate_size=4 * warm.d_model,
                       num_hidden_layers=warm.n_layer, num_attention_heads=warm.n_head,
                       num_key_value_heads=warm.n_head, max_position_embeddings=suite.prompt_len
                       + warm.max_new_tokens(suite), bos_token_id=None, eos_token_id=suite.tokenizer.eos_id,
                       pad_token_id=vocab - 1, tie_word_embeddings=True)


def build_model(suite: TaskSuite, warm: WarmStartConfig, seed: int) -> Any:
    """A freshly initialised ``LlamaForCausalLM`` for ``suite`` (initialisation seeded by ``seed``)."""
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(model_config(suite, warm))


@torch.no_grad()
def evaluate_hf(model: Any, suite: TaskSuite, max_new_tokens: int, temperature: float = 1.0) -> Evaluation:
    """The lab's evaluation for a Hugging Face causal LM: per arm, pass@1 at ``temperature`` computed
    exactly (the probability of sampling the answer then the end token, one teacher-forced pass, no
    sampling noise, as :func:`~cadence.labs.rl.policy.answer_probability`), greedy accuracy, and the
    mean greedy response length. Uses no random numbers."""
    tokenizer = suite.tokenizer
    was_training = model.training
    model.eval()
    tokens, mask = answer_batch(suite.eval_prompts, suite.eval_answers, tokenizer,
                                np.zeros(len(suite.eval_prompts), dtype=np.int64), max_new_tokens, width=suite.prompt_len)
    logits = model(input_ids=tokens[:, :-1]).logits.float() / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:, None])[..., 0]
    p = torch.exp((logp * mask[:, 1:]).sum(dim=1)).numpy()
    ids = tokens[:, :suite.prompt_len]
    for _ in range(max_new_tokens):
        ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    texts = np.array([tokenizer.response_text(row) for row in ids[:, suite.prompt_len:].tolist()])
    lengths = [min(len(t) + 1, max_new_tokens) for t in texts]
    correct = suite.score(texts, suite.eval_answers)
    model.train(was_training)
    n_arms = len(suite.arm_names)
    return Evaluation(arm_accuracy(p, suite.eval_arm_of, n_arms), arm_accuracy(correct, suite.eval_arm_of, n_arms),
                      float(np.mean(lengths)))
