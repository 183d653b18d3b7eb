"""The RL regimen in TRL's GRPOTrainer: every signal reaches every policy, dynamic sampling trains only
in-band groups and counts every rollout, the predictive filter skips before generation, resume inside a
generation round is exact, no feedback lag, samples budgets advance, and clear errors for bad setups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

import cadence  # noqa: E402
from cadence.curricula import (DUMP, EXP3, PUDF, SEC, Arms, CurriculumSampler, DoReMi,  # noqa: E402
                               LearningProgress, PassRateFilter, Uniform)
from cadence.integrations.trl import attach  # noqa: E402
from cadence.rl import DynamicSampling, LengthBudget, PredictiveFilter, ReplayBuffer  # noqa: E402

from test_integrations_hf import char_tokenizer  # noqa: E402

# prompts 0-3 are always answered right, 4-7 always wrong, 8-15 right or wrong by the completion
PROMPTS = [f"{a}+{b}=" for a in range(4) for b in range(4)]
SOURCES = ["easy"] * 4 + ["hard"] * 4 + ["open"] * 8


def accuracy(completions, cadence_id, **kwargs):
    """1 for the right answer: fixed by the prompt for 0-7, by the sampled completion for the rest."""
    return [1.0 if i < 4 else 0.0 if i < 8 else float(sum(map(ord, c)) % 2) for c, i in zip(completions, cadence_id)]


def grpo(tmp_path, reward_funcs=(accuracy,), *, max_steps=3, per_device=4, generations=2, steps_per_generation=None,
         accumulation=1, iterations=1, prompts=PROMPTS, **config):
    tokenizer = char_tokenizer()
    tokenizer.eos_token = "[PAD]"
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                       bos_token_id=0, eos_token_id=0, pad_token_id=0))
    args = trl.GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=per_device,
                          num_generations=generations, steps_per_generation=steps_per_generation,
                          gradient_accumulation_steps=accumulation, num_iterations=iterations,
                          max_completion_length=4, max_steps=max_steps, learning_rate=1e-3, logging_steps=1,
                          report_to=[], use_cpu=True, beta=0.0, disable_tqdm=True, seed=0,
                          **{"save_strategy": "no", **config})
    return trl.GRPOTrainer(model=model, reward_funcs=list(reward_funcs), args=args, processing_class=tokenizer,
                           train_dataset=datasets.Dataset.from_dict({"prompt": prompts}))


def per_round(trainer) -> int:
    return trainer.args.generation_batch_size // trainer.num_generations


def record_outputs(trainer) -> list[dict]:
    """The generation outputs TRL trains on (before it shuffles a round into micro-batches); call after attach."""
    outputs: list[dict] = []
    generate = trainer._generate_and_score_completions

    def recorded(inputs):
        out = generate(inputs)
        if trainer.model.training:
            outputs.append({k: v.detach().clone() for k, v in out.items() if torch.is_tensor(v)})
        return out

    trainer._generate_and_score_completions = recorded
    return outputs


@pytest.mark.parametrize("policy", [DUMP, SEC, lambda arms, seed: EXP3(arms, seed=seed),
                                    lambda arms, seed: LearningProgress(arms, seed=seed), PassRateFilter,
                                    lambda arms, seed: PUDF(arms, difficulty=np.linspace(-1, 1, 16), seed=seed)])
def test_every_policy_gets_every_signal(tmp_path, policy):
    trainer = grpo(tmp_path, max_steps=2)
    p = policy(Arms(SOURCES), seed=0)
    seen: list[dict] = []
    observe = p.observe
    p.observe = lambda ids, **s: (seen.append({"ids": np.asarray(ids), **s}), observe(ids, **s))[1]
    attach(trainer, sampler=CurriculumSampler(p, batch_size=per_round(trainer), num_replicas=1), correct="accuracy")
    trainer.train()
    assert len(seen) == 2 and p.observed.sum() == 2 * trainer.args.generation_batch_size
    for obs in seen:
        assert set(obs) == {"ids", "reward", "advantage", "correct", "length"}
        ids = obs["ids"]
        fixed = ids < 8                                                    # prompts whose answer is fixed
        np.testing.assert_array_equal(obs["correct"][fixed], (ids[fixed] < 4).astype(float))
        assert set(np.unique(obs["correct"])) <= {0.0, 1.0}
        np.testing.assert_array_equal(obs["reward"], obs["correct"])      # one reward function: reward = accuracy
        assert np.all((obs["length"] >= 1) & (obs["length"] <= 4))        # completion tokens
        adv = obs["advantage"].reshape(-1, 2)
        np.testing.assert_allclose(adv.sum(axis=1), 0.0, atol=1e-5)


def test_correctness_from_a_function_and_loss_policies_refused(tmp_path):
    trainer = grpo(tmp_path, max_steps=1)
    p = PassRateFilter(Arms(SOURCES), seed=0)
    attach(trainer, sampler=CurriculumSampler(p, batch_size=per_round(trainer), num_replicas=1),
           correct=lambda completions, cadence_id, **kw: [i < 4 for i in cadence_id])
    trainer.train()
    tried = p.attempts > 0
    assert np.all(p.successes[tried] == np.where(np.arange(16) < 4, p.attempts, 0)[tried])
    for bad, match in [(DoReMi(Arms(SOURCES), reference=np.zeros(3)), "not a language-model loss"),
                       (PassRateFilter(Arms(SOURCES)), "pass correct=")]:
        with pytest.raises(cadence.CadenceError, match=match):
            attach(grpo(tmp_path), sampler=CurriculumSampler(bad, batch_size=4, num_replicas=1))
    with pytest.raises(cadence.CadenceError, match="names no reward function"):
        attach(grpo(tmp_path), sampler=CurriculumSampler(Uniform(Arms(SOURCES)), batch_size=4, num_replicas=1),
               correct="nope")


@pytest.mark.parametrize("shape", [
    dict(per_device=4, generations=2),                                    # one micro-step per round
    dict(per_device=4, generations=4, steps_per_generation=2),            # a round spans two optimizer steps
    dict(per_device=2, generations=2, accumulation=2),                    # accumulation: spg defaults to 2
    dict(per_device=4, generations=2, iterations=2, steps_per_generation=1),
])
def test_dynamic_sampling_trains_only_in_band_groups_and_counts_every_rollout(tmp_path, shape):
    generated: list[int] = []

    def counted(completions, cadence_id, **kwargs):
        generated.append(len(completions))
        return accuracy(completions, cadence_id)

    counted.__name__ = "accuracy"
    trainer = grpo(tmp_path, [counted], max_steps=4, **shape)
    policy = Uniform(Arms(SOURCES), seed=0)
    callback = attach(trainer, sampler=CurriculumSampler(policy, batch_size=per_round(trainer), num_replicas=1),
                      correct="accuracy", dynamic=DynamicSampling(max_extra_rounds=20))
    outputs = record_outputs(trainer)
    trainer.train()
    g = trainer.num_generations
    for out in outputs:
        adv = out["advantages"].view(-1, g)
        assert len(adv) == per_round(trainer)                              # a full round of groups
        assert torch.all(adv.abs().sum(dim=1) > 0)                         # no group with zero variance
        assert out["num_items_in_batch"] == out["completion_mask"].sum()   # recounted for the assembled batch
    selector = callback.link.sampler
    assert callback.link.clock.samples == sum(generated) == selector.dynamic.counts["rollouts"]
    assert policy.observed.sum() == sum(generated)                          # every rollout reached the curriculum
    assert sum(generated) > len(outputs) * trainer.args.generation_batch_size     # it had to refill
    logged = [h for h in trainer.state.log_history if "cadence/rl/kept_fraction" in h]
    assert logged and all(0 < h["cadence/rl/kept_fraction"] <= 1 for h in logged)


def test_dynamic_sampling_fills_with_the_best_groups_when_the_bound_is_hit(tmp_path):
    trainer = grpo(tmp_path, max_steps=2, prompts=PROMPTS[:8])            # only always-right and always-wrong prompts
    callback = attach(trainer, sampler=CurriculumSampler(Uniform(Arms(SOURCES[:8])), batch_size=2, num_replicas=1),
                      correct="accuracy", dynamic=DynamicSampling(max_extra_rounds=1))
    outputs = record_outputs(trainer)
    trainer.train()
    counts = callback.link.sampler.dynamic.counts
    assert counts["bound_hit"] == 2 and counts["filled"] == 4 and counts["kept"] == 0
    assert counts["rollouts"] == 2 * (2 + 2) * 2                           # two rounds of two prompts, each step
    assert all(len(out["advantages"]) == 4 for out in outputs)


def test_predictive_filter_skips_solved_prompts_before_generation(tmp_path):
    generated: list[list[int]] = []

    def watched(completions, cadence_id, **kwargs):
        generated.append(sorted(set(cadence_id)))
        return accuracy(completions, cadence_id)

    watched.__name__ = "accuracy"
    trainer = grpo(tmp_path, [watched], max_steps=12, per_device=8, generations=4)
    callback = attach(trainer, sampler=CurriculumSampler(Uniform(Arms(SOURCES), seed=1), batch_size=2, num_replicas=1),
                      correct="accuracy", predictive=PredictiveFilter(16, p_easy=0.05, p_hard=0.05, seed=0),
                      dynamic=DynamicSampling(max_extra_rounds=3))
    trainer.train()
    rounds = np.bincount(np.concatenate(generated), minlength=16)   # rounds each prompt was generated in
    again = np.maximum(rounds - 1, 0)                               # after its first group
    assert again[:8].sum() * 4 < again[8:].sum()   # all-right/all-wrong prompts are rarely generated again
    values = [h for h in trainer.state.log_history if "cadence/rl/predictive/skipped_share" in h]
    assert values[-1]["cadence/rl/predictive/skipped_share"] > 0
    assert callback.link.sampler.predictive.skipped > 0


@pytest.mark.parametrize("part", [None, "dynamic", "replay"])
def test_resume_inside_a_generation_round_is_exact(tmp_path, part):
    """4 rows per device, 2 generations, 4 steps per generation, saved every 2 steps: checkpoint-2 is mid-round."""
    dynamic = part is not None
    def run(resume=None):
        rounds: list[list[int]] = []

        def reward(completions, cadence_id, **kwargs):
            rounds.append(list(cadence_id))
            return accuracy(completions, cadence_id)

        reward.__name__ = "accuracy"
        trainer = grpo(tmp_path / "out", [reward], max_steps=8, steps_per_generation=4, save_strategy="steps",
                       save_steps=2, generations=4 if part == "replay" else 2)   # replay: 4 prompts a round
        policy = DUMP(Arms(SOURCES), seed=0) if part != "replay" else Uniform(Arms(SOURCES), seed=0)
        sampler = CurriculumSampler(policy, batch_size=per_round(trainer), num_replicas=1, seed=1)
        extra = {"correct": "accuracy", "dynamic": DynamicSampling(max_extra_rounds=2)} if dynamic else {}
        if part == "replay":
            extra.update(dynamic=DynamicSampling(max_extra_rounds=0), replay=ReplayBuffer(4, seed=0))
        callback = attach(trainer, sampler=sampler, **extra)
        trainer.train(resume_from_checkpoint=resume)
        weights = [p.detach().clone() for p in trainer.model.parameters()]
        return rounds, policy, getattr(callback.link, "sampler", None), weights

    rounds, policy, selector, weights = run()
    resumed_rounds, resumed_policy, resumed_selector, resumed_weights = run(str(tmp_path / "out" / "checkpoint-2"))
    assert resumed_rounds == rounds[len(rounds) - len(resumed_rounds):] and len(resumed_rounds) < len(rounds)
    assert resumed_policy.observed.sum() == policy.observed.sum()          # no round observed twice
    np.testing.assert_array_equal(resumed_policy.probabilities(), policy.probabilities())
    assert resumed_selector.state_dict()["sampler"]["rng"] == selector.state_dict()["sampler"]["rng"]
    if dynamic:
        assert resumed_selector.dynamic.counts == selector.dynamic.counts
    if part == "replay":          # the buffer's groups resume with their tensors, and are replayed after the resume
        saved = torch.load(tmp_path / "out" / "checkpoint-2" / "cadence_trl_replay_rank0.pt", weights_only=True)
        assert saved["groups"] and all(torch.is_tensor(t) for g in saved["groups"].values() for t in g.values())
        at_checkpoint = _checkpoint_state(tmp_path / "out" / "checkpoint-2")["sampler"]["replay"]["counts"]
        assert resumed_selector.replay.counts == selector.replay.counts
        assert selector.replay.counts["replayed"] > at_checkpoint["replayed"]
    assert all(torch.equal(a, b) for a, b in zip(weights, resumed_weights))   # trained on the same completions


def _checkpoint_state(folder) -> dict:
    """The link state a checkpoint's ``trainer_state.json`` holds."""
    import json

    from cadence.integrations.jsonstate import decode

    state = json.loads((folder / "trainer_state.json").read_text())
    return decode(state["stateful_callbacks"]["CadenceCallback"]["attributes"]["cadence"])["link"]


