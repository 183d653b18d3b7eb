"""Progressive plans through the integration layer: the link updates, logs and checkpoints them
atomically; the Hugging Face and Lightning adapters freeze layers at the scheduled step and resume
them exactly."""

from __future__ import annotations

import pytest
import torch

import cadence
from cadence.errors import CadenceError, StateError
from cadence.regimen.link import RegimenLink
from cadence.progressive import LayerFreezing, SequenceLengthWarmup, leaf_layers

# the frozen fraction jumps from 0 to 1 half-way: from then on every layer but the last is frozen
FREEZE_AT_HALF = "join(constant(0), constant(1), at=[50%])"


def linear_layers(n: int = 3) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [torch.nn.Linear(2, 2) for _ in range(n)]


def freezing_link(n_layers: int = 3, budget: int = 4) -> RegimenLink:
    clock = cadence.Clock(budget=budget)
    return RegimenLink(clock=clock, plans=[LayerFreezing(linear_layers(n_layers), clock=clock, fraction=FREEZE_AT_HALF)])


# ---------------------------------------------------------------------------------------- the link
def test_link_updates_plans_and_logs_their_values_under_a_prefix():
    link = freezing_link()
    plan = link.plans.plans["layer_freezing"]
    link.begin_step()
    assert link.values()["cadence/plan/layer_freezing/frozen_layers"] == 0.0
    assert all(p.requires_grad for layer in plan.layers for p in layer.parameters())
    link.step(); link.step()
    link.begin_step()
    values = link.values()
    assert values["cadence/plan/layer_freezing/frozen_layers"] == 2.0
    assert values["cadence/plan/layer_freezing/first_trainable"] == 2.0
    assert values["cadence/progress"] == 0.5
    assert [next(layer.parameters()).requires_grad for layer in plan.layers] == [False, False, True]


def test_link_state_round_trips_plan_state():
    link = freezing_link()
    link.step(); link.step(); link.begin_step()
    state = link.state_dict()
    fresh = freezing_link()
    fresh.load_state_dict(state)
    assert fresh.clock.steps == 2
    assert fresh.state_dict()["plans"] == state["plans"]
    assert [next(layer.parameters()).requires_grad for layer in fresh.plans.plans["layer_freezing"].layers] == [
        False, False, True]


def test_foreign_plan_state_is_rejected_and_nothing_changes():
    clock = cadence.Clock(budget=4)
    link = RegimenLink(clock=clock, plans={
        "low": LayerFreezing(linear_layers(3), clock=clock, fraction=FREEZE_AT_HALF),
        "high": LayerFreezing(linear_layers(3), clock=clock, fraction=FREEZE_AT_HALF)})
    link.begin_step()
    before = link.state_dict()

    other_clock = cadence.Clock(budget=4)
    other = RegimenLink(clock=other_clock, plans={  # "low" matches; "high" has another layer count
        "low": LayerFreezing(linear_layers(3), clock=other_clock, fraction=FREEZE_AT_HALF),
        "high": LayerFreezing(linear_layers(4), clock=other_clock, fraction=FREEZE_AT_HALF)})
    other_clock.advance(3); other.begin_step()
    with pytest.raises(StateError, match="config"):
        link.load_state_dict(other.state_dict())
    assert link.state_dict() == before  # clock and the already-loaded "low" plan were put back
    assert all(p.requires_grad for plan in link.plans.plans.values() for layer in plan.layers
               for p in layer.parameters())

    renamed_clock = cadence.Clock(budget=4)
    renamed = RegimenLink(clock=renamed_clock, plans={"other": LayerFreezing(linear_layers(3), clock=renamed_clock)})
    with pytest.raises(StateError):
        link.load_state_dict({**renamed.state_dict(), "clock": before["clock"]})
    assert link.state_dict() == before


def test_link_shapes_a_batch_through_every_plan_in_order():
    clock = cadence.Clock(budget=4)
    seq = SequenceLengthWarmup(clock=clock, length="ramp(start=2, end=6)", multiple_of=1)
    link = RegimenLink(clock=clock, plans=[LayerFreezing(linear_layers(), clock=clock), seq])
    batch = {"input_ids": torch.zeros(3, 8, dtype=torch.long), "labels": torch.zeros(3, 8, dtype=torch.long)}
    link.begin_step()
    assert {k: tuple(v.shape) for k, v in link.shape(batch).items()} == {"input_ids": (3, 2), "labels": (3, 2)}
    link.step(); link.step(); link.begin_step()
    assert link.shape(batch)["input_ids"].shape == (3, 4)  # the length of the clock's step, not the first one
    layer_only = RegimenLink(clock=clock, plans=[LayerFreezing(linear_layers(), clock=clock)])
    assert layer_only.shape(batch) is batch  # plans that do not reshape pass the batch on untouched


def test_link_rejects_plans_it_cannot_drive():
    clock = cadence.Clock(budget=4)
    with pytest.raises(CadenceError, match="another clock"):
        RegimenLink(clock=clock, plans=[LayerFreezing(linear_layers(), clock=cadence.Clock(budget=4))])
    with pytest.raises(CadenceError, match="share a name"):
        RegimenLink(clock=clock, plans=[SequenceLengthWarmup(clock=clock, length=8),
                                        SequenceLengthWarmup(clock=clock, length=16)])
    with pytest.raises(CadenceError, match="not a cadence.progressive plan"):
        RegimenLink(clock=clock, plans={"x": object()})


