"""The regimen doctor: each documented conflict is found, its suggested fix silences it, and the
``cadence check`` exit codes follow the docs."""

from __future__ import annotations

import json

import pytest

from cadence.cli import main
from cadence.doctor import MODERATE_FLOOR, Regimen, RegimenError, diagnose, load_regimen


def _codes(**fields) -> list[str]:
    return [f.code for f in diagnose(Regimen.from_dict(fields)) if f.severity == "warning"]


@pytest.mark.parametrize("lr", ["cosine(peak=3e-4)", "wsd(peak=3e-4, warmup=1%, decay=20%)",
                                "warmup(linear(peak=1e-3, floor=0.05), 2%)"])
def test_full_decay_under_a_quality_ascending_curriculum(lr):
    assert _codes(budget=10000, lr=lr, curriculum={"kind": "quality-ascending"}) == ["full-decay-quality-curriculum"]
    assert _codes(budget=10000, lr=lr, curriculum="random") == []


@pytest.mark.parametrize("fixed", ["wsd(peak=3e-4, warmup=1%, decay=20%, floor=0.3)",
                                   f"cosine(peak=3e-4, floor={MODERATE_FLOOR})", "warmup(constant(3e-4), 1%)"])
def test_moderate_decay_or_constant_lr_is_fine_for_a_quality_curriculum(fixed):
    assert _codes(budget=10000, lr=fixed, curriculum="quality-ascending", averaging="tail") == []


def test_rewarming_without_replay():
    base = {"budget": "2B tokens", "tokens_per_step": 4096, "lr": "rewarm(peak=3e-4, warmup=1%)"}
    assert _codes(**base, continual={"replay": 0.0}) == ["rewarm-without-replay"]
    assert _codes(**base, continual={"replay": 0.05}) == []
    assert _codes(**base) == []  # not a continual run
    trunk = "constant(3e-4)"  # continuing at the trunk LR: no re-warm inferred
    assert _codes(budget=1000, lr=trunk, continual=True) == []
    assert _codes(budget=1000, lr=trunk, continual={"rewarm": True}) == ["rewarm-without-replay"]


def test_cooldown_longer_than_the_remaining_budget():
    findings = diagnose(Regimen.from_dict({"budget": 9000, "elapsed": 8000,
                                           "lr": "wsd(peak=3e-4, warmup=100 steps, decay=20%)"}))
    assert [f.code for f in findings] == ["decay-exceeds-remaining"]
    assert "1800 steps" in findings[0].message and "decay=1000 steps" in findings[0].fix
    assert _codes(budget=9000, elapsed=8000, lr="wsd(peak=3e-4, warmup=100 steps, decay=1000 steps)") == []
    assert _codes(budget=9000, elapsed=0, lr="wsd(peak=3e-4, warmup=100 steps, decay=20%)") == []


def test_amounts_that_do_not_fit_the_budget():
    assert _codes(budget=3000, lr="wsd(peak=1e-3, decay=5000 steps)") == ["schedule-does-not-fit"]
    assert _codes(budget=3000, lr="wsd(peak=1e-3, decay=500 steps)",
                  schedules={"weight_decay": "ramp(start=0, end=0.1, over=4000 steps)"}) == []


def test_fractions_in_an_open_ended_run():
    found = diagnose(Regimen.from_dict({"lr": "warmup(cosine(peak=1e-3), 2%)",
                                        "schedules": {"wd": "wsd(peak=0.1, warmup=100 steps, decay=10%)"}}))
    assert [(f.code, f.severity) for f in found] == [("fraction-in-open-ended", "warning"),
                                                     ("fraction-in-open-ended", "note")]
    assert "warmup.duration=2%" in found[0].message and "wsd.decay=10%" in found[1].message
    assert diagnose(Regimen.from_dict({"lr": "warmup(constant(1e-3), 500 steps)"})) == []


@pytest.mark.parametrize("fields, match", [
    ({"budget": 100}, "needs an 'lr'"),
    ({"lr": "cosine()", "budgett": 100}, "unknown regimen field.*budgett"),
    ({"lr": "cosin()"}, "unknown schedule"),
    ({"lr": "cosine()", "budget": 100, "elapsed": 100}, "elapsed"),
    ({"lr": "cosine()", "continual": {"replay": 1.5}}, "continual.replay"),
    ({"lr": "cosine()", "curriculum": 3}, "curriculum must be a mapping"),
    ({"lr": "cosine()", "budget": "5%"}, "fraction"),
])
def test_malformed_regimens_name_the_field(fields, match):
    with pytest.raises(RegimenError, match=match):
        Regimen.from_dict(fields)


def test_cli_exit_codes_and_json(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("budget: 10000 steps\nlr: cosine(peak=3e-4)\ncurriculum: {kind: quality-ascending}\n")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"budget": "10000 steps", "lr": "wsd(peak=3e-4, warmup=1%, floor=0.3)",
                                "curriculum": {"kind": "quality-ascending"}}))
    broken = tmp_path / "broken.yaml"
    broken.write_text("lr: [unclosed\n")
    assert main(["check", str(bad)]) == 1
    assert "full-decay-quality-curriculum" in capsys.readouterr().out
    assert main(["check", str(good)]) == 0
    assert main(["check", str(broken)]) == 2
    assert main(["check", str(tmp_path / "missing.yaml")]) == 2
    capsys.readouterr()
    assert main(["check", str(bad), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)[0]["code"] == "full-decay-quality-curriculum"
    assert load_regimen(good).curriculum == "quality-ascending"


def test_documented_example_regimen_gives_the_documented_findings(tmp_path):
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "doctor.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "regimen.yaml"
    path.write_text(example)
    assert sorted(f.code for f in diagnose(load_regimen(path))) == ["full-decay-quality-curriculum",
                                                                    "rewarm-without-replay"]
