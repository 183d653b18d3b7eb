"""The live forecast from a partial run: the fit, its errors, the background thread, the callbacks."""

from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
import pytest
import torch

import cadence
from cadence.errors import CadenceError, StateError
from cadence.forecast import AnnealingLaw, FitTarget, lr_per_step
from cadence.forecast import live
from cadence.forecast.live import LiveForecast, forecast_final
from cadence.forecast.worker import NICE
from cadence.regimen.link import RegimenLink
from cadence.optim import ScheduledLR

TRUTH = AnnealingLaw(L0=1.2, A=0.6, alpha=0.4, C=0.5, lam=0.95, lr_ref=1e-3, steps_ref=600)
SPEC = "warmup(wsd(peak=1e-3, decay=30%, floor=0.1), 30 steps)"
LR = lr_per_step(SPEC, 600)


def test_a_partial_run_with_earlier_runs_forecasts_the_final_loss() -> None:
    rng = np.random.default_rng(0)
    runs = []
    for spec in ("constant(1e-3)", "cosine(peak=1e-3, floor=0.1)"):
        lr = lr_per_step(spec, 600)
        at = np.arange(20, 601, 10)
        runs.append(FitTarget(at, TRUTH.predict(lr, at) * (1 + 1e-3 * rng.standard_normal(len(at))), lr, spec))
    seen = np.arange(40, 301, 10)  # half the run, before its decay
    loss = TRUTH.predict(LR, seen) * (1 + 1e-3 * rng.standard_normal(len(seen)))
    truth = TRUTH.predict(LR)[-1]
    with_runs = forecast_final(seen, loss, LR, runs=runs, lams=(0.9, 0.95, 0.99))
    assert abs(with_runs.final_loss / truth - 1) < 3e-3 and with_runs.low < with_runs.final_loss < with_runs.high
    assert with_runs.at_step == 300


@pytest.mark.parametrize("steps, logged_lr, match", [
    (np.arange(5, 31, 5), None, "inside the warmup"),
    (np.arange(10, 71, 10), "shifted", "does not match the log's LRs"),
    (np.arange(35, 56, 5), None, "a forecast needs"),
    (np.array([], dtype=int), None, "no points"),
    (np.arange(500, 701, 50), None, "1..600"),
])
def test_bad_partial_logs_are_clear_errors(steps, logged_lr, match) -> None:
    if logged_lr == "shifted":
        logged_lr = lr_per_step("warmup(constant(2e-3), 30 steps)", 600)[steps - 1]
    at = np.clip(steps, 1, 600)
    with pytest.raises(CadenceError, match=match):
        forecast_final(steps, TRUTH.predict(LR, at), LR, logged_lr=logged_lr)
    matching = forecast_final(np.arange(40, 401, 10), TRUTH.predict(LR, np.arange(40, 401, 10)), LR,
                              logged_lr=LR[np.arange(40, 401, 10) - 1], lams=(0.95,))
    assert matching.final_loss > 0


@pytest.mark.parametrize("worker", ["thread", "process"])
def test_the_live_forecast_fits_off_the_training_thread_at_the_right_steps(worker, monkeypatch) -> None:
    calls, release, pids = [], threading.Event(), []
    forecast = LiveForecast(LR, every=200, lams=(0.95,), prefix="x/", worker=worker, max_share=1.0)
    real = live.forecast_final if worker == "thread" else forecast.worker.forecast

    def held(steps, *args, **kwargs):
        calls.append((threading.get_ident(), int(steps[-1])))
        assert release.wait(30)  # a fit that lasts until the test lets it finish
        result = real(steps, *args, **kwargs)
        pids.append(os.getpid() if worker == "thread" else forecast.worker.pid)
        return result

    if worker == "thread":
        monkeypatch.setattr(live, "forecast_final", held)
    else:
        monkeypatch.setattr(forecast.worker, "forecast", held)
    loss = TRUTH.predict(LR)
    for step in range(1, 601):
        forecast.observe(step, float(loss[step - 1]))  # returns while a fit is held: the step never waits
        if step == 250:
            assert forecast._thread.is_alive() and forecast.values() == {}
            assert [s for _, s in calls] == [200]  # no second fit while one runs
            release.set()
        if step in (250, 400):
            forecast.wait()  # let it finish, so the next multiple starts one
    forecast.wait()
    assert [s for _, s in calls] == [200, 400, 600]
    assert all(ident != threading.get_ident() for ident, _ in calls)
    values = forecast.values()
    assert set(values) == {"x/forecast/final_loss", "x/forecast/low", "x/forecast/high", "x/forecast/at_step"}
    assert values["x/forecast/at_step"] == 600 and forecast.fits == 3
    assert values["x/forecast/final_loss"] == pytest.approx(loss[-1], rel=1e-3)
    # the process worker runs the fit in another process and gives the same forecast as a direct call
    assert (set(pids) == {os.getpid()}) == (worker == "thread") and len(set(pids)) == 1
    direct = forecast_final(np.array(forecast.steps), np.array(forecast.losses), LR, lams=(0.95,))
    assert forecast.latest.final_loss == direct.final_loss and forecast.latest.high == direct.high
    if worker == "process":  # the fit runs at a lower CPU priority than training
        assert os.getpriority(os.PRIO_PROCESS, forecast.worker.pid) == min(19, os.nice(0) + NICE)
    forecast.close()
    assert forecast.worker is None or forecast.worker.pid is None
    # resumed: the points come back as plain data
    again = LiveForecast(LR, every=100)
    buffer = io.BytesIO()
    torch.save(forecast.state_dict(), buffer)
    buffer.seek(0)
    again.load_state_dict(torch.load(buffer, weights_only=True))
    assert again.steps == forecast.steps and again.losses == forecast.losses
    with pytest.raises(StateError):
        again.load_state_dict({"kind": "other"})
    with pytest.raises(CadenceError, match="not after"):
        again.observe(5, 1.0)