def test_prompts_are_drawn_after_the_previous_rounds_feedback(tmp_path):
    trainer = grpo(tmp_path, max_steps=3, per_device=2, accumulation=2, steps_per_generation=1)
    policy = DUMP(Arms(SOURCES), seed=0)
    sampler = CurriculumSampler(policy, batch_size=per_round(trainer), num_replicas=1)
    observed_at_draw: list[int] = []
    next_batch = sampler.next_batch
    sampler.next_batch = lambda *size: (observed_at_draw.append(int(policy.observed.sum())), next_batch(*size))[1]
    attach(trainer, sampler=sampler)
    trainer.train()
    rows = trainer.args.generation_batch_size
    assert observed_at_draw == [r * rows for r in range(len(observed_at_draw))]   # no lag: every earlier round seen
    assert len(observed_at_draw) == 3 * 2                                          # one round per micro-step


def test_a_samples_budget_advances_with_the_rollouts(tmp_path):
    trainer = grpo(tmp_path, [lambda completions, **kw: [float(len(c) % 2) for c in completions]], max_steps=2)
    callback = attach(trainer, budget="64 samples", knobs={"kl": "cosine(peak=1)"})
    trainer.train()
    clock = callback.link.clock
    assert clock.samples == 2 * trainer.args.generation_batch_size == 8     # every completion generated
    assert clock.progress == pytest.approx(8 / 64)
    assert clock.tokens > clock.samples                                     # completion tokens, 1-4 each


