"""The published curves, the paper's protocol on them, the fast fit's pieces, the leave-one-out
choice and the fitted-regime warnings."""

import re
import warnings

import numpy as np
import pytest

from cadence.cli import main
from cadence.clock import Axis
from cadence.errors import CadenceError
from cadence.forecast import AnnealingLaw, MultiPowerLaw, RunLog, lr_per_step
from cadence.forecast.fit import FitTarget, fit_law
from cadence.forecast.multipower import loss_drop
from cadence.forecast.published import (FIT_CURVES, PUBLISHED, SHIPPED, curves_dir, load_curves, prediction_errors,
                                        published_benchmark, released_law, schedule_spec)
from cadence.forecast.regime import ForecastWarning, Regime
from cadence.schedules.base import as_schedule


@pytest.mark.parametrize("name", list(SHIPPED))
def test_every_spec_reproduces_the_logged_lr_column(name) -> None:
    folder = curves_dir(name)
    files = sorted(folder.glob("*.csv"))
    assert len(files) == 9
    for path in files:
        log = RunLog.read(path)
        spec, budget = schedule_spec(path.stem)
        schedule, axis = as_schedule(spec), Axis("steps", float(budget))
        values = np.array([schedule.value(float(s), axis) for s in log.step])
        np.testing.assert_allclose(values, log.lr, rtol=1e-12, err_msg=path.stem)
        # the law sees the same LR: the one the step after each logged step uses
        lr = lr_per_step(spec, budget)
        inside = log.step < budget
        np.testing.assert_allclose(lr[log.step[inside]], log.lr[inside], rtol=1e-12)


def test_the_warmup_is_linear_from_zero_and_the_decays_end_on_the_floor() -> None:
    for name in ("cosine_24000", "wsd_20000_24000", "wsdld_20000_24000", "wsdcon_3"):
        spec, budget = schedule_spec(name)
        lr = lr_per_step(spec, budget)
        assert lr[0] == 0.0 and lr[1080] == pytest.approx(1.5e-4) and lr[2160] == pytest.approx(3e-4)
        assert lr[-1] == pytest.approx(3e-5, rel=1e-2)
    with pytest.raises(CadenceError, match="no known schedule"):
        schedule_spec("rex_24000")


def test_the_split_is_the_papers_and_rows_at_the_budget_are_dropped(tmp_path) -> None:
    curves = load_curves("multipower-100m")
    assert FIT_CURVES == ("cosine_24000", "constant_24000", "wsdcon_9")
    assert sorted(c.name for c in curves if c.fitted) == sorted(FIT_CURVES)
    assert sorted(c.name for c in curves if not c.fitted) == ["constant_72000", "cosine_72000", "wsd_20000_24000",
                                                              "wsdcon_18", "wsdcon_3", "wsdld_20000_24000"]
    text = (curves_dir("multipower-25m") / "constant_24000.csv").read_text()
    for name in FIT_CURVES:
        (tmp_path / f"{name}.csv").write_text(text + "24000,0.0003,3.3\n")
    (tmp_path / "other.csv").write_text("step,lr,loss\n10,1e-3,4.0\n20,1e-3,3.9\n")
    loaded = {c.name: c for c in load_curves(tmp_path)}
    assert loaded["constant_24000"].target.steps.max() == 23936  # the 24,000-step row is dropped
    other = loaded["other"]  # an unknown schedule: the logged LR, interpolated
    assert other.spec is None and not other.fitted and len(other.target.lr) == 20
    with pytest.raises(CadenceError, match="missing"):
        load_curves(tmp_path, fit=("nope",))
    with pytest.raises(CadenceError, match="neither a folder"):
        load_curves(tmp_path / "absent")


@pytest.mark.parametrize("name", list(SHIPPED))
def test_the_annealing_law_on_the_protocol_is_near_the_published_figures(name) -> None:
    """Measured (docs/forecast.md): 25M PredE 0.111% all / 0.126% held out; 100M in the table.
    Asserted with margin: within twice the paper's PredE, and WorstE within 3x."""
    bench = published_benchmark(name, ("annealing",))
    scores = bench.scores["annealing"]
    published_pred, published_worst = PUBLISHED[name]
    for held_out in (False, True):
        pred_e, worst_e = scores.summary(held_out_only=held_out)
        assert pred_e < 2 * published_pred and worst_e < 3 * published_worst
    assert [c.name for c in scores.curves if c.fitted] == sorted(FIT_CURVES)
    flagged = {c.name for c in scores.curves if c.outside}
    assert flagged == {"constant_72000", "cosine_72000"}  # 3x the longest fitted run


