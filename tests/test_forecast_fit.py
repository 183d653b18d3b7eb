"""Fitting the annealing law: recover known constants from synthetic curves, read other tools' logs."""

import json

import numpy as np
import pytest

from cadence.errors import CadenceError
from cadence.forecast import AnnealingLaw, FitTarget, RunLog, RunLogError, fit_law, lr_per_step

TRUTH = AnnealingLaw(L0=1.3, A=0.7, alpha=0.45, C=0.4, lam=0.95, lr_ref=3e-3, steps_ref=600)
FIT_SPECS = ("warmup(constant(3e-3), 12 steps)", "warmup(cosine(peak=3e-3), 12 steps)")
HELD_OUT = ("wsd(peak=3e-3, warmup=12 steps, decay=20%)", "warmup(linear(peak=3e-3), 12 steps)",
            "warmup(rex(peak=3e-3), 12 steps)", "warmup(step(peak=3e-3, every=30%, gamma=0.3), 12 steps)")


def synthetic(spec: str, steps: int = 600, noise: float = 0.0, every: int = 1, seed: int = 0) -> RunLog:
    """A run log whose loss follows TRUTH, with multiplicative noise, logged every ``every`` steps
    (the law is infinite before any LR was applied; those steps get a placeholder loss)."""
    lr = lr_per_step(spec, steps)
    factor = np.exp(noise * np.random.default_rng(seed).standard_normal(steps))
    loss = np.where(np.cumsum(lr) > 0, TRUTH.predict(lr), 10.0) * factor
    idx = np.arange(every - 1, steps, every)
    return RunLog(idx + 1, lr[idx], loss=loss[idx], name=spec)


def test_recovers_known_constants_from_noiseless_curves() -> None:
    fit = fit_law([synthetic(s) for s in FIT_SPECS], lams=(0.9, 0.95))
    law = fit.law
    assert law.lam == 0.95
    for name in ("L0", "A", "alpha", "C"):
        assert getattr(law, name) == pytest.approx(getattr(TRUTH, name), rel=1e-3), name
    assert min(fit.r2.values()) > 0.9999


def test_noisy_fit_predicts_held_out_schedules_within_half_a_percent() -> None:
    runs = [synthetic(s, noise=0.01, seed=i) for i, s in enumerate(FIT_SPECS)]
    law = fit_law(runs, lams=(0.9, 0.95)).law
    for spec in HELD_OUT:
        assert law.final_loss(spec, 600) == pytest.approx(TRUTH.final_loss(spec, 600), rel=5e-3), spec


def test_a_single_constant_run_cannot_see_annealing() -> None:
    """With no LR decay in the data, S2 is zero everywhere: C is unidentified, the rest is fitted."""
    law = fit_law([synthetic(FIT_SPECS[0])], lam=0.95).law
    lr = lr_per_step(FIT_SPECS[0], 600)
    np.testing.assert_allclose(law.predict(lr)[30:], TRUTH.predict(lr)[30:], rtol=1e-4)


def test_reads_sparse_logs_from_other_tools(tmp_path) -> None:
    """CSV with extra columns and JSONL, logged every 10 steps: the LR is interpolated between rows."""
    dense = [synthetic(s) for s in FIT_SPECS]
    sparse = [synthetic(s, every=10) for s in FIT_SPECS]
    csv_path = tmp_path / "const.csv"
    const = sparse[0]
    rows = ["wall_time,step,lr,grad_norm,loss"] + [
        f"{i * 0.1},{s},{float(lr)!r},1.0,{float(l)!r}"
        for i, (s, lr, l) in enumerate(zip(const.step, const.lr, const.loss))]
    csv_path.write_text("\n".join(rows) + "\n")
    jsonl_path = tmp_path / "cosine.jsonl"
    jsonl_path.write_text("".join(json.dumps({"step": int(s), "lr": float(lr), "loss": float(l), "epoch": 0}) + "\n"
                                  for s, lr, l in zip(sparse[1].step, sparse[1].lr, sparse[1].loss)))
    logs = [RunLog.read(csv_path), RunLog.read(jsonl_path)]
    assert logs[0].name == "const.csv" and len(logs[1]) == 60
    from_files = fit_law(logs, lams=(0.95,)).law
    from_dense = fit_law(dense, lams=(0.95,)).law
    for spec in HELD_OUT:
        assert from_files.final_loss(spec, 600) == pytest.approx(from_dense.final_loss(spec, 600), rel=5e-3)


def test_fit_target_prefers_validation_loss_and_skips_the_start() -> None:
    steps = np.arange(1, 101)
    val = np.where(steps % 10 == 0, 2.0, np.nan)
    log = RunLog(steps, np.full(100, 1e-3), loss=np.full(100, 3.0), val_loss=val)
    target = FitTarget.from_log(log, skip=0.25)
    assert target.steps.tolist() == [30, 40, 50, 60, 70, 80, 90, 100] and np.all(target.loss == 2.0)
    assert np.all(FitTarget.from_log(log, target="loss", skip=0.0).loss == 3.0)
    with pytest.raises(CadenceError, match="target"):
        FitTarget.from_log(log, target="accuracy")


def test_bad_logs_are_rejected_with_the_reason(tmp_path) -> None:
    with pytest.raises(RunLogError, match="strictly increase"):
        RunLog([1, 3, 2], [1e-3] * 3, loss=[1.0] * 3)
    with pytest.raises(RunLogError, match="neither"):
        RunLog([1, 2], [1e-3] * 2)
    with pytest.raises(RunLogError, match="positive"):
        RunLog([1, 2], [1e-3] * 2, loss=[1.0, -1.0])
    bad = tmp_path / "bad.csv"
    bad.write_text("step,loss\n1,2.0\n")
    with pytest.raises(RunLogError, match="'lr'"):
        RunLog.read(bad)
    with pytest.raises(RunLogError, match="not found"):
        RunLog.read(tmp_path / "missing.csv")
    with pytest.raises(CadenceError, match="at least one run"):
        fit_law([])


def test_run_log_round_trips_through_csv_and_jsonl(tmp_path) -> None:
    log = RunLog([1, 2, 3], [1e-3, 1e-3, 5e-4], tokens=[8, 16, 24], loss=[3.0, 2.5, 2.4],
                 val_loss=[None, 2.6, None])
    for suffix in (".csv", ".jsonl"):
        back = RunLog.read(log.write(tmp_path / f"run{suffix}"))
        assert back.rows() == log.rows()
