"""A stage's own batch-size plan: one batch sampler for the run, each step sized by the plan of the stage it
trains in (on the stage's own progress), in a plain loop and the HF Trainer; resume continues the same rows and
sizes; what cannot be exact is refused by path."""

from __future__ import annotations

import pytest
import torch

from cadence.clock import Clock
from cadence.progressive import BatchSizeSchedule
from cadence.regimen import PathError, Regimen

RAMP = "ramp(start=2, end=8)"
LOOP_FILE = {
    "budget": "10 steps", "lr": "constant(level=0.1)",
    "stages": [{"name": "warm", "budget": "40%"},
               {"name": "main", "plans": {"size": {"plan": "batch_size", "batch_size": RAMP}}}],
}
ROWS = 20


def hand_sizes(fixed: int, start: int, steps: int) -> list[int]:
    """By hand: ``fixed`` before the stage, then a BatchSizeSchedule on a clock as long as the stage."""
    clock = Clock(budget=steps - start)
    plan = BatchSizeSchedule(clock=clock, batch_size=RAMP)
    out = [fixed] * start
    for _ in range(start, steps):
        out.append(plan.current())
        clock.advance()
    return out


def loop_run(steps, file=LOOP_FILE, state=None):
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    link = Regimen.from_dict(file).attach(opt, model=model)
    if state is not None:
        link.load_state_dict(state)
    batches = iter(torch.utils.data.DataLoader(range(ROWS), batch_sampler=link.plans.batch_sizes(fixed=3)
                                               .batch_sampler(ROWS, seed=5)))
    drawn = []
    for _ in range(steps):
        link.begin_step()
        drawn.append(next(batches).tolist())
        opt.step()
        link.step()
    return drawn, link


def test_a_plain_loop_sizes_each_stage_s_batches_by_its_own_plan():
    drawn, link = loop_run(10)
    assert [len(b) for b in drawn] == hand_sizes(3, 4, 10)
    assert [len(b) for b in drawn][4:] == [2, 3, 4, 5, 6, 7]  # the ramp over the stage's 6 steps, not the run's
    stream = [r for b in drawn for r in b]  # one stream of rows: passes over the data, each a permutation
    assert sorted(stream[:ROWS]) == list(range(ROWS)) and len(set(stream[ROWS:])) == len(stream) - ROWS == 19


@pytest.mark.parametrize("cut", [2, 4, 7])  # before the stage, at its first step, mid-stage
def test_a_plain_loop_resumes_the_same_rows_and_sizes(cut):
    whole, link = loop_run(10)
    before, first = loop_run(cut)
    after, _ = loop_run(10 - cut, state=first.state_dict())
    assert before + after == whole


def test_stage_batch_sizes_that_cannot_be_exact_are_refused_by_path(tmp_path):
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    per_step = {**LOOP_FILE, "plans": {"size": {"plan": "batch_size", "batch_size": 4, "batches_per_step": 2}}}
    with pytest.raises(PathError, match=r"^stages\[1\]\.plans\.size\.batches_per_step: one batch sampler draws"):
        Regimen.from_dict(per_step).attach(opt, model=torch.nn.Linear(1, 1))
    pytest.importorskip("transformers")
    from test_integrations_hf import make_trainer

    ruled = {**LOOP_FILE, "budget": "6 steps", "stages": [
        {**LOOP_FILE["stages"][0], "until": {"metric": "loss", "below": 0.1}}, LOOP_FILE["stages"][1]]}
    with pytest.raises(PathError, match=r"^stages\[0\]\.until: the HF Trainer's data loader draws batches ahead"):
        Regimen.from_dict(ruled).attach(make_trainer(tmp_path, max_steps=6))
    drawn, _ = loop_run(3, file={**ruled, "budget": "10 steps"})  # a plain loop draws in the step: allowed
    assert [len(b) for b in drawn] == [3, 3, 3]


HF_FILE = {"budget": "6 steps", "lr": "constant(level=0.001)", "stages": [
    {"name": "short", "budget": "50%"},
    {"name": "long", "plans": {"size": {"plan": "batch_size", "batch_size": "ramp(start=2, end=5)"}}}]}


def hf_run(root, resume=None):
    pytest.importorskip("transformers")
    from test_integrations_hf import make_trainer

    trainer = make_trainer(root, max_steps=6, save_steps=1)
    Regimen.from_dict(HF_FILE).attach(trainer)
    seen = []
    compute_loss = trainer.compute_loss

    def record(model, inputs, *args, **kwargs):
        seen.append(inputs["input_ids"].clone())
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = record
    trainer.train(resume_from_checkpoint=resume)
    return seen


