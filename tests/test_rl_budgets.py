"""Budget knobs: knapsack rollout allocation and the length-aware reward on a budget schedule."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cadence import Clock
from cadence.errors import CadenceError, StateError
from cadence.labs.rl.budgets import FixedAllocation, KnapsackAllocation, LengthReward, informative_chance, triangular


def allocation(rates: list[float], group: int) -> tuple[KnapsackAllocation, np.ndarray]:
    n = len(rates)
    alloc = KnapsackAllocation(np.arange(n), n, group)
    alloc.attempts = np.full(n, 1e6)
    alloc.successes = np.asarray(rates) * 1e6
    return alloc, np.arange(n)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12), st.integers(2, 10))
def test_knapsack_spends_the_total_and_expects_more_informative_groups(rates, group):
    alloc, items = allocation(rates, group)
    sizes = alloc.sizes(items)
    assert sizes.sum() == group * len(items)
    assert np.all((sizes == 0) | ((sizes >= 2) & (sizes <= 4 * group)))
    p = alloc.pass_rates(items)
    expected = informative_chance(p, sizes).sum()
    assert expected >= informative_chance(p, np.full(len(p), group)).sum() - 1e-9


def test_knapsack_moves_answers_from_settled_prompts_to_open_ones():
    alloc, items = allocation([0.999, 0.5, 0.05], group=8)
    sizes = alloc.sizes(items)
    assert sizes[0] < 8 and sizes[2] > sizes[1]


def test_knapsack_learns_pass_rates_and_resumes():
    from cadence.labs.rl.groups import Groups

    alloc = KnapsackAllocation(np.array([0, 0, 1]), 2, 4)
    groups = Groups(np.array([0, 2]), np.array([2, 2]), None, np.array([1.0, 1.0, 0.0, 0.0]),
                    np.zeros(4), np.zeros(4), np.zeros(4))
    alloc.observe(groups)
    assert alloc.pass_rates(np.array([1, 2])).tolist() == [0.75, 0.25]
    fresh = KnapsackAllocation(np.array([0, 0, 1]), 2, 4)
    fresh.load_state_dict(alloc.state_dict())
    assert fresh.pass_rates(np.array([1, 2])).tolist() == [0.75, 0.25]
    with pytest.raises(StateError):
        KnapsackAllocation(np.array([0, 1, 2]), 3, 4).load_state_dict(alloc.state_dict())
    with pytest.raises(StateError):
        FixedAllocation(4).load_state_dict(alloc.state_dict())
    with pytest.raises(CadenceError):
        KnapsackAllocation(np.array([0]), 1, 4, min_group=1)


def test_triangular_length_reward():
    got = triangular(np.array([0.0, 3.0, 6.0, 9.0, 12.0, 20.0]), 6.0)
    assert np.allclose(got, [0.0, 0.5, 1.0, 0.5, 0.0, 0.0])


def test_length_reward_follows_its_budget_schedule():
    reward = LengthReward("step(peak=16, every=25%, gamma=0.5)", correct_weight=1.0, length_weight=1.0)
    clock = Clock(budget=100)
    correct, lengths = np.array([1.0, 0.0]), np.array([16.0, 4.0])
    assert reward(correct, lengths, clock).tolist() == [2.0, 0.25]
    clock.advance(50)   # budget now 4 tokens
    assert reward(correct, lengths, clock).tolist() == [1.0, 1.0]
    with pytest.raises(CadenceError, match=">= 1"):
        LengthReward("constant(0.5)")(correct, lengths, clock)
