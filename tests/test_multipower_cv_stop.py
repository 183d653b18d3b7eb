"""benchmarks/multipower_cv_stop.py: the polish length is chosen by leave-one-run-out error on the
fitted runs only, ties go to the longer polish, and the library's setting is left as it was."""

from __future__ import annotations

import numpy as np
import pytest

import cadence.forecast.multipower_fit as multipower_fit
from cadence.forecast import FitTarget, MultiPowerLaw, lr_per_step

from benchmark_script import load_script

TRUTH = MultiPowerLaw(L0=1.2, A=0.6, alpha=0.5, B=0.5, C=40.0, beta=0.6, gamma=0.4, lr_ref=2e-3, steps_ref=300)


def synthetic_runs() -> list[FitTarget]:
    runs = []
    for spec in ("constant(2e-3)", "cosine(peak=2e-3)", "wsd(peak=2e-3, decay=20%)"):
        lr = lr_per_step(spec, 300)
        steps = np.arange(10, 301, 10)
        runs.append(FitTarget(steps, TRUTH.predict(lr, steps), lr, spec))
    return runs


def test_cross_validation_picks_the_polish_with_the_lowest_left_out_error_ties_to_the_longer(monkeypatch) -> None:
    bench = load_script("multipower_cv_stop")
    errors = {3: 0.5, 10: 0.2, 30: 0.1, 100: 0.3, 300: 0.1, 1000: 0.4}  # made up, per polish length
    calls = []

    def fake_search(targets, polish):
        calls.append((len(targets), polish))
        return 0.0, polish  # the "law" is its polish length

    monkeypatch.setattr(bench, "search", fake_search)
    monkeypatch.setattr(bench, "pred_e", lambda law, target: errors[law])
    k, cv, law = bench.cv_stop(synthetic_runs())
    assert cv == pytest.approx(errors) and k == 300 and law == 300  # 30 and 300 tie: the longer polish
    assert sorted(set(calls)) == sorted({(2, c) for c in errors} | {(3, 300)})  # folds of two runs, then all three


def test_the_search_with_a_polish_length_is_the_librarys_search_and_leaves_its_setting_alone() -> None:
    bench = load_script("multipower_cv_stop")
    runs = synthetic_runs()
    shipped = multipower_fit.POLISH_ITERATIONS
    f, law = bench.search(runs, shipped)
    assert multipower_fit.POLISH_ITERATIONS == shipped
    g, same = multipower_fit.search_multi_power([t.lr for t in runs], [t.steps for t in runs],
                                                [t.loss for t in runs], delta=1e-3)[0]
    assert f == g and law.to_dict() == same.to_dict()
    f3, _ = bench.search(runs, 3)
    assert multipower_fit.POLISH_ITERATIONS == shipped and f3 >= f  # a shorter polish fits no better
