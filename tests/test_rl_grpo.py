"""GRPO loop of the RL lab: advantages, the loss's direction, KL, exact resume, bad state."""

import copy

import numpy as np
import pytest
import torch

from cadence.curricula import DUMP, SEC, PassRateFilter
from cadence.errors import CadenceError, StateError
from cadence.labs.rl.groups import group_advantages, informative
from cadence.labs.rl.grpo import GRPOConfig, GRPOTrainer, suite_arms
from cadence.labs.rl.sources import SelectorSource
from cadence.rl import DynamicSampling, KnapsackAllocation, PromptSelector
from cadence.labs.rl.tasks import TaskSuite
from cadence.labs.rl.warmstart import WarmStartConfig, warm_start

WARM = WarmStartConfig(steps=30, batch=16, n_layer=1, n_head=2, d_model=32)
SUITE = TaskSuite(families=("add", "count"), levels=(1, 2), items_per_arm=16, eval_per_arm=4, seed=0)
CONFIG = GRPOConfig(steps=4, prompts_per_step=4, group=4, eval_every=2, lr="constant(1e-3)")


@pytest.fixture(scope="module")
def warm():
    torch.set_num_threads(1)
    return warm_start(SUITE, WARM, seed=0)


def make_trainer(warm, source: str = "dump", config: GRPOConfig = CONFIG, knapsack: bool = False) -> GRPOTrainer:
    arms = suite_arms(SUITE)
    src = {
        "dump": lambda: SelectorSource(PromptSelector(DUMP(arms, seed=1), seed=1)),
        "sec": lambda: SelectorSource(PromptSelector(SEC(arms, seed=1), seed=1)),
        "filter": lambda: SelectorSource(PromptSelector(PassRateFilter(arms, seed=1), seed=1,
                                                        dynamic=DynamicSampling(max_extra_rounds=2))),
    }[source]()
    alloc = KnapsackAllocation(SUITE.arm_of, config.group) if knapsack else None
    return GRPOTrainer(copy.deepcopy(warm), SUITE, src, config, max_new_tokens=WARM.max_new_tokens(SUITE),
                       allocator=alloc, seed=5)


def test_group_advantages_match_the_shared_fact():
    rng = np.random.default_rng(0)
    for p in (0.1, 0.5, 0.8):
        rewards = (rng.random(200_000) < p).astype(float)
        adv = group_advantages(rewards, np.array([200_000]))
        assert abs(np.abs(adv).mean() - 2 * np.sqrt(p * (1 - p))) < 0.01   # E|A| = 2·sqrt(p(1-p)), GRPO-normalised
        assert abs(adv.mean()) < 1e-9
    same = group_advantages(np.array([1.0, 1.0, 0.3, 0.3, 0.3]), np.array([2, 3]))
    assert same.tolist() == [0.0] * 5
    assert informative(np.array([1.0, 1.0, 0.0, 1.0, 5.0]), np.array([2, 2, 1])).tolist() == [False, True, False]


def test_policy_gradient_raises_rewarded_answers(warm):
    trainer = make_trainer(warm)
    groups = trainer.rollout(np.array([0, 1, 20, 40]))
    groups.advantages = np.where(np.arange(len(groups.advantages)) % 2 == 0, 1.0, -1.0)
    before = trainer.loss(groups)[1]
    trainer.optimizer.param_groups[0]["lr"] = 1e-2
    loss, _ = trainer.loss(groups)
    trainer.optimizer.zero_grad()
    loss.backward()
    trainer.optimizer.step()
    after = trainer.loss(groups)[1]
    mask = groups.rollouts.mask
    change = ((after - before) * mask).sum(1) / mask.sum(1)
    assert change[0::2].mean() > 0 > change[1::2].mean()


def test_kl_to_the_warm_start_is_zero_at_the_start_and_positive_after_moving(warm):
    trainer = make_trainer(warm, config=GRPOConfig(steps=4, prompts_per_step=4, group=4, kl="constant(0.5)"))
    groups = trainer.rollout(np.array([0, 1, 2, 3]))
    groups.advantages = np.zeros_like(groups.advantages)
    assert float(trainer.loss(groups)[0].detach()) == 0.0
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=noise))
    assert float(trainer.loss(groups)[0].detach()) > 0.0
    assert make_trainer(warm).reference is None  # no KL schedule, no reference copy


