"""RL post-training with cadence in TRL's GRPOTrainer: DUMP chooses the prompts, dynamic sampling keeps
only groups that are neither all right nor all wrong, and a shrinking response-length budget shapes the
reward. Tiny random model, CPU, under a minute; nothing downloaded.

    python examples/trl_grpo.py
"""

import tempfile

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from trl import GRPOConfig, GRPOTrainer

from cadence.curricula import DUMP, Arms, CurriculumSampler
from cadence.integrations.trl import attach
from cadence.rl import DynamicSampling, LengthBudget

torch.set_num_threads(1)
torch.manual_seed(0)                                          # the model's initial weights: torch seeds each process anew
CHARS = "0123456789+= "
vocab = {"[PAD]": 0, **{c: i + 1 for i, c in enumerate(CHARS)}}
backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[PAD]"))
backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", eos_token="[PAD]")

prompts = [f"{a}+{b}=" for a in range(4) for b in range(4)] + [f"{a}+{b}=" for a in (12, 47) for b in (30, 55, 9, 81)]
sources = ["one-digit"] * 16 + ["two-digit"] * 8
answers = [str(eval(p[:-1])) for p in prompts]


def accuracy(completions, answer, **kwargs):
    """1 when the completion starts with the right sum (a random model rarely does: 1 for a right first digit)."""
    return [float(c.strip()[:1] == a[:1]) for c, a in zip(completions, answer)]


budget = LengthBudget("step(peak=6, every=50%, gamma=0.5)", correct_weight=0.0, length_weight=1.0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0))
config = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=8, num_generations=4,
                    max_completion_length=6, max_steps=6, learning_rate=1e-3, beta=0.0, logging_steps=2,
                    report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
trainer = GRPOTrainer(model=model, reward_funcs=[accuracy, budget.reward_function()], args=config,
                      processing_class=tokenizer, train_dataset=Dataset.from_dict({"prompt": prompts, "answer": answers}))

policy = DUMP(Arms(sources))                                  # learns from |advantage| per source
prompts_per_round = config.generation_batch_size // config.num_generations
attach(trainer, sampler=CurriculumSampler(policy, batch_size=prompts_per_round, num_replicas=1),
       correct="accuracy",                                    # a completion is correct when accuracy >= 1
       dynamic=DynamicSampling(max_extra_rounds=3),           # train on groups neither all right nor all wrong
       length_budget=budget)                                  # the budget reaches its reward function as a column
trainer.train()
for logs in trainer.state.log_history[:-1]:                   # kept fraction, rollouts per round, the budget
    print({k: round(v, 3) for k, v in logs.items() if k.startswith(("cadence/rl", "cadence/length"))})
print("prompt mixture:", dict(zip(policy.arms.names, policy.probabilities().round(3).tolist())))