def test_the_multi_power_law_on_the_protocol_is_near_the_published_figures() -> None:
    bench = published_benchmark("multipower-25m", ("multi-power",), choose="objective")
    pred_e, worst_e = bench.scores["multi-power"].summary()
    assert pred_e < 2 * PUBLISHED["multipower-25m"][0] and worst_e < 3 * PUBLISHED["multipower-25m"][1]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_released_fit_gives_the_published_figures_as_held_out_means(name) -> None:
    """The paper's published constants, in its code's form (warmup rise in the loss drop), give its
    published figures as the means over the six held-out curves of PredE and of WorstE (WorstE
    within 0.02 points: cadence's first post-warmup area differs from the code's by one step);
    the same constants in the paper-text form are off by over 1%."""
    law = released_law(name)
    curves = load_curves(name)
    scores = [prediction_errors(law.predict(c.target.lr, c.target.steps), c.target.loss) for c in curves
              if not c.fitted]
    assert np.mean([s[0] for s in scores]) == pytest.approx(PUBLISHED[name][0], abs=2e-5)
    assert np.mean([s[1] for s in scores]) == pytest.approx(PUBLISHED[name][1], abs=2e-4)
    assert max(s[1] for s in scores) > 1.5 * PUBLISHED[name][1]  # not the largest WorstE
    text_form = MultiPowerLaw(**{k: v for k, v in vars(law).items()})
    c = curves[0]
    assert prediction_errors(text_form.predict(c.target.lr, c.target.steps), c.target.loss)[0] > 0.01
    with pytest.raises(CadenceError, match="no released fit"):
        released_law("schaipp-124m")


def test_binned_drops_match_the_exact_sum_and_predictions_at_chosen_steps_match_all_steps() -> None:
    law = MultiPowerLaw(L0=2.0, A=0.5, alpha=0.5, B=0.6, C=300.0, beta=0.5, gamma=0.6, lr_ref=3e-4, steps_ref=4000)
    lr = lr_per_step("warmup(cosine(peak=3e-4, floor=0.1), 200 steps)", 4000) + \
        lr_per_step("wsd(peak=1e-5, decay=10%, shape=linear)", 4000)
    at = np.arange(150, 4001, 37)
    exact = loss_drop(lr, law.B, law.C, law.beta, law.gamma, lr_ref=law.lr_ref, steps_ref=law.steps_ref, at=at)
    binned = loss_drop(lr, law.B, law.C, law.beta, law.gamma, lr_ref=law.lr_ref, steps_ref=law.steps_ref, at=at,
                       ratio=1.05)
    assert np.max(np.abs(binned - exact)) < 1e-4 * np.max(exact) and np.max(exact) > 0.1
    np.testing.assert_allclose(law.predict(lr, at), law.predict(lr)[at - 1], rtol=1e-12)
    anneal = AnnealingLaw(L0=2.0, A=0.5, alpha=0.5, C=0.3, lam=0.99, lr_ref=3e-4, steps_ref=4000)
    np.testing.assert_allclose(anneal.predict(lr, at), anneal.predict(lr)[at - 1], rtol=1e-12)


TRUTH = AnnealingLaw(L0=1.2, A=0.6, alpha=0.4, C=0.5, lam=0.95, lr_ref=1e-3, steps_ref=600)
SPECS = ("constant(1e-3)", "cosine(peak=1e-3, floor=0.1)", "wsd(peak=1e-3, decay=30%, floor=0.1)")


def noisy_runs(seed: int = 0) -> list[FitTarget]:
    rng = np.random.default_rng(seed)
    runs = []
    for spec in SPECS:
        lr = lr_per_step(spec, 600)
        at = np.arange(30, 601, 10)
        runs.append(FitTarget(at, TRUTH.predict(lr, at) * (1 + 2e-3 * rng.standard_normal(len(at))), lr, spec))
    return runs


