"""cadence in a Hugging Face Trainer: a WSD schedule from a spec, a loss-driven curriculum, logs and resume.

Runs on CPU in seconds; nothing is downloaded (a tiny GPT-2 from a config, a character tokenizer).

    python examples/hf_trainer.py
"""

import tempfile

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, Trainer, TrainingArguments

from cadence.curricula import Arms, CurriculumSampler, DoReMi
from cadence.integrations.hf import attach

torch.set_num_threads(1)
CHARS = "0123456789+= "
vocab = {"[PAD]": 0, **{c: i + 1 for i, c in enumerate(CHARS)}}
backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[PAD]"))
backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]")

texts = [f"{a}+{b}={a + b}" for a in range(10) for b in range(10)]            # 100 sums
keys = ["one-digit" if a + b < 10 else "two-digit" for a in range(10) for b in range(10)]
enc = tokenizer(texts, padding="max_length", max_length=8)
rows = [{"input_ids": torch.tensor(ids), "labels": torch.tensor([t if m else -100 for t, m in zip(ids, mask)])}
        for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]

model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                   bos_token_id=0, eos_token_id=0))
out = tempfile.mkdtemp()
args = TrainingArguments(output_dir=out, max_steps=40, per_device_train_batch_size=8, logging_steps=10,
                         save_steps=20, report_to=[], use_cpu=True, disable_tqdm=True)
trainer = Trainer(model=model, args=args, train_dataset=rows)

# the three cadence lines: a schedule spec instead of lr_scheduler_type, a curriculum over the rows
policy = DoReMi(Arms(keys), reference={"one-digit": 1.0, "two-digit": 1.0})   # excess loss over a reference
attach(trainer, lr="wsd(peak=3e-3, warmup=10%, decay=30%)", sampler=CurriculumSampler(policy, batch_size=8))
trainer.train()                                   # logs carry cadence/lr/0, cadence/curriculum/probabilities/...

print("final mixture:", dict(zip(policy.arms.names, policy.probabilities().round(3).tolist())))
trainer.train(resume_from_checkpoint=f"{out}/checkpoint-20")   # clock, schedule and curriculum come back too
