"""The factor-free final-loss interval of benchmarks/final_interval_t.py: its width by hand, and
its coverage at the nominal level when the misses really are normal."""

from __future__ import annotations

import numpy as np

from benchmark_script import load_script


def test_the_half_width_is_student_t_times_the_root_mean_square_miss() -> None:
    bench = load_script("final_interval_t")
    # t_{0.9, 3} = 1.637744 (tables); root mean square of ±0.01 is 0.01
    assert abs(bench.t_half_width(np.array([0.01, -0.01, 0.01])) - 0.01637744) < 1e-7
    assert abs(bench.t_half_width(np.array([0.03, 0.0, 0.0, 0.0]), level=0.9) - 2.131847 * 0.015) < 1e-6


def test_with_normal_misses_three_runs_cover_a_fourth_at_the_nominal_level() -> None:
    bench = load_script("final_interval_t")
    rng = np.random.default_rng(0)
    draws = rng.normal(0.0, 0.004, size=(20000, 4))
    inside = [abs(d[3]) <= bench.t_half_width(d[:3]) for d in draws]
    assert 0.79 < np.mean(inside) < 0.81  # 80% nominal; binomial sd 0.3%
    largest = np.mean(np.abs(draws[:, 3]) <= np.abs(draws[:, :3]).max(axis=1))
    assert 0.74 < largest < 0.76  # the largest of three misses: n/(n+1) = 75%
