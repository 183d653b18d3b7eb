"""Each stopper's knob decided on one block of seeds: ForecastStopper's ``widen``, the decision rule, the replay."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cadence.errors import CadenceError, StateError
from cadence.integrations.ray_tune import FORECAST_WIDEN, EarlyRankingStopper, ForecastStopper
from cadence.labs.pretrain.stopper_bench import SearchRow, Trial, read_searches, replay, search_row
from cadence.labs.pretrain.stopper_choice import GRIDS, Setting, decide, grid_rows, judge, make_stopper


def result(final: float, half: float, iteration: int = 3) -> dict:
    return {"training_iteration": iteration, "cadence/forecast/final_loss": final,
            "cadence/forecast/low": final - half, "cadence/forecast/high": final + half}


def test_widen_stops_a_worse_trial_only_beyond_the_widened_interval_and_keeps_a_better_one() -> None:
    # best: 3.0 ± 0.01; widened 3×: 3.0 ± 0.03. A trial at f ± 0.01 is clearly worse only once f − 0.03 > 3.03
    for final, stopped in ((3.05, False), (3.059, False), (3.07, True)):
        stopper = ForecastStopper(widen=3)
        assert stopper("best", result(3.0, 0.01)) is False
        assert stopper("worse", result(final, 0.01)) is stopped, final
    narrow = ForecastStopper(widen=1)  # the intervals as reported: 3.05 − 0.01 > 3.01, stopped
    narrow("best", result(3.0, 0.01))
    assert narrow("worse", result(3.05, 0.01)) is True
    wide = ForecastStopper(widen=3)
    wide("best", result(3.0, 0.01))
    assert wide("better", result(2.9, 0.01)) is False  # the new best is never stopped
    assert wide("best", result(3.0, 0.01)) is True  # 2.97 > 2.93: clearly worse than "better", even widened
    assert wide.stopped == ["best"]


def test_widen_one_is_the_rule_as_it_was() -> None:
    # the old rule: stop when the trial's low lies above the best trial's high (exact bounds, no arithmetic)
    rng = np.random.default_rng(0)
    draws = [(int(rng.integers(6)), *map(float, rng.uniform([2.9, 0.0], [3.1, 0.05])), int(rng.integers(4)))
             for _ in range(300)]
    results = [(f"t{t}", result(final, half, iteration=it)) for t, final, half, it in draws]
    results.append(("edge", {"training_iteration": 3, "cadence/forecast/final_loss": 9.0,
                             "cadence/forecast/low": 0.1 + 0.2, "cadence/forecast/high": 9.5}))
    one = ForecastStopper(min_iterations=2, widen=1)
    latest: dict[str, tuple[float, float, float]] = {}
    for trial, res in results:
        forecast = (res["cadence/forecast/final_loss"], res["cadence/forecast/low"], res["cadence/forecast/high"])
        latest[trial] = forecast
        best = min(latest, key=lambda t: latest[t][0])
        expected = bool(res["training_iteration"] >= 2 and best != trial and forecast[1] > latest[best][2])
        if expected:
            del latest[trial]
        assert one(trial, res) is expected
    assert one.stopped


def test_the_default_widen_is_the_decided_four() -> None:
    assert ForecastStopper().widen == FORECAST_WIDEN == 4.0
    # best 3.0 ± 0.01 → 3.0 ± 0.04 widened; a trial at f ± 0.01 (f ± 0.04) is stopped once f − 0.04 > 3.04
    for final, stopped in ((3.05, False), (3.079, False), (3.09, True)):
        stopper = ForecastStopper()
        assert stopper("best", result(3.0, 0.01)) is False
        assert stopper("worse", result(final, 0.01)) is stopped, final


def test_stopper_state_round_trips_through_a_safe_load_and_refuses_foreign_state(tmp_path) -> None:
    stopper, ranking = ForecastStopper(widen=1), EarlyRankingStopper(at_iteration=1)
    for t, final in (("a", 3.0), ("b", 3.5), ("c", 3.1)):
        stopper(t, result(final, 0.01))
        ranking(t, {"training_iteration": 1, "grad_norm": 4.0 - final, "loss": final})
    path = tmp_path / "stoppers.pt"
    torch.save({"forecast": stopper.state_dict(), "ranking": ranking.state_dict()}, path)
    state = torch.load(path, weights_only=True)
    again, ranked = ForecastStopper(widen=1), EarlyRankingStopper(at_iteration=1)
    again.load_state_dict(state["forecast"])
    ranked.load_state_dict(state["ranking"])
    assert again.latest == stopper.latest and again.stopped == stopper.stopped == ["b", "c"]
    assert ranked.seen == ranking.seen and ranked.stopped == ranking.stopped
    # both continue exactly as the originals do
    for s in (stopper, again):
        assert s("d", result(3.03, 0.01)) is True
    assert ranking("e", {"training_iteration": 2, "grad_norm": 5.0, "loss": 2.0}) is \
        ranked("e", {"training_iteration": 2, "grad_norm": 5.0, "loss": 2.0})
    fresh = ForecastStopper(widen=1)
    with pytest.raises(StateError, match="settings"):
        ForecastStopper(widen=2).load_state_dict(state["forecast"])
    with pytest.raises(StateError, match="not a ForecastStopper state"):
        fresh.load_state_dict(state["ranking"])
    broken = dict(state["forecast"], latest={"a": [3.0, "x", 3.1]})
    with pytest.raises(StateError, match="malformed"):
        fresh.load_state_dict(broken)
    with pytest.raises(StateError, match="malformed"):
        fresh.load_state_dict(dict(state["forecast"], latest={"a": [3.0, math.nan, 3.1]}))
    assert fresh.latest == {} and fresh.stopped == []  # nothing half-applied


@pytest.mark.parametrize("widen", [0, -1, math.nan, math.inf, "2"])
def test_widen_refuses_a_factor_that_is_not_a_positive_number(widen) -> None:
    with pytest.raises(CadenceError, match="widen"):
        ForecastStopper(widen=widen)


def row(seed: int, steps: int, survives: bool, best: float = 2.0, full: float = 2.0) -> SearchRow:
    return SearchRow("x", seed, steps, 1000, best if not survives else full, full, survives, 1, 0.0)


def test_decide_equals_a_hand_loop_over_the_settings() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        settings = []
        for v in range(int(rng.integers(1, 7))):
            rows = tuple(row(s, int(rng.choice([400, 600, 800, 1000])), bool(rng.random() < 0.6),
                             best=float(rng.uniform(2.0, 2.4))) for s in range(5))
            settings.append(Setting("EarlyRankingStopper", v, rows))
        # the rule as written: keep the best trial in every search, most saved; else most kept, then most saved;
        # then the lower loss ratio, then the earlier value
        everywhere = [s for s in settings if all(r.best_survives for r in s.rows)]
        pool = everywhere or [s for s in settings if s.kept == max(t.kept for t in settings)]
        most = max(np.mean([1 - r.trial_steps / r.full_steps for r in s.rows]) for s in pool)
        pool = [s for s in pool if np.isclose(np.mean([1 - r.trial_steps / r.full_steps for r in s.rows]), most)]
        lowest = min(s.ratio for s in pool)
        pool = [s for s in pool if s.ratio == lowest]
        assert decide(settings) is pool[0]
    with pytest.raises(CadenceError, match="no settings"):
        decide([])


def val_trial(val: list[float], final: float, grad: list[float]) -> Trial:
    """A trial of 100 steps validated at each of its ten reports."""
    steps = list(range(10, 101, 10))
    return Trial("constant(1e-3)", 100, np.array(steps), np.array(val), steps, val, grad, final, 1.0)


def searches() -> dict[int, list[Trial]]:
    rng = np.random.default_rng(2)
    out = {}
    for seed in (5, 6):
        trials = []
        for _ in range(5):
            level, slope = rng.uniform(2.8, 3.2), rng.uniform(0.05, 0.15)
            val = [level - slope * r + rng.normal(0, 0.05) for r in range(10)]
            trials.append(val_trial(val, val[-1], list(rng.uniform(0.5, 2.0, 10))))
        out[seed] = trials
    return out


@pytest.mark.parametrize("method", ["EarlyRankingStopper", "ASHAScheduler", "MedianStoppingRule"])
def test_grid_rows_equal_a_hand_loop_of_replays_over_the_grid(method) -> None:
    pytest.importorskip("ray")
    from cadence.labs.pretrain.stopper_bench import SchedulerReplay, ray_schedulers

    data = searches()
    values = list(GRIDS[method][1])
    settings = grid_rows(data, method)
    assert [s.value for s in settings] == values
    for s, v in zip(settings, values):
        for seed, r in zip(data, s.rows):
            if method == "EarlyRankingStopper":
                stopper = EarlyRankingStopper(at_iteration=v)
            else:
                key = "asha_grace" if method == "ASHAScheduler" else "median_grace"
                stopper = SchedulerReplay(ray_schedulers(10, **{key: v})[method], 5)
            ended = replay(stopper, data[seed], forecast=False)
            finals = [t.final for t in data[seed]]
            assert r.seed == seed and r.trial_steps == sum(ended)
            assert r.best_survives == (ended[int(np.argmin(finals))] == 100)
    assert any(s.saved > 0 for s in settings)  # the constructed searches give the stoppers something to stop


def test_make_stopper_refuses_an_unknown_stopper_or_a_grace_period_outside_the_trial() -> None:
    with pytest.raises(CadenceError, match="unknown stopper"):
        make_stopper("Hyperband", 1, trials=3, reports=10)
    with pytest.raises(CadenceError, match="whole number"):
        make_stopper("EarlyRankingStopper", 11, trials=3, reports=10)
    with pytest.raises(CadenceError, match="whole number"):
        make_stopper("EarlyRankingStopper", 1.5, trials=3, reports=10)


def test_judge_compares_no_stopper_the_default_and_the_decided_setting(tmp_path) -> None:
    pytest.importorskip("ray")
    data = searches()
    rows = judge(data, {"EarlyRankingStopper": 3, "MedianStoppingRule": 1}, step_seconds=0.01)
    assert [(s.method, s.value) for s in rows] == [("no stopper", 0), ("EarlyRankingStopper", 2),
                                                    ("EarlyRankingStopper", 3), ("MedianStoppingRule", 1)]
    assert rows[0].saved == 0 and rows[0].kept == 2
    ranking = search_row("r", 6, data[6], EarlyRankingStopper(at_iteration=3), forecast=False, step_seconds=0.01)
    assert rows[2].rows[1].trial_steps == ranking.trial_steps


def test_read_searches_keeps_the_seeds_and_refuses_a_file_that_is_not_a_record(tmp_path) -> None:
    data = searches()
    path = tmp_path / "held.json"
    path.write_text(json.dumps({"seeds": [5, 6], "step_seconds": 0.01,
                                "records": [[t.record() for t in trials] for trials in data.values()]}))
    again, step = read_searches(path)
    assert sorted(again) == [5, 6] and step == 0.01
    assert [t.final for t in again[6]] == [t.final for t in data[6]]
    old = tmp_path / "old.json"  # written before --first-seed: seeds 0, 1, ...
    old.write_text(json.dumps({"step_seconds": 0.01, "records": [[t.record() for t in data[5]]]}))
    assert list(read_searches(old)[0]) == [0]
    bad = tmp_path / "bad.json"
    bad.write_text("{\"rows\": []}")
    with pytest.raises(CadenceError, match="cannot read stopper records"):
        read_searches(bad)
    with pytest.raises(CadenceError, match="cannot read stopper records"):
        read_searches(tmp_path / "missing.json")
