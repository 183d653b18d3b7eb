"""WSD branches with their own data (OctoThinker, arXiv 2506.20512): the spec carries a mixture,
the trainer receives it, the lineage records it, named branches share a budget, state resumes."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from cadence.clock import Axis
from cadence.errors import SpecError
from cadence.tree import Lineage, TreeError, TreePlan, WSDTree, plan_tree

CLEAN = {"kind": "fixed", "weights": {"clean": 0.9, "noisy": 0.1}}
NOISY = {"kind": "fixed", "weights": {"clean": 0.1, "noisy": 0.9}}


@dataclass
class Result:
    checkpoints: dict
    final_val_loss: float


@dataclass
class DataTrainer:
    """A one-number model pulled towards a target that depends on the data's 'clean' weight."""

    calls: list = field(default_factory=list)

    def __call__(self, schedule, *, steps, start_from, checkpoint_at, **kwargs):
        data = kwargs.get("data")
        self.calls.append((steps, None if start_from is None else start_from["step"], "data" in kwargs, data))
        target = 1.0 if data is None else data["weights"]["clean"]
        step, w = (0, 0.0) if start_from is None else (start_from["step"], start_from["w"])
        checkpoints = {}
        while step < steps:
            w -= schedule.value(step, Axis("steps", steps)) * (w - target)
            step += 1
            if step in checkpoint_at:
                checkpoints[step] = {"step": step, "w": w}
        return Result(checkpoints, (w - 1.0) ** 2)


def test_branches_carry_and_record_their_data():
    trainer = DataTrainer()
    tree = WSDTree(trainer, plan_tree([100], decay=0.2, peak=0.1))
    tree.grow_trunk()
    plain = tree.branch(100, name="trunk data")
    clean = tree.branch(100, data=CLEAN, name="clean")
    noisy = tree.branch(100, data=NOISY, name="noisy")
    # the trunk and the plain branch are called without the keyword (old trainers keep working)
    assert [c[2] for c in trainer.calls] == [False, False, True, True]
    assert [c[3] for c in trainer.calls[2:]] == [CLEAN, NOISY]
    assert [c[1] for c in trainer.calls[1:]] == [80, 80, 80]          # all three from the same trunk checkpoint
    assert clean.final_val_loss < noisy.final_val_loss                # the data reached the training
    lineage = Lineage.from_json(tree.lineage.to_json())
    assert lineage == tree.lineage
    assert {n.id: n.data for n in lineage.nodes} == {"trunk@0-80": None, "branch@80-100:trunk data": None,
                                                     "branch@80-100:clean": CLEAN, "branch@80-100:noisy": NOISY}
    assert set(tree.models) == {"trunk data", "clean", "noisy"} and plain.budget == 100
    with pytest.raises(TreeError, match="exists already"):
        tree.branch(100, data=CLEAN, name="clean")


def test_planned_branch_data_runs_and_round_trips():
    plan = plan_tree([50, 100], decay=0.2, peak=0.1, data={100: CLEAN})
    assert [m.data for m in plan.models] == [None, CLEAN]
    assert TreePlan.from_dict(plan.to_dict()) == plan
    trainer = DataTrainer()
    tree = WSDTree(trainer, plan)
    tree.run()
    assert [c[3] for c in trainer.calls] == [None, None, CLEAN]
    assert tree.lineage[tree.models[100].node].data == CLEAN
    buf = io.BytesIO()
    torch.save(tree.state_dict(), buf)
    buf.seek(0)
    again = WSDTree(DataTrainer(), plan)
    again.load_state_dict(torch.load(buf, weights_only=True))
    assert again.lineage == tree.lineage and again.models == tree.models


def test_named_models_survive_state():
    tree = WSDTree(DataTrainer(), plan_tree([100], decay=0.2, peak=0.1))
    tree.grow_trunk()
    tree.branch(100, data=CLEAN, name="clean")
    again = WSDTree(DataTrainer(), tree.plan)
    again.load_state_dict(tree.state_dict())
    assert again.models == tree.models


@pytest.mark.parametrize("bad", [{"w": {1, 2}}, {"w": float("nan")}, {"w": np.array([1.0])}, [("kind", "fixed")],
                                 {1: "int key"}])
def test_branch_data_must_be_plain(bad):
    tree = WSDTree(DataTrainer(), plan_tree([100], decay=0.2, peak=0.1))
    tree.grow_trunk()
    with pytest.raises(SpecError, match="data"):
        tree.branch(100, data=bad)
    with pytest.raises(SpecError, match="budget 100"):
        plan_tree([100], data={100: bad})
    assert tree.models == {}


def test_plan_data_errors():
    with pytest.raises(TreeError, match="does not have"):
        plan_tree([100], data={200: CLEAN})
    with pytest.raises(TreeError, match="WSD-S"):
        plan_tree([100, 200], mode="wsd-s", data={100: CLEAN})
    tree = WSDTree(DataTrainer(), plan_tree([100], decay=0.2, peak=0.1))
    tree.grow_trunk()
    with pytest.raises(TreeError, match="name"):
        tree.branch(100, name="100")


def test_lab_branch_data_bench_tiny():
    from cadence.labs.pretrain.tree_bench import mixture_order, run_branch_data
    from cadence.labs.pretrain.corpus import load_corpus

    corpus = load_corpus()
    ids = mixture_order(corpus, {"kind": "fixed", "weights": {"clean": 1, "noisy": 0}}, 200, seed=0)
    assert (corpus.quality[ids] >= 0.5).all()
    res = run_branch_data(budget=20, seeds=1, size="tiny")
    assert set(res.losses) == {"trunk data", "clean-heavy", "noisy-heavy"}
    assert all(math.isfinite(v[0]) for v in res.losses.values())
    assert [n["data"] for n in res.lineage["nodes"]][1:] == [None, CLEAN, NOISY]
