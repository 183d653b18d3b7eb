"""The RL regimen library (cadence.rl): knapsack allocation, the predictive pre-rollout filter, dynamic
sampling through the prompt selector, the length budget; PassRateFilter.fill without repeats."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cadence import Clock
from cadence.curricula import DUMP, Arms, CurriculumSampler, PassRateFilter, Uniform
from cadence.errors import CadenceError, StateError
from cadence.rl import (DynamicSampling, FixedAllocation, KnapsackAllocation, LengthBudget, PredictiveFilter,
                        PromptSelector, knapsack_value, sizes_for_rates, triangular)


# ---------------------------------------------------------------- knapsack
def test_knapsack_worked_example_moves_rollouts_from_easy_to_hard_prompts():
    rates = np.array([0.01, 0.5, 0.97, 0.30])
    sizes = sizes_for_rates(rates, total=32)
    assert sizes.sum() == 32
    assert sizes[2] < sizes[3]                          # the 0.97 prompt gets fewer rollouts than the 0.30 one
    assert sizes[3] == sizes.max()                      # p(1-p)^2 peaks at p = 1/3: the 0.30 prompt gets the most
    # by hand: value(N, p) = (1 - p^N - (1-p)^N) * p (1-p)^2
    p, n = 0.3, 18
    assert knapsack_value(np.array(p), np.array(n)) == pytest.approx((1 - p**n - (1 - p) ** n) * p * (1 - p) ** 2)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4), st.integers(0, 12))
def test_knapsack_dynamic_programme_is_the_exact_optimum(rates, total):
    p = np.array(rates)
    sizes = sizes_for_rates(p, total, max_group=8)
    assert sizes.sum() <= total and np.all((sizes == 0) | ((sizes >= 2) & (sizes <= 8)))
    options = [0, *range(2, 9)]
    best = max(knapsack_value(p, np.array(c)).sum() for c in itertools.product(options, repeat=len(p))
               if sum(c) <= total)
    assert knapsack_value(p, sizes).sum() == pytest.approx(best, abs=1e-12)


def test_knapsack_allocation_estimates_each_prompt_with_an_arm_prior_and_resumes():
    alloc = KnapsackAllocation(arm_of=[0, 0, 0, 1], group=4, decay=1.0, prior_strength=2.0)
    alloc.observe([0] * 4 + [1] * 4, [1, 1, 1, 1, 0, 0, 0, 0])
    # arm 0 pooled: (4 + 1) / (8 + 2) = 0.5; prompt 0: (4 + 2 * 0.5) / (4 + 2); prompt 2 (unseen): the prior
    assert alloc.pass_rates([0, 1, 2, 3]).tolist() == pytest.approx([5 / 6, 1 / 6, 0.5, 0.5])
    assert alloc.sizes(np.arange(4)).sum() == 16
    fresh = KnapsackAllocation(arm_of=[0, 0, 0, 1], group=4, decay=1.0)
    fresh.load_state_dict(torch.load(_saved(alloc.state_dict()), weights_only=True))
    assert fresh.sizes(np.arange(4)).tolist() == alloc.sizes(np.arange(4)).tolist()
    with pytest.raises(StateError):
        KnapsackAllocation(arm_of=[0, 1], group=4).load_state_dict(alloc.state_dict())
    with pytest.raises(StateError):
        FixedAllocation(4).load_state_dict(alloc.state_dict())
    with pytest.raises(CadenceError, match="one known prompt id"):
        alloc.observe([9], [1])
    with pytest.raises(CadenceError):
        KnapsackAllocation([0], group=4, min_group=1)


def _saved(state, tmp=[]):  # noqa: B006 - one temp dir per test session is enough
    import io
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


# ---------------------------------------------------------------- predictive filter (GRESO)
def test_predictive_filter_skip_rule_by_hand():
    f = PredictiveFilter(4, p_easy=0.5, p_hard=0.8, seed=0)
    for _ in range(3):   # prompt 0 all right three rounds running, prompt 1 all wrong twice then mixed
        f.observe([0, 0, 1, 1], [1, 1, 0, 0])
    f.observe([1, 1, 2, 2], [1, 0, 0, 0])
    assert f.easy_streak.tolist() == [3, 0, 0, 0] and f.hard_streak.tolist() == [0, 0, 1, 0]
    assert f.keep_probability([0, 1, 2, 3]).tolist() == pytest.approx([0.5**3, 1.0, 0.8, 1.0])
    f.p_easy = 0.1   # the keep probability never falls below the floor (0.01)
    assert f.keep_probability([0])[0] == pytest.approx(0.01)
    # skipping happens at the stated rate (one uniform draw per prompt)
    f.p_easy = 0.5
    keep = np.mean([f.admit(np.zeros(1000, dtype=np.int64)).mean() for _ in range(20)])
    assert keep == pytest.approx(0.125, abs=0.01)


def test_predictive_filter_adapts_each_probability_toward_its_target():
    f = PredictiveFilter(10, target_zero_variance=0.3, easy_share=1 / 3, p_easy=0.5, p_hard=0.5, step=0.01)
    # 10 groups: 5 all right (50% >= target 10%), 1 all wrong (10% < target 20%), 4 mixed
    f.observe(np.repeat(np.arange(10), 2), [1, 1] * 5 + [0, 0] + [1, 0] * 4)
    f.adapt()
    assert (f.p_easy, f.p_hard) == pytest.approx((0.49, 0.51))
    f.adapt()                                    # nothing observed since: unchanged
    assert (f.p_easy, f.p_hard) == pytest.approx((0.49, 0.51))
    g = PredictiveFilter(2, p_easy=0.05, p_hard=0.95)
    g.observe([0, 0, 1, 1], [1, 1, 1, 1])
    g.adapt()
    assert (g.p_easy, g.p_hard) == (0.05, 0.95)  # held inside [p_min, p_max]


def test_predictive_filter_resumes_exactly_and_rejects_foreign_state():
    f = PredictiveFilter(6, seed=3)
    f.observe(np.repeat(np.arange(6), 2), [1, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 1])
    f.adapt()
    g = PredictiveFilter(6, seed=99)
    g.load_state_dict(torch.load(_saved(f.state_dict()), weights_only=True))
    assert [f.admit(np.arange(6)).tolist() for _ in range(5)] == [g.admit(np.arange(6)).tolist() for _ in range(5)]
    with pytest.raises(StateError):
        PredictiveFilter(5).load_state_dict(f.state_dict())
    with pytest.raises(CadenceError, match="integers in"):
        f.observe([7, 7], [1, 1])
    with pytest.raises(CadenceError, match="0/1"):
        f.observe([1, 1], [0.5, 1])


# ---------------------------------------------------------------- dynamic sampling through the selector
def outcomes(pass_rate_of, group=4):
    """A rollout callback whose prompt i is right on the first round(pass_rate_of(i) * group) rollouts."""
    calls = []

    def rollout(ids):
        calls.append(np.asarray(ids).copy())
        rows = [[1.0] * round(pass_rate_of(int(i)) * group) + [0.0] * (group - round(pass_rate_of(int(i)) * group))
                for i in ids]
        r = np.array(rows)
        adv = (r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-6)
        return {"correct": r.reshape(-1), "reward": r.reshape(-1), "advantage": adv.reshape(-1)}
    return rollout, calls


def test_dynamic_sampling_trains_only_in_band_groups_and_counts_every_rollout():
    arms = Arms(["a"] * 40)
    rollout, calls = outcomes(lambda i: [0.0, 0.5, 1.0, 0.25][i % 4])     # half the prompts are out of band
    selector = PromptSelector(Uniform(arms, seed=0), dynamic=DynamicSampling(max_extra_rounds=10), seed=1)
    for _ in range(5):
        picks = selector.select(6, rollout)
        assert len(picks.ids) == 6 and len(set(picks.ids.tolist())) == 6     # full, no prompt twice
        assert np.all((picks.pass_rates > 0) & (picks.pass_rates < 1))
        assert picks.rollouts == 4 * sum(len(r) for r in picks.rounds)
        assert [len(r) for r in picks.rounds][1:] == [6 - k for k in np.cumsum(
            [np.sum((np.asarray(r) % 4 == 1) | (np.asarray(r) % 4 == 3)) for r in picks.rounds])[:-1]]
    counts = selector.dynamic.counts
    assert counts["rollouts"] == 4 * sum(len(c) for c in calls)
    assert counts["kept"] == 30 and counts["filled"] == 0
    assert selector.policy.observed.sum() == 4 * sum(len(c) for c in calls)  # every rollout reached the curriculum


def test_dynamic_sampling_fills_with_the_best_groups_when_the_bound_is_hit():
    rollout, calls = outcomes(lambda i: [1.0, 0.0, 0.75, 0.5][i % 4])
    band = DynamicSampling(0.4, 0.6, closed="both", max_extra_rounds=1)
    selector = PromptSelector(Uniform(Arms(["a"] * 8), seed=0), dynamic=band, seed=0)
    picks = selector.select(4, rollout)
    assert len(picks.rounds) == 2                          # one extra round, then the bound
    rates = picks.pass_rates.tolist()
    inside = [r for r in rates if 0.4 <= r <= 0.6]
    outside = rates[len(inside):]
    assert all(r == 0.5 for r in inside) and picks.filled == len(outside) > 0
    # the filled groups are the non-zero-variance ones (0.75) before any all-right/all-wrong one
    spare = [r for rnd in picks.rounds for r in [[1.0, 0.0, 0.75, 0.5][int(i) % 4] for i in rnd]
             if not 0.4 <= r <= 0.6]
    assert outside == sorted(spare, key=lambda r: (r in (0.0, 1.0), abs(r - 0.5)))[:len(outside)]
    assert band.counts["bound_hit"] == 1


def test_selector_refill_rounds_are_multiples_for_equal_process_shares():
    rollout, calls = outcomes(lambda i: [0.0, 0.5][i % 2])
    selector = PromptSelector(Uniform(Arms(["a"] * 64), seed=0), dynamic=DynamicSampling(max_extra_rounds=20),
                              round_multiple=4, seed=0)
    selector.select(8, rollout)
    assert all(len(c) % 4 == 0 for c in calls[1:])


def test_predictive_filter_in_the_selector_skips_before_rollout_and_composes_with_dump():
    arms = Arms(["easy"] * 20 + ["hard"] * 20)
    rollout, calls = outcomes(lambda i: 1.0 if i < 20 else 0.5)
    selector = PromptSelector(DUMP(arms, seed=0), predictive=PredictiveFilter(40, p_easy=0.05, seed=0),
                              dynamic=DynamicSampling(max_extra_rounds=5), seed=0)
    for _ in range(30):
        selector.select(4, rollout)
    late = np.concatenate(calls[-10:])
    assert np.mean(late < 20) < 0.2                        # solved prompts are mostly skipped before rollout
    assert selector.predictive.skipped > 0
    assert selector.values()["predictive/p_easy"] > 0.05   # few easy groups left: it explores them again


def test_selector_state_round_trip_is_exact_and_all_or_nothing():
    def build(seed):
        return PromptSelector(CurriculumSampler(DUMP(Arms(["a"] * 10 + ["b"] * 10), seed=seed), batch_size=4,
                                                num_replicas=1, seed=seed),
                              predictive=PredictiveFilter(20, seed=seed), dynamic=DynamicSampling(), seed=seed)
    rollout, _ = outcomes(lambda i: [0.0, 0.5, 1.0][i % 3])
    a = build(0)
    for _ in range(4):
        a.select(4, rollout)
    b = build(7)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert [a.select(4, rollout).ids.tolist() for _ in range(3)] == [b.select(4, rollout).ids.tolist() for _ in range(3)]
    plain = PromptSelector(DUMP(Arms(["a"] * 10 + ["b"] * 10)))
    before = plain.state_dict()
    with pytest.raises(StateError, match="predictive"):
        plain.load_state_dict(a.state_dict())
    assert plain.state_dict()["sampler"]["rng"] == before["sampler"]["rng"]


def test_selector_rejects_rollouts_without_what_it_needs():
    selector = PromptSelector(Uniform(Arms(["a"] * 4)), dynamic=DynamicSampling())
    with pytest.raises(CadenceError, match="must return 'correct'"):
        selector.select(2, lambda ids: {"reward": np.zeros(2 * len(ids))})
    with pytest.raises(CadenceError, match="sizes"):
        selector.select(2, lambda ids: {"correct": np.zeros(3)})
    with pytest.raises(CadenceError, match="unknown keys"):
        selector.select(2, lambda ids: {"correct": np.zeros(2 * len(ids)), "score": np.zeros(2 * len(ids))})


# ---------------------------------------------------------------- PassRateFilter.fill
def test_pass_rate_fill_never_keeps_a_prompt_twice_unless_the_pool_is_exhausted():
    filt = PassRateFilter(Arms(["a"] * 12), seed=0)
    for _ in range(20):
        fill = filt.fill(8, lambda ids: np.tile([1.0, 0.0], (len(ids), 1)), chunk=5)
        assert len(set(fill.kept.tolist())) == len(fill.kept) == 8 and fill.repeated == 0
    tiny = PassRateFilter(Arms(["a"] * 3), seed=0)
    with pytest.warns(UserWarning, match="ran out of prompts"):
        fill = tiny.fill(5, lambda ids: np.tile([1.0, 0.0], (len(ids), 1)), chunk=2)
    assert fill.repeated > 0 and len(fill.kept) == 5


# ---------------------------------------------------------------- length budget
def test_length_budget_schedule_reward_and_prompt():
    budget = LengthBudget("step(peak=16, every=50%, gamma=0.5)", correct_weight=1.0, length_weight=1.0)
    clock = Clock(budget=10)
    assert budget(clock) == 16.0
    clock.advance(5)
    assert budget(clock) == 8.0
    assert budget.reward([1, 0], [8, 12], 8.0).tolist() == [2.0, 0.5]
    assert budget.prompt("2+2=", 7.6) == "2+2= Use at most 8 tokens."
    fn = budget.reward_function(lambda completions, answer, **kw: [float(c == a) for c, a in zip(completions, answer)])
    got = fn(completions=["4", "5"], completion_ids=[[1, 2], [1, 2, 3, 4]], answer=["4", "4"], length_budget=[2, 2])
    assert got == [2.0, 0.0]
    assert triangular([0, 2, 4, 5], 2).tolist() == [0.0, 1.0, 0.0, 0.0]
    with pytest.raises(CadenceError, match="needs the 'length_budget' column"):
        fn(completions=["4"], completion_ids=[[1]], answer=["4"])
    with pytest.raises(CadenceError, match=">= 1"):
        LengthBudget("constant(0.5)")(clock)
    with pytest.raises(CadenceError, match="budget"):
        LengthBudget("constant(8)", template="no placeholder")


def test_selector_over_a_without_replacement_sampler_runs_epoch_after_epoch():
    sampler = CurriculumSampler(Uniform(Arms(["a"] * 6), seed=0), batch_size=4, replacement=False, num_replicas=1)
    selector = PromptSelector(sampler)
    rollout, calls = outcomes(lambda i: 0.5)
    for _ in range(6):
        picks = selector.select(4, rollout)
        assert len(set(picks.ids.tolist())) == 4
    assert sampler.epoch >= 3                       # epochs ended and restarted instead of stopping the run
