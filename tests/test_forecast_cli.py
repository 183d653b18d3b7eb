"""``cadence forecast`` and ``cadence bench forecast`` end to end, at tiny sizes."""

import json
import re

import numpy as np
import pytest

from rich.console import Console

from cadence.cli import main
from cadence.cli.forecast import print_benchmark
from cadence.errors import CadenceError
from cadence.forecast import AnnealingLaw, MultiPowerLaw, RunLog, law_from_dict, lr_per_step
from cadence.labs.pretrain import PretrainConfig
from cadence.labs.pretrain.bench import (ForecastRow, cached_log, forecast_benchmark, ordering_checks,
                                         plot_benchmark)

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


MPL_TRUTH = MultiPowerLaw(L0=1.1, A=0.5, alpha=0.5, B=0.4, C=30.0, beta=0.6, gamma=0.4, lr_ref=2e-3, steps_ref=200)


def test_forecast_fits_the_multi_power_law_when_asked(tmp_path, capsys) -> None:
    for name, spec in (("const.csv", "constant(2e-3)"), ("cos.csv", "cosine(peak=2e-3)"),
                       ("wsd.csv", "wsd(peak=2e-3, decay=30%)")):
        lr = lr_per_step(spec, 200)
        loss = np.full(200, np.nan)
        loss[9::10] = MPL_TRUTH.predict(lr)[9::10]
        RunLog(np.arange(1, 201), lr, loss=loss).write(tmp_path / name)
    spec = "warmup(linear(peak=2e-3), 10 steps)"
    code = main(["forecast", "--law", "multi-power", "--fit", *(str(tmp_path / n) for n in ("const.csv", "cos.csv",
                 "wsd.csv")), "--schedule", spec, "--save", str(tmp_path / "law.json")])
    out = capsys.readouterr().out
    assert code == 0 and "Σ Δ_k" in out
    row = next(line for line in out.splitlines() if "linear(peak=2e-3)" in line)
    assert float(re.findall(r"\d+\.\d{4}", row)[-1]) == pytest.approx(MPL_TRUTH.final_loss(spec, 200), abs=2e-3)
    saved = law_from_dict(json.loads((tmp_path / "law.json").read_text()))
    assert isinstance(saved, MultiPowerLaw) and saved.alpha == pytest.approx(MPL_TRUTH.alpha, rel=0.05)
    assert main(["forecast", "--law", "multi-power", "--lam", "0.9", "--fit", str(tmp_path / "const.csv")]) == 2
    assert "annealing law only" in capsys.readouterr().err


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


