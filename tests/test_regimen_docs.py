"""The files of docs/regimen.md: the SFT → GRPO file runs through TRL's SFTTrainer then GRPOTrainer
(budget cut to 4 steps, a tiny model), and the continual pre-training file checks clean."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

import cadence  # noqa: E402
from cadence.cli import main  # noqa: E402
from cadence.regimen import Regimen  # noqa: E402

from test_integrations_hf import char_tokenizer  # noqa: E402

PAGE = Path(__file__).resolve().parents[1] / "docs" / "regimen.md"


def documented_files() -> list[dict]:
    return [yaml.safe_load(block) for block in re.findall(r"^```yaml\n(.*?)^```", PAGE.read_text(), re.S | re.M)]


def test_the_sft_then_grpo_file_trains_in_trl_one_trainer_per_stage(tmp_path):
    d = documented_files()[0]
    assert Regimen.from_dict(d).stage_span("sft") == (0.0, 300.0)
    d["budget"] = "10 steps"  # the documented file, cut to a CPU-sized run
    d["stages"][1]["curriculum"]["batch_size"] = 2  # prompts per generation round of the tiny trainer
    regimen = Regimen.from_dict(d)
    tok = char_tokenizer()
    tok.eos_token = "[PAD]"
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                       bos_token_id=0, eos_token_id=0, pad_token_id=0))
    common = dict(report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True, logging_steps=1, seed=0)

    start, end = regimen.stage_span("sft")
    sft = trl.SFTTrainer(model=model, processing_class=tok, train_dataset=datasets.Dataset.from_dict(
        {"text": ["1+1=2", "2+2=4", "3+4=7", "12+30=42"]}), args=trl.SFTConfig(
        output_dir=str(tmp_path / "sft"), max_steps=int(end - start), per_device_train_batch_size=2, **common))
    link = regimen.attach(sft, stop_on_transition=True).link
    sft.train()
    assert link.clock.steps == 3 and link.stages.current.name == "grpo"  # sft is 30% of 10 steps
    wsd = cadence.parse("wsd(peak=2e-5, warmup=5%, decay=20%)")
    assert [h["cadence/lr/0"] for h in sft.state.log_history if "loss" in h] == [
        wsd.value(t, cadence.Axis("steps", 3)) for t in range(3)]  # warmup and decay are fractions of the stage

    def accuracy(completions, **kwargs):
        return [float(c.startswith("2")) for c in completions]

    def shorter(completions, max_response_length, **kwargs):
        return [float(len(c) <= b) for c, b in zip(completions, max_response_length)]

    start, end = regimen.stage_span("grpo")
    prompts = datasets.Dataset.from_dict({"prompt": ["1+1=", "2+2=", "3+4=", "12+30="],
                                          "source": ["small", "small", "large", "large"]})
    grpo = trl.GRPOTrainer(model=sft.model, reward_funcs=[accuracy, shorter], processing_class=tok,
                           train_dataset=prompts, args=trl.GRPOConfig(
                               output_dir=str(tmp_path / "grpo"), max_steps=2,  # of the stage's 7: enough to see it run
                               per_device_train_batch_size=4, num_generations=2, max_completion_length=4, beta=0.0,
                               **common))
    callback = regimen.attach(grpo, after=link)
    grpo.train()
    link = callback.link
    assert (start, end) == (3.0, 10.0) and link.clock.steps == 5
    assert type(link.policy).__name__ == "DUMP" and link.policy.observed.sum() >= 8  # the stage's own curriculum (dynamic sampling may draw more)
    lrs = [h["cadence/lr/0"] for h in grpo.state.log_history if "loss" in h]
    cosine = cadence.parse("cosine(peak=1e-6)")
    assert lrs == [cosine.value(t, cadence.Axis("steps", 7)) for t in (0, 1)]  # the top-level lr from grpo's start


def test_the_continual_pretraining_file_loads_and_checks_clean(tmp_path, capsys):
    d = documented_files()[1]
    r = Regimen.from_dict(d)
    assert r.curriculum.name == "replay" and r.data["continual"] == {"rewarm": True}
    path = tmp_path / "cpt.yaml"
    path.write_text(yaml.safe_dump(d))
    assert main(["check", str(path)]) == 0
    d["curriculum"]["fraction"] = 0.0
    path.write_text(yaml.safe_dump(d))
    assert main(["check", str(path)]) == 1 and "rewarm-without-replay" in capsys.readouterr().out


def test_the_continual_pretraining_file_draws_its_replay_share_in_a_plain_loop():
    d = {**documented_files()[1], "budget": "40 steps", "curriculum": {**documented_files()[1]["curriculum"],
                                                                      "batch_size": 10}}
    rows = {"corpus": ["old"] * 30 + ["new"] * 70}
    link = Regimen.from_dict(d).attach(torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0), dataset=rows)
    drawn = [i for _ in range(40) for i in link.sampler.next_batch()]
    assert sum(i < 30 for i in drawn) == 20  # 5% of 400 rows


def test_the_two_curricula_file_switches_at_the_stage_start_in_one_plain_loop():
    d = documented_files()[2]
    rows = {"level": ["easy"] * 4 + ["hard"] * 4}
    link = Regimen.from_dict(d).attach(torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0), dataset=rows)
    levels = []
    for _ in range(1000):
        ids = link.sampler.next_batch()
        levels.append({rows["level"][i] for i in ids})
        link.observe(ids, loss=np.ones(len(ids)))
        link.step()
    assert all(seen == {"easy"} for seen in levels[:200]) and {"hard"} <= set().union(*levels[200:])
    assert link.policy.name == "doremi"
