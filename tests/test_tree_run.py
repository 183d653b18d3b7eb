"""Running a WSD tree with a fake trainer (and once with the tiny pre-training lab): models equal
dedicated runs of their recorded schedules, compute is what was trained, lineage round-trips."""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field

import pytest

from cadence.clock import Axis
from cadence.errors import CadenceError
from cadence.tree import Lineage, TreeError, WSDTree, plan_tree


@dataclass
class FakeResult:
    checkpoints: dict
    final_val_loss: float


@dataclass
class FakeTrainer:
    """A one-parameter 'model' pulled towards a drifting target; its state depends on every LR."""

    trained_steps: int = 0
    calls: list = field(default_factory=list)
    drop_checkpoints: bool = False
    nan_loss: bool = False

    def __call__(self, schedule, *, steps, start_from, checkpoint_at):
        self.calls.append((str(schedule), steps, None if start_from is None else start_from["step"]))
        step, w, v = (0, 0.0, 0.0) if start_from is None else (start_from["step"], start_from["w"], start_from["v"])
        axis = Axis("steps", steps)
        checkpoints = {}
        while step < steps:
            lr = schedule.value(step, axis)
            grad = (w - math.sin(0.01 * step)) + 0.1 * math.cos(step)
            v = 0.9 * v + grad
            w -= lr * v
            step += 1
            self.trained_steps += 1
            if step in checkpoint_at and not self.drop_checkpoints:
                checkpoints[step] = {"step": step, "w": w, "v": v}
        loss = float("nan") if self.nan_loss else (w - math.sin(0.01 * steps)) ** 2
        return FakeResult(checkpoints, loss)


def _dedicated(spec_result_pairs):
    fresh = FakeTrainer()
    return {b: fresh(parse_spec(spec), steps=b, start_from=None, checkpoint_at=(b,)) for b, spec in spec_result_pairs}


def parse_spec(spec):
    from cadence.spec import parse

    return parse(spec)


def test_every_branch_equals_a_dedicated_run_of_its_recorded_schedule():
    trainer = FakeTrainer()
    plan = plan_tree([100, 200, 400, 800], decay=0.2, peak=0.05, warmup=10)
    tree = WSDTree(trainer, plan)
    models = tree.run()
    assert trainer.trained_steps == plan.total_compute == tree.lineage.total_compute == 940
    dedicated = _dedicated((m.budget, tree.lineage[m.node].schedule) for m in models)
    for m in models:
        assert m.checkpoint == dedicated[m.budget].checkpoints[m.budget]  # bit-for-bit
        assert m.final_val_loss == dedicated[m.budget].final_val_loss
    assert [c[2] for c in trainer.calls] == [None, 80, 160, 320, 640]  # trunk, then one call per branch point


def test_a_branch_is_not_the_trunk_itself():
    trainer = FakeTrainer()
    tree = WSDTree(trainer, plan_tree([100, 200], decay=0.2, peak=0.05))
    tree.run()
    trunk_at_200 = trainer(parse_spec(tree.plan.trunk_schedule), steps=200, start_from=None, checkpoint_at=(200,))
    assert tree.models[200].checkpoint != trunk_at_200.checkpoints[200]


def test_lineage_records_parents_schedules_and_round_trips_json():
    tree = WSDTree(FakeTrainer(), plan_tree([100, 200], decay=0.2, peak=0.05, warmup=5))
    tree.run()
    chain = tree.lineage.ancestry(tree.models[200].node)
    assert [n.kind for n in chain] == ["trunk", "branch"]
    assert chain[1].parent == chain[0].id and chain[1].start == 160 and chain[1].budget == 200
    assert chain[1].schedule == tree.plan.models[1].schedule
    assert Lineage.from_json(tree.lineage.to_json()) == tree.lineage
    with pytest.raises(CadenceError, match="cadence.Lineage"):
        Lineage.from_dict({"nodes": []})