@pytest.mark.parametrize("source,knapsack", [("dump", False), ("sec", True), ("filter", False)])
def test_resume_is_exact(warm, source, knapsack):
    straight = make_trainer(warm, source, knapsack=knapsack)
    straight.run()
    first = make_trainer(warm, source, knapsack=knapsack)
    first.run(2)
    state = copy.deepcopy(first.state_dict())
    resumed = make_trainer(warm, source, knapsack=knapsack)
    resumed.load_state_dict(state)
    resumed.run()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert straight.history == resumed.history
    assert straight.source.policy.probabilities().tolist() == resumed.source.policy.probabilities().tolist()
    assert len(straight.history.eval_steps) == 3  # steps 0, 2, 4


def test_load_rejects_foreign_state_and_changes_nothing(warm):
    trainer = make_trainer(warm)
    trainer.run(1)
    before = copy.deepcopy(trainer.state_dict())
    other = make_trainer(warm, config=GRPOConfig(steps=4, prompts_per_step=4, group=2))
    with pytest.raises(StateError, match="GRPOConfig"):
        trainer.load_state_dict(other.state_dict())
    sec_state = make_trainer(warm, "sec").state_dict()
    with pytest.raises(StateError):
        trainer.load_state_dict(sec_state)
    after = trainer.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(before["model"].values(), after["model"].values()))
    assert before["history"] == after["history"]
    assert trainer.source.policy.state_dict()["kind"] == "DUMP"


def test_bad_config_and_rewards_are_rejected(warm):
    with pytest.raises(CadenceError, match="group"):
        GRPOConfig(group=0)
    trainer = make_trainer(warm)
    trainer.reward = lambda correct, lengths, clock: np.full(len(correct), np.nan)
    with pytest.raises(CadenceError, match="NaN"):
        trainer.step()


def test_answer_probability_matches_the_frequency_of_sampling_the_exact_answer():
    from cadence.labs.rl.policy import answer_probability, response_texts, sample

    suite = TaskSuite(families=("count",), levels=(1,), items_per_arm=32, eval_per_arm=16, seed=0)
    tok, width, new = suite.tokenizer, suite.prompt_len, WARM.max_new_tokens(suite)
    model = warm_start(suite, WarmStartConfig(steps=80, batch=16, n_layer=1, n_head=2, d_model=32), seed=0)
    every = answer_probability(model, suite.eval_prompts, suite.eval_answers, tok, new, width=width)
    pick = np.argsort(every)[[-1, -2, len(every) // 2]]          # two likely answers and a middling one
    prompts, answers, exact = suite.eval_prompts[pick], suite.eval_answers[pick], every[pick]
    assert exact.max() > 0.3
    n = 3000
    rollouts = sample(model, torch.from_numpy(tok.prompts(prompts, width)), group=n,
                      max_new_tokens=new, eos_id=tok.eos_id, generator=torch.Generator().manual_seed(0))
    hits = (response_texts(rollouts, tok.response_text) == np.repeat(answers, n)).reshape(3, n).mean(1)
    # binomial standard error at n = 3000 is at most 0.009; four of them is a test that can fail
    np.testing.assert_allclose(exact, hits, atol=0.04)


def test_evaluation_logs_pass_at_1_greedy_and_length(warm):
    trainer = make_trainer(warm, "dump")
    history = trainer.run()
    assert len(history.eval_accuracy) == len(history.eval_greedy) == len(history.eval_length) == 3
    assert len(history.step_grad_norm) == 4  # per-step gradient norms, for schedule refinement
    assert all(g is None or g >= 0 for g in history.step_grad_norm) and any(g for g in history.step_grad_norm)
    for p, g in zip(history.eval_accuracy, history.eval_greedy):
        assert len(p) == len(g) == len(SUITE.arm_names)
        assert all(0.0 <= x <= 1.0 for x in p + g)


def test_dynamic_sampling_trains_only_in_band_groups_and_the_clock_counts_every_rollout(warm):
    arms = suite_arms(SUITE)
    selector = PromptSelector(DUMP(arms, seed=1), dynamic=DynamicSampling(max_extra_rounds=50), seed=1)
    trainer = GRPOTrainer(copy.deepcopy(warm), SUITE, SelectorSource(selector), CONFIG,
                          max_new_tokens=WARM.max_new_tokens(SUITE), seed=5)
    history = trainer.run()
    assert history.step_informative == history.step_groups == [CONFIG.prompts_per_step] * CONFIG.steps
    assert trainer.clock.samples == sum(history.step_rollouts) == selector.dynamic.counts["rollouts"]
    assert sum(history.step_rollouts) > CONFIG.steps * CONFIG.prompts_per_step * CONFIG.group  # it refilled
    assert selector.dynamic.counts["filled"] == 0
