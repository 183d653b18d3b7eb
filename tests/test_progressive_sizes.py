"""Size plans: sequence-length warmup and the batch-size schedule with its coupled LR."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from cadence import CadenceError, Clock, SpecError, StateError, parse
from cadence.optim import ScheduledLR
from cadence.progressive import BatchSizeSchedule, SequenceLengthWarmup


# ---------------------------------------------------------------- sequence length
@pytest.mark.parametrize("batches,duration,lo,hi,step", [(1000, 0.3, 8, 1024, 8), (500, 0.5, 16, 128, 16)])
def test_seq_length_matches_composer_formula_when_increases_divide_evenly(batches, duration, lo, hi, step) -> None:
    warm = math.floor(batches * duration)
    n_up = (hi - lo) // step
    warm -= warm % n_up  # Composer's formula and the ramp agree exactly when n_up divides the warmup
    per_increase = warm // n_up
    clock = Clock(budget=batches)
    plan = SequenceLengthWarmup(clock=clock, length=f"ramp(start={lo}, end={hi}, over={warm} steps)", multiple_of=step)
    for b in range(0, batches, 7):
        clock.advance(b - clock.steps)
        plan.update()
        want = min(max(lo + step * (b // per_increase), lo), hi)  # Composer SeqLengthWarmup
        assert plan.seq_len == want, b


def test_truncation_cuts_every_sequence_tensor_and_reports_tokens() -> None:
    clock = Clock(budget=10)
    plan = SequenceLengthWarmup(clock=clock, length=24, multiple_of=8)
    batch = {"input_ids": torch.arange(4 * 32).view(4, 32), "attention_mask": torch.ones(4, 32),
             "labels": torch.arange(4 * 32).view(4, 32), "weight": torch.ones(4), "meta": "kept"}
    out = plan.apply(batch)
    assert all(out[k].shape == (4, 24) for k in ("input_ids", "attention_mask", "labels"))
    assert torch.equal(out["input_ids"], batch["input_ids"][:, :24])
    assert out["weight"].shape == (4,) and out["meta"] == "kept"
    clock.advance()
    assert clock.tokens == 4 * 24
    short = plan.apply((torch.zeros(2, 16), torch.zeros(2, 16)))  # shorter than the plan's length: unchanged
    assert isinstance(short, tuple) and short[0].shape == (2, 16)


def test_reshape_mode_keeps_tokens_in_more_rows() -> None:
    clock = Clock(budget=10)
    plan = SequenceLengthWarmup(clock=clock, length=8, multiple_of=8, truncate=False)
    ids = torch.arange(3 * 20).view(3, 20)
    out = plan.apply(ids)
    assert out.shape == (6, 8)  # 20 // 8 = 2 rows per sequence; 4 tail tokens per row dropped
    assert torch.equal(out[0], ids[0, :8]) and torch.equal(out[1], ids[0, 8:16]) and torch.equal(out[2], ids[1, :8])
    with pytest.raises(CadenceError, match="cannot reshape"):
        plan.apply({"ids": ids, "weight": torch.ones(3)})


def test_seq_warmup_rejects_bad_input() -> None:
    with pytest.raises(SpecError, match="multiple_of"):
        SequenceLengthWarmup(clock=Clock(budget=10), length=16, multiple_of=0)
    with pytest.raises(SpecError, match="positive"):
        SequenceLengthWarmup(clock=Clock(budget=10), length="ramp(start=0, end=64)")
    plan = SequenceLengthWarmup(clock=Clock(budget=10), length=16)
    with pytest.raises(CadenceError, match="no tensors"):
        plan.apply({"text": "abc"})
    with pytest.raises(CadenceError, match="batch × seq"):
        plan.apply(torch.zeros(5))


# ---------------------------------------------------------------- batch size
@pytest.mark.parametrize("rule", ["linear", "sqrt"])
def test_batch_size_follows_schedule_and_lr_is_coupled(rule: str) -> None:
    total, base_lr = 100, 1e-3
    clock = Clock(budget=total)
    plan = BatchSizeSchedule(clock=clock, batch_size="ramp(start=32, end=256, over=50%)", multiple_of=32, rule=rule)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    sched = ScheduledLR(opt, lr=plan.coupled_lr(base_lr), clock=clock)
    seen, reported = set(), 0
    for step in range(total):
        plan.update(); plan.update()  # a second call in the same step reports nothing more
        raw = 32 + (256 - 32) * min(step / 50, 1.0)
        size = max(32, 32 * math.floor(raw / 32 + 1e-9))
        assert plan.batch_size == size, step
        ratio = size / 32
        assert opt.param_groups[0]["lr"] == pytest.approx(base_lr * (ratio if rule == "linear" else math.sqrt(ratio)))
        want_scale = pytest.approx(opt.param_groups[0]["lr"] / base_lr)
        assert plan.values() == {"batch_size": float(size), "lr_scale": want_scale}
        seen.add(size)
        reported += size
        opt.step(); sched.step()
    assert seen == {32, 64, 96, 128, 160, 192, 224, 256}
    assert clock.samples == reported  # each step's batch counted once


def test_batch_sampler_sizes_each_batch_for_its_step_however_far_ahead_it_is_drawn() -> None:
    clock = Clock(budget=4)
    plan = BatchSizeSchedule(clock=clock, batch_size="ramp(start=2, end=8, over=2 steps)")
    data = TensorDataset(torch.arange(10))
    loader = DataLoader(data, batch_sampler=plan.batch_sampler(len(data), seed=3))
    ahead = iter(loader)
    drawn = [next(ahead)[0] for _ in range(3)]  # a prefetching loader: three steps drawn at step 0
    sizes = []
    for batch in drawn + [next(ahead)[0]]:
        plan.update()
        assert len(batch) == plan.batch_size  # drawn early, yet the size of the step it trains in
        sizes.append(len(batch))
        clock.advance()
    assert sizes == [2, 5, 8, 8]
    rows = torch.cat(drawn).tolist()
    assert sorted(rows[:10]) == list(range(10)) and rows[:10] != list(range(10))  # one shuffled pass, then the next
    assert clock.samples == sum(sizes)


def test_batch_sampler_resumes_the_stream_and_shards_it_across_processes() -> None:
    def batches(start_step: int, n: int, **kw) -> list[list[int]]:
        clock = Clock(budget=20)
        clock.advance(start_step)  # as after a resume at that step
        plan = BatchSizeSchedule(clock=clock, batch_size="ramp(start=1, end=6)", batches_per_step=2)
        stream = iter(plan.batch_sampler(7, seed=5, **kw))
        return [next(stream) for _ in range(n)]

    straight = batches(0, 24)
    assert [len(b) for b in straight[:6]] == [1, 1, 1, 1, 1, 1] and len(straight[-1]) == 3  # 2 batches per step
    assert batches(5, 14) == straight[10:]  # an iteration begun at step 5 continues the same rows
    rank0, rank1 = batches(0, 12, rank=0, world=2), batches(0, 12, rank=1, world=2)
    assert [b for pair in zip(rank0, rank1) for b in pair] == straight  # each step's k-th batch goes to rank k mod 2
    with pytest.raises(CadenceError, match="batches_per_step"):
        batches(0, 1, rank=0, world=3)


def test_batch_sizes_ahead_follow_the_clock_after_a_budget_change_and_need_a_step_budget() -> None:
    clock = Clock(budget=10)
    plan = BatchSizeSchedule(clock=clock, batch_size="ramp(start=10, end=110)")
    clock.advance(4)
    clock.set_budget(16)  # rescale: what remains of the ramp is stretched over 12 more steps
    ahead = [plan.size_at_step(s) for s in range(4, 16)]
    for want in ahead:
        assert plan.current() == want
        clock.advance()

    tokens = Clock(budget="1000 tokens")
    plan = BatchSizeSchedule(clock=tokens, batch_size="ramp(start=4, end=8)")
    assert plan.size_at_step(0) == 4  # the clock's own step needs no prediction
    with pytest.raises(CadenceError, match="budget counts tokens"):
        plan.size_at_step(1)


def test_coupled_lr_spec_round_trips_and_bad_settings_are_rejected() -> None:
    plan = BatchSizeSchedule(clock=Clock(budget=10), batch_size="ramp(start=16, end=64)", rule="linear", multiple_of=16)
    lr = plan.coupled_lr("cosine(peak=1e-3)")
    assert parse(str(lr)) == lr
    with pytest.raises(SpecError, match="rule"):
        BatchSizeSchedule(clock=Clock(budget=10), batch_size=32, rule="cubic")
    with pytest.raises(SpecError, match="positive"):
        BatchSizeSchedule(clock=Clock(budget=10), batch_size="ramp(start=0, end=64)", base_batch_size=8)
    with pytest.raises(SpecError, match="base_batch_size"):
        BatchSizeSchedule(clock=Clock(budget=10), batch_size=32, base_batch_size=0)


def test_size_plans_reject_foreign_state_and_change_nothing() -> None:
    clock = Clock(budget=10)
    seq = SequenceLengthWarmup(clock=clock, length="ramp(start=8, end=64)")
    other = SequenceLengthWarmup(clock=clock, length="ramp(start=8, end=128)")
    batch = BatchSizeSchedule(clock=clock, batch_size=32)
    for state in (other.state_dict(), batch.state_dict(), {"kind": seq.kind, "config": seq.config()}):
        with pytest.raises(StateError):
            seq.load_state_dict(state)
    assert seq.seq_len == 8
