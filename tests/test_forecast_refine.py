"""Schedule refinement (Defazio et al., arXiv 2310.07831) and the table schedule it produces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cadence.cli import main
from cadence.clock import Axis
from cadence.errors import CadenceError, SpecError
from cadence.forecast import RunLog, lr_per_step
from cadence.forecast.refine import log_grad_norms, refine_schedule, refined_multipliers, smooth_norms
from cadence.optim import ScheduledLR
from cadence.schedules import Linear, Table
from cadence.spec import from_dict, parse, to_dict


def by_hand(g: list[float], power: float) -> list[float]:
    w = [x ** -power for x in g]
    eta = [w[t] * sum(w[t + 1:]) for t in range(len(w))]
    return [e / max(eta) for e in eta]


@pytest.mark.parametrize("norm, power", [("l2", 2.0), ("l1", 1.0)])
def test_multipliers_match_hand_computation(norm, power) -> None:
    g = [2.0, 1.0, 0.5, 1.5, 3.0, 1.0]
    assert refined_multipliers(g, norm=norm, width=0.0) == pytest.approx(by_hand(g, power), rel=1e-12)


def test_constant_norms_give_linear_decay() -> None:
    for width in (0.0, 0.1):
        s = refine_schedule(np.full(800, 0.37), peak=2e-3, width=width)
        axis = Axis("steps", 800)
        for t in range(0, 801, 7):
            assert s.value(t, axis) == pytest.approx(Linear(peak=2e-3).value(t, axis), abs=1e-9)


def test_rising_final_norms_anneal_faster_and_large_early_norms_warm_up() -> None:
    rising = np.concatenate([np.ones(800), np.linspace(1, 4, 200)])
    s = refine_schedule(rising, peak=1.0)
    axis = Axis("steps", 1000)
    assert s.value(900, axis) < 0.5 * Linear(peak=1.0).value(900, axis)
    early = np.concatenate([np.full(100, 5.0), np.ones(900)])
    m = refined_multipliers(early, width=0.0)
    assert m[0] < 0.1 and m.argmax() == 100  # a warmup: small steps while the norms are large


def test_median_filter_removes_spikes_and_keeps_the_final_rise() -> None:
    g = np.ones(100)
    g[30] = 50.0
    assert np.all(smooth_norms(g, 0.1) == 1.0)
    rise = np.concatenate([np.ones(90), np.full(10, 3.0)])
    assert smooth_norms(rise, 0.1)[-1] == 3.0  # reflected past the end, not flattened towards 1


def test_refined_table_round_trips_and_drives_an_optimizer() -> None:
    s = refine_schedule(np.linspace(1, 2, 300) ** 2, peak=3e-4, points=21)
    assert isinstance(s, Table) and max(s.values) == 1.0 and s.values[-1] == 0.0
    assert parse(str(s)) == s and from_dict(to_dict(s)) == s
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    sched = ScheduledLR(opt, lr=str(s), clock=__import__("cadence").Clock(budget=50))
    seen = []
    for _ in range(50):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert np.allclose(seen, lr_per_step(s, 50))


def test_bad_input_is_a_cadence_error() -> None:
    for kwargs in (dict(grad_norms=[1.0]), dict(grad_norms=[1.0, -1.0]), dict(grad_norms=[1, 2], norm="l3"),
                   dict(grad_norms=[1, 2], width=2.0), dict(grad_norms=[1, 2], points=1),
                   dict(grad_norms=[1, 2], peak=0.0), dict(grad_norms=["a", "b"])):
        with pytest.raises(CadenceError):
            refine_schedule(**{"peak": 1e-3, **kwargs})
    assert refined_multipliers([1.0, float("nan"), 0.0, 1.0, float("inf")], width=0).tolist() == [1.0, 0.0]


def test_table_schedule_values_and_validation() -> None:
    axis = Axis("steps", 100)
    s = parse("table(peak=2, at=[0.2, 0.6], values=[1, 0.5])")
    assert [s.value(t, axis) for t in (0, 20, 40, 60, 100)] == pytest.approx([2, 2, 1.5, 1, 1])
    step = parse("table(at=[0, 0.5], values=[1, 0.25], interp=step)")
    assert [step.value(t, axis) for t in (49, 50, 99)] == [1.0, 0.25, 0.25]
    assert s.bounds() == (1.0, 2.0)
    for bad in ("table(at=[0, 0.5], values=[1])", "table(at=[0.5, 0.5], values=[1, 1])",
                "table(at=[0, 1.5], values=[1, 1])", "table(values=[1, -1])", "table(at=['x', 1], values=[1, 1])",
                "table(at=[0, 1], values=[1, 1], interp=cubic)", "table(at=0.5, values=1)"):
        with pytest.raises(SpecError):
            parse(bad)


def test_log_grad_norms_prefers_l1_and_names_a_missing_column() -> None:
    log = RunLog([1, 2, 4], [1e-3] * 3, loss=[3, 2, 1], grad_norm=[1, 2, 4], grad_norm_l1=[10, 20, 40])
    norms, norm = log_grad_norms(log)
    assert norm == "l1" and norms.tolist() == [10, 20, 30, 40]
    assert log_grad_norms(log, "l2")[0].tolist() == [1, 2, 3, 4]
    with pytest.raises(CadenceError, match="no grad_norm values"):
        log_grad_norms(RunLog([1, 2], [1e-3] * 2, loss=[3, 2]))


def test_pretrain_lab_logs_grad_norms_and_the_cli_refines_from_them(tmp_path, capsys) -> None:
    from cadence.labs.pretrain import PretrainConfig, train

    torch.set_num_threads(1)
    tiny = PretrainConfig(context=16, batch_size=4, n_layer=1, n_head=2, d_model=16, val_sequences=8)
    train(tiny, "linear(peak=3e-3)", steps=20, eval_every=10, log_path=tmp_path / "run.csv", progress=False)
    log = RunLog.read(tmp_path / "run.csv")
    assert np.all(log.grad_norm > 0) and np.all(log.grad_norm_l1 > log.grad_norm)
    png = tmp_path / "refined.png"
    assert main(["forecast", "--refine", str(tmp_path / "run.csv"), "--peak", "3e-3", "-o", str(png)]) == 0
    out = capsys.readouterr().out
    spec = out.strip().splitlines()[-1]
    assert "ℓ1 gradient norms" in out and png.stat().st_size > 0
    assert parse(spec) == refine_schedule(log.grad_norm_l1, peak=3e-3, norm="l1")
    assert main(["forecast", "--refine", str(tmp_path / "run.csv")]) == 2
    assert "--peak" in capsys.readouterr().err