def test_branch_on_demand_from_any_trunk_checkpoint_and_grow_the_trunk_later():
    trainer = FakeTrainer()
    tree = WSDTree(trainer, plan_tree([100, 200], decay=0.2, peak=0.05))
    tree.run()
    extra = tree.branch(150, from_step=80)  # a 70-step cooldown from the first branch point
    node = tree.lineage[extra.node]
    assert node.start == 80 and "decay=70 steps" in node.schedule
    dedicated = _dedicated([(150, node.schedule)])
    assert extra.checkpoint == dedicated[150].checkpoints[150]
    with pytest.raises(TreeError, match="no trunk checkpoint at step 120"):
        tree.branch(150 + 1, from_step=120)
    with pytest.raises(TreeError, match="exists already"):
        tree.branch(100)
    grown = tree.grow_trunk(400, checkpoint_at=(300,))
    assert grown.parent == "trunk@0-160" and tree.trunk_end == 400
    model = tree.branch(375, from_step=300)
    assert [n.id for n in tree.lineage.ancestry(model.node)] == ["trunk@0-160", "trunk@160-400", "branch@300-375"]
    assert model.checkpoint == _dedicated([(375, tree.lineage[model.node].schedule)])[375].checkpoints[375]
    with pytest.raises(TreeError, match="already reaches"):
        tree.grow_trunk(300)


def test_wsds_chain_continues_from_each_decayed_model():
    trainer = FakeTrainer()
    plan = plan_tree([100, 200, 400], decay=0.1, peak=0.05, warmup=10, mode="wsd-s")
    tree = WSDTree(trainer, plan)
    models = tree.run()
    assert trainer.trained_steps == 400 == tree.lineage.total_compute
    assert [c[2] for c in trainer.calls] == [None, 100, 200]
    assert [n.parent for n in tree.lineage.nodes] == [None, "wsd-s@0-100", "wsd-s@100-200"]
    dedicated = _dedicated((m.budget, tree.lineage[m.node].schedule) for m in models)
    assert all(m.checkpoint == dedicated[m.budget].checkpoints[m.budget] for m in models)
    with pytest.raises(TreeError, match="WSD-S"):
        tree.branch(300)


@pytest.mark.parametrize("flag, match", [("drop_checkpoints", "no checkpoint at step"), ("nan_loss", "non-finite")])
def test_a_trainer_that_misbehaves_is_reported(flag, match):
    tree = WSDTree(FakeTrainer(**{flag: True}), plan_tree([100], decay=0.2, peak=0.05))
    with pytest.raises(TreeError, match=match):
        tree.run()
    assert tree.models == {}


def test_tree_on_the_tiny_lab_matches_a_dedicated_lab_run():
    lab = pytest.importorskip("cadence.labs.pretrain")
    from cadence.labs.pretrain.tree_bench import lab_config

    cfg = lab_config("tiny")
    trainer = functools.partial(lab.train, cfg, seed=0, progress=False, eval_every=10**9)
    tree = WSDTree(trainer, plan_tree([10, 20], decay=0.3, peak=3e-3, warmup=2))
    models = tree.run()
    for m in models:
        dedicated = trainer(tree.lineage[m.node].schedule, steps=m.budget, start_from=None, checkpoint_at=())
        assert m.final_val_loss == dedicated.final_val_loss


def test_a_saved_tree_resumes_where_it_stopped():
    plan = plan_tree([100, 200, 400], decay=0.2, peak=0.05, warmup=10)
    straight = WSDTree(FakeTrainer(), plan)
    straight.run()

    first = FakeTrainer()
    tree = WSDTree(first, plan)
    tree.grow_trunk()
    tree.branch(100)
    saved = copy.deepcopy(tree.state_dict())
    second = FakeTrainer()
    resumed = WSDTree(second, plan)
    resumed.load_state_dict(saved)
    resumed.run()
    assert first.trained_steps + second.trained_steps == plan.total_compute
    assert [c[2] for c in second.calls] == [160, 320]  # only the two branches left
    assert resumed.lineage == straight.lineage
    assert {b: m.checkpoint for b, m in resumed.models.items()} == {b: m.checkpoint for b, m in straight.models.items()}
    with pytest.raises(CadenceError, match="another plan"):
        WSDTree(FakeTrainer(), plan_tree([100, 200], decay=0.2, peak=0.05)).load_state_dict(saved)
    with pytest.raises(CadenceError, match="cadence.WSDTree"):
        resumed.load_state_dict({"kind": "cadence.Lineage"})
