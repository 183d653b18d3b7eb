"""The multi-power law: its loss-drop term by hand and by the double sum, saturation, the fit, the
WSD optimiser on it, and saving/loading."""

import numpy as np
import pytest

import cadence.forecast.multipower as multipower
from cadence.errors import CadenceError, StateError
from cadence.forecast import (AnnealingLaw, MultiPowerLaw, RunLog, fit_law, law_from_dict, loss_drop, lr_per_step,
                              optimize_wsd, warmup_end)
from cadence.forecast.multipower import WarmupRiseMultiPowerLaw
from cadence.forecast.multipower_fit import search_multi_power
from cadence.schedules import WSD

TRUTH = MultiPowerLaw(L0=1.2, A=0.6, alpha=0.5, B=0.5, C=40.0, beta=0.6, gamma=0.4, lr_ref=2e-3, steps_ref=300)


def naive_loss_drop(lr: np.ndarray, law: MultiPowerLaw, warmup_rise: bool = False) -> np.ndarray:
    """LD(t) by the double sum of the definition, in the law's units, drops counted after the warmup
    (or, with ``warmup_rise``, over every step: the rise as negative drops)."""
    u = lr / law.lr_ref
    first = 1 if warmup_rise else warmup_end(u)
    out = []
    for t in range(len(u)):
        total = 0.0
        for k in range(max(first, 1), t + 1):
            area = u[k: t + 1].sum() / law.steps_ref
            x = max(u[k], 1e-12) ** -law.gamma * area
            total += (u[k - 1] - u[k]) * (1 - (law.C * x + 1) ** -law.beta)
        out.append(law.B * total)
    return np.array(out)


def forward_part(law: MultiPowerLaw, lr: np.ndarray) -> np.ndarray:
    """``L0 + A·S1^(−α)``: the law without its loss drop."""
    with np.errstate(divide="ignore"):
        return law.L0 + law.A * (np.cumsum(lr) / (law.lr_ref * law.steps_ref)) ** -law.alpha


def test_a_constant_schedule_has_no_loss_drop() -> None:
    lr = lr_per_step("warmup(constant(2e-3), 20 steps)", 300)
    np.testing.assert_array_equal(loss_drop(lr, 0.5, 40.0, 0.6, 0.4, lr_ref=2e-3, steps_ref=300), np.zeros(300))
    np.testing.assert_allclose(TRUTH.predict(lr), forward_part(TRUTH, lr), rtol=1e-12)


def test_a_single_drop_gives_b_delta_g_by_hand() -> None:
    lr = np.concatenate([np.full(100, 2e-3), np.full(200, 0.5e-3)])  # Δ = 0.75 in units of lr_ref at step 101
    pred = TRUTH.predict(lr)
    for t in (101, 150, 300):
        area = 0.25 * (t - 100) / 300  # S_101(t) = Σ_{τ=101..t} u_τ, normalised by steps_ref
        g = 1 - (40.0 * 0.25 ** -0.4 * area + 1) ** -0.6
        assert forward_part(TRUTH, lr)[t - 1] - pred[t - 1] == pytest.approx(0.5 * 0.75 * g, rel=1e-12)
    assert np.all(pred[:100] == forward_part(TRUTH, lr)[:100])


