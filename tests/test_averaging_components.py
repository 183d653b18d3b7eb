"""EMA and checkpoint averaging on the run's clock: semantics, exact resume, refused state."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cadence import Clock
from cadence.averaging import EMA, CheckpointAverage, average_state_dicts, tail_weights
from cadence.errors import CadenceError, StateError


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def _set(model: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def _train(model, clock, averager, steps, gen):
    """SGD on random regression batches from a private generator; the averager updates each step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        x = torch.randn(8, 3, generator=gen)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        clock.advance(tokens=8 * 3)
        averager.update()


def test_ema_half_life_is_measured_on_the_clock_not_in_updates():
    for updates in (1, 4, 10):  # reach 20 steps in 1, 4 or 10 updates: the same memory
        model, clock = _model(), Clock(budget=1000)
        _set(model, 0.0)
        ema = EMA(model, clock, half_life="20 steps")
        _set(model, 1.0)
        for _ in range(updates):
            clock.advance(steps=20 / updates)
            ema.update()
        assert torch.allclose(ema.averaged()["0.weight"], torch.full((4, 3), 0.5))


def test_ema_half_life_as_a_fraction_of_a_token_budget():
    model, clock = _model(), Clock(budget="10000 tokens", tokens_per_step=100)
    _set(model, 0.0)
    ema = EMA(model, clock, half_life="10%")  # 1000 tokens
    _set(model, 1.0)
    clock.advance(tokens=2000)
    ema.update()
    assert torch.allclose(ema.averaged()["2.bias"], torch.tensor([0.75]))


def test_ema_decay_schedule_and_start():
    model, clock = _model(), Clock(budget=100)
    _set(model, 0.0)
    ema = EMA(model, clock, decay="constant(0.9)", start="50 steps")
    _set(model, 1.0)
    clock.advance()
    ema.update()  # before start: the average is the parameters
    assert torch.equal(ema.averaged()["0.bias"], torch.ones(4))
    clock.advance(steps=49)
    _set(model, 0.0)
    ema.update()  # at start: 0.9 * 1 + 0.1 * 0
    assert torch.allclose(ema.averaged()["0.bias"], torch.full((4,), 0.9))


@pytest.mark.parametrize("make", [
    lambda m, c: EMA(m, c, half_life="7 steps"),
    lambda m, c: EMA(m, c, decay="ramp(start=0.5, end=0.99)", start="10%"),
    lambda m, c: CheckpointAverage(m, c, every="30 tokens", keep=3, weights="linear"),
    lambda m, c: CheckpointAverage(m, c, every="5%", window="20%", start="40%"),
])
def test_resume_is_bit_exact(make):
    steps = 40
    model, clock = _model(), Clock(budget=steps, tokens_per_step=24)
    avg = make(model, clock)
    _train(model, clock, avg, steps, torch.Generator().manual_seed(1))
    straight = avg.averaged()

    model, clock = _model(), Clock(budget=steps, tokens_per_step=24)
    avg, gen = make(model, clock), torch.Generator().manual_seed(1)
    _train(model, clock, avg, steps // 2, gen)
    saved = copy.deepcopy((model.state_dict(), clock.state_dict(), avg.state_dict(), gen.get_state()))
    model2, clock2 = _model(seed=5), Clock(budget=steps, tokens_per_step=24)
    model2.load_state_dict(saved[0])
    clock2.load_state_dict(saved[1])
    avg2 = make(model2, clock2)
    avg2.load_state_dict(saved[2])
    gen.set_state(saved[3])
    _train(model2, clock2, avg2, steps - steps // 2, gen)
    resumed = avg2.averaged()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert not torch.equal(straight["0.weight"], dict(model2.named_parameters())["0.weight"])


def test_checkpoint_average_keeps_the_last_snapshots_and_weights_them():
    model, clock = _model(), Clock(budget=100)
    avg = CheckpointAverage(model, clock, every="10 steps", keep=3, weights="linear")
    for step in range(1, 101):
        _set(model, float(step))
        clock.advance()
        avg.update()
    assert avg.snapshot_positions() == [80.0, 90.0, 100.0]
    expected = (80 * 1 + 90 * 2 + 100 * 3) / 6
    assert torch.allclose(avg.averaged()["2.weight"], torch.full((1, 4), expected))


def test_checkpoint_average_window_and_start():
    model, clock = _model(), Clock(budget="1000 tokens", tokens_per_step=10)
    avg = CheckpointAverage(model, clock, every="50 tokens", window="20%", start="50%")
    for step in range(1, 101):
        _set(model, float(step))
        clock.advance(tokens=10)
        avg.update()
        if step == 40:
            assert avg.snapshot_positions() == []  # nothing before start
    assert avg.snapshot_positions() == [850.0, 900.0, 950.0, 1000.0]  # within the last 200 tokens
    assert torch.allclose(avg.averaged()["0.bias"], torch.full((4,), (85 + 90 + 95 + 100) / 4))


def test_copy_to_loads_the_average_into_a_model():
    model, clock = _model(), Clock(budget=10)
    ema = EMA(model, clock, half_life="1 steps")
    target = _model(seed=3)
    ema.copy_to(target)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), target.parameters()))


def test_foreign_or_mismatched_state_is_refused_and_changes_nothing():
    model, clock = _model(), Clock(budget=10)
    ema = EMA(model, clock, half_life="2 steps")
    before = ema.state_dict()
    with pytest.raises(StateError, match="cadence.EMA"):
        ema.load_state_dict(CheckpointAverage(model, clock, every="1 steps", keep=2).state_dict())
    other = EMA(torch.nn.Linear(3, 2), clock, half_life="2 steps").state_dict()
    with pytest.raises(StateError, match="different parameters"):
        ema.load_state_dict(other)
    after = ema.state_dict()
    assert all(np.array_equal(before["average"][k], after["average"][k]) for k in before["average"])


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one"),
    ({"half_life": "2 steps", "decay": 0.9}, "exactly one"),
    ({"decay": "constant(1.5)"}, r"within \[0, 1\]"),
    ({"half_life": "0 steps"}, "positive"),
])
def test_bad_ema_settings(kwargs, match):
    with pytest.raises(CadenceError, match=match):
        EMA(_model(), Clock(budget=10), **kwargs)


def test_fraction_durations_need_a_budget():
    with pytest.raises(CadenceError, match="open-ended"):
        CheckpointAverage(_model(), Clock(), every="10%", keep=2)


def test_average_state_dicts_checks_its_inputs():
    a, b = {"w": torch.zeros(2), "n": torch.tensor(3)}, {"w": torch.ones(2), "n": torch.tensor(4)}
    out = average_state_dicts([a, b], [1.0, 3.0])
    assert torch.allclose(out["w"], torch.full((2,), 0.75)) and out["n"].item() == 4
    with pytest.raises(CadenceError, match="weights"):
        average_state_dicts([a, b], [1.0, -1.0])
    with pytest.raises(CadenceError, match="does not match"):
        average_state_dicts([a, {"w": torch.ones(3), "n": torch.tensor(1)}])
    assert tail_weights([5.0, 1.0, 2.0], 2).tolist() == [1.0, 2.0]
    with pytest.raises(CadenceError, match="uniform"):
        tail_weights("quadratic", 2)