def test_fits_take_at_most_max_share_of_the_wall_time(monkeypatch) -> None:
    def slow(*args, **kwargs):
        time.sleep(0.2)
        raise CadenceError("no forecast")

    monkeypatch.setattr(live, "forecast_final", slow)
    forecast = LiveForecast(LR, every=1, worker="thread", max_share=0.25)
    forecast.observe(1, 3.0)  # the first fit starts at once
    first = forecast._thread
    forecast.wait()
    rest = forecast._rest_until - time.perf_counter()
    assert rest >= 3 * 0.2 - 0.1  # after a fit of d seconds, a rest of d·(1/0.25 − 1)
    forecast.observe(2, 3.0)
    assert forecast._thread is first  # resting: no new fit although step 2 is a multiple of every
    time.sleep(max(0.0, forecast._rest_until - time.perf_counter()) + 0.01)
    forecast.observe(3, 3.0)
    assert forecast._thread is not first  # rested: the next fit starts
    forecast.wait()
    with pytest.raises(CadenceError, match="max_share"):
        LiveForecast(LR, max_share=0)


def test_a_fit_that_cannot_forecast_yet_leaves_a_reason_not_a_crash() -> None:
    forecast = LiveForecast(LR, every=10)
    for step in range(1, 21):
        forecast.observe(step, 3.0)
    forecast.wait()
    assert forecast.values() == {} and "warmup" in forecast.error


def test_the_link_builds_the_live_forecast_from_its_schedule() -> None:
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    link = RegimenLink(scheduler=ScheduledLR(opt, lr=SPEC, clock=cadence.Clock(budget=600)))
    forecast = link.live_forecast(every=50)
    np.testing.assert_allclose(forecast.lr, LR)
    assert forecast.every == 50 and forecast.prefix == "cadence/"
    with pytest.raises(CadenceError, match="budget in steps"):
        RegimenLink(clock=cadence.Clock()).live_forecast()


class FakeForecast:
    """Records what the callbacks feed it; a forecast is ready from the second observation."""

    every = 4

    def __init__(self) -> None:
        self.observed: list[int] = []

    def observe(self, step, loss) -> None:
        assert np.isfinite(loss)
        self.observed.append(step)

    def values(self) -> dict:
        return {"cadence/forecast/final_loss": 1.0} if len(self.observed) > 1 else {}

    def state_dict(self) -> dict:
        return {"observed": list(self.observed)}

    def load_state_dict(self, state) -> None:
        self.observed = list(state["observed"])


def test_the_lightning_callback_records_and_logs_at_the_right_steps(tmp_path) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import CSVLogger

    from cadence.integrations.lightning import LiveForecastCallback

    class Fit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            x = batch[0]
            return ((self.net(x).squeeze(-1) - x.sum(1)) ** 2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    data = torch.utils.data.TensorDataset(torch.randn(48, 3))
    fake = FakeForecast()
    callback = LiveForecastCallback(fake, record_every=2)
    trainer = pl.Trainer(max_steps=12, callbacks=[callback], accelerator="cpu", devices=1, accumulate_grad_batches=2,
                         logger=CSVLogger(str(tmp_path)), enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path))
    trainer.fit(Fit(), torch.utils.data.DataLoader(data, batch_size=2))
    assert fake.observed == [2, 4, 6, 8, 10, 12]  # once per optimizer step, every 2nd
    assert callback.logged_steps == [4, 8, 12]
    logged = (next(tmp_path.rglob("metrics.csv"))).read_text()
    assert "cadence/forecast/final_loss" in logged
    with pytest.raises(CadenceError):
        LiveForecastCallback(fake, record_every=0)