def test_vectorised_loss_drop_matches_the_double_sum_in_chunks(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    lr = np.concatenate([np.linspace(2e-4, 2e-3, 8), rng.uniform(0.0, 2e-3, 40), np.full(5, 2e-3), np.zeros(3)])
    expected = naive_loss_drop(lr, TRUTH)
    ld = loss_drop(lr, TRUTH.B, TRUTH.C, TRUTH.beta, TRUTH.gamma, lr_ref=TRUTH.lr_ref, steps_ref=TRUTH.steps_ref)
    np.testing.assert_allclose(ld, expected, rtol=1e-10, atol=1e-14)
    monkeypatch.setattr(multipower, "_CHUNK_TERMS", 50)  # a few rows at a time
    chunked = loss_drop(lr, TRUTH.B, TRUTH.C, TRUTH.beta, TRUTH.gamma, lr_ref=TRUTH.lr_ref, steps_ref=TRUTH.steps_ref)
    np.testing.assert_allclose(chunked, expected, rtol=1e-10, atol=1e-14)
    assert np.all(np.isfinite(TRUTH.predict(lr)[1:]))  # zero LRs give no NaN


def test_the_credit_of_a_drop_saturates_at_b_delta() -> None:
    """Held at the lower LR, a drop's credit grows, ever more slowly, towards B·Δ (the annealing
    law's C·S2 instead grows without bound)."""
    credits = []
    for hold in (10, 100, 1000, 100_000):
        lr = np.concatenate([np.full(50, 2e-3), np.full(hold, 1e-3)])
        credits.append(float(forward_part(TRUTH, lr)[-1] - TRUTH.predict(lr)[-1]))
    assert credits == sorted(credits) and credits[-1] <= 0.5 * 0.5
    assert credits[-1] == pytest.approx(0.5 * 0.5, rel=0.02)
    gains = np.diff(credits[:3])
    assert gains[1] < gains[0]


def test_longer_wsd_decays_earn_ever_less_extra_credit() -> None:
    """The loss drop of a WSD cooldown is bounded by B·(peak − end), and each extra stretch of
    decay earns less than the one before (per unit of decay fraction)."""
    fractions = (0.1, 0.2, 0.4, 0.8)
    lrs = [lr_per_step(WSD(peak=2e-3, warmup="10 steps", decay=f, shape="linear"), 300) for f in fractions]
    drops = np.array([float(forward_part(TRUTH, lr)[-1] - TRUTH.predict(lr)[-1]) for lr in lrs])
    assert np.all(drops < TRUTH.B) and np.all(np.diff(drops) > 0)
    assert np.all(np.diff(np.diff(drops) / np.diff(fractions)) < 0)


def synthetic(spec: str, every: int = 10) -> RunLog:
    """Every step's LR, the law's loss at every ``every``-th step."""
    lr = lr_per_step(spec, 300)
    loss = np.full(300, np.nan)
    loss[every - 1:: every] = TRUTH.predict(lr)[every - 1:: every]
    return RunLog(np.arange(1, 301), lr, loss=loss, name=spec)


FIT_SPECS = ("warmup(constant(2e-3), 10 steps)", "warmup(cosine(peak=2e-3), 10 steps)",
             "wsd(peak=2e-3, warmup=10 steps, decay=30%, shape=linear)")
HELD_OUT = ("warmup(linear(peak=2e-3), 10 steps)", "wsd(peak=2e-3, warmup=10 steps, decay=10%, shape=1-sqrt)",
            "warmup(step(peak=2e-3, every=30%, gamma=0.3), 10 steps)")


def test_fit_recovers_the_law_that_made_the_curves() -> None:
    """Noiseless curves of three schedules (a constant and a cosine alone leave the drop constants
    poorly identified, see docs/forecast.md) give back all seven constants."""
    fit = fit_law([synthetic(s) for s in FIT_SPECS], law="multi-power", skip=0.1)
    law = fit.law
    assert isinstance(law, MultiPowerLaw)
    assert max(fit.rms_rel_error.values()) < 1e-5
    for name in ("L0", "A", "alpha", "B", "C", "beta", "gamma"):
        assert getattr(law, name) == pytest.approx(getattr(TRUTH, name), rel=0.01), name
    for spec in HELD_OUT:
        assert law.final_loss(spec, 300) == pytest.approx(TRUTH.final_loss(spec, 300), rel=1e-3), spec


def test_fit_law_rejects_unknown_laws_and_a_momentum_for_multi_power() -> None:
    runs = [synthetic(s) for s in FIT_SPECS[:2]]
    with pytest.raises(CadenceError, match="unknown law"):
        fit_law(runs, law="chinchilla")
    with pytest.raises(CadenceError, match="annealing law only"):
        fit_law(runs, law="multi-power", lam=0.9)


def test_final_losses_of_scaled_schedules_match_predict() -> None:
    lr = lr_per_step("wsd(peak=2e-3, warmup=10 steps, decay=25%, shape=1-sqrt)", 300)
    scales = np.array([0.3, 0.7, 1.0, 1.5])
    expected = [TRUTH.predict(s * lr)[-1] for s in scales]
    np.testing.assert_allclose(TRUTH.final_losses(lr, scales), expected, rtol=1e-12)


def test_wsd_optimiser_runs_on_the_multi_power_law() -> None:
    fractions, shapes = (0.05, 0.1, 0.2, 0.4), ("linear", "1-sqrt")
    best = min((TRUTH.final_loss(WSD(peak=2e-3, decay=f, shape=s), 300), s) for f in fractions for s in shapes)
    choice = optimize_wsd(TRUTH, 300, fractions=fractions, shapes=shapes, scales=(1.0,))
    assert choice.shape == best[1] and choice.predicted_final_loss <= best[0] + 1e-12
    assert choice.predicted_final_loss == pytest.approx(TRUTH.final_loss(choice.schedule, 300), rel=1e-12)


def test_law_round_trips_and_rejects_bad_values() -> None:
    assert law_from_dict(TRUTH.to_dict()) == TRUTH
    assert MultiPowerLaw.from_dict(TRUTH.to_dict()) == TRUTH
    with pytest.raises(StateError, match="kind"):
        law_from_dict({"kind": "something else"})
    with pytest.raises(StateError, match="multi-power"):
        MultiPowerLaw.from_dict(AnnealingLaw(1.0, 1.0, 0.5, 0.1, 0.9, 1e-3, 10).to_dict())
    with pytest.raises(CadenceError, match="beta"):
        MultiPowerLaw(L0=1.0, A=1.0, alpha=0.5, B=0.1, C=1.0, beta=-0.1, gamma=0.5, lr_ref=1e-3, steps_ref=10)


RISE = WarmupRiseMultiPowerLaw(L0=1.2, A=0.6, alpha=0.5, B=0.5, C=40.0, beta=0.6, gamma=0.4, lr_ref=2e-3,
                               steps_ref=300)


def test_the_warmup_rise_form_sums_every_lr_change_by_the_double_sum() -> None:
    """The released code's form: the warmup's rise counts as negative drops, raising the loss by
    B·Σ(rise)·G, and the same constants in the paper-text form leave it out."""
    lr = np.concatenate([np.linspace(1e-4, 2e-3, 12), np.full(30, 2e-3), np.linspace(2e-3, 2e-4, 20), np.zeros(3)])
    forms = {False: TRUTH, True: RISE}
    for rise, law in forms.items():
        expected = forward_part(law, lr) - naive_loss_drop(lr, law, warmup_rise=rise)
        np.testing.assert_allclose(law.predict(lr), expected, rtol=1e-10)
        at = np.array([5, 40, 65])
        np.testing.assert_allclose(law.predict(lr, at), expected[at - 1], rtol=1e-10)
        scales = np.array([0.5, 1.0, 2.0])
        np.testing.assert_allclose(law.final_losses(lr, scales), [law.predict(s * lr)[-1] for s in scales],
                                   rtol=1e-10)
    for law in forms.values():  # other units, same predictions, same form
        other = law.in_units(1.0, 1.0)
        assert type(other) is type(law) and other.B == pytest.approx(law.B / law.lr_ref)
        np.testing.assert_allclose(other.predict(lr), law.predict(lr), rtol=1e-10)
    # just after the warmup the rise's term is B·(Σ rise)·G, with every G in (0, 1): a higher loss
    extra = RISE.predict(lr)[15] - TRUTH.predict(lr)[15]
    assert 0 < extra < RISE.B * (2e-3 - 1e-4) / RISE.lr_ref


def test_a_warmup_rise_fit_recovers_the_constants_that_made_the_curves() -> None:
    specs = [lr_per_step(s, 300) for s in FIT_SPECS]
    at = [np.arange(30, 301, 10)] * 3
    [(_, law)] = search_multi_power(specs, at, [RISE.predict(lr)[a - 1] for lr, a in zip(specs, at)], delta=1e-3,
                                    lr_ref=2e-3, steps_ref=300, warmup_rise=True)
    assert isinstance(law, WarmupRiseMultiPowerLaw)
    for name in ("L0", "A", "alpha", "B", "C", "beta", "gamma"):
        assert getattr(law, name) == pytest.approx(getattr(RISE, name), rel=0.01), name


def test_the_warmup_rise_law_round_trips_and_is_not_read_as_the_other_form() -> None:
    assert law_from_dict(RISE.to_dict()) == RISE and isinstance(law_from_dict(RISE.to_dict()), WarmupRiseMultiPowerLaw)
    with pytest.raises(StateError, match="multi-power"):
        MultiPowerLaw.from_dict(RISE.to_dict())
    with pytest.raises(CadenceError, match="gamma"):
        WarmupRiseMultiPowerLaw(L0=1.0, A=1.0, alpha=0.5, B=0.1, C=1.0, beta=0.1, gamma=float("nan"), lr_ref=1e-3,
                                steps_ref=10)
