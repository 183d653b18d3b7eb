"""The lab's training loop: schedule-driven LR, logs, exact resume, branching, data order."""

import numpy as np
import pytest
import torch

from cadence.errors import CadenceError, StateError
from cadence.forecast import RunLog, lr_per_step
from cadence.labs.pretrain import PretrainConfig, load_corpus, train

TINY = PretrainConfig(context=16, batch_size=4, n_layer=1, n_head=2, d_model=16, val_sequences=8)


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_log_has_the_documented_columns_and_follows_the_schedule(tmp_path) -> None:
    spec = "wsd(peak=3e-3, warmup=4 steps, decay=25%)"
    result = train(TINY, spec, steps=20, eval_every=5, log_path=tmp_path / "run.csv", progress=False)
    log = result.log
    assert log.step.tolist() == list(range(1, 21))
    np.testing.assert_array_equal(log.lr, lr_per_step(spec, 20))
    np.testing.assert_array_equal(log.tokens, np.arange(1, 21) * TINY.tokens_per_step)
    assert np.all(np.isfinite(log.loss)) and log.loss[-1] < log.loss[0]
    evaluated = np.flatnonzero(~np.isnan(log.val_loss)) + 1
    assert evaluated.tolist() == [5, 10, 15, 20] and log.val_loss[-1] == result.final_val_loss
    assert RunLog.read(tmp_path / "run.csv").rows() == log.rows()


def test_resume_from_a_checkpoint_is_bit_exact() -> None:
    spec = "warmup(cosine(peak=3e-3), 3 steps)"
    straight = train(TINY, spec, steps=16, seed=3, checkpoint_at=(8,), eval_every=4, progress=False)
    resumed = train(TINY, spec, steps=16, seed=3, start_from=straight.checkpoints[8], eval_every=4, progress=False)
    assert resumed.log.step.tolist() == list(range(9, 17))
    np.testing.assert_array_equal(resumed.log.loss, straight.log.loss[8:])
    np.testing.assert_array_equal(resumed.log.lr, straight.log.lr[8:])
    assert resumed.final_val_loss == straight.final_val_loss
    for name, value in params(straight.model).items():
        assert torch.equal(value, params(resumed.model)[name]), name


def test_a_branch_continues_the_trunk_under_its_own_schedule() -> None:
    trunk = train(TINY, "constant(2e-3)", steps=20, checkpoint_at=(12,), progress=False)
    branch = train(TINY, "wsd(peak=2e-3, decay=40%)", steps=20, start_from=trunk.checkpoints[12], progress=False)
    np.testing.assert_array_equal(branch.log.lr, lr_per_step("wsd(peak=2e-3, decay=40%)", 20)[12:])
    assert branch.log.lr[-1] < 2e-3 and branch.final_val_loss != trunk.final_val_loss
    # the checkpoint is a snapshot: training on from it did not change it
    again = train(TINY, "constant(2e-3)", steps=20, start_from=trunk.checkpoints[12], progress=False)
    assert again.final_val_loss == trunk.final_val_loss


def test_data_order_changes_training_and_accepts_a_sampler() -> None:
    corpus = load_corpus()
    by_id = train(TINY, "constant(2e-3)", steps=6, order=np.arange(corpus.n_train), progress=False)
    sampler = train(TINY, "constant(2e-3)", steps=6, order=torch.utils.data.SequentialSampler(range(corpus.n_train)),
                    progress=False)
    by_quality = train(TINY, "constant(2e-3)", steps=6, order=corpus.by_quality(), progress=False)
    np.testing.assert_array_equal(by_id.log.loss, sampler.log.loss)
    assert not np.array_equal(by_id.log.loss, by_quality.log.loss)


def test_training_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(TINY, "constant(1e-3)", steps=2, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_bad_inputs_are_rejected() -> None:
    ckpt = train(TINY, "constant(1e-3)", steps=4, checkpoint_at=(2,), progress=False).checkpoints[2]
    other = PretrainConfig(context=16, batch_size=4, n_layer=1, n_head=2, d_model=32, val_sequences=8)
    with pytest.raises(StateError, match="d_model"):
        train(other, "constant(1e-3)", steps=4, start_from=ckpt, progress=False)
    with pytest.raises(StateError, match="kind"):
        train(TINY, "constant(1e-3)", steps=4, start_from={"model": {}}, progress=False)
    with pytest.raises(CadenceError, match="not before the budget"):
        train(TINY, "constant(1e-3)", steps=2, start_from=ckpt, progress=False)
    with pytest.raises(CadenceError, match="checkpoint steps"):
        train(TINY, "constant(1e-3)", steps=4, checkpoint_at=(5,), progress=False)
    with pytest.raises(CadenceError, match="divisible"):
        PretrainConfig(d_model=30, n_head=4)
    with pytest.raises(CadenceError, match="diverged"):
        train(TINY, "constant(1e6)", steps=30, progress=False)
