"""``cadence bench stoppers``: the stoppers replayed on recorded trials, and the tiny benchmark end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cadence.cli import main
from cadence.labs.pretrain.stopper_bench import METHODS, SchedulerReplay, Trial, ray_schedulers, replay, search_rows


def hand_trial(final: float, grad_norm: list[float], loss: list[float]) -> Trial:
    """A trial with four reports and too few validation points to forecast from."""
    return Trial("constant(1e-3)", 40, np.array([40]), np.array([final]), [10, 20, 30, 40], loss, grad_norm, final, 1.0)


def test_replay_ends_a_trial_at_the_report_its_stopper_stops_it() -> None:
    trials = [hand_trial(2.0, [1.0] * 4, [3.0] * 4) for _ in range(3)]
    calls = []

    def stopper(trial_id, result):
        calls.append((trial_id, result["training_iteration"]))
        return trial_id == "trial_1" and result["training_iteration"] == 2

    assert replay(stopper, trials, forecast=False) == [40, 20, 40]
    # lockstep: report r of every running trial before report r + 1; a stopped trial reports no more
    assert calls[:6] == [("trial_0", 1), ("trial_1", 1), ("trial_2", 1), ("trial_0", 2), ("trial_1", 2),
                         ("trial_2", 2)]
    assert ("trial_1", 3) not in calls and len(calls) == 10
    assert replay(None, trials, forecast=False) == [40, 40, 40]


def test_search_rows_count_steps_saved_and_whether_the_best_trial_survives() -> None:
    pytest.importorskip("ray")
    # at report 2, trial 0 has the lower gradient norm and the higher loss: the early-ranking rule
    # stops trial 1 there, although trial 1 ends best
    trials = [hand_trial(2.5, [1.0, 1.0, 1.0, 1.0], [3.0, 2.9, 2.8, 2.7]),
              hand_trial(2.0, [2.0, 2.0, 2.0, 2.0], [2.9, 2.5, 2.3, 2.1]),
              hand_trial(2.2, [0.5, 0.5, 0.5, 0.5], [3.1, 3.0, 2.9, 2.8])]
    none, forecast, ranking, asha, median = search_rows(0, trials, step_seconds=0.01)
    assert [r.method for r in (none, forecast, ranking, asha, median)] == list(METHODS)
    assert asha.saved == median.saved == 0  # no validation loss before the last report: nothing to compare
    assert none.trial_steps == none.full_steps == 120 and none.saved == 0 and none.best_survives
    assert forecast.saved == 0 and forecast.overhead_steps >= 0  # no forecast yet: nothing stopped
    assert ranking.trial_steps == 100 and ranking.stopped == 1 and ranking.saved == pytest.approx(20 / 120)
    assert not ranking.best_survives and ranking.best_final == 2.2 and ranking.full_best_final == 2.0


def val_trial(val: list[float], final: float) -> Trial:
    """A trial validated at every one of its five reports (``val``), ending at ``final``."""
    steps = [10, 20, 30, 40, 50]
    return Trial("constant(1e-3)", 50, np.array(steps), np.array(val), steps, val, [1.0] * 5, final, 1.0)


@pytest.mark.parametrize("method", ["ASHAScheduler", "MedianStoppingRule"])
def test_ray_schedulers_stop_a_trial_worse_by_construction_and_keep_a_better_one(method) -> None:
    pytest.importorskip("ray")
    # trial 4's validation loss is above every other trial's at every report; trial 1's below
    offsets = [0.2, 0.0, 0.3, 0.1, 1.0]
    trials = [val_trial([3.0 + d - 0.1 * r for r in range(5)], 2.6 + d) for d in offsets]
    ended = replay(SchedulerReplay(ray_schedulers(5)[method], len(trials)), trials, forecast=False)
    assert ended[4] < 50 and ended[1] == 50
    rows = {r.method: r for r in search_rows(0, trials, step_seconds=0.01)}
    assert rows[method].best_survives and rows[method].stopped >= 1 and rows[method].saved > 0
    # the better trial first, the worse one fourth (the median rule needs 3 other trials at its report):
    # the worse one still stops, and the better one is kept
    ended = replay(SchedulerReplay(ray_schedulers(5)[method], 5), [trials[i] for i in (1, 0, 2, 4, 3)], forecast=False)
    assert ended[0] == 50 and ended[3] < 50


def test_ray_schedulers_are_driven_as_tunes_controller_drives_them() -> None:
    pytest.importorskip("ray")
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    calls = []

    class Spy(FIFOScheduler):  # stops trial_1 at its second result
        def on_trial_add(self, controller, trial):
            calls.append(("add", trial.trial_id, trial.status))

        def on_trial_result(self, controller, trial, result):
            calls.append(("result", trial.trial_id, result["training_iteration"],
                          len(controller.get_live_trials())))
            stop = trial.trial_id == "trial_1" and result["training_iteration"] == 2
            return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

        def on_trial_complete(self, controller, trial, result):
            calls.append(("complete", trial.trial_id, result["training_iteration"]))

    trials = [val_trial([3.0, 2.9, 2.8, 2.7, 2.6], 2.6) for _ in range(2)]
    assert replay(SchedulerReplay(Spy(), 2), trials, forecast=False) == [50, 20]
    assert calls[:2] == [("add", "trial_0", "RUNNING"), ("add", "trial_1", "RUNNING")]
    assert ("complete", "trial_1", 2) in calls and ("result", "trial_1", 3, 1) not in calls
    assert calls[-2:] == [("result", "trial_0", 5, 1), ("complete", "trial_0", 5)]
    assert ("result", "trial_0", 2, 2) in calls and ("result", "trial_0", 3, 1) in calls


def test_bench_stoppers_tiny_writes_every_search(tmp_path, capsys) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "stoppers.json"
    assert main(["bench", "stoppers", "--size", "tiny", "--seeds", "1", "--steps", "40", "--trials", "3",
                 "--reports", "4", "-o", str(out)]) == 0
    shown = capsys.readouterr().out
    assert all(m in shown for m in METHODS)
    bench = json.loads(out.read_text())
    rows = {r["method"]: r for r in bench["rows"]}
    assert set(rows) == set(METHODS) and len(bench["specs"]) == 1 and len(bench["specs"][0]) == 3
    assert bench["seeds"] == [0]
    # the recorded trials replay to the same rows
    trials = [Trial(**{k: np.asarray(v) if k.startswith("val_") else v for k, v in r.items()})
              for r in bench["records"][0]]
    again = search_rows(0, trials, bench["step_seconds"])
    assert [(r.method, r.trial_steps, r.best_final) for r in again] == \
        [(r["method"], r["trial_steps"], r["best_final"]) for r in bench["rows"]]
    assert rows["no stopper"]["saved"] == 0 and rows["no stopper"]["best_survives"]
    for r in rows.values():
        assert 0 < r["trial_steps"] <= r["full_steps"] == 120
        assert r["best_final"] >= r["full_best_final"]
        assert r["best_final"] == r["full_best_final"] or not r["best_survives"]


@pytest.mark.parametrize("argv, message", [
    (["bench", "stoppers", "--steps", "40", "--reports", "30"], "--reports 30"),
    (["bench", "stoppers", "--trials", "1"], "--trials"),
    (["bench", "stoppers", "--seeds", "0"], "--seeds"),
    (["bench", "stoppers", "--first-seed", "-1"], "--first-seed"),
    (["bench", "stoppers", "--first-seed", "five"], "--first-seed"),
    (["bench", "stoppers", "--from-records", "x.json", "--steps", "40", "--first-seed", "5"],
     "drop --steps, --first-seed"),
    (["bench", "stoppers", "--from-records", "x.json", "--size", "tiny"], "drop --size"),
    (["bench", "stoppers", "--from-records", "/missing/x.json"], "cannot read stopper records from /missing/x.json"),
    (["bench", "stoppers", "-o", "/missing/dir/x.json"], "does not exist"),
])
def test_bench_stoppers_refuses_bad_command_lines_before_any_work(argv, message, capsys, monkeypatch) -> None:
    pytest.importorskip("ray")
    import cadence.labs.pretrain.stopper_bench as bench

    monkeypatch.setattr(bench, "run_stopper_benchmark", lambda **kw: pytest.fail("work started"))
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert message in err and len(err.strip().splitlines()) == 1 and out == ""


def test_first_seed_trains_and_records_the_later_block_of_seeds(monkeypatch) -> None:
    pytest.importorskip("ray")
    import cadence.labs.pretrain.stopper_bench as bench

    trained = []

    def fake_train(cfg, spec, *, steps, seed, reports, eval_every):
        trained.append((spec, seed))
        return val_trial([3.0, 2.9, 2.8, 2.7, 2.6 + 0.01 * len(trained)], 2.6 + 0.01 * len(trained))

    monkeypatch.setattr(bench, "train_trial", fake_train)
    result = bench.run_stopper_benchmark(size="tiny", steps=50, trials=3, seeds=2, first_seed=5, reports=5,
                                         progress=False)
    assert result.seeds == [5, 6] and result.as_dict()["seeds"] == [5, 6]
    assert result.specs == [bench.draw_schedules(s, 3, steps=50, peak=4e-3) for s in (5, 6)]
    assert trained == [(spec, seed) for seed, specs in zip((5, 6), result.specs) for spec in specs]
    with pytest.raises(bench.CadenceError, match="first_seed"):
        bench.run_stopper_benchmark(size="tiny", steps=50, trials=3, seeds=1, first_seed=-1, progress=False)


def test_from_records_replays_the_searches_and_merges_runs_on_other_seeds(tmp_path, capsys) -> None:
    pytest.importorskip("ray")
    files = []
    for seed, shift in ((0, 0.0), (3, 0.05)):
        trials = [val_trial([3.0 + d + shift - 0.1 * r for r in range(5)], 2.6 + d + shift) for d in (0.2, 0.0, 0.4)]
        files.append(tmp_path / f"seed{seed}.json")
        files[-1].write_text(json.dumps({"size": "tiny", "seeds": [seed], "step_seconds": 0.01,
                                         "records": [[t.record() for t in trials]]}))
    out = tmp_path / "merged.json"
    assert main(["bench", "stoppers", "--from-records", f"{files[0]},{files[1]}", "-o", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "2 seed(s): 0–3" in shown and all(m in shown for m in METHODS)
    merged = json.loads(out.read_text())
    assert merged["seeds"] == [0, 3] and len(merged["records"]) == 2
    for seed, path in zip((0, 3), files):
        trials = [Trial(**{k: np.asarray(v) if k.startswith("val_") else v for k, v in r.items()})
                  for r in json.loads(path.read_text())["records"][0]]
        expected = [(r.method, r.trial_steps, r.best_survives) for r in search_rows(seed, trials, 0.01)]
        assert [(r["method"], r["trial_steps"], r["best_survives"]) for r in merged["rows"] if r["seed"] == seed] \
            == expected
    assert main(["bench", "stoppers", "--from-records", f"{files[0]},{files[0]}"]) == 2
    err = capsys.readouterr().err
    assert "repeats seeds [0]" in err and len(err.strip().splitlines()) == 1