@pytest.fixture
def one_torch_thread():
    """Tiny lab models train several times faster on one thread (restored afterwards)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_benchmark_judges_both_laws_and_reuses_its_logged_runs(tmp_path, capsys, one_torch_thread) -> None:
    cfg = PretrainConfig(context=8, batch_size=2, n_layer=1, n_head=1, d_model=8, val_sequences=4)
    held_out = {"wsd": "wsd(peak={peak}, warmup={warmup} steps, decay=20%)"}
    bench = forecast_benchmark(cfg, steps=20, eval_every=2, progress=False, log_dir=tmp_path, held_out=held_out,
                               lam=0.9)  # a fixed momentum keeps the annealing fit quick
    assert list(bench.forecasts) == ["annealing", "multi-power"] and bench.reused == ()
    assert isinstance(bench.forecasts["multi-power"].fit.law, MultiPowerLaw)
    for forecast in bench.forecasts.values():
        assert [r.name for r in forecast.rows] == ["wsd"] and np.isfinite(forecast.rows[0].predicted)
        assert forecast.rows[0].measured == pytest.approx(float(bench.logs["wsd"].val_loss[-1]))
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["constant.csv", "cosine.csv", "wsd.csv"]
    assert plot_benchmark(bench, tmp_path / "bench.png").stat().st_size > 10_000
    print_benchmark(bench, Console(width=200))
    out = capsys.readouterr().out
    annealing_part, multi_power_part = out.split("[multi-power law]")
    for law, part in (("annealing", annealing_part), ("multi-power", multi_power_part)):
        assert "rel. error" in part and "│ wsd" in part
        assert f"{law}: accuracy: max |rel. error|" in part and f"{law}: ordering:" in part
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.csv")}

    again = forecast_benchmark(cfg, steps=20, eval_every=2, progress=False, log_dir=tmp_path, held_out=held_out,
                               laws=("multi-power",))
    assert again.reused == ("constant", "cosine", "wsd") and list(again.forecasts) == ["multi-power"]
    assert again.forecasts["multi-power"].rows == bench.forecasts["multi-power"].rows
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.csv")} == stamps

    record = json.loads((tmp_path / "wsd.json").read_text())
    assert cached_log(tmp_path, "wsd", record) is not None
    for changed in ({"seed": 1}, {"steps": 21}, {"schedule": "constant(1e-3)"}):
        assert cached_log(tmp_path, "wsd", {**record, **changed}) is None  # made another way: train again
    (tmp_path / "wsd.json").unlink()
    assert cached_log(tmp_path, "wsd", record) is None
    with pytest.raises(CadenceError, match="laws"):
        forecast_benchmark(cfg, steps=20, log_dir=tmp_path, held_out=held_out, laws=("nope",))


def test_bench_forecast_is_in_the_shared_bench_group() -> None:
    from cadence.cli import build_parser
    from cadence.cli.forecast import _bench_forecast

    args = build_parser().parse_args(["bench", "forecast", "--steps", "300", "--peak", "1e-3"])
    assert args.func is _bench_forecast and (args.steps, args.peak, args.val_quality) == (300, 1e-3, 0.0)
    assert args.law == ["annealing", "multi-power"]
    assert build_parser().parse_args(["bench", "forecast", "--law", "multi-power"]).law == ["multi-power"]


def test_off_a_terminal_tables_keep_full_names_and_the_fitted_target_is_named(tmp_path, capsys) -> None:
    """Piped to a log, rich must not cut a spec to 'wsd(peak=…'; the output says which loss was fitted."""
    write_run(tmp_path / "constant_24000.csv", "constant(2e-3)")
    write_run(tmp_path / "cosine_24000.csv", "cosine(peak=2e-3)")
    spec = "wsd(peak=2e-3, warmup=1%, decay=20%, shape=1-sqrt, floor=0.1)"
    assert main(["forecast", "--fit", str(tmp_path / "constant_24000.csv"), str(tmp_path / "cosine_24000.csv"),
                 "--schedule", spec, "--steps", "400", "--lam", "0.95", "--law", "annealing"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    assert any(spec in line and "│" in line for line in out.splitlines())
    assert "target: loss (training loss, as logged: nats per token for a cross-entropy)" in out


def test_published_verdicts_are_per_metric_on_the_held_out_means() -> None:
    """The published figures are held-out means (PredE and WorstE averaged over held-out curves):
    the verdicts compare those, one per metric; the all-curves line is not judged."""
    import io
    from types import SimpleNamespace

    from cadence.cli.forecast import print_published
    from cadence.forecast.published import LawScores

    rows = [SimpleNamespace(name=n, fitted=f, pred_e=p, worst_e=w, worst_step=10, final_error=e, band=0.0, outside=(),
                            coverage=0.8, final_inside=True, runs_coverage=0.9, runs_final_inside=True,
                            final_interval_inside=False)
            for n, f, p, w, e in (("cosine_24000", True, 0.0005, 0.02, 0.0), ("wsd_9", False, 0.0009, 0.002, -0.004),
                                  ("wsd_3", False, 0.0011, 0.008, 0.001))]
    scores = LawScores("annealing", SimpleNamespace(law="L(t) = ...", loo_laws=(), loo_residuals=()), tuple(rows), 1.0)
    bench = SimpleNamespace(name="multipower-25m", scores={"annealing": scores}, published=(0.00110, 0.00409))
    out = io.StringIO()
    print_published(bench, Console(file=out, width=400))
    lines = out.getvalue().splitlines()
    all_line = next(line for line in lines if "all curves:" in line)
    assert "WorstE 2.000% (largest)" in all_line and "ABOVE" not in all_line and "below" not in all_line
    held = next(line for line in lines if "held-out curves:" in line)
    assert "PredE 0.100%, WorstE 0.800% (largest), max |final| 0.400%" in held
    means = next(line for line in lines if "held-out means as published" in line)
    # mean PredE 0.100% (below 0.110%), mean WorstE (0.2% + 0.8%)/2 = 0.500% (above 0.409%)
    assert "0.100%, 0.500%" in means and "PredE at or below" in means and "WorstE ABOVE" in means


def test_the_published_plot_names_its_shaded_band(tmp_path, monkeypatch) -> None:
    from types import SimpleNamespace

    import cadence.plotting as plotting
    from cadence.forecast import FitTarget
    from cadence.forecast.published import plot_published

    seen = {}
    monkeypatch.setattr(plotting, "save_with_lrs", lambda fig, ax, runs, path, dpi: seen.setdefault("fig", fig))
    steps = np.arange(1, 11)
    law = SimpleNamespace(predict=lambda lr, at: np.full(len(at), 3.0))
    fit = SimpleNamespace(law=law, loo_residuals=(0.01,),
                          interval=lambda lr, at: (np.full(len(at), 2.9), np.full(len(at), 3.1)))
    curves = [SimpleNamespace(name=n, fitted=f, target=FitTarget(steps, np.full(10, 3.0), np.full(10, 1e-3), n))
              for n, f in (("a", True), ("b", False))]
    scores = SimpleNamespace(fit=fit, summary=lambda: (0.001, 0.002))
    plot_published(SimpleNamespace(name="set", curves=curves, scores={"annealing": scores}), tmp_path / "p.png")
    labels = [t.get_text() for t in seen["fig"].axes[0].get_legend().get_texts()]
    assert labels.count("predictive interval (shaded)") == 1


def test_bench_forecast_tiny_says_it_is_a_smoke_test(monkeypatch, capsys) -> None:
    import cadence.cli.forecast as cli_forecast
    import cadence.labs.pretrain.bench as lab_bench

    monkeypatch.setattr(lab_bench, "forecast_benchmark", lambda *a, **k: "bench")
    monkeypatch.setattr(cli_forecast, "print_benchmark", lambda bench, console: console.print("goal: met"))
    assert main(["bench", "forecast", "--size", "tiny", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("SMOKE TEST") and lines[-1].startswith("SMOKE TEST")
    assert main(["bench", "forecast", "--no-progress"]) == 0
    assert "SMOKE TEST" not in capsys.readouterr().out
