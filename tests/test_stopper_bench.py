"""``cadence bench stoppers``: the stoppers replayed on recorded trials, and the tiny benchmark end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cadence.cli import main
from cadence.labs.pretrain.stopper_bench import METHODS, Trial, replay, search_rows


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
    none, forecast, ranking = search_rows(0, trials, step_seconds=0.01)
    assert [r.method for r in (none, forecast, ranking)] == list(METHODS)
    assert none.trial_steps == none.full_steps == 120 and none.saved == 0 and none.best_survives
    assert forecast.saved == 0 and forecast.overhead_steps >= 0  # no forecast yet: nothing stopped
    assert ranking.trial_steps == 100 and ranking.stopped == 1 and ranking.saved == pytest.approx(20 / 120)
    assert not ranking.best_survives and ranking.best_final == 2.2 and ranking.full_best_final == 2.0


def test_bench_stoppers_tiny_writes_every_search(tmp_path, capsys) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "stoppers.json"
    assert main(["bench", "stoppers", "--size", "tiny", "--seeds", "1", "--steps", "40", "--trials", "3",
                 "--reports", "4", "-o", str(out)]) == 0
    assert "EarlyRankingStopper" in capsys.readouterr().out
    bench = json.loads(out.read_text())
    rows = {r["method"]: r for r in bench["rows"]}
    assert set(rows) == set(METHODS) and len(bench["specs"]) == 1 and len(bench["specs"][0]) == 3
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
    (["bench", "stoppers", "-o", "/missing/dir/x.json"], "does not exist"),
])
def test_bench_stoppers_refuses_bad_command_lines_before_any_work(argv, message, capsys, monkeypatch) -> None:
    pytest.importorskip("ray")
    import cadence.labs.pretrain.stopper_bench as bench

    monkeypatch.setattr(bench, "run_stopper_benchmark", lambda **kw: pytest.fail("work started"))
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert message in err and len(err.strip().splitlines()) == 1 and out == ""
