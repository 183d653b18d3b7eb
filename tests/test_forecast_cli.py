"""``cadence forecast`` and ``cadence bench forecast`` end to end, at tiny sizes."""

import json
import re

import numpy as np
import pytest

from cadence.cli import main
from cadence.forecast import AnnealingLaw, RunLog, lr_per_step
from cadence.labs.pretrain import PretrainConfig
from cadence.labs.pretrain.bench import ForecastRow, forecast_benchmark, ordering_checks, plot_benchmark

TRUTH = AnnealingLaw(L0=1.1, A=0.5, alpha=0.5, C=0.4, lam=0.95, lr_ref=2e-3, steps_ref=400)


def write_run(path, spec: str) -> None:
    lr = lr_per_step(spec, 400)
    loss = np.where(np.cumsum(lr) > 0, TRUTH.predict(lr), 9.0)
    RunLog(np.arange(1, 401), lr, loss=loss).write(path)


def test_forecast_prints_predictions_plots_and_saves_the_law(tmp_path, capsys) -> None:
    write_run(tmp_path / "const.csv", "constant(2e-3)")
    write_run(tmp_path / "cos.jsonl", "cosine(peak=2e-3)")
    spec = "wsd(peak=2e-3, decay=20%)"
    code = main(["forecast", "--fit", str(tmp_path / "const.csv"), str(tmp_path / "cos.jsonl"),
                 "--schedule", spec, "--steps", "400", "--optimize-wsd",
                 "-o", str(tmp_path / "curves.png"), "--save", str(tmp_path / "law.json")])
    out = capsys.readouterr().out
    assert code == 0
    row = next(line for line in out.splitlines() if "wsd(peak=2e-3" in line)
    printed = float(re.findall(r"\d+\.\d{4}", row)[-1])
    assert printed == pytest.approx(TRUTH.final_loss(spec, 400), abs=2e-4)
    assert "best WSD for 400 steps" in out
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    saved = AnnealingLaw.from_dict(json.loads((tmp_path / "law.json").read_text()))
    assert saved.alpha == pytest.approx(TRUTH.alpha, rel=1e-2)


def test_forecast_reports_a_bad_log_as_an_error(tmp_path, capsys) -> None:
    (tmp_path / "bad.csv").write_text("step,lr,loss\n2,1e-3,3.0\n1,1e-3,2.0\n")
    assert main(["forecast", "--fit", str(tmp_path / "bad.csv"), "--schedule", "constant(1e-3)"]) == 2
    assert "strictly increase" in capsys.readouterr().err


def test_ordering_checks_only_judge_pairs_that_differ_enough() -> None:
    rows = [ForecastRow("a", "", predicted=1.00, measured=1.000),
            ForecastRow("b", "", predicted=0.99, measured=1.005),   # within 1% of a: not judged
            ForecastRow("c", "", predicted=1.01, measured=1.100)]
    pairs = {(p.better, p.worse): p.ordered for p in ordering_checks(rows, 0.01)}
    assert pairs == {("a", "c"): True, ("b", "c"): True}
    rows[2] = ForecastRow("c", "", predicted=0.98, measured=1.100)
    assert not all(p.ordered for p in ordering_checks(rows, 0.01))


def test_benchmark_runs_the_lab_end_to_end(tmp_path) -> None:
    cfg = PretrainConfig(context=8, batch_size=2, n_layer=1, n_head=1, d_model=8, val_sequences=4)
    bench = forecast_benchmark(cfg, steps=30, eval_every=2, progress=False, log_dir=tmp_path,
                               held_out={"wsd": "wsd(peak={peak}, warmup={warmup} steps, decay=20%)"})
    assert [r.name for r in bench.rows] == ["wsd"] and np.isfinite(bench.rows[0].predicted)
    assert bench.rows[0].measured == pytest.approx(float(bench.logs["wsd"].val_loss[-1]))
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["constant.csv", "cosine.csv", "wsd.csv"]
    assert plot_benchmark(bench, tmp_path / "bench.png").stat().st_size > 10_000


def test_bench_forecast_is_in_the_shared_bench_group() -> None:
    from cadence.cli import build_parser
    from cadence.cli.forecast import _bench_forecast

    args = build_parser().parse_args(["bench", "forecast", "--steps", "300", "--peak", "1e-3"])
    assert args.func is _bench_forecast and (args.steps, args.peak, args.val_quality) == (300, 1e-3, 0.0)
