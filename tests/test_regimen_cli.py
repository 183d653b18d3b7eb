"""``cadence show|plot|check FILE`` and ``cadence forecast --regimen FILE`` on regimen files; bad files
exit 2 with one line."""

from __future__ import annotations

import re

import pytest
import yaml

from cadence.cli import main
from cadence.forecast import AnnealingLaw, RunLog, lr_per_step

REGIMEN = {
    "name": "two-stage",
    "budget": "400 steps",
    "lr": "cosine(peak=2e-3)",
    "knobs": {"kl": "constant(level=0.0)"},
    "stages": [
        {"name": "sft", "budget": "25%", "objective": "sft", "lr": "wsd(peak=2e-3, warmup=10%, decay=20%)"},
        {"name": "grpo", "objective": "grpo", "knobs": {"kl": "ramp(start=0.0, end=0.1)"},
         "plateau": {"metric": "reward", "delta": 0.01, "window": 5}},
    ],
}


@pytest.fixture
def regimen_file(tmp_path):
    path = tmp_path / "regimen.yaml"
    path.write_text(yaml.safe_dump(REGIMEN, sort_keys=False))
    return path


def test_show_prints_stages_and_every_schedule_at_the_boundaries(regimen_file, capsys):
    assert main(["show", str(regimen_file), "--points", "3"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"sft\s+│\s+sft\s+│\s+0 │\s+100 │", out) and re.search(r"grpo\s+│\s+grpo\s+│\s+100 │\s+400 │", out)
    row = next(line for line in out.splitlines() if line.startswith("│   100 "))  # the boundary is a shown point
    assert [c.strip() for c in row.split("│")[1:-1]] == ["100", "25.0%", "grpo", "0.002", "0"]  # cosine, kl ramp start
    assert main(["show", str(regimen_file), "--at", "50%"]) == 0
    assert "0.0333333" in capsys.readouterr().out  # 50% of the run is 1/3 of grpo: kl = 0.1 / 3


def test_plot_draws_every_schedule_with_the_stages(regimen_file, tmp_path, capsys):
    out = tmp_path / "r.png"
    assert main(["plot", str(regimen_file), "-o", str(out)]) == 0
    assert out.stat().st_size > 20_000
    assert main(["plot", str(regimen_file), "-o", str(tmp_path / "r.nope")]) == 2  # checked before any work


def test_check_runs_the_doctor_and_the_stage_checks(regimen_file, tmp_path, capsys):
    assert main(["check", str(regimen_file)]) == 0
    assert "last-stage-rule-ends-the-run" in capsys.readouterr().out
    tight = {**REGIMEN, "stages": [dict(REGIMEN["stages"][0], lr="warmup(constant(1e-3), 150 steps)"),
                                   REGIMEN["stages"][1]]}
    path = tmp_path / "tight.yaml"
    path.write_text(yaml.safe_dump(tight))
    assert main(["check", str(path)]) == 1
    assert "stage-schedule-does-not-fit" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    ({"stages": [{"name": "a", "budget": "50%"}, {"name": "b", "lr": "cosine(peak=1e-3)", "temperature": 1}]},
     "stages[1].temperature: unknown field"),
    ({"stages": [{"name": "a", "budget": "80%"}, {"name": "b", "budget": "40%"}]}, "stages: the stages' budgets add up"),
    ({"stages": [{"name": "a", "lr": "cosine(peek=1)"}]}, "stages[0].lr:"),
])
@pytest.mark.parametrize("command", ["show", "plot", "check"])
def test_bad_files_exit_2_with_one_line(tmp_path, capsys, change, message, command):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**REGIMEN, **change}))
    extra = ["-o", str(tmp_path / "x.png")] if command == "plot" else []
    assert main([command, str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_forecast_predicts_the_regimens_lr(regimen_file, tmp_path, capsys):
    truth = AnnealingLaw(L0=1.1, A=0.5, alpha=0.5, C=0.4, lam=0.95, lr_ref=2e-3, steps_ref=400)
    for name, spec in (("const.csv", "constant(2e-3)"), ("cos.csv", "cosine(peak=2e-3)")):
        lr = lr_per_step(spec, 400)
        RunLog(list(range(1, 401)), lr, loss=truth.predict(lr)).write(tmp_path / name)
    assert main(["forecast", "--fit", str(tmp_path / "const.csv"), str(tmp_path / "cos.csv"),
                 "--regimen", str(regimen_file)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "two-stage (regimen)" in line)
    joined = "join(wsd(peak=2e-3, warmup=10%, decay=20%), cosine(peak=2e-3), at=[25%])"
    assert float(re.findall(r"\d+\.\d{4}", row)[0]) == pytest.approx(truth.final_loss(joined, 400), abs=2e-4)
    assert main(["forecast", "--fit", str(tmp_path / "const.csv"), "--regimen", str(tmp_path / "none.yaml")]) == 2