def test_hf_trainer_sizes_each_stage_s_batches_by_its_own_plan_and_resumes_them(tmp_path):
    seen = hf_run(tmp_path / "run")
    clock = Clock(budget=3)
    plan = BatchSizeSchedule(clock=clock, batch_size="ramp(start=2, end=5)")
    hand = [2, 2, 2]  # per_device_train_batch_size before the stage
    for _ in range(3):
        hand.append(plan.current())
        clock.advance()
    assert [b.shape[0] for b in seen] == hand == [2, 2, 2, 2, 3, 4]
    for cut in (2, 4):  # before the stage, mid-stage
        after = hf_run(tmp_path / "run", resume=str(tmp_path / "run" / f"checkpoint-{cut}"))
        assert len(after) == 6 - cut
        assert all(torch.equal(a, b) for a, b in zip(after, seen[cut:]))


def test_a_top_level_plan_sizes_the_stages_without_their_own_and_a_rule_s_end_is_exact_in_a_plain_loop():
    top = {**LOOP_FILE, "plans": {"size": {"plan": "batch_size", "batch_size": "ramp(start=10, end=20)"}}}
    drawn, _ = loop_run(10, file=top)
    run = Clock(budget=10)  # by hand: the top-level plan on the run's clock, then the stage's own
    plan = BatchSizeSchedule(clock=run, batch_size="ramp(start=10, end=20)")
    before = []
    for _ in range(4):
        before.append(plan.current())
        run.advance()
    assert [len(b) for b in drawn] == before + hand_sizes(3, 4, 10)[4:] and before == [10, 11, 12, 13]

    ruled = {**LOOP_FILE, "stages": [{**LOOP_FILE["stages"][0], "until": {"metric": "loss", "below": 0.1}},
                                     LOOP_FILE["stages"][1]]}
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    link = Regimen.from_dict(ruled).attach(opt, model=model)
    batches = iter(link.plans.batch_sizes(fixed=3).batch_sampler(ROWS))
    sizes = []
    for step in range(10):
        link.begin_step()
        sizes.append(len(next(batches)))  # drawn in the step it trains in
        opt.step()
        link.step()
        if step == 1:
            link.log({"loss": 0.0})  # the rule ends the warm stage after 2 steps: main spans the 8 left
    assert sizes == [3, 3] + hand_sizes(3, 0, 8)  # the ramp over the stage's real 8 steps


def test_a_stage_with_two_batch_size_plans_is_refused_by_path():
    two = {**LOOP_FILE, "stages": [LOOP_FILE["stages"][0], {"name": "main", "plans": {
        "a": {"plan": "batch_size", "batch_size": 2}, "b": {"plan": "batch_size", "batch_size": 3}}}]}
    with pytest.raises(PathError, match=r"^stages\[1\]\.plans\.b: a stage's batches are sized by one batch-size plan"):
        Regimen.from_dict(two).attach(torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1))


def lightning_run(tmp_path, ckpt_path=None):
    """A Lightning run of a two-stage file whose second stage ramps its batch size; the loader takes its
    batches from the link's plans (``batch_sizes``), as a Lightning user builds it; returns each step's rows."""
    pl = pytest.importorskip("lightning.pytorch")

    class Net(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.head, self.seen = torch.nn.Linear(1, 1), []

        def training_step(self, batch, batch_idx):
            self.seen.append(batch[0].squeeze(-1).tolist())
            return self.head(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    file = {"budget": "6 steps", "lr": "constant(level=0.1)",
            "stages": [{"name": "warm", "budget": "50%"},
                       {"name": "main", "plans": {"size": {"plan": "batch_size", "batch_size": RAMP}}}]}
    module = Net()
    saver = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path), every_n_train_steps=1, save_top_k=-1)
    trainer = pl.Trainer(max_steps=6, callbacks=[saver], accelerator="cpu", devices=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    callback = Regimen.from_dict(file).attach(trainer, model=module)
    data = torch.utils.data.TensorDataset(torch.arange(ROWS, dtype=torch.float32).unsqueeze(-1))
    sampler = callback.plans.batch_sizes(fixed=2).batch_sampler(ROWS, seed=1)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_sampler=sampler), ckpt_path=ckpt_path)
    return module.seen


def test_lightning_sizes_each_stage_s_batches_by_its_own_plan_and_resumes_them(tmp_path):
    seen = lightning_run(tmp_path / "run")
    assert [len(b) for b in seen] == hand_sizes(2, 3, 6) == [2, 2, 2, 2, 4, 6]
    for cut in (2, 4):  # before the stage, mid-stage
        assert lightning_run(tmp_path / f"r{cut}", str(tmp_path / "run" / f"epoch=0-step={cut}.ckpt")) == seen[cut:]
