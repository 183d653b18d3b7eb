"""Size plans inside the Hugging Face Trainer and Lightning: the batch a model trains on in step t
has the sequence length and the batch size the plans give step t (recorded in the model's forward,
although both frameworks draw batches ahead), the coupled LR is the one for that batch size, and
a resumed run trains on the same batches and ends with the same weights."""

from __future__ import annotations

import math

import pytest
import torch

import cadence
from cadence.progressive import BatchSizeSchedule, SequenceLengthWarmup

STEPS, BASE_LR = 6, 1e-2
# sizes change at every step, so a batch drawn one step early would show: lengths 4…9, sizes 2,2,3,4,5,6
LENGTH, SIZE = "ramp(start=4, end=10)", "ramp(start=2, end=7)"


def expected(step: int) -> tuple[int, int]:
    """(rows, length) the plans give step ``step`` of a STEPS-step budget."""
    return math.floor(2 + 5 * step / STEPS + 1e-9), math.floor(4 + 6 * step / STEPS + 1e-9)


def size_plans(clock: cadence.Clock, batches_per_step: int = 1) -> list:
    return [SequenceLengthWarmup(clock=clock, length=LENGTH, multiple_of=1),
            BatchSizeSchedule(clock=clock, batch_size=SIZE, rule="linear", batches_per_step=batches_per_step)]


def check_trained_batches(seen: list[tuple[int, int, int, float]], steps: range, per_step: int) -> None:
    """``seen`` holds (step, rows, length, lr) per forward pass: ``per_step`` passes per step."""
    assert [step for step, *_ in seen] == [s for s in steps for _ in range(per_step)]
    for step, rows, length, lr in seen:
        assert (rows, length) == expected(step), step
        assert lr == pytest.approx(BASE_LR * rows / 2)  # linear coupling to the batch actually used (base 2)


# ---------------------------------------------------------------------------------------- Hugging Face
def hf_run(tmp_path, resume_from: str | None = None):
    pytest.importorskip("transformers")
    from cadence.integrations.hf import attach
    from test_integrations_hf import TEXTS, Rows, char_tokenizer, tiny_model

    from transformers import Trainer, TrainingArguments

    tokenizer = char_tokenizer()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=2,
                             gradient_accumulation_steps=2, logging_steps=1, save_steps=3, report_to=[],
                             use_cpu=True, seed=0, disable_tqdm=True)
    trainer = Trainer(model=tiny_model(len(tokenizer)), args=args,
                      train_dataset=Rows(TEXTS["easy"] + TEXTS["hard"], tokenizer, length=12))
    seen: list[tuple[int, int, int, float]] = []

    def record(module, inputs, kwargs):
        if module.training:
            rows, length = kwargs["input_ids"].shape
            seen.append((trainer.state.global_step, rows, length, trainer.optimizer.param_groups[0]["lr"]))

    trainer.model.register_forward_pre_hook(record, with_kwargs=True)
    clock = cadence.Clock(budget=STEPS)
    plans = size_plans(clock, batches_per_step=2)
    callback = attach(trainer, lr=plans[1].coupled_lr(f"constant({BASE_LR})"), plans=plans)
    trainer.train(resume_from_checkpoint=resume_from)
    return trainer, callback, seen


