"""The WSD optimiser: it finds the law's best decay fraction, shape and peak scale, and says when it hit a bound."""

import numpy as np
import pytest

from cadence.errors import CadenceError
from cadence.forecast import AnnealingLaw, optimize_wsd
from cadence.schedules import WSD

LAW = AnnealingLaw(L0=1.0, A=0.6, alpha=0.5, C=0.35, lam=0.95, lr_ref=1e-3, steps_ref=300)


def brute_force(fractions, shapes, steps=300):
    return min(((LAW.final_loss(WSD(peak=1e-3, decay=f, shape=s), steps), f, s) for f in fractions for s in shapes))


def test_matches_a_brute_force_search_over_fraction_and_shape() -> None:
    fractions, shapes = (0.05, 0.1, 0.2, 0.3, 0.45, 0.6), ("linear", "1-sqrt", "cosine")
    best, f, s = brute_force(fractions, shapes)
    choice = optimize_wsd(LAW, 300, fractions=fractions, shapes=shapes, scales=(1.0,))
    assert choice.shape == s
    assert choice.predicted_final_loss <= best + 1e-12
    assert abs(choice.decay_fraction - f) <= 0.15  # refined between the grid neighbours
    assert choice.predicted_final_loss == pytest.approx(LAW.final_loss(choice.schedule, 300), rel=1e-12)


def test_an_interior_optimum_exists_for_the_decay_fraction() -> None:
    """Too short a decay gains little annealing, too long a one loses forward area: the law has a
    minimum strictly inside (0, 1), which the optimiser lands on without touching a bound."""
    choice = optimize_wsd(LAW, 300, scales=(1.0,))
    assert 0.02 < choice.decay_fraction < 0.6 and "decay_fraction" not in choice.at_bounds
    worse = [LAW.final_loss(WSD(peak=1e-3, decay=f, shape=choice.shape), 300) for f in (0.02, 0.6)]
    assert choice.predicted_final_loss < min(worse)


def test_peak_scale_runs_to_its_upper_bound_and_says_so() -> None:
    choice = optimize_wsd(LAW, 300, fractions=(0.2,), shapes=("linear",), scale_range=(0.5, 1.0))
    assert choice.peak_scale == pytest.approx(1.0) and "peak_scale" in choice.at_bounds
    assert choice.schedule.peak == pytest.approx(1e-3)


def test_bad_search_spaces_are_rejected() -> None:
    with pytest.raises(CadenceError, match="decay fractions"):
        optimize_wsd(LAW, 300, fractions=(0.0, 0.2))
    with pytest.raises(CadenceError, match="scale_range"):
        optimize_wsd(LAW, 300, scale_range=(1.0, 0.5))
    with pytest.raises(CadenceError, match="steps"):
        optimize_wsd(LAW, 1)
    assert np.isfinite(optimize_wsd(LAW, 300, warmup="10 steps", fractions=(0.2,), scales=(1.0,)).predicted_final_loss)
