"""Lightning integration: a Callback drives the optimizer from a spec, feeds per-sample losses to a
curriculum, logs regimen values, and survives a checkpoint/resume exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

import cadence  # noqa: E402
from cadence.curricula import Arms, CurriculumSampler, DoReMi  # noqa: E402
from cadence.integrations.jsonstate import encode  # noqa: E402
from cadence.integrations.lightning import CadenceCallback  # noqa: E402
from cadence.optim import ScheduledLR  # noqa: E402

KEYS = ["near"] * 6 + ["far"] * 6
LR = "wsd(peak=0.05, warmup=20%, decay=40%)"


class Points(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(len(KEYS), 3, generator=g)
        self.y = self.x.sum(1) + torch.tensor([0.0 if k == "near" else 3.0 for k in KEYS])

    def __len__(self):
        return len(KEYS)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class Regression(pl.LightningModule):
    def __init__(self, scheduler_spec: str | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(3, 1)
        self.scheduler_spec = scheduler_spec

    def training_step(self, batch, batch_idx):
        x, y = batch
        per_sample = (self.net(x).squeeze(-1) - y) ** 2
        return {"loss": per_sample.mean(), "sample_loss": per_sample}

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=1.0)
        if self.scheduler_spec is None:
            return opt
        sched = ScheduledLR(opt, lr=self.scheduler_spec, clock=cadence.Clock(budget=6))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def trainer(tmp_path, callback, max_steps=6, **extra):
    return pl.Trainer(max_steps=max_steps, callbacks=[callback], accelerator="cpu", devices=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path), **extra)


def curriculum_run(tmp_path, ckpt_path=None):
    policy = DoReMi(Arms(KEYS), reference={"near": 0.0, "far": 0.0}, seed=1)
    callback = CadenceCallback(lr=LR, sampler=CurriculumSampler(policy, batch_size=2, seed=2))
    trained = []
    observe = policy.observe
    policy.observe = lambda ids, **signals: (trained.append(np.asarray(ids).tolist()), observe(ids, **signals))[1]
    saver = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path), every_n_train_steps=3, save_top_k=-1)
    loader = torch.utils.data.DataLoader(Points(), batch_size=2, sampler=callback.sampler)
    t = pl.Trainer(max_steps=6, callbacks=[callback, saver], accelerator="cpu", devices=1, logger=False,
                   enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    t.fit(Regression(), loader, ckpt_path=ckpt_path)
    return callback, trained, t


def without_seconds(state: dict) -> dict:
    state = json.loads(json.dumps(encode(state)))
    for clock in (state["clock"], state["scheduler"]["clock"]):
        clock["counts"].pop("seconds")
    return state


def test_spec_drives_the_optimizer_and_values_reach_the_logger(tmp_path):
    callback, trained, t = curriculum_run(tmp_path)
    lr = cadence.parse(LR)
    assert callback.link.clock.steps == 6
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(lr.value(6, cadence.Axis("steps", 6)))
    logged = t.callback_metrics
    assert float(logged["cadence/lr/0"]) == pytest.approx(lr.value(6, cadence.Axis("steps", 6)))
    assert float(logged["cadence/curriculum/probabilities/far"]) == pytest.approx(
        callback.link.policy.probabilities()[callback.link.policy.arms.index("far")])
    assert len(trained) == 6 and callback.link.policy.observed.sum() == 12
    assert not np.allclose(callback.link.policy.probabilities(), 0.5)  # per-sample losses moved the mixture


def test_resume_from_a_lightning_checkpoint_is_exact(tmp_path):
    straight, trained, t_straight = curriculum_run(tmp_path / "a")
    resumed, trained_after, t_resumed = curriculum_run(tmp_path / "b", ckpt_path=str(tmp_path / "a" / "epoch=0-step=3.ckpt"))
    assert trained_after == trained[3:]
    assert without_seconds(resumed.link.state_dict()) == without_seconds(straight.link.state_dict())
    for a, b in zip(t_straight.lightning_module.parameters(), t_resumed.lightning_module.parameters()):
        assert torch.equal(a, b)  # the rows trained after the resume are the rows the curriculum was told about


def test_scheduler_from_configure_optimizers_is_picked_up(tmp_path):
    callback = CadenceCallback(knobs={"temperature": "ramp(start=1.0, end=0.5)"})
    t = trainer(tmp_path, callback)
    t.fit(Regression(scheduler_spec="cosine(peak=0.1)"), torch.utils.data.DataLoader(Points(), batch_size=2))
    assert callback.link.scheduler is t.lr_scheduler_configs[0].scheduler
    assert callback.link.clock.steps == 6  # Lightning stepped it, the callback did not step it again
    assert float(t.callback_metrics["cadence/temperature"]) == pytest.approx(0.5)


def test_curriculum_without_per_sample_losses_is_rejected(tmp_path):
    class MeanOnly(Regression):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx)["loss"]

    callback = CadenceCallback(sampler=CurriculumSampler(DoReMi(Arms(KEYS), reference=[0.0, 0.0]), batch_size=2))
    with pytest.raises(cadence.CadenceError, match="sample_loss"):
        trainer(tmp_path, callback).fit(MeanOnly(), torch.utils.data.DataLoader(Points(), batch_size=2,
                                                                                   sampler=callback.sampler))


def test_a_checkpoint_holds_no_prefetched_ids_and_resumes_on_two_processes(tmp_path):
    """The fetcher's prefetched batch goes back into the sampler's position, so two processes (a 2-way
    sharded sampler each, same global batch of 2) resume the one-process checkpoint with their halves of
    the global batch the one process trained next."""
    straight, trained, _ = curriculum_run(tmp_path)
    checkpoint = torch.load(tmp_path / "epoch=0-step=3.ckpt", weights_only=False)
    state = next(v for k, v in checkpoint["callbacks"].items() if "CadenceCallback" in k)
    assert state["tracker"]["pending"] == []                      # folded: nothing per process in the checkpoint
    halves = []
    for rank in range(2):
        policy = DoReMi(Arms(KEYS), reference={"near": 0.0, "far": 0.0}, seed=1)
        callback = CadenceCallback(lr=LR, sampler=CurriculumSampler(policy, batch_size=2, seed=2, num_replicas=2,
                                                                    rank=rank))
        callback.load_state_dict(state)
        halves.append(next(iter(callback.sampler)))
    assert halves == trained[3]                                   # step 4's global batch, one id per process
