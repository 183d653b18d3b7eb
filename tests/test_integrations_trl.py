"""TRL GRPOTrainer integration: a curriculum picks prompts in TRL's repeat layout, observes each
round's rewards and advantages, and a length-budget schedule reaches the reward function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

import cadence  # noqa: E402
from cadence.curricula import DUMP, Arms, CurriculumSampler, Uniform  # noqa: E402
from cadence.integrations.trl import attach  # noqa: E402

from test_integrations_hf import char_tokenizer  # noqa: E402

PROMPTS = ["1+1=", "2+2=", "3+4=", "12+30=", "45+17=", "90+9="]
SOURCES = ["small"] * 3 + ["large"] * 3


def grpo_trainer(tmp_path, reward_funcs, max_steps=2, per_device=4):
    tokenizer = char_tokenizer()
    tokenizer.eos_token = "[PAD]"
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                       bos_token_id=0, eos_token_id=0, pad_token_id=0))
    config = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=per_device, num_generations=2,
                            max_completion_length=4, max_steps=max_steps, learning_rate=1e-3, logging_steps=1,
                            report_to=[], use_cpu=True, save_strategy="no", beta=0.0, disable_tqdm=True, seed=0)
    return trl.GRPOTrainer(model=model, reward_funcs=reward_funcs, args=config, processing_class=tokenizer,
                           train_dataset=datasets.Dataset.from_dict({"prompt": PROMPTS}))


def test_curriculum_chooses_prompts_and_learns_from_rewards_and_advantages(tmp_path):
    seen: list[dict] = []

    def within_budget(completions, max_response_length, cadence_id, trainer_state, **kwargs):
        rewards = [float(len(c) <= b) + 0.1 * i for i, (c, b) in enumerate(zip(completions, max_response_length))]
        seen.append({"ids": list(cadence_id), "budget": list(max_response_length), "rewards": rewards})
        return rewards

    trainer = grpo_trainer(tmp_path, [within_budget])
    policy = DUMP(Arms(SOURCES), seed=0)
    observed: list[dict] = []
    observe = policy.observe
    policy.observe = lambda ids, **s: (observed.append({"ids": np.asarray(ids).tolist(),
                                                        **{k: torch.as_tensor(v).numpy() for k, v in s.items()}}),
                                       observe(ids, **s))[1]
    callback = attach(trainer, sampler=CurriculumSampler(policy, batch_size=2, num_replicas=1, seed=1),
                      knobs={"max_response_length": "ramp(start=2, end=4)"})
    trainer.train()

    assert len(seen) == len(observed) == 2  # one generation round per step
    for round_, obs in zip(seen, observed):
        ids = round_["ids"]
        assert ids[0] == ids[1] and ids[2] == ids[3]  # each prompt num_generations times in a row
        assert obs["ids"] == ids  # feedback reaches the prompts that were generated for
        np.testing.assert_allclose(obs["reward"], round_["rewards"], rtol=1e-6)  # one total reward per completion
        adv = obs["advantage"].reshape(2, 2)
        assert np.all(np.abs(adv) > 0.5)  # rewards differ within each group, so advantages are nonzero
        np.testing.assert_allclose(adv.sum(axis=1), 0.0, atol=1e-5)  # group-relative advantages
    assert seen[0]["budget"] == [2.0] * 4  # the schedule at step 0 ...
    assert seen[1]["budget"] == [3.0] * 4  # ... and after one of two steps
    assert policy.observed.sum() == 8
    history = [h for h in trainer.state.log_history if "loss" in h]
    assert "cadence/max_response_length" in history[-1]
    assert "cadence/curriculum/probabilities/large" in history[-1]
    assert callback.link.clock.steps == 2


def test_attach_rejects_a_sampler_that_breaks_the_layout(tmp_path):
    trainer = grpo_trainer(tmp_path, [lambda completions, **kw: [0.0] * len(completions)])
    with pytest.raises(cadence.CadenceError, match="prompts per generation round"):
        attach(trainer, sampler=CurriculumSampler(Uniform(Arms(SOURCES)), batch_size=4, num_replicas=1))
    with pytest.raises(cadence.CadenceError, match="num_replicas=1"):
        attach(trainer, sampler=CurriculumSampler(Uniform(Arms(SOURCES)), batch_size=2, num_replicas=2, rank=0))


def test_resume_continues_with_the_prompts_of_the_uninterrupted_run(tmp_path):
    def run(resume=None):
        rounds: list[list[int]] = []

        def reward(completions, cadence_id, **kwargs):
            rounds.append(list(cadence_id))
            return [float(len(c) % 3) for c in completions]

        trainer = grpo_trainer(tmp_path, [reward], max_steps=4)
        trainer.args.save_strategy, trainer.args.save_steps = "steps", 2
        callback = attach(trainer, sampler=CurriculumSampler(DUMP(Arms(SOURCES), seed=0), batch_size=2,
                                                             num_replicas=1, seed=1))
        trainer.train(resume_from_checkpoint=resume)
        return rounds, callback.link.policy

    rounds, policy = run()
    resumed_rounds, resumed_policy = run(str(tmp_path / "checkpoint-2"))
    assert resumed_rounds == rounds[2:]
    np.testing.assert_array_equal(resumed_policy.probabilities(), policy.probabilities())
    assert resumed_policy.state_dict()["rng"] == policy.state_dict()["rng"]


def test_layer_plans_choose_the_trained_layers_and_size_plans_are_refused(tmp_path):
    from transformers import TrainerCallback

    from cadence.integrations.hf import CadenceCallback
    from cadence.progressive import LayerFreezing, SequenceLengthWarmup

    trainer = grpo_trainer(tmp_path, [lambda completions, **kw: [float(len(c) % 3) + 0.1 * i
                                                                 for i, c in enumerate(completions)]], max_steps=4)
    blocks = trainer.model.transformer.h
    clock = cadence.Clock(budget=4)
    with pytest.raises(cadence.CadenceError, match="SequenceLengthWarmup cannot shape GRPO"):
        attach(trainer, plans=[SequenceLengthWarmup(clock=clock, length=8)])
    assert "get_batch_samples" not in vars(trainer)  # refused before anything was attached
    assert not any(isinstance(c, CadenceCallback) for c in trainer.callback_handler.callbacks)

    plan = LayerFreezing(list(blocks), clock=clock, fraction="join(constant(0), constant(1), at=[50%])")
    weights = [[p.detach().clone() for p in (blocks[0].mlp.c_fc.weight, blocks[1].mlp.c_fc.weight)]]

    class Watch(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            weights.append([p.detach().clone() for p in (blocks[0].mlp.c_fc.weight, blocks[1].mlp.c_fc.weight)])

    callback = attach(trainer, lr="constant(1e-2)", plans=[plan])
    trainer.add_callback(Watch())
    trainer.train()
    moved = [[not torch.equal(a, b) for a, b in zip(before, after)] for before, after in zip(weights, weights[1:])]
    assert moved == [[True, True], [True, True], [False, True], [False, True]]  # block 0 frozen from step 2 (50%)
    history = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["cadence/plan/layer_freezing/frozen_layers"] for h in history] == [0.0, 0.0, 1.0, 1.0]
    assert callback.link.state_dict()["plans"]["layer_freezing"]["trainable"] == [False, True]
