"""The annealing law's areas, its warmup decision, and the LR sequence it reads from a schedule."""

import numpy as np
import pytest
import torch

from cadence import Clock
from cadence.errors import CadenceError, StateError
from cadence.forecast import AnnealingLaw, annealing_area, forward_area, lr_per_step, warmup_end
from cadence.optim import ScheduledLR


def naive_s2(lr: np.ndarray, lam: float, skip: int) -> np.ndarray:
    """S2 by the double sum of arXiv 2408.11029, with Δ zeroed over the first ``skip`` steps."""
    n = len(lr)
    delta = [0.0] + [lr[i - 1] - lr[i] for i in range(1, n)]
    delta = [0.0 if i < skip else d for i, d in enumerate(delta)]
    return np.array([sum(delta[k] * lam ** (i - k) for i in range(s + 1) for k in range(i + 1)) for s in range(n)])


def test_areas_match_the_double_sum_definition() -> None:
    rng = np.random.default_rng(0)
    lr = np.concatenate([[1.0, 1.0], rng.uniform(0.1, 1.0, 30)])
    for lam in (0.0, 0.5, 0.95):
        np.testing.assert_allclose(annealing_area(lr, lam), naive_s2(lr, lam, warmup_end(lr)), atol=1e-12)
    np.testing.assert_allclose(forward_area(lr), np.cumsum(lr))


def test_s2_without_momentum_is_the_drop_from_the_peak() -> None:
    lr = lr_per_step("warmup(cosine(peak=2.0), 10 steps)", 100)
    s2 = annealing_area(lr, 0.0)
    peak_step = warmup_end(lr)
    np.testing.assert_allclose(s2[peak_step:], lr[peak_step - 1] - lr[peak_step:], atol=1e-12)


def test_warmup_is_left_out_of_s2_but_counted_in_s1() -> None:
    lr = lr_per_step("warmup(constant(1e-3), 20 steps)", 200)
    assert np.all(annealing_area(lr, 0.999) == 0.0)
    assert forward_area(lr)[19] == pytest.approx(lr[:20].sum()) and lr[:20].sum() < 20e-3


def test_rewarming_after_a_decay_lowers_s2() -> None:
    lr = np.concatenate([np.full(10, 1.0), np.full(10, 0.2), np.full(10, 1.0)])
    s2 = annealing_area(lr, 0.0)
    assert s2[15] == pytest.approx(0.8) and s2[-1] == pytest.approx(0.0)


def test_warmup_end_counts_the_initial_non_decreasing_stretch() -> None:
    assert warmup_end(np.array([0.1, 0.5, 1.0, 1.0, 0.5, 0.7])) == 4
    assert warmup_end(np.array([1.0, 0.5])) == 1
    assert warmup_end(np.ones(5)) == 5


def test_lr_per_step_matches_what_scheduled_lr_applies() -> None:
    spec, steps = "wsd(peak=1e-2, warmup=10%, decay=30%, shape=cosine)", 50
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.0)
    sched = ScheduledLR(opt, lr=spec, clock=Clock(budget=steps))
    applied = []
    for _ in range(steps):
        applied.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_array_equal(lr_per_step(spec, steps), applied)


def test_predict_is_the_law_and_is_infinite_before_any_lr() -> None:
    law = AnnealingLaw(L0=1.0, A=2.0, alpha=0.5, C=3.0, lam=0.9, lr_ref=2.0, steps_ref=10.0)
    lr = np.array([0.0, 2.0, 2.0, 1.0])
    s1 = np.cumsum(lr) / 20.0
    s2 = annealing_area(lr, 0.9) / 20.0
    pred = law.predict(lr)
    assert np.isinf(pred[0])
    np.testing.assert_allclose(pred[1:], 1.0 + 2.0 * s1[1:] ** -0.5 - 3.0 * s2[1:])


def test_law_round_trips_and_rejects_bad_values() -> None:
    law = AnnealingLaw(L0=1.0, A=2.0, alpha=0.5, C=3.0, lam=0.9, lr_ref=2.0, steps_ref=10.0)
    assert AnnealingLaw.from_dict(law.to_dict()) == law
    with pytest.raises(StateError, match="kind"):
        AnnealingLaw.from_dict({"L0": 1.0})
    with pytest.raises(CadenceError, match="alpha"):
        AnnealingLaw(L0=1.0, A=2.0, alpha=float("nan"), C=3.0, lam=0.9, lr_ref=2.0, steps_ref=10.0)
    with pytest.raises(CadenceError, match="lambda"):
        annealing_area(np.ones(3), 1.0)
    with pytest.raises(CadenceError):
        lr_per_step("wsd(peak=1e-3, warmup=500 steps)", 100)
