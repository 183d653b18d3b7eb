"""Replay for continual pre-training: the exact replayed share, its state, the doctor reading the
piece's spec, the lab's replay stream, and the continual experiment at a tiny size."""

from __future__ import annotations

import codecs
import io
import math

import pytest
import torch

from cadence.curricula import Replay
from cadence.doctor import Regimen, RegimenError, diagnose
from cadence.errors import CadenceError, SpecError, StateError
from cadence.labs.pretrain.continual import ReplayStream, run_continual, shifted_corpus
from cadence.labs.pretrain.corpus import load_corpus
from cadence.labs.pretrain.stream import DocumentStream
from cadence.labs.pretrain.tree_bench import lab_config


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("fraction", [0.0, 0.013, 0.05, 0.25, 1 / 3, 0.9])
def test_replay_share_exact_over_many_batches(fraction):
    replay, rows, per_row = Replay(fraction), 16, 33
    for k in range(1, 2001):
        old, new = replay.split(rows, tokens_per_row=per_row)
        assert old + new == rows and 0 <= old <= rows           # the total batch never changes
        # within half a row, always
        assert abs(replay.old_tokens - fraction * k * rows * per_row) <= per_row / 2 + 1e-9
    assert replay.tokens == 2000 * rows * per_row
    assert math.isclose(replay.realized, fraction, abs_tol=per_row / replay.tokens)


def test_replay_by_hand():
    # ρ = 0.25 of 4 rows: one old row every batch; ρ = 0.05 of 10 rows of 1 token: one old row every other batch
    quarter = Replay(0.25)
    assert [quarter.split(4) for _ in range(3)] == [(1, 3)] * 3
    twentieth = Replay(0.05)
    assert [twentieth.split(10)[0] for _ in range(6)] == [1, 0, 1, 0, 1, 0]   # 0.5 rounds up, then owes 0


def test_replay_state_roundtrip_and_resume():
    a = Replay(0.05)
    for _ in range(7):
        a.split(16, tokens_per_row=33)
    b = Replay(0.05)
    b.load_state_dict(roundtrip(a.state_dict()))
    assert [a.split(16, 33) for _ in range(50)] == [b.split(16, 33) for _ in range(50)]
    with pytest.raises(StateError, match="fraction"):
        Replay(0.25).load_state_dict(a.state_dict())
    with pytest.raises(StateError, match="not a Replay"):
        b.load_state_dict({"kind": "other"})
    before = b.state_dict()
    with pytest.raises(StateError, match="malformed"):
        b.load_state_dict(dict(before, old_tokens=10**9))
    assert b.state_dict() == before


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), True, "0.1", None])
def test_replay_refuses_bad_fractions(bad):
    with pytest.raises(SpecError, match="replay fraction"):
        Replay(bad)


def test_replay_spec_roundtrip_and_errors():
    assert Replay.from_dict(Replay(0.25).to_dict()).to_dict() == {"kind": "replay", "fraction": 0.25}
    with pytest.raises(SpecError):
        Replay.from_dict({"fraction": 0.1, "ratio": 2})
    with pytest.raises(SpecError, match="needs a fraction"):
        Replay.from_dict({"kind": "replay"})
    with pytest.raises(CadenceError, match="rows"):
        Replay(0.1).split(0)


def test_doctor_reads_the_replay_piece():
    base = {"budget": "1000 steps", "lr": "rewarm(peak=1e-3)"}
    with_piece = Regimen.from_dict(base | {"continual": {"replay": Replay(0.05).to_dict()}})
    assert with_piece.replay == 0.05 and diagnose(with_piece) == []
    none = Regimen.from_dict(base | {"continual": {"replay": Replay(0.0).to_dict()}})
    assert [f.code for f in diagnose(none)] == ["rewarm-without-replay"]
    with pytest.raises(RegimenError, match="continual.replay"):
        Regimen.from_dict(base | {"continual": {"replay": {"kind": "replay", "fraction": 1.5}}})


def test_replay_stream_mixes_rows_and_resumes():
    old = load_corpus()
    new = shifted_corpus(old)
    stream = ReplayStream(old, new, Replay(0.25), batch_size=4, context=8, seed=0)
    x, y = stream.next_batch()
    assert x.shape == (4, 8) and bool((x[:, 1:] == y[:, :-1]).all())
    # ρ = 0.25 of 4 rows: the first row comes from the old corpus, the others from the new one
    first_old = DocumentStream(old, batch_size=1, context=8, seed=1).next_batch()[0][0]
    first_new = DocumentStream(new, batch_size=3, context=8, seed=0).next_batch()[0]
    assert torch.equal(x[0], first_old) and torch.equal(x[1:], first_new)
    for _ in range(3):
        stream.next_batch()
    saved = roundtrip(stream.state_dict())
    again = ReplayStream(old, new, Replay(0.25), batch_size=4, context=8, seed=0)
    again.load_state_dict(saved)
    for _ in range(3):
        assert all(torch.equal(a, b) for a, b in zip(stream.next_batch(), again.next_batch()))
    assert stream.replay.realized == 0.25


def test_shifted_corpus_is_rot13():
    old = load_corpus()
    new = shifted_corpus(old)
    assert old.decode(new.document(3)) == codecs.encode(old.decode(old.document(3)), "rot13")
    assert (new.quality == old.quality).all()


def test_continual_tiny_run():
    res = run_continual(lab_config("tiny"), first=8, second=4, seeds=1, fractions=(0.0, 0.25))
    assert [r.fraction for r in res.rows] == [0.0, 0.25]
    assert [r.replayed for r in res.rows] == [0.0, 0.25]
    assert all(math.isfinite(r.old_loss[0]) and math.isfinite(r.new_loss[0]) for r in res.rows)
    with pytest.raises(SpecError):
        run_continual(lab_config("tiny"), first=8, second=4, seeds=1, fractions=(1.0,))


def test_bench_continual_cli_refuses_bad_fractions(capsys):
    from cadence.cli import main

    assert main(["bench", "continual", "--fractions", "0,2"]) == 2
    assert "--fractions" in capsys.readouterr().err
