"""Forecasts users can trust: the leave-a-size-out evaluation, predictive intervals and transient windows."""

import numpy as np
import pytest

from cadence.errors import CadenceError
from cadence.forecast import AnnealingLaw, FitTarget, fit_law, lr_per_step
from cadence.forecast.evaluate import SCALES, Setting, held_out, size_out, trim
from cadence.forecast.fit import RUNS_INTERVAL_SCALE, residual_quantiles
from cadence.forecast.published import load_curves
from cadence.forecast.regime import transient_mask

TRUTH = AnnealingLaw(L0=1.2, A=0.6, alpha=0.4, C=0.5, lam=0.95, lr_ref=1e-3, steps_ref=600)
FITTED = ("constant(1e-3)", "cosine(peak=1e-3, floor=0.1)", "wsd(peak=1e-3, decay=30%, floor=0.1)")
HELD = ("linear(peak=1e-3, floor=0.1)", "wsd(peak=1e-3, decay=10%, floor=0.1)",
        "wsd(peak=1e-3, decay=50%, shape=cosine, floor=0.1)")


def noisy(spec: str, rng: np.random.Generator, noise: float = 2e-3) -> FitTarget:
    lr = lr_per_step(spec, 600)
    at = np.arange(30, 601, 5)
    return FitTarget(at, TRUTH.predict(lr, at) * (1 + noise * rng.standard_normal(len(at))), lr, spec)


@pytest.mark.parametrize("seed", [0, 2])
def test_the_interval_covers_its_nominal_level_on_a_law_with_known_noise(seed) -> None:
    rng = np.random.default_rng(seed)
    fit = fit_law([noisy(s, rng) for s in FITTED], lams=(0.9, 0.95, 0.99))
    inside = total = 0
    for spec in HELD:
        t = noisy(spec, rng)
        low, high = fit.interval(t.lr, t.steps, level=0.8, scale=1.0)
        pred = fit.law.predict(t.lr, t.steps)
        assert np.all(low < pred) and np.all(pred < high)
        for y, lo, hi in zip(t.loss, low, high):  # counted by hand
            inside += lo <= y <= hi
            total += 1
    assert 0.72 <= inside / total <= 0.88
    wider = fit.interval(t.lr, t.steps, level=0.95, scale=1.0)
    assert np.all(wider[0] <= low) and np.all(wider[1] >= high)


@pytest.mark.parametrize("seed", [0, 2])
def test_the_run_envelope_interval_covers_its_nominal_level_on_a_law_with_known_noise(seed) -> None:
    rng = np.random.default_rng(seed)
    fit = fit_law([noisy(s, rng) for s in FITTED], lams=(0.9, 0.95, 0.99))
    # by hand: the largest |10% or 90% quantile| of any one run's leave-one-out residuals, both sides
    q = max(abs(np.quantile(r, p)) for r in fit.loo_residuals for p in (0.1, 0.9))
    inside = total = 0
    for spec in HELD:
        t = noisy(spec, rng)
        low, high = fit.interval(t.lr, t.steps, level=0.8, scale=1.0, method="runs")
        pred = fit.law.predict(t.lr, t.steps)
        np.testing.assert_allclose(high / pred - 1, q, rtol=1e-9)
        np.testing.assert_allclose(low / pred - 1, -q, rtol=1e-9)
        for y, lo, hi in zip(t.loss, low, high):
            inside += lo <= y <= hi
            total += 1
    assert 0.75 <= inside / total <= 0.90
    default = fit.interval(t.lr, t.steps, method="runs")  # scale RUNS_INTERVAL_SCALE
    np.testing.assert_allclose(default[1] / pred - 1, RUNS_INTERVAL_SCALE * q, rtol=1e-9)
    with pytest.raises(CadenceError, match="method"):
        fit.interval(t.lr, t.steps, method="bootstrap")


def test_the_interval_needs_two_runs_and_a_level_in_range() -> None:
    rng = np.random.default_rng(0)
    one = fit_law([noisy(FITTED[0], rng)], lam=0.95)
    lr = lr_per_step(HELD[0], 600)
    with pytest.raises(CadenceError, match="two or more runs"):
        one.interval(lr)
    two = fit_law([noisy(s, rng) for s in FITTED[:2]], lam=0.95)
    with pytest.raises(CadenceError, match="level"):
        two.interval(lr, level=1.0)
    assert len(two.loo_residuals) == 2 and two.interval(lr)[0].shape == (600,)


def test_residual_quantiles_weigh_every_run_the_same() -> None:
    long, short = np.zeros(99), np.array([1.0])
    assert residual_quantiles([long, short], (0.4, 0.6)).tolist() == [0.0, 1.0]
    assert residual_quantiles([np.concatenate([long, short])], (0.6,)).tolist() == [0.0]


