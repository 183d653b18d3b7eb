"""The benchmark script runs every plan end to end at a tiny size (its figures come from the script)."""

from __future__ import annotations

import math

import pytest

from benchmark_script import load_script


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_every_plan_runs_and_reports_sane_figures(optimizer: str) -> None:
    bench = load_script("progressive_bench")
    setup = bench.Setup(depth=3, width=8, batch=16, budget=10, eval_every=5, target=0.0, optimizer=optimizer)
    for name, (_, budget_scale) in bench.PLANS.items():
        result = bench.run(setup, name, seed=0)
        assert result.curve[-1][0] == round(setup.budget * budget_scale), name
        assert result.steps_to_target == 5  # target 0 is reached at the first evaluation
        assert 0.0 <= result.final_accuracy <= 1.0 and result.seconds_per_step > 0
    assert math.isnan(bench.geometric_mean([math.nan])) and bench.geometric_mean([2.0, 8.0]) == pytest.approx(4.0)
