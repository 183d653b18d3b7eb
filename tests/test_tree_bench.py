"""``cadence bench tree`` and ``cadence bench codesign`` at tiny size: tables, lineage, plot, data orders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cadence.cli import main
from cadence.tree import Lineage

pretrain = pytest.importorskip("cadence.labs.pretrain")


def test_bench_tree_prints_compute_against_the_goal_and_writes_lineage_and_plot(tmp_path, capsys):
    lineage, plot = tmp_path / "lineage.json", tmp_path / "tree.png"
    assert main(["bench", "tree", "--size", "tiny", "--base", "5", "--wsd-s",
                 "--lineage", str(lineage), "-o", str(plot)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps lines at the terminal width
    assert "tree 47 steps" in out and "= 47 (met)" in out and "dedicated runs 75" in out  # 0.8*40 + 0.2*75
    assert "WSD-S chain: 40 steps" in out
    lin = Lineage.from_dict(json.loads(lineage.read_text()))
    assert lin.total_compute == 47
    assert sorted(n.budget for n in lin.nodes if n.kind == "branch") == [5, 10, 20, 40]
    assert plot.stat().st_size > 10_000


def test_codesign_orders_the_same_documents_and_scores_every_variant():
    from cadence.labs.pretrain.tree_bench import LR_VARIANTS, run_codesign, training_documents

    corpus = pretrain.load_corpus()
    docs = training_documents(corpus, 50_000, np.random.default_rng(0))
    lengths = np.diff(corpus.train_starts)[docs] + 1
    assert lengths.sum() >= 50_000 > lengths[:-1].sum() and len(set(docs.tolist())) == len(docs)
    res = run_codesign(steps=16, seeds=2, size="tiny", tail=3)
    for order in ("random", "quality-ascending"):
        for v in LR_VARIANTS:
            assert res.losses[order][v].shape == (2,) and np.isfinite(res.losses[order][v]).all()
    # averaging the tail is a different model than the last checkpoint
    assert not np.array_equal(res.losses["random"]["constant"], res.losses["random"]["constant + tail avg"])