def test_transient_windows_follow_the_warmup_and_abrupt_drops_only() -> None:
    lr = lr_per_step("warmup(multistep(peak=1e-3, at=[50%], gamma=0.3), 100 steps)", 1000)
    steps = np.arange(1, 1001)
    mask = transient_mask(lr, steps)
    assert steps[mask].tolist() == [*range(101, 151), *range(551, 601)]
    smooth = lr_per_step("warmup(cosine(peak=1e-3, floor=0.1), 100 steps)", 1000)
    assert steps[transient_mask(smooth, steps)].tolist() == list(range(101, 151))
    assert not transient_mask(lr_per_step("cosine(peak=1e-3)", 1000), steps).any()


def test_leave_a_size_out_equals_a_hand_loop_over_fits() -> None:
    sets = ("multipower-25m", "multipower-100m")
    settings = (Setting(choose="objective"), Setting(choose="objective", skip=0.25))
    result = size_out(sets, settings, default=settings[0])
    criterion, runs_cover = {}, {}
    for name in sets:
        curves = load_curves(name)
        for setting in settings:
            fitted = [trim(c.target, setting.skip) for c in curves if c.fitted]
            fit = fit_law(fitted, choose="objective")
            law = fit.law
            q = max(abs(np.quantile(r, p)) for r in fit.loo_residuals for p in (0.1, 0.9))  # the run envelope
            pred_e, final, inside = [], [], {s: [] for s in SCALES}
            for c in curves:
                if not c.fitted:
                    t = c.target
                    pred = law.predict(t.lr, t.steps)
                    pred_e.append(np.mean(np.abs(pred - t.loss) / t.loss))
                    final.append(pred[-1] / t.loss[-1] - 1)
                    for s in SCALES:
                        inside[s].append(np.mean(np.abs(t.loss / pred - 1) <= s * q + 1e-12))
            got = result.scores[name][setting]
            np.testing.assert_allclose(got.pred_e, pred_e, rtol=1e-9)
            np.testing.assert_allclose(got.final, final, rtol=1e-9)
            criterion[name, setting] = np.mean(pred_e) + np.mean(np.abs(final))
            runs_cover[name, setting] = {s: np.mean(v) for s, v in inside.items()}
            for s in SCALES:
                assert got.mean_coverage(s, "runs") == pytest.approx(runs_cover[name, setting][s], abs=0.02)
    for d, (a, b) in zip(result.decisions, [sets, sets[::-1]]):
        assert (d.decided_on, d.judged_on) == (a, b)
        assert d.chosen == min(settings, key=lambda s: criterion[a, s])
        assert d.chosen_judged.criterion == pytest.approx(criterion[b, d.chosen], rel=1e-9)
        assert d.default_judged is result.scores[b][settings[0]]
        cover = runs_cover[a, d.chosen]
        assert abs(cover[d.runs_scale] - 0.8) <= min(abs(v - 0.8) for v in cover.values()) + 0.02
    with pytest.raises(CadenceError, match="two curve sets"):
        size_out(sets[:1], settings)


def test_excluded_transients_are_neither_fitted_nor_scored() -> None:
    curves = load_curves("multipower-25m")
    wsdcon = next(c for c in curves if c.name == "wsdcon_3")
    kept = trim(wsdcon.target, 0.0, exclude_transients=True)
    assert 8001 not in kept.steps and len(kept.steps) < len(wsdcon.target.steps)
    assert set(kept.steps) == set(wsdcon.target.steps[~transient_mask(wsdcon.target.lr, wsdcon.target.steps)])
    score = held_out(curves, Setting(choose="objective"), exclude_transients=True, scales=(1.0,))
    assert len(score.names) == 6 and 0 < score.mean_coverage(1.0) <= 1