def test_length_budget_reaches_the_reward_and_the_prompt(tmp_path):
    budget = LengthBudget("ramp(start=2, end=4)", in_prompt=True, correct_weight=1.0, length_weight=1.0)
    seen: list[tuple[list, list]] = []

    def accurate(completions, cadence_id, **kw):
        return accuracy(completions, cadence_id)

    def spy(prompts, completions, length_budget, **kw):
        seen.append((list(prompts), list(length_budget)))
        return [0.0] * len(completions)

    trainer = grpo(tmp_path, [budget.reward_function(accurate), spy], max_steps=2)
    attach(trainer, sampler=CurriculumSampler(Uniform(Arms(SOURCES)), batch_size=2, num_replicas=1),
           length_budget=budget)
    trainer.train()
    assert [b[0] for _, b in seen] == [2.0, 3.0]
    assert all(p.endswith(f"Use at most {int(b[0])} tokens.") for prompts, b in seen for p in prompts)


def test_setups_that_cannot_work_get_clear_errors(tmp_path):
    def sampler(arms=SOURCES):
        return CurriculumSampler(Uniform(Arms(arms)), batch_size=2, num_replicas=1)

    trainer = grpo(tmp_path)
    attach(trainer, sampler=sampler())
    with pytest.raises(cadence.CadenceError, match="already attached"):
        attach(trainer, sampler=sampler())
    with pytest.raises(cadence.CadenceError, match="arms hold 8 items but the train_dataset has 16"):
        attach(grpo(tmp_path), sampler=sampler(SOURCES[:8]))
    streaming = grpo(tmp_path)
    streaming.train_dataset = streaming.train_dataset.to_iterable_dataset()
    with pytest.raises(cadence.CadenceError, match="map-style"):
        attach(streaming, sampler=sampler())
    with pytest.raises(cadence.CadenceError, match="choose among a curriculum's prompts"):
        attach(grpo(tmp_path), correct="accuracy", dynamic=DynamicSampling())
    with pytest.warns(UserWarning, match="shuffle_dataset=False has no effect"):
        attach(grpo(tmp_path, shuffle_dataset=False), sampler=sampler())


