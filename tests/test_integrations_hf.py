"""Hugging Face Trainer integration: schedules drive the optimizer, cadence state survives a
checkpoint, regimen values reach the logs, a curriculum chooses the order and gets per-sample losses."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, Trainer, TrainingArguments  # noqa: E402

import cadence  # noqa: E402
from cadence.integrations.hf import CadenceCallback, attach, causal_lm_loss  # noqa: E402
from cadence.integrations.jsonstate import encode  # noqa: E402
from cadence.optim import ScheduledLR  # noqa: E402

CHARS = "abcdefghij0123456789 +="
TEXTS = {"easy": ["1+1=2", "2+2=4", "3+1=4", "0+5=5"], "hard": ["12+34=46", "55+17=72", "90+9=99", "31+68=99"]}


def char_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, **{c: i + 2 for i, c in enumerate(CHARS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


class Rows(torch.utils.data.Dataset):
    """Fixed-length rows of character ids; labels -100 on padding."""

    def __init__(self, texts: list[str], tokenizer: PreTrainedTokenizerFast, length: int = 10):
        enc = tokenizer(texts, padding="max_length", max_length=length)
        self.rows = [{"input_ids": torch.tensor(ids),
                      "labels": torch.tensor([i if m else -100 for i, m in zip(ids, mask)])}
                     for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def without_seconds(state: dict) -> dict:
    """A link state with wall-clock seconds removed (they differ between any two runs)."""
    state = json.loads(json.dumps(encode(state)))
    for clock in (state["clock"], state.get("scheduler", {}).get("clock") or {}):
        clock.get("counts", {}).pop("seconds", None)
    return state


def tiny_model(vocab: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                      bos_token_id=0, eos_token_id=0, resid_pdrop=0.1))


def make_trainer(tmp_path, max_steps: int = 6, save_steps: int = 3, **extra) -> Trainer:
    tokenizer = char_tokenizer()
    texts = TEXTS["easy"] + TEXTS["hard"]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=max_steps, per_device_train_batch_size=2,
                             learning_rate=1.0, logging_steps=1, save_steps=save_steps, report_to=[],
                             use_cpu=True, seed=0, disable_tqdm=True, **extra)
    return Trainer(model=tiny_model(len(tokenizer)), args=args, train_dataset=Rows(texts, tokenizer))


def test_spec_string_drives_the_optimizer_and_resume_restores_it(tmp_path):
    spec = "wsd(peak=1e-3, warmup=20%, decay=40%, floor=0.1)"
    straight = make_trainer(tmp_path, max_steps=10, save_steps=5)
    callback = attach(straight, lr=spec, weight_decay="cosine(peak=0.1)")
    straight.train()
    lr, axis = cadence.parse(spec), cadence.Axis("steps", 10)
    logged = [h for h in straight.state.log_history if "loss" in h]
    assert len(logged) == 10
    for h in logged:  # both log the lr used by the step just taken (step s trains at the schedule's s - 1)
        assert h["learning_rate"] == pytest.approx(lr.value(h["step"] - 1, axis), rel=1e-12)
        assert h["cadence/lr/0"] == h["learning_rate"]
        assert h["cadence/weight_decay/0"] == pytest.approx(cadence.parse("cosine(peak=0.1)").value(h["step"] - 1, axis))
        assert h["cadence/progress"] == pytest.approx(h["step"] / 10)
    assert callback.link.clock.steps == 10
    assert straight.optimizer.param_groups[0]["weight_decay"] == pytest.approx(0.0, abs=1e-12)

    resumed = make_trainer(tmp_path, max_steps=10, save_steps=5)
    resumed_callback = attach(resumed, lr=spec, weight_decay="cosine(peak=0.1)")
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-5"))
    assert resumed.lr_scheduler.get_last_lr() == straight.lr_scheduler.get_last_lr()
    assert without_seconds(resumed_callback.link.state_dict()) == without_seconds(callback.link.state_dict())
    assert [h["learning_rate"] for h in resumed.state.log_history if "loss" in h] == [h["learning_rate"] for h in logged]


def test_budget_defaults_to_epochs_when_max_steps_is_unset(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=-1, save_steps=100, num_train_epochs=2)
    callback = attach(trainer, lr="cosine(peak=1e-3)")
    assert callback.link.clock.budget.amount == 8  # 8 rows / batch 2 * 2 epochs


def test_scheduler_passed_to_the_trainer_is_logged_and_checkpointed(tmp_path):
    tokenizer = char_tokenizer()
    model = tiny_model(len(tokenizer))
    opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    sched = ScheduledLR(opt, lr="cosine(peak=2e-3)", clock=cadence.Clock(budget=4))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, logging_steps=2,
                             save_steps=2, report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Rows(TEXTS["easy"], tokenizer), optimizers=(opt, sched))
    attach(trainer, knobs={"max_len": "ramp(start=8, end=16)"})
    trainer.train()
    with open(os.path.join(tmp_path, "checkpoint-2", "trainer_state.json")) as f:
        saved = json.load(f)["stateful_callbacks"]["CadenceCallback"]["attributes"]["cadence"]
    assert saved["global_step"] == 2
    assert saved["link"]["clock"]["counts"]["steps"] == 2
    last = [h for h in trainer.state.log_history if "loss" in h][-1]
    assert last["cadence/max_len"] == pytest.approx(16.0)
    assert last["cadence/lr/0"] == pytest.approx(cadence.parse("cosine(peak=2e-3)").value(3, cadence.Axis("steps", 4)))
    assert last["cadence/lr/0"] == last["learning_rate"] > 0  # the LR the last step used, not the next one (0)


def test_attach_rejects_conflicting_setups(tmp_path):
    trainer = make_trainer(tmp_path, restore_callback_states_from_checkpoint=True)
    with pytest.raises(cadence.CadenceError, match="restore_callback_states_from_checkpoint"):
        attach(trainer, lr="cosine(peak=1e-3)")
    trainer = make_trainer(tmp_path)
    attach(trainer, lr="cosine(peak=1e-3)")
    with pytest.raises(cadence.CadenceError, match="already has an lr_scheduler"):
        attach(trainer, lr="cosine(peak=1e-3)")
    with pytest.raises(cadence.CadenceError, match="RegimenLink"):
        CadenceCallback()
    from cadence.curricula import DUMP, Arms, CurriculumSampler

    with pytest.raises(cadence.CadenceError, match="advantage"):
        attach(make_trainer(tmp_path), sampler=CurriculumSampler(DUMP(Arms(["a"] * 8)), batch_size=2))


def test_causal_lm_loss_matches_the_model_loss():
    tokenizer = char_tokenizer()
    model = tiny_model(len(tokenizer))
    batch = torch.utils.data.default_collate([Rows(TEXTS["hard"][:1] + TEXTS["easy"][:1], tokenizer)[i] for i in (0, 1)])
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], labels=batch["labels"])
    summed, counts = causal_lm_loss(out, batch["labels"])
    assert float(summed.sum() / counts.sum()) == pytest.approx(float(out.loss), rel=1e-5)
    assert counts.tolist() == [7, 4]
    assert math.isfinite(float(summed[0]))


def curriculum_run(tmp_path, resume: str | None = None):
    """Six steps of DoReMi over easy/hard rows; returns the callback, the ids each step trained on, and logs."""
    from cadence.curricula import Arms, CurriculumSampler, DoReMi

    trainer = make_trainer(tmp_path, max_steps=6, save_steps=3)
    policy = DoReMi(Arms(["easy"] * 4 + ["hard"] * 4), reference={"easy": 0.0, "hard": 0.0}, seed=1)
    callback = attach(trainer, lr="cosine(peak=1e-2)", sampler=CurriculumSampler(policy, batch_size=2, seed=2))
    trained: list[list[int]] = []
    observe = policy.observe
    policy.observe = lambda ids, **signals: (trained.append(np.asarray(ids).tolist()), observe(ids, **signals))[1]
    trainer.train(resume_from_checkpoint=resume)
    return callback, trained, [h for h in trainer.state.log_history if "loss" in h]


def test_curriculum_chooses_the_order_gets_losses_and_resumes_exactly(tmp_path):
    straight, trained, logs = curriculum_run(tmp_path)
    assert len(trained) == 6 and all(len(ids) == 2 for ids in trained)
    policy = straight.link.policy
    assert policy.observed.sum() == 12  # one per-sample loss per trained row
    assert not np.allclose(policy.probabilities(), 0.5)  # the losses moved the mixture
    assert "cadence/curriculum/probabilities/'hard'" in logs[-1] or "cadence/curriculum/probabilities/hard" in logs[-1]

    resumed, trained_after, logs_after = curriculum_run(tmp_path, resume=str(tmp_path / "checkpoint-3"))
    assert trained_after == trained[3:]
    assert [h["loss"] for h in logs_after] == [h["loss"] for h in logs]  # the resumed history continues the same run
    assert without_seconds(resumed.link.state_dict()) == without_seconds(straight.link.state_dict())
