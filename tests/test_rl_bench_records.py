"""``cadence bench rl -o`` / ``--first-seed`` / ``--from-records``: per-seed records saved, reread and merged."""

import json
from dataclasses import asdict

import pytest

from cadence.cli import main
from cadence.labs.rl import bench

RUN = ["bench", "rl", "--size", "tiny", "--steps", "4", "--policies", "uniform,dump,sec"]


def _table(printed: str) -> str:
    """The printed table: from its title to its last border."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if "to reach the target vs uniform" in line)
    end = max(i for i, line in enumerate(lines) if line.startswith("└"))
    return "\n".join(lines[start:end + 1])


def test_records_give_back_the_printed_table_and_split_seeds_merge_to_one_run(tmp_path, capsys, monkeypatch):
    out = tmp_path / "rl.png"
    assert main(RUN + ["--seeds", "2", "-o", str(out)]) == 0
    printed = _table(capsys.readouterr().out)
    data = json.loads(out.with_suffix(".json").read_text())
    assert out.stat().st_size > 0 and {r["seed"] for r in data["records"]} == {0, 1}
    assert sorted({r["policy"] for r in data["records"]}) == ["dump", "sec", "uniform"]
    assert all(len(r["eval_pass@1"]) == len(r["eval_rollouts"]) > 1 for r in data["records"])
    again = [json.loads(json.dumps(asdict(r))) for r in bench.rows_of(bench.read_records(out.with_suffix(".json")))]
    assert again == data["rows"]                  # the saved records give back the summary rows

    monkeypatch.setattr(bench, "compare", lambda *a, **k: pytest.fail("trained from saved records"))
    plot = tmp_path / "again.png"
    assert main(["bench", "rl", "--from-records", str(out.with_suffix(".json")), "-o", str(plot)]) == 0
    assert _table(capsys.readouterr().out) == printed   # ... and the printed table
    assert plot.stat().st_size > 0
    monkeypatch.undo()

    first, later = tmp_path / "first.png", tmp_path / "later.png"
    assert main(RUN + ["--seeds", "1", "-o", str(first)]) == 0
    assert main(RUN + ["--seeds", "1", "--first-seed", "1", "-o", str(later)]) == 0
    capsys.readouterr()
    merged = bench.read_records(first.with_suffix(".json"), later.with_suffix(".json"))
    assert merged == data["records"]              # seed 0's run + seed 1's run = the 2-seed run
    assert main(["bench", "rl", "--from-records", f"{first.with_suffix('.json')},{later.with_suffix('.json')}"]) == 0
    assert _table(capsys.readouterr().out) == printed


def test_records_short_of_uniform_or_of_a_policy_on_a_seed_are_refused(tmp_path, capsys):
    rec = {"seed": 0, "policy": "dump", "target": 0.1, "steps_to_target": 2, "rollouts_to_target": 64, "steps": 4,
           "rollouts": 128, "final_pass@1": 0.1, "informative_groups": 2, "groups": 8, "step_seconds": None,
           "refill_seconds": None, "eval_rollouts": [0, 128], "eval_pass@1": [0.0, 0.1]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"records": [rec]}))
    assert main(["bench", "rl", "--from-records", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no 'uniform' records" in err and err.count("\n") == 1
    path.write_text(json.dumps({"records": [rec, dict(rec, policy="uniform"), dict(rec, seed=1)]}))
    assert main(["bench", "rl", "--from-records", str(path)]) == 2
    err = capsys.readouterr().err
    assert "seed 1 does not hold one record per policy" in err and err.count("\n") == 1


def _record(seed, policy, reached, final):
    """A per-seed record as ``bench rl -o`` writes it (10 steps of 16 prompts × 8; ``reached``: rollouts)."""
    return {"seed": seed, "policy": policy, "target": 0.3, "steps_to_target": reached and reached // 128,
            "rollouts_to_target": reached, "steps": 10, "rollouts": 1280, "final_pass@1": final,
            "informative_groups": 40, "groups": 160, "step_seconds": None, "refill_seconds": None,
            "eval_steps": [0, 5, 10], "eval_rollouts": [0, 640, 1280], "eval_pass@1": [0.1, 0.2, final]}


def test_from_records_prints_the_ratios_worked_by_hand(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"records": [_record(0, "uniform", 1280, 0.3), _record(0, "dump", 640, 0.4),
                                            _record(1, "uniform", 1024, 0.5), _record(1, "dump", None, 0.2)]}))
    assert main(["bench", "rl", "--from-records", str(path)]) == 0
    printed = capsys.readouterr().out
    dump = next(line for line in printed.splitlines() if "DUMP" in line)
    assert "0.79 [" in dump and "1/2" in dump and "0.300" in dump and "25%" in dump  # sqrt(640/1280 · 1280/1024)