def test_unused_columns_removed_still_carry_the_item_id(tmp_path):
    seen: list[int] = []

    def reward(completions, cadence_id, **kwargs):
        seen.extend(cadence_id)
        assert "extra" not in kwargs                       # TRL removed the unused column, as without cadence
        return [0.0] * len(completions)

    trainer = grpo(tmp_path, [reward], max_steps=1, remove_unused_columns=True)
    trainer.train_dataset = trainer.train_dataset.add_column("extra", list(range(16)))
    attach(trainer, sampler=CurriculumSampler(Uniform(Arms(SOURCES)), batch_size=2, num_replicas=1))
    trainer.train()
    assert len(seen) == 4 and all(0 <= i < 16 for i in seen)


def test_d3s_token_mask_keeps_the_top_tokens_by_advantage_times_entropy(tmp_path):
    from cadence.rl import DualDownsampling

    trainer = grpo(tmp_path, max_steps=2)
    attach(trainer, sampler=CurriculumSampler(Uniform(Arms(SOURCES)), batch_size=2, num_replicas=1),
           downsample=DualDownsampling(token_ratio="constant(0.5)"))
    hook, seen = trainer.get_high_entropy_mask, []

    def spy(entropies, mask, threshold):
        kept = hook(entropies, mask, threshold)
        seen.append((entropies.detach().clone(), mask.clone(), kept.clone()))
        return kept

    trainer.get_high_entropy_mask = spy
    advantages = []
    compute = trainer._compute_loss
    trainer._compute_loss = lambda model, inputs: (advantages.append(inputs["advantages"].clone()),
                                                   compute(model, inputs))[1]
    trainer.train()
    assert len(seen) == len(advantages) >= 2
    for (entropy, mask, kept), adv in zip(seen, advantages):
        score = adv.reshape(-1, 1).abs() * entropy
        valid = mask.bool()
        assert int(kept.sum()) == int(np.ceil(0.5 * int(valid.sum()))) and not bool((kept & ~valid).any())
        if bool((valid & ~kept).any()) and bool(kept.any()):
            assert score[kept].min() >= score[valid & ~kept].max()
    with pytest.raises(cadence.CadenceError, match="top_entropy_quantile"):
        attach(grpo(tmp_path, top_entropy_quantile=0.5), downsample=DualDownsampling())
