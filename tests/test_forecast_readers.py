"""Run logs from the tools users train with: logs written by the real writers (HF Trainer,
Lightning CSVLogger, torch's SummaryWriter) and a W&B export, read by content, with clear errors."""

from __future__ import annotations

import json
import sys

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import pytest
import torch

from cadence.cli import main
from cadence.forecast import RunLog, RunLogError, lr_per_step
from cadence.forecast.readers import read_log

torch.set_num_threads(1)


class Regression(torch.nn.Module):
    """A linear model taking HF-style batches; the loss in its output."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        out = self.lin(x)
        return {"loss": ((out - labels) ** 2).mean(), "logits": out}


class Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.5 + 0.1 * torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "labels": self.y[i]}


def hf_run(out, *, steps: int, logging_steps: int, lr: str | None = None) -> tuple[object, object]:
    """Train with a real ``transformers.Trainer``; return ``(path of trainer_state.json, trainer)``."""
    pytest.importorskip("transformers")
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(str(out), max_steps=steps, logging_steps=logging_steps, per_device_train_batch_size=8,
                             eval_strategy="steps", eval_steps=5, learning_rate=0.05, lr_scheduler_type="linear",
                             report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
    trainer = Trainer(model=Regression(), args=args, train_dataset=Pairs(), eval_dataset=Pairs(16))
    if lr is not None:
        from cadence.integrations.hf import attach

        attach(trainer, lr=lr)
    trainer.train()
    path = out / "trainer_state.json"
    trainer.state.save_to_json(str(path))
    return path, trainer


@pytest.fixture(scope="module")
def hf_state(tmp_path_factory):
    return hf_run(tmp_path_factory.mktemp("hf"), steps=30, logging_steps=1)


def test_hf_trainer_state_is_read_with_every_column(hf_state) -> None:
    path, trainer = hf_state
    log = RunLog.read(path)
    history = [r for r in trainer.state.log_history if "loss" in r]
    assert log.step.tolist() == list(range(1, 31))
    assert np.allclose(log.loss, [r["loss"] for r in history])
    assert np.allclose(log.lr, [r["learning_rate"] for r in history])
    assert np.allclose(log.lr, lr_per_step("linear(peak=0.05)", 30))  # the LR each step used
    assert np.all(np.isfinite(log.grad_norm)) and np.all(log.grad_norm > 0)  # HF logs grad norms itself
    evals = {r["step"]: r["eval_loss"] for r in trainer.state.log_history if "eval_loss" in r}
    assert {int(s): v for s, v in zip(log.step, log.val_loss) if not np.isnan(v)} == pytest.approx(evals)
    assert "lr=learning_rate" in log.source and "val_loss=eval_loss" in log.source


def test_forecast_fits_an_hf_trainer_state(hf_state, capsys) -> None:
    path, _ = hf_state
    rc = main(["forecast", "--fit", str(path), "--schedule", "wsd(peak=0.05, decay=20%)"])  # fits eval_loss
    out = capsys.readouterr().out
    assert rc == 0
    assert "Hugging Face trainer_state.json" in out and "predicted final loss" in out


def test_hf_sparse_logs_take_missing_lrs_from_the_schedule(tmp_path, capsys) -> None:
    path, _ = hf_run(tmp_path, steps=20, logging_steps=5)
    sparse = RunLog.read(path)
    assert sparse.step.tolist() == [5, 10, 15, 20]
    dense = RunLog.read(path, schedule="linear(peak=0.05)")  # the budget is the log's max_steps
    assert dense.step.tolist() == list(range(1, 21))
    assert np.allclose(dense.lr, lr_per_step("linear(peak=0.05)", 20))
    assert np.array_equal(np.flatnonzero(~np.isnan(dense.loss)) + 1, [5, 10, 15, 20])
    # the CLI names the run and may give the budget; a spec that disagrees with the logged LRs is reported
    rc = main(["forecast", "--fit", str(path), "--target", "loss", "--skip", "0",
               "--schedule-of", "trainer_state.json=constant(0.05)@40"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "LR of unlogged steps from constant(0.05) over 40 steps" in out and "differs from the logged LR" in out
    assert main(["forecast", "--fit", str(path), "--schedule-of", "other.json=constant(1)"]) == 2
    assert "names none of" in capsys.readouterr().err


def test_hf_adapter_logs_keep_grad_norms_and_the_lr_each_step_used(tmp_path) -> None:
    path, trainer = hf_run(tmp_path, steps=10, logging_steps=1, lr="cosine(peak=0.02)")
    log = RunLog.read(path)
    assert np.all(np.isfinite(log.grad_norm))
    assert np.allclose(log.lr, lr_per_step("cosine(peak=0.02)", 10))  # learning_rate, not cadence/lr/0


def lightning_run(root, *, steps: int = 12, cadence_lr: str | None = None):
    pl = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = Regression()

        def training_step(self, batch, i):
            loss = self.net(**batch)["loss"]
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, i):
            self.log("val_loss", self.net(**batch)["loss"])

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.parameters(), lr=0.05)
            if cadence_lr is not None:
                return opt
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 - k / steps)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    callbacks = [LearningRateMonitor("step")]
    if cadence_lr is not None:
        from cadence.integrations.lightning import CadenceCallback

        callbacks.append(CadenceCallback(lr=cadence_lr))
    logger = CSVLogger(str(root), name="run", version=0)
    trainer = pl.Trainer(max_steps=steps, logger=logger, callbacks=callbacks, log_every_n_steps=1,
                         val_check_interval=4, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, accelerator="cpu", devices=1)
    loader = torch.utils.data.DataLoader(Pairs(), batch_size=8)
    trainer.fit(Module(), loader, torch.utils.data.DataLoader(Pairs(16), batch_size=16))
    return root / "run" / "version_0" / "metrics.csv"


def test_lightning_metrics_csv_is_read_merged_and_shifted(tmp_path) -> None:
    path = lightning_run(tmp_path)
    log = RunLog.read(path)
    assert log.step.tolist() == list(range(1, 13))  # Lightning counts from 0; step k is optimizer step k+1
    assert np.allclose(log.lr, 0.05 * (1 - np.arange(12) / 12))  # the LR each step used
    assert np.all(np.isfinite(log.loss))
    assert np.flatnonzero(~np.isnan(log.val_loss)).tolist() == [3, 7, 11]  # after steps 4, 8, 12
    assert "lr=lr-AdamW" in log.source and "shifted by 1" in log.source
    # detected by content: the same file under another name
    other = tmp_path / "exported.txt"
    other.write_text(path.read_text())
    assert RunLog.read(other).lr.tolist() == log.lr.tolist()


def test_lightning_adapter_logs_grad_norms_and_refine_reads_them(tmp_path, capsys) -> None:
    path = lightning_run(tmp_path, cadence_lr="linear(peak=0.05)")
    log = RunLog.read(path)
    assert np.all(np.isfinite(log.grad_norm)) and np.all(log.grad_norm_l1 >= log.grad_norm)
    assert "grad_norm=cadence/grad_norm" in log.source
    assert main(["forecast", "--refine", str(path), "--peak", "3e-4", "--points", "5"]) == 0
    spec = capsys.readouterr().out.strip().splitlines()[-1]
    assert spec.startswith("table(peak=0.0003, at=[0, 0.25, 0.5, 0.75, 1], values=[")


def test_tensorboard_events_from_summary_writer(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    lr = lr_per_step("cosine(peak=1e-3)", 20)
    for step in range(1, 21):
        writer.add_scalar("train/loss", 3.0 / step ** 0.3, step)
        writer.add_scalar("train/learning_rate", lr[step - 1], step)
        if step % 10 == 0:
            writer.add_scalar("eval/loss", 3.1 / step ** 0.3, step)
    writer.close()
    for path in (tmp_path / "tb", next((tmp_path / "tb").glob("events.out.tfevents.*")), tmp_path):
        log = RunLog.read(path)
        assert log.step.tolist() == list(range(1, 21))
        assert np.allclose(log.lr, lr, rtol=1e-6)  # float32 in the event file
        assert np.allclose(log.val_loss[[9, 19]], [3.1 / 10 ** 0.3, 3.1 / 20 ** 0.3], rtol=1e-6)
        assert "loss=train/loss" in log.source


def test_tensorboard_missing_gives_the_install_line(tmp_path, monkeypatch) -> None:
    events = tmp_path / "events.out.tfevents.1.host"
    events.write_bytes(b"\x18\x00\x00\x00\x00\x00\x00\x00\xa3\x7fK\x22\x09\x00\x00\x00\x00\x00\x00\x00\x00"
                       b"\x1a\x0dbrain.Event:2")
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboard.backend.event_processing", None)
    with pytest.raises(RunLogError, match=r"pip install 'cadence\[tensorboard\]'"):
        read_log(events)


WANDB = """Step,my-run - train/loss,my-run - train/loss__MIN,my-run - train/loss__MAX,my-run - train/learning_rate,\
my-run - train/learning_rate__MIN,my-run - train/learning_rate__MAX,my-run - eval/loss
10,2.5,2.4,2.6,0.001,0.001,0.001,
20,2.2,2.1,2.3,0.0008,0.0008,0.0008,2.3
30,2.0,1.9,2.1,,,,
40,1.9,1.8,2.0,0.0002,0.0002,0.0002,2.0
"""


def test_wandb_csv_export(tmp_path) -> None:
    path = tmp_path / "wandb_export_2024.csv"
    path.write_text(WANDB)
    log = RunLog.read(path)
    assert log.step.tolist() == [10, 20, 30, 40]
    assert log.loss.tolist() == [2.5, 2.2, 2.0, 1.9]
    assert np.allclose(log.lr, [1e-3, 8e-4, 5e-4, 2e-4])  # step 30 interpolated
    assert "W&B CSV export" in log.source and "LR interpolated" in log.source
    # keys by flag, and a clear error for a key the log lacks
    assert RunLog.read(path, loss_key="eval/loss").loss.tolist()[1] == 2.3
    with pytest.raises(RunLogError, match="no key 'train_loss'.*train/loss"):
        RunLog.read(path, loss_key="train_loss")
    # a W&B panel export holds one metric: the LR comes from the schedule the run used
    panel = tmp_path / "loss_panel.csv"
    panel.write_text("Step,my-run - train/loss,my-run - train/loss__MIN,my-run - train/loss__MAX\n"
                     "10,2.5,2.4,2.6\n20,2.2,2.1,2.3\n")
    with pytest.raises(RunLogError, match="no learning rate"):
        RunLog.read(panel)
    filled = RunLog.read(panel, schedule="linear(peak=1e-3)", budget=40)
    assert len(filled) == 20 and np.allclose(filled.lr, lr_per_step("linear(peak=1e-3)", 40)[:20])
    momentum = tmp_path / "momentum.csv"
    momentum.write_text("step,lr-AdamW-momentum,lr-AdamW,train_loss\n0,0.9,0.01,2.0\n1,0.9,0.02,1.5\n")
    assert RunLog.read(momentum).lr.tolist() == [0.01, 0.02]
    two = tmp_path / "two.csv"
    two.write_text("Step,a - train/loss,b - train/loss,a - lr\n1,2,3,0.1\n")
    with pytest.raises(RunLogError, match="several runs"):
        RunLog.read(two)


def test_bad_files_are_one_line_errors(tmp_path, capsys) -> None:
    png = tmp_path / "some.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    assert main(["forecast", "--fit", str(png)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a text log" in err and "Traceback" not in err
    cases = {
        "empty.csv": ("", "is empty"),
        "header.csv": ("step,lr,loss\n", "has no rows"),
        "nolr.json": (json.dumps({"log_history": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.9}]}),
                      "no learning rate .*found step, loss"),
        "noloss.csv": ("step,lr,acc\n1,0.1,0.5\n2,0.1,0.6\n", "no loss .*found step, lr, acc"),
        "object.json": ('{"a": 1}', "without a 'log_history'"),
        "back.jsonl": ('{"step": 2, "lr": 1, "loss": 1}\n{"step": 1, "lr": 1, "loss": 1}\n', "strictly increase"),
        "words.csv": ("step,lr,loss\n1,0.1,abc\n", "'abc', not a number"),
        "huge.csv": ("step,lr,loss\n1e30,0.1,2\n", "not a whole number in 0..100,000,000"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(RunLogError, match=message):
            RunLog.read(path)
    long_run = tmp_path / "long.json"
    long_run.write_text(json.dumps({"max_steps": 10**30, "log_history": [{"step": 1, "loss": 2.0}]}))
    with pytest.raises(RunLogError, match="runs up to 10,000,000 steps"):
        RunLog.read(long_run, schedule="constant(0.1)")
    assert main(["forecast", "--fit", str(tmp_path / "nolr.json")]) == 2
    assert "--schedule-of" in capsys.readouterr().err
    (tmp_path / "dir").mkdir()
    with pytest.raises(RunLogError, match="directory without"):
        RunLog.read(tmp_path / "dir")


def test_cadence_logs_round_trip_with_grad_norms(tmp_path) -> None:
    log = RunLog([1, 2, 3], [1e-3, 1e-3, 5e-4], loss=[3.0, 2.5, 2.4], grad_norm=[1.0, None, 0.5])
    for name in ("run.csv", "run.jsonl"):
        back = RunLog.read(log.write(tmp_path / name))
        assert back.rows() == log.rows()
    assert "grad_norm_l1" not in (tmp_path / "run.csv").read_text()  # empty columns are left out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    st.lists(st.dictionaries(st.sampled_from(["step", "lr", "loss", "eval_loss", "Step", "x"]),
                             st.one_of(st.none(), st.booleans(), st.integers(-3, 10**30), st.floats(), st.text(max_size=4)),
                             max_size=4), max_size=6)
      .map(lambda rows: json.dumps({"max_steps": 5, "log_history": rows}).encode()),
))
def test_any_file_reads_or_gives_a_run_log_error(tmp_path, data) -> None:
    path = tmp_path / "log"
    path.write_bytes(data)
    try:
        log = RunLog.read(path)
    except RunLogError:
        return
    assert len(log) >= 1 and np.all(np.diff(log.step) > 0) and np.all(np.isfinite(log.lr))