def test_the_hf_callback_adds_the_forecast_to_the_trainers_logs(tmp_path) -> None:
    pytest.importorskip("transformers")
    from test_integrations_hf import make_trainer

    from cadence.integrations.hf import LiveForecastCallback

    trainer = make_trainer(tmp_path, max_steps=5, save_steps=100)
    fake = FakeForecast()
    trainer.add_callback(LiveForecastCallback(fake))
    trainer.train()
    assert fake.observed == [1, 2, 3, 4, 5]
    logged = [row["step"] for row in trainer.state.log_history if "cadence/forecast/final_loss" in row]
    assert logged == [2, 3, 4, 5]


def test_the_forecast_stopper_stops_a_trial_forecast_worse_and_keeps_a_better_one() -> None:
    pytest.importorskip("ray")
    from cadence.integrations.ray_tune import EarlyRankingStopper, ForecastStopper

    def result(final, half_width, iteration=2):
        return {"training_iteration": iteration, "cadence/forecast/final_loss": final,
                "cadence/forecast/low": final - half_width, "cadence/forecast/high": final + half_width}

    stopper = ForecastStopper(min_iterations=2, widen=1)  # the intervals as reported
    assert stopper("best", result(3.0, 0.01)) is False
    assert stopper("worse", result(3.1, 0.01)) is True  # 3.09 > 3.01: clearly worse
    assert stopper("close", result(3.015, 0.01)) is False  # intervals overlap: not clearly worse
    assert stopper("better", result(2.9, 0.01)) is False  # the new best
    assert stopper("best", result(3.0, 0.01)) is True  # now clearly worse than "better"
    assert stopper("early", result(9.0, 0.01, iteration=1)) is False  # too early to judge
    assert stopper("none", {"training_iteration": 5, "loss": 9.0}) is False  # no forecast reported
    assert stopper.stopped == ["worse", "best"] and stopper.stop_all() is False
    # a stopped trial's forecast is forgotten: it cannot stop the trials that go on
    again = ForecastStopper(widen=1)
    assert again("a", result(3.0, 0.01, 1)) is False and again("b", result(2.9, 0.01, 1)) is False
    assert again("a", result(3.0, 0.01, 2)) is True  # clearly worse than b: stopped at 3.0
    assert again("b", result(3.2, 0.01, 2)) is False and set(again.latest) == {"b"}  # b's rise is not judged by a

    ranking = EarlyRankingStopper(at_iteration=3)
    assert ranking("a", {"training_iteration": 2, "grad_norm": 9.0, "loss": 1.0}) is False  # before t0
    assert ranking("a", {"training_iteration": 3, "grad_norm": 1.0, "loss": 3.0}) is False
    assert ranking("b", {"training_iteration": 3, "grad_norm": 2.0, "loss": 2.0}) is True  # dominated by a
    assert ranking("c", {"training_iteration": 3, "grad_norm": 0.5, "loss": 2.5}) is False  # lower norm
    assert ranking.stopped == ["b"]


def test_a_dead_fit_worker_is_a_clear_error_and_the_next_fit_starts_a_new_one() -> None:
    import signal

    from cadence.forecast.worker import FitWorker

    seen = np.arange(40, 401, 10)
    worker = FitWorker()
    first = worker.forecast(seen, TRUTH.predict(LR, seen), LR, lams=(0.95,))
    with pytest.raises(CadenceError, match="inside the warmup"):  # the fit's own errors come back as they are
        worker.forecast(np.arange(1, 10), TRUTH.predict(LR, np.arange(1, 10)), LR)
    pid = worker.pid
    os.kill(pid, signal.SIGKILL)  # dead between fits: the next fit starts a new worker
    worker._proc.wait()
    again = worker.forecast(seen, TRUTH.predict(LR, seen), LR, lams=(0.95,))
    assert worker.pid != pid and again.final_loss == first.final_loss
    start = worker._start

    def dies_during_the_fit():
        proc = start()
        proc.kill()
        proc.wait()
        return proc

    worker._start = dies_during_the_fit
    with pytest.raises(CadenceError, match="ended unexpectedly"):
        worker.forecast(seen, TRUTH.predict(LR, seen), LR, lams=(0.95,))
    worker._start = start
    assert worker.forecast(seen, TRUTH.predict(LR, seen), LR, lams=(0.95,)).final_loss == first.final_loss
    worker.close()
