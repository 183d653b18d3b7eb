"""Replay through attach: a regimen file's replay curriculum is the data stream the host draws from
(plain loop, HF Trainer), with the replayed share exact over many batches; its state resumes exactly
and loads with torch.load(weights_only=True); the doctor reads its fraction."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from cadence import doctor
from cadence.curricula import Arms, CurriculumSampler, ReplayMixture
from cadence.errors import CadenceError
from cadence.regimen import PathError, Regimen

ROWS = ["old"] * 5 + ["new"] * 11


def cpt(fraction=0.05, rows=ROWS, batch_size=16, **extra):
    return {"budget": "400 steps", "lr": "wsd(peak=3e-4, warmup=1%, decay=20%)", "continual": {"rewarm": True},
            "curriculum": {"policy": "replay", "fraction": fraction, "old": "old", "arms": {"column": "corpus"},
                           "batch_size": batch_size, "seed": 7, **extra}}


def loop(d, dataset):
    return Regimen.from_dict(d).attach(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0), dataset=dataset)


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.25, 1 / 3])
def test_a_plain_loop_draws_the_exact_replay_share_over_many_batches(fraction):
    link = loop(cpt(fraction), {"corpus": ROWS})
    old = 0
    for k in range(1, 401):
        ids = link.sampler.next_batch()
        assert len(ids) == 16
        old += sum(ROWS[i] == "old" for i in ids)
        assert abs(old - fraction * 16 * k) <= 0.5 + 1e-9  # counted from the drawn rows: within half a row, always
        link.step()
    assert link.policy.stats()["replayed"] == pytest.approx(fraction, abs=0.5 / (400 * 16))


def test_tokens_per_row_count_tokens_and_a_resumed_stream_is_identical():
    d = cpt(0.05, tokens_per_row=33)
    link = loop(d, {"corpus": ROWS})
    whole = [link.sampler.next_batch().tolist() for _ in range(60)]
    assert link.policy.old_tokens == sum(33 for b in whole for i in b if ROWS[i] == "old")
    assert abs(link.policy.old_tokens - 0.05 * link.policy.tokens) <= 33 / 2

    first = loop(d, {"corpus": ROWS})
    before = [first.sampler.next_batch().tolist() for _ in range(25)]
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = loop(d, {"corpus": ROWS})
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert before + [resumed.sampler.next_batch().tolist() for _ in range(35)] == whole


def test_bad_replay_pieces_are_one_error_naming_the_field():
    with pytest.raises(PathError, match=r"^curriculum\.replacement: replay counts each draw as one batch"):
        Regimen.from_dict(cpt(replacement=False))
    with pytest.raises(PathError, match=r"^continual\.replay: is 0\.25, but the replay curriculum draws 0\.05"):
        Regimen.from_dict({**cpt(), "continual": {"rewarm": True, "replay": 0.25}})
    with pytest.raises(PathError, match="^curriculum: replay: .*no arm 'old'"):
        loop(cpt(), {"corpus": ["a", "b"]})
    with pytest.raises(CadenceError, match="fraction must be a number in"):
        ReplayMixture(Arms(ROWS), 1.5)
    with pytest.raises(CadenceError, match="with replacement=True"):
        CurriculumSampler(ReplayMixture(Arms(ROWS), 0.1), batch_size=2, replacement=False)


def test_the_doctor_reads_the_fraction_from_the_replay_curriculum():
    assert doctor.Regimen.from_dict(cpt(0.05)).replay == 0.05
    ids = [f.code for f in doctor.diagnose(doctor.Regimen.from_dict(cpt(0.05)))]
    assert "rewarm-without-replay" not in ids
    assert "rewarm-without-replay" in [f.code for f in doctor.diagnose(doctor.Regimen.from_dict(cpt(0.0)))]


def test_an_hf_trainer_draws_its_batches_from_the_replay_mixture(tmp_path):
    pytest.importorskip("transformers")
    from test_integrations_hf import make_trainer

    trainer = make_trainer(tmp_path, max_steps=12, save_steps=100)
    d = {**cpt(0.25, batch_size=2), "budget": "12 steps"}
    d["curriculum"] = {**d["curriculum"], "arms": {"items": ["old"] * 4 + ["new"] * 4}}
    callback = Regimen.from_dict(d).attach(trainer)
    trained = []
    observe = callback.link.observe
    callback.link.observe = lambda ids, **s: (trained.extend(np.asarray(ids).tolist()), observe(ids, **s))[1]
    trainer.train()
    assert len(trained) == 24 and sum(i < 4 for i in trained) == 6  # a quarter of the rows trained on, exactly