def test_bench_forecast_prints_the_partial_run_table(tmp_path, capsys) -> None:
    import shutil

    from cadence.cli import main
    from cadence.forecast.published import curves_dir

    for name in ("cosine_24000", "constant_24000", "wsdcon_9", "wsdcon_3"):
        shutil.copy(curves_dir("multipower-25m") / f"{name}.csv", tmp_path)
    assert main(["bench", "forecast", "--curves", str(tmp_path), "--law", "annealing", "--partial"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "live forecast of the final loss" in out and "with the fitted curves" in out
    assert "no forecast" in out  # at 10% wsdcon_3 has no point after the warmup yet
    assert "covered" in out and "(n=1)" in out


def test_the_second_curve_family_is_checked_and_cited() -> None:
    from cadence.cli.forecast import OTHER_CURVE_SETS
    from cadence.forecast.published import OTHER, curves_dir

    assert OTHER_CURVE_SETS == tuple(OTHER)
    folder = curves_dir("schaipp-124m")
    readme = (folder.parent / "README.md").read_text()
    assert "arXiv 2501.18965" in readme and "Schaipp" in readme and "MIT" in readme
    licence = (folder.parent / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "Fabian Schaipp, Alexander Hägele" in licence
    curves = load_curves("schaipp-124m")
    assert len(curves) == 9 and sorted(c.name for c in curves if c.fitted) == sorted(OTHER["schaipp-124m"][1])
    for c in curves:
        t = c.target
        assert c.spec is None  # LRs from the log, not the Multi-Power Law paper's schedules
        assert t.lr.max() == pytest.approx(1e-3) and np.argmax(t.lr >= 0.999e-3) + 1 == 300  # 300-step warmup
        assert np.all(np.diff(t.steps) == 200) and t.steps[0] == min(s for s in range(200, 50001, 200) if s > 0.05 * len(t.lr))
        assert np.all((t.loss > 2.5) & (t.loss < 8)) and t.loss[-1] < t.loss[len(t.loss) // 2]
        budget = int(c.name.rsplit("_", 1)[1])
        assert len(t.lr) == budget
    stable = next(c for c in curves if c.name == "stable_50000").target
    wsd = next(c for c in curves if c.name == "wsdlinear20_50000").target
    before = wsd.steps < 40000  # the cooldown run starts from the constant run's checkpoint
    np.testing.assert_array_equal(wsd.loss[before], stable.loss[stable.steps < 40000])


SPECS_210M = {"stable": "warmup(constant(0.0005), 300 steps, start=0.01)",
              "cosine10": "warmup(cosine(peak=0.001, floor=0.1), 300 steps, start=0.01)",
              "wsdlinear20": "warmup(wsd(peak=0.0005, decay={} steps, shape=linear, floor=0), 300 steps, start=0.01)"}


def test_the_210m_curves_are_checked_cited_and_their_logged_lrs_follow_the_known_schedules() -> None:
    from cadence.clock import Axis
    from cadence.forecast.published import OTHER, curves_dir
    from cadence.forecast.runlog import RunLog
    from cadence.schedules.base import as_schedule

    folder = curves_dir("schaipp-210m")
    readme = (folder.parent / "README.md").read_text()
    for cited in ("arXiv 2501.18965", "arXiv 2405.18392", "MIT", "registered before any fit"):
        assert cited in readme
    assert (folder.parent / "LICENSE").read_text().startswith("MIT License")
    files = sorted(folder.glob("*.csv"))
    assert [p.stem for p in files] == ["cosine10_22222", "cosine10_33333", "cosine10_44444", "stable_40000",
                                       "wsdlinear20_22222", "wsdlinear20_33333", "wsdlinear20_44444"]
    for path in files:
        log = RunLog.read(path)
        kind, budget = path.stem.split("_")
        n = int(budget)
        schedule, axis = as_schedule(SPECS_210M[kind].format(int(0.2 * n))), Axis("steps", float(n))
        has_lr = ~np.isnan(log.lr)
        steps, logged = log.step[has_lr], log.lr[has_lr]
        spec = np.array([schedule.value(float(s), axis) for s in steps])
        if kind == "cosine10":  # the warmup of these runs is not linear: only the rise to the peak is checked
            late = steps >= 300
            assert np.all(np.diff(logged[~late]) > 0) and logged[late][0] == pytest.approx(1e-3)
            one_step = 0.9e-3 * np.pi / 2 / (n - 300)  # the largest LR change of one cosine step
            np.testing.assert_allclose(spec[late], logged[late], rtol=0, atol=one_step, err_msg=path.stem)
        else:
            np.testing.assert_allclose(spec, logged, rtol=1e-12, atol=1e-15, err_msg=path.stem)
        loss_steps = log.step[~np.isnan(log.loss)]
        assert loss_steps[0] == 200 and np.all(np.diff(loss_steps) == 200) and n - 200 <= loss_steps[-1] < n
        loss = log.loss[~np.isnan(log.loss)]
        assert np.all((loss > 2.8) & (loss < 6)) and loss[-1] < loss[len(loss) // 2]
    curves = {c.name: c for c in load_curves("schaipp-210m")}
    assert sorted(n for n, c in curves.items() if c.fitted) == sorted(OTHER["schaipp-210m"][1])
    stable = curves["stable_40000"].target
    for n, resumed in ((22222, 15000), (33333, 25000), (44444, 35000)):  # cooldowns from the constant run's checkpoints
        wsd = curves[f"wsdlinear20_{n}"].target
        shared = np.isin(wsd.steps, stable.steps) & (wsd.steps < resumed)  # (the first 5% differs: skipped)
        np.testing.assert_array_equal(wsd.loss[shared], stable.loss[np.isin(stable.steps, wsd.steps[shared])])
        assert shared.sum() > 50
        start = n - int(0.2 * n)  # the cooldown's first step; its LR is logged every 10 steps around it
        assert wsd.steps[0] > 0.05 * n and wsd.lr[-1] < 1e-6
        assert wsd.lr[start // 10 * 10 - 1] == 5e-4 > wsd.lr[start + 10]


def test_the_final_loss_interval_is_the_largest_last_point_miss_and_covers_n_over_n_plus_1() -> None:
    """With three fitted runs whose final-loss errors are exchangeable with a new schedule's, the new
    one's error is the largest of the four with probability 1/4: at scale 1 the last-point interval
    holds 3/4 of final losses (counted by hand over 200 independent noisy fits, ~6 s)."""
    inside = total = 0
    for seed in range(200):
        rng = np.random.default_rng(100 + seed)
        fit = fit_law([noisy(s, rng, noise=5e-3) for s in FITTED], lam=0.95)
        h = max(abs(r[-1]) for r in fit.loo_residuals)  # by hand
        for spec in HELD:
            t = noisy(spec, rng, noise=5e-3)
            low, high = fit.final_interval(t.lr, "last", scale=1.0)
            final = fit.law.predict(t.lr)[-1]
            assert (low, high) == (pytest.approx(final * (1 - h), rel=1e-12), pytest.approx(final * (1 + h), rel=1e-12))
            inside += low <= t.loss[-1] <= high
            total += 1
    assert 0.66 <= inside / total <= 0.84
    runs = fit.interval(t.lr, np.array([600]), method="runs")  # the default: the run envelope at the last step
    assert fit.final_interval(t.lr) == (pytest.approx(runs[0][0]), pytest.approx(runs[1][0]))


def test_the_final_loss_interval_refuses_bad_input() -> None:
    rng = np.random.default_rng(0)
    lr = lr_per_step(HELD[0], 600)
    with pytest.raises(CadenceError, match="two or more runs"):
        fit_law([noisy(FITTED[0], rng)], lam=0.95).final_interval(lr)
    two = fit_law([noisy(s, rng) for s in FITTED[:2]], lam=0.95)
    for bad, match in (({"method": "bootstrap"}, "method"), ({"scale": -1.0}, "scale"),
                       ({"scale": float("nan")}, "scale")):
        with pytest.raises(CadenceError, match=match):
            two.final_interval(lr, **bad)
    with pytest.raises(CadenceError, match="1-D"):
        two.final_interval(np.ones((2, 3)))


@pytest.mark.parametrize(("name", "peak"), [("schaipp-124m-lr2e-3", 2e-3), ("schaipp-124m-lr5e-4", 5e-4)])
def test_the_124m_curves_at_another_peak_lr_are_checked_and_match_the_1e_3_set_in_form(name: str, peak: float) -> None:
    from cadence.forecast.published import OTHER, curves_dir

    folder = curves_dir(name)
    assert f"`{folder.name}/" in (folder.parent / "README.md").read_text()
    names = sorted(p.name for p in folder.glob("*.csv"))
    assert names == sorted(p.name for p in curves_dir("schaipp-124m").glob("*.csv"))
    curves = {c.name: c for c in load_curves(name)}
    assert sorted(n for n, c in curves.items() if c.fitted) == sorted(OTHER[name][1])
    lower = {c.name: c.target for c in load_curves("schaipp-124m")}
    for curve, c in curves.items():
        t = c.target
        assert c.spec is None and len(t.lr) == int(curve.rsplit("_", 1)[1])
        assert t.lr.max() == pytest.approx(peak) and np.argmax(t.lr >= 0.999 * peak) + 1 == 300  # 300-step warmup
        assert np.all(np.diff(t.steps) == 200) and np.array_equal(t.steps, lower[curve].steps)
        assert np.all((t.loss > 2.5) & (t.loss < 8)) and not np.array_equal(t.loss, lower[curve].loss)
    stable, wsd = curves["stable_50000"].target, curves["wsdlinear20_50000"].target
    np.testing.assert_array_equal(wsd.loss[wsd.steps < 40000], stable.loss[stable.steps < 40000])
    assert wsd.lr[39999] == peak > wsd.lr[40100] and wsd.lr[-1] == 0