def test_leave_one_out_keeps_the_good_fit_that_predicts_left_out_runs_best() -> None:
    runs = noisy_runs()
    lams = (0.9, 0.95, 0.99)
    chosen = fit_law(runs, lams=lams)
    by_objective = fit_law(runs, lams=lams, choose="objective")
    assert chosen.candidates >= 2 and len(chosen.loo_laws) == 3
    # the choice, recomputed independently: refit from scratch at each λ without each run
    scores = {}
    for lam in lams:
        full = fit_law(runs, lam=lam, choose="objective")
        if full.objective > 1.1 * by_objective.objective:
            continue
        errors = []
        for i, held in enumerate(runs):
            refit = fit_law(runs[:i] + runs[i + 1:], lam=lam, choose="objective").law
            errors.append(np.mean(np.abs(refit.predict(held.lr, held.steps) - held.loss) / held.loss))
        scores[lam] = np.mean(errors)
    assert chosen.law.lam == min(scores, key=scores.get)
    assert chosen.loo_score == pytest.approx(scores[chosen.law.lam], rel=1e-3)
    # the band holds the law's own prediction and has width
    lr = lr_per_step("wsd(peak=1e-3, decay=10%, floor=0.1)", 600)
    low, high = chosen.band(lr)
    mid = chosen.law.predict(lr)
    assert np.all(low <= mid) and np.all(mid <= high) and (high - low)[-1] > 0
    one = fit_law(runs[:1], lams=lams)
    assert one.loo_laws == () and np.isnan(one.loo_score)
    np.testing.assert_array_equal(*one.band(lr))
    with pytest.raises(CadenceError, match="choose"):
        fit_law(runs, choose="best")


@pytest.mark.parametrize("spec, steps, finding", [
    ("constant(2e-3)", 600, "peak LR"),
    ("join(cosine(peak=1e-3, floor=0.1), cosine(peak=1e-3, floor=0.1), at=[50%])", 600, "re-warms"),
    ("cosine(peak=1e-3, floor=0.01)", 600, "floor"),
    ("cosine(peak=1e-3, floor=0.1)", 1500, "steps >"),
])
def test_predictions_outside_the_fitted_regime_warn(spec, steps, finding) -> None:
    regime = Regime.of([lr_per_step(s, 600) for s in SPECS])
    assert regime.check(lr_per_step("warmup(wsd(peak=1e-3, decay=20%, floor=0.1), 5%)", 1100)) == []
    found = regime.check(lr_per_step(spec, steps))
    assert len(found) == 1 and finding in found[0]
    fit = fit_law(noisy_runs(), lam=0.95, choose="objective")
    with pytest.warns(ForecastWarning, match=finding):
        fit.predict(lr_per_step(spec, steps))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit.predict(lr_per_step(SPECS[1], 600))  # inside: no warning


def test_bench_forecast_curves_prints_the_protocol_table(tmp_path, capsys) -> None:
    assert main(["bench", "forecast", "--curves", "multipower-25m", "--law", "annealing",
                 "-o", str(tmp_path / "published.png")]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "wsdld_" in out and "held out" in out
    assert "annealing: all curves: PredE" in out and "(published fit: 0.110%, 0.409%; PredE" in out
    assert "annealing: held-out curves: PredE" in out
    assert "run envelope (interval(method='runs')) on the held-out curves" in out
    assert "last-point final-loss interval (final_interval(lr, 'last'))" in out
    assert re.search(r"(yes|no) / (yes|no) / (yes|no)", out)  # final in: pooled / run envelope / last-point
    assert (tmp_path / "published.png").stat().st_size > 10_000
    assert main(["bench", "forecast", "--curves", str(tmp_path / "absent")]) == 2
    assert "neither a folder" in capsys.readouterr().err


def test_bench_forecast_has_a_tiny_lab_size(tmp_path, capsys) -> None:
    assert main(["bench", "forecast", "--size", "tiny", "--steps", "40", "--law", "annealing", "--lam", "0.9",
                 "--no-progress", "--log-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fitted on constant + cosine (40 steps each)" in out and "annealing: accuracy" in out
    record = (tmp_path / "constant.json").read_text()
    assert '"d_model": 32' in record and '"n_layer": 1' in record  # the tiny lab model


def test_forecast_cli_prints_the_band_and_warns_outside_the_fitted_regime(tmp_path, capsys) -> None:
    paths = []
    for i, run in enumerate(noisy_runs()):
        paths.append(str(tmp_path / f"run{i}.csv"))
        RunLog(run.steps, run.lr[run.steps - 1], loss=run.loss).write(paths[-1])
    assert main(["forecast", "--fit", *paths, "--lam", "0.95", "--schedule", "cosine(peak=1e-3, floor=0.1)",
                 "constant(3e-3)", "--steps", "600"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "band: the range of the leave-one-out refits' predictions" in out
    assert "warning: constant(3e-3): outside the fitted regime: peak LR 0.003 > fitted 0.001" in out
    assert "warning: cosine(" not in out