def test_hf_trainer_trains_each_step_on_batches_of_that_steps_sizes_and_resumes(tmp_path):
    from test_integrations_hf import without_seconds

    trainer, callback, seen = hf_run(tmp_path / "straight")
    check_trained_batches(seen, range(STEPS), per_step=2)  # 2 accumulated micro-batches per step
    logged = {h["step"]: h["cadence/plan/batch_size_schedule/batch_size"] for h in trainer.state.log_history
              if "loss" in h}
    assert logged == {s + 1: float(expected(s)[0]) for s in range(STEPS)}
    state = callback.link.state_dict()["clock"]["counts"]
    assert state["samples"] == sum(2 * expected(s)[0] for s in range(STEPS))
    assert state["tokens"] == sum(2 * expected(s)[0] * expected(s)[1] for s in range(STEPS))

    resumed, resumed_callback, resumed_seen = hf_run(tmp_path / "resumed", str(tmp_path / "straight" / "checkpoint-3"))
    assert resumed_seen == seen[6:]  # the same batch shapes and LRs from step 3 on
    assert without_seconds(resumed_callback.link.state_dict()) == without_seconds(callback.link.state_dict())
    for a, b in zip(trainer.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_hf_attach_rejects_a_batch_plan_it_cannot_honour(tmp_path):
    pytest.importorskip("transformers")
    from cadence.integrations.hf import attach
    from test_integrations_hf import make_trainer

    clock = cadence.Clock(budget=STEPS)
    trainer = make_trainer(tmp_path, max_steps=STEPS, gradient_accumulation_steps=2)
    with pytest.raises(cadence.CadenceError, match="batches_per_step=2"):
        attach(trainer, lr="constant(0.1)", plans=[BatchSizeSchedule(clock=clock, batch_size=SIZE)])
    assert trainer.lr_scheduler is None and "get_batch_samples" not in vars(trainer)  # nothing attached


# ---------------------------------------------------------------------------------------- Lightning
def lightning_run(tmp_path, ckpt_path: str | None = None):
    pl = pytest.importorskip("lightning.pytorch")
    from cadence.integrations.lightning import CadenceCallback

    class Net(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.embed, self.head = torch.nn.Embedding(16, 8), torch.nn.Linear(8, 1)
            self.seen: list[tuple[int, int, int, float]] = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            self.seen.append((self.global_step, *x.shape, self.optimizers().param_groups[0]["lr"]))
            return torch.nn.functional.mse_loss(self.head(self.embed(x).mean(1)).squeeze(-1), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1.0)

    module = Net()
    clock = cadence.Clock(budget=STEPS)
    plans = size_plans(clock)
    callback = CadenceCallback(lr=plans[1].coupled_lr(f"constant({BASE_LR})"), plans=plans)
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randint(0, 16, (10, 12), generator=g), torch.randn(10, generator=g))
    loader = torch.utils.data.DataLoader(data, batch_sampler=plans[1].batch_sampler(len(data), seed=1))
    saver = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path), every_n_train_steps=3, save_top_k=-1)
    t = pl.Trainer(max_steps=STEPS, callbacks=[callback, saver], accelerator="cpu", devices=1, logger=False,
                   enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    t.fit(module, loader, ckpt_path=ckpt_path)
    return callback, module


def test_lightning_trains_each_step_on_batches_of_that_steps_sizes_and_resumes(tmp_path):
    from test_integrations_lightning import without_seconds

    callback, module = lightning_run(tmp_path / "straight")
    check_trained_batches(module.seen, range(STEPS), per_step=1)
    assert callback.link.clock.samples == sum(expected(s)[0] for s in range(STEPS))

    resumed, resumed_module = lightning_run(tmp_path / "resumed", str(tmp_path / "straight" / "epoch=0-step=3.ckpt"))
    assert resumed_module.seen == module.seen[3:]
    assert without_seconds(resumed.link.state_dict()) == without_seconds(callback.link.state_dict())
    for a, b in zip(module.parameters(), resumed_module.parameters()):
        assert torch.equal(a, b)


def test_lightning_rejects_a_batch_plan_with_the_wrong_batches_per_step(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.demos.boring_classes import BoringModel

    from cadence.integrations.lightning import CadenceCallback

    plan = BatchSizeSchedule(clock=cadence.Clock(budget=STEPS), batch_size=SIZE)  # 1 batch per step
    module = BoringModel()
    t = pl.Trainer(max_steps=STEPS, accumulate_grad_batches=2, callbacks=[CadenceCallback(plans=[plan])],
                   accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, default_root_dir=str(tmp_path))
    with pytest.raises(cadence.CadenceError, match="batches_per_step=2"):
        t.fit(module)
    assert "on_before_batch_transfer" not in vars(module)  # the module's own hook is left in place
