"""The WSD tree planner: compute bound, branch points, and schedules that agree with the trunk."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cadence.clock import Axis
from cadence.errors import CadenceError
from cadence.schedules.shapes import decay as decay_ratio
from cadence.spec import parse
from cadence.tree import TreePlan, plan_tree


def _values(spec: str, total: int, steps: range) -> list[float]:
    s, axis = parse(spec), Axis("steps", total)
    return [s.value(t, axis) for t in steps]


@settings(max_examples=60, deadline=None)
@given(budgets=st.lists(st.integers(50, 5000), min_size=1, max_size=6, unique=True),
       d=st.floats(0.02, 0.9))
def test_total_compute_never_exceeds_the_goal(budgets, d):
    plan = plan_tree(budgets, decay=d, peak=1.0)
    assert plan.total_compute <= plan.compute_bound + 1e-9
    assert plan.trunk_end == max(m.source_step for m in plan.models)
    for m in plan.models:
        assert m.source_step + m.decay_steps == m.budget
        assert m.decay_steps == math.floor(d * m.budget)


def test_goal_is_met_exactly_when_decays_are_whole_steps():
    plan = plan_tree([1000, 2000, 4000, 8000], decay=0.2, peak=3e-3, warmup=100)
    assert plan.total_compute == 0.8 * 8000 + 0.2 * 15000
    assert plan.trunk_checkpoints == (800, 1600, 3200, 6400)
    assert plan.dedicated_compute == 15000


def test_branch_schedule_equals_the_trunk_until_the_branch_point_then_decays_to_the_floor():
    plan = plan_tree([300, 600], decay=0.25, peak=2e-3, warmup=30, floor=0.05)
    for m in plan.models:
        trunk = _values(plan.trunk_schedule, m.budget, range(m.source_step + 1))
        branch = _values(m.schedule, m.budget, range(m.source_step + 1))
        assert branch == trunk
        after = _values(m.schedule, m.budget, range(m.source_step, m.budget + 1))
        assert after[0] == pytest.approx(2e-3) and after[-1] == pytest.approx(2e-3 * 0.05)
        mid = m.source_step + m.decay_steps // 4
        assert after[m.decay_steps // 4] == pytest.approx(2e-3 * decay_ratio("1-sqrt", (mid - m.source_step) / m.decay_steps, 0.05))
        assert all(a >= b for a, b in zip(after, after[1:]))


def test_wsds_models_are_prefixes_of_one_run_that_jumps_back_to_the_peak():
    plan = plan_tree([200, 400, 800], decay=0.1, peak=1e-3, warmup=20, mode="wsd-s")
    assert plan.total_compute == 800 and plan.trunk_end == 0
    assert [m.source_step for m in plan.models] == [0, 200, 400]
    assert [m.parent for m in plan.models] == [None, 200, 400]
    last = plan.models[-1]
    for m in plan.models[:-1]:  # model k's schedule is the full chain's schedule up to B_k
        assert _values(m.schedule, m.budget, range(m.budget)) == _values(last.schedule, last.budget, range(m.budget))
        v = _values(last.schedule, last.budget, [m.budget - 1, m.budget, m.budget + 1])
        assert v[0] < 0.2e-3 and v[1] == v[2] == pytest.approx(1e-3)  # decayed, then straight back to the peak
    seg = _values(last.schedule, 800, range(400, 801))  # last segment: 40-step inverse-linear decay to 0.1
    s = 0.5
    assert seg[360 + 20] == pytest.approx(1e-3 / ((1 - s) + s / 0.1))


def test_plan_round_trips_through_a_dict():
    plan = plan_tree([100, 250], decay=0.2, peak=1e-3)
    assert TreePlan.from_dict(plan.to_dict()) == plan
    assert "bound" in plan.table()


@pytest.mark.parametrize("kwargs, match", [
    ({"budgets": [100, 100]}, "distinct"),
    ({"budgets": []}, "at least one"),
    ({"budgets": [100], "decay": 1.0}, "strictly between"),
    ({"budgets": [100], "decay": 0.0}, "strictly between"),
    ({"budgets": ["2M tokens"]}, "in steps"),
    ({"budgets": [100], "warmup": 90}, "runs into the cooldown"),
    ({"budgets": [4], "decay": 0.2}, "rounds to 0"),
    ({"budgets": [100], "mode": "cyclic"}, "mode"),
    ({"budgets": [100], "shape": "inverse-linear", "floor": 0.0}, "floor"),
    ({"budgets": [100], "peak": float("nan")}, "peak"),
])
def test_bad_plans_are_refused_with_the_reason(kwargs, match):
    budgets = kwargs.pop("budgets")
    with pytest.raises(CadenceError, match=match):
        plan_tree(budgets, **kwargs)