# ---------------------------------------------------------------------------------------- Hugging Face
def hf_run(tmp_path, resume_from: str | None = None):
    pytest.importorskip("transformers")
    from transformers import TrainerCallback

    from cadence.integrations.hf import attach
    from test_integrations_hf import make_trainer

    trainer = make_trainer(tmp_path, max_steps=6, save_steps=4)
    blocks = trainer.model.transformer.h
    plan = LayerFreezing([trainer.model.transformer.wpe, *blocks], clock=cadence.Clock(budget=6),
                         fraction=FREEZE_AT_HALF)
    seen: list[tuple[int, bool, torch.Tensor, torch.Tensor]] = []

    class Watch(TrainerCallback):  # what the step just taken trained with, and the weights after it
        def on_step_end(self, args, state, control, **kwargs):
            seen.append((state.global_step, blocks[0].attn.c_attn.weight.requires_grad,
                         blocks[0].attn.c_attn.weight.detach().clone(), blocks[1].attn.c_attn.weight.detach().clone()))

    callback = attach(trainer, lr="constant(1e-2)", plans={"freeze": plan})
    trainer.add_callback(Watch())
    trainer.train(resume_from_checkpoint=resume_from)
    return trainer, callback, plan, seen


def test_hf_trainer_freezes_at_the_scheduled_step_logs_and_resumes(tmp_path):
    from test_integrations_hf import without_seconds

    trainer, callback, plan, seen = hf_run(tmp_path / "straight")
    assert [step for step, *_ in seen] == [1, 2, 3, 4, 5, 6]
    assert [trains for _, trains, *_ in seen] == [True, True, True, False, False, False]  # steps 4-6: clock ≥ 50%
    for (_, _, low_before, high_before), (_, trains, low, high) in zip(seen, seen[1:]):
        assert torch.equal(low, low_before) != trains  # the bottom block moves exactly when it trains
        assert not torch.equal(high, high_before)      # the top block always trains
    logged = {h["step"]: h["cadence/plan/freeze/frozen_layers"] for h in trainer.state.log_history if "loss" in h}
    assert logged == {1: 0.0, 2: 0.0, 3: 0.0, 4: 2.0, 5: 2.0, 6: 2.0}

    resumed, resumed_callback, resumed_plan, resumed_seen = hf_run(
        tmp_path / "resumed", resume_from=str(tmp_path / "straight" / "checkpoint-4"))
    assert [step for step, *_ in resumed_seen] == [5, 6]
    assert resumed_plan.state_dict() == plan.state_dict()
    assert without_seconds(resumed_callback.link.state_dict()) == without_seconds(callback.link.state_dict())
    for a, b in zip(trainer.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------- Lightning
def lightning_run(tmp_path, ckpt_path: str | None = None):
    pl = pytest.importorskip("lightning.pytorch")
    from cadence.integrations.lightning import CadenceCallback

    class Net(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8),
                                           torch.nn.Tanh(), torch.nn.Linear(8, 1))
            self.seen: list[tuple[int, bool, torch.Tensor]] = []

        def training_step(self, batch, batch_idx):  # runs after the callback's on_train_batch_start
            first = self.net[0].weight
            self.seen.append((self.global_step, first.requires_grad, first.detach().clone()))
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x).squeeze(-1), y)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1.0)

    module = Net()
    plan = LayerFreezing(leaf_layers(module.net), clock=cadence.Clock(budget=6), fraction=FREEZE_AT_HALF)
    callback = CadenceCallback(lr="constant(0.05)", plans=[plan])
    saver = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path), every_n_train_steps=4, save_top_k=-1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1)), batch_size=4)  # one batch
    t = pl.Trainer(max_steps=6, callbacks=[callback, saver], accelerator="cpu", devices=1, logger=False,
                   enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=True,
                   default_root_dir=str(tmp_path))
    t.fit(module, loader, ckpt_path=ckpt_path)
    return t, callback, plan, module


def test_lightning_freezes_at_the_scheduled_step_logs_and_resumes(tmp_path):
    t, callback, plan, module = lightning_run(tmp_path / "straight")
    assert [(step, trains) for step, trains, _ in module.seen] == [
        (0, True), (1, True), (2, True), (3, False), (4, False), (5, False)]
    frozen_from = module.seen[3][2]
    assert not torch.equal(module.seen[2][2], frozen_from)  # still trained in step 2
    assert all(torch.equal(w, frozen_from) for _, _, w in module.seen[3:])
    assert torch.equal(module.net[0].weight, frozen_from)
    assert float(t.callback_metrics["cadence/plan/layer_freezing/frozen_layers"]) == 2.0

    from test_integrations_lightning import without_seconds

    resumed_t, resumed, resumed_plan, resumed_module = lightning_run(
        tmp_path / "resumed", ckpt_path=str(tmp_path / "straight" / "epoch=3-step=4.ckpt"))
    assert [(step, trains) for step, trains, _ in resumed_module.seen] == [(4, False), (5, False)]
    assert resumed_plan.state_dict() == plan.state_dict()
    assert without_seconds(resumed.link.state_dict()) == without_seconds(callback.link.state_dict())
    for a, b in zip(module.parameters(), resumed_module.parameters()):
        assert torch.equal(a, b)
