"""Layer plans: which layers train, the saving in the backward pass, optimizer state, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cadence import BudgetError, CadenceError, Clock, SpecError, StateError
from cadence.optim import ScheduledLR
from cadence.progressive import FreezeOut, LayerFreezing, RandomizedProgressive, leaf_layers


def mlp(depth: int = 5, width: int = 8, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for _ in range(depth - 1):
        mods += [nn.Linear(width, width), nn.Tanh()]
    mods.append(nn.Linear(width, 3))
    return nn.Sequential(*mods)


def backward_once(model: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 8, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    nn.functional.cross_entropy(model(x), y).backward()


# ---------------------------------------------------------------- LayerFreezing
@pytest.mark.parametrize("start,level", [(0.5, 1.0), (0.2, 0.6), (0.0, 1.0)])
def test_layer_freezing_depth_follows_composer_formula(start: float, level: float) -> None:
    n, total = 7, 1000
    model = mlp(depth=n)
    clock = Clock(budget=total)
    plan = LayerFreezing(leaf_layers(model), clock=clock, start=start, level=level)
    for step in (0, 137, 499, 501, 733, 999, 1000):
        clock.advance(step - clock.steps)
        plan.update()
        u = step / total
        frac = 0.0 if u <= start else level * (u - start) / (1 - start)  # Composer LayerFreezing
        depth = math.floor(frac * (n - 1))
        assert plan.trainable.tolist() == [i >= depth for i in range(n)], (step, plan.trainable)
        assert plan.values()["frozen_layers"] == depth
    assert plan.trainable[-1]  # the last layer never freezes


def test_layer_freezing_accepts_any_fraction_schedule_and_rejects_out_of_range() -> None:
    layers = leaf_layers(mlp(depth=5))
    clock = Clock(budget=100)
    plan = LayerFreezing(layers, clock=clock, fraction="step(peak=1, gamma=0.5, every=50 steps)")
    plan.update()
    assert plan.values()["frozen_layers"] == 4  # fraction 1 → ⌊1·4⌋ layers, the last stays
    clock.advance(60)
    plan.update()
    assert plan.values()["frozen_layers"] == 2
    with pytest.raises(SpecError, match="frozen fraction"):
        LayerFreezing(layers, clock=clock, fraction="ramp(start=0, end=2)")
    with pytest.raises(SpecError, match="level"):
        LayerFreezing(layers, clock=clock, level=1.5)
    with pytest.raises(BudgetError):
        LayerFreezing(layers, clock=Clock(budget=100), start="500 steps")


def test_frozen_layers_get_no_gradient_and_backward_stops_at_cutoff() -> None:
    model = mlp(depth=5)
    layers = leaf_layers(model)
    clock = Clock(budget=10)
    plan = LayerFreezing(layers, clock=clock, fraction=0.5)  # ⌊0.5·4⌋ = 2 frozen
    in_graph: list[bool] = []  # whether autograd recorded each layer's output (backward can enter it)
    for layer in layers:
        layer.register_forward_hook(lambda m, args, out: in_graph.append(out.requires_grad))
    backward_once(model)  # a full pass first: every layer gets a gradient
    assert in_graph == [True] * 5 and all(p.grad is not None for p in model.parameters())
    in_graph.clear()
    plan.update()
    assert all(p.grad is None and not p.requires_grad for layer in layers[:2] for p in layer.parameters())
    backward_once(model)
    assert in_graph == [False, False, True, True, True]  # no graph below the cutoff: backward stops there
    assert all(p.grad is not None for layer in layers[2:] for p in layer.parameters())
    assert all(p.grad is None for layer in layers[:2] for p in layer.parameters())
    plan.release()
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("zero_to_none", [True, False])
def test_muon_and_adamw_leave_frozen_layers_and_their_state_untouched(zero_to_none: bool) -> None:
    model = mlp(depth=4)
    layers = leaf_layers(model)
    muon = torch.optim.Muon([p for p in model.parameters() if p.ndim == 2], lr=0.02)
    adamw = torch.optim.AdamW([p for p in model.parameters() if p.ndim != 2], lr=0.01)
    clock = Clock(budget=10)
    plan = RandomizedProgressive(layers, clock=clock, probabilities=[0, 0, 1, 0])  # cutoff 2 every step
    for opt in (muon, adamw):  # one full step so every parameter has optimizer state
        opt.zero_grad(set_to_none=zero_to_none)
    backward_once(model)
    muon.step(); adamw.step()
    frozen = [p for layer in layers[:2] for p in layer.parameters()]
    before = [p.detach().clone() for p in frozen]
    state_before = [{k: v.clone() if torch.is_tensor(v) else v for k, v in (muon.state[p] or adamw.state[p]).items()}
                    for p in frozen]
    trained = [p.detach().clone() for layer in layers[2:] for p in layer.parameters()]
    for step in range(3):
        muon.zero_grad(set_to_none=zero_to_none); adamw.zero_grad(set_to_none=zero_to_none)
        plan.update()
        backward_once(model, seed=2 + step)
        muon.step(); adamw.step(); clock.advance()
    for p, b, s in zip(frozen, before, state_before):
        assert torch.equal(p, b)
        now = muon.state[p] or adamw.state[p]
        assert all(torch.equal(now[k], v) if torch.is_tensor(v) else now[k] == v for k, v in s.items())
    after = [p for layer in layers[2:] for p in layer.parameters()]
    assert all(not torch.equal(a, b) for a, b in zip(after, trained))


# ---------------------------------------------------------------- FreezeOut
@pytest.mark.parametrize("shape,power", [("linear", 1), ("squared", 2), ("cubic", 3)])
def test_freezeout_times_follow_the_formula(shape: str, power: int) -> None:
    plan = FreezeOut(leaf_layers(mlp(depth=5)), clock=Clock(budget=100), t0=0.6, shape=shape)
    expected = [(0.6 + 0.4 * i / 4) ** power for i in range(5)]
    assert np.allclose(plan.freeze_times, expected)
    assert plan.freeze_times[-1] == 1.0


@pytest.mark.parametrize("scale_lr", [True, False])
def test_freezeout_lr_anneals_each_layer_to_its_freeze_time_then_freezes(scale_lr: bool) -> None:
    total, lr = 200, 0.1
    model = mlp(depth=4)
    clock = Clock(budget=total)
    plan = FreezeOut(leaf_layers(model), clock=clock, t0=0.5, shape="linear", scale_lr=scale_lr)
    opt = torch.optim.SGD(plan.param_groups(), lr=1.0)
    sched = ScheduledLR(opt, lr=plan.lr_schedules(opt, lr), clock=clock)
    times = plan.freeze_times
    for step in range(total):
        plan.update()
        for i, group in enumerate(opt.param_groups):
            t_i, u = times[i], step / total
            alpha = lr / t_i if scale_lr else lr
            want = alpha / 2 * (1 + math.cos(math.pi * u / t_i)) if u < t_i else 0.0
            assert group["lr"] == pytest.approx(want, abs=1e-12), (step, i)
            assert plan.trainable[i] == (u < t_i)
        opt.step(); sched.step()


def test_freezeout_param_groups_split_for_muon_and_adamw() -> None:
    model = mlp(depth=3)
    plan = FreezeOut(leaf_layers(model), clock=Clock(budget=10))
    muon = torch.optim.Muon(plan.param_groups(lambda p: p.ndim == 2), lr=0.02)
    adamw = torch.optim.AdamW(plan.param_groups(lambda p: p.ndim != 2) + [{"params": [nn.Parameter(torch.zeros(2))]}])
    assert [g["freezeout_layer"] for g in muon.param_groups] == [0, 1, 2]
    schedules = plan.lr_schedules(adamw, 0.01)
    assert schedules[-1] is None and all(s is not None for s in schedules[:-1])


def test_freezeout_needs_a_budget_and_valid_settings() -> None:
    layers = leaf_layers(mlp(depth=3))
    with pytest.raises(BudgetError, match="budget"):
        FreezeOut(layers, clock=Clock())
    with pytest.raises(SpecError, match="shape"):
        FreezeOut(layers, clock=Clock(budget=10), shape="quartic")
    with pytest.raises(SpecError, match="t0"):
        FreezeOut(layers, clock=Clock(budget=10), t0=0.0)


# ---------------------------------------------------------------- RandomizedProgressive (Drop-Muon)
def test_random_cutoffs_are_uniform_by_default_and_train_a_suffix() -> None:
    n, steps = 4, 4000
    clock = Clock()
    plan = RandomizedProgressive(leaf_layers(mlp(depth=n)), clock=clock, seed=3)
    counts = np.zeros(n)
    for _ in range(steps):
        plan.update()
        c = plan.cutoff
        assert plan.trainable.tolist() == [i >= c for i in range(n)]
        counts[c] += 1
        clock.advance()
    chi2 = ((counts - steps / n) ** 2 / (steps / n)).sum()
    assert chi2 < 16.3  # p ≈ 0.001 for 3 degrees of freedom


def test_random_cutoffs_follow_given_probabilities_and_seed() -> None:
    def cutoffs(seed: int, probs: list[float] | None) -> list[int]:
        clock = Clock()
        plan = RandomizedProgressive(leaf_layers(mlp(depth=4)), clock=clock, probabilities=probs, seed=seed)
        out = []
        for _ in range(300):
            plan.update(); plan.update()  # a second call in the same step draws nothing new
            out.append(plan.cutoff)
            clock.advance()
        return out

    skewed = cutoffs(0, [0.0, 3.0, 1.0, 0.0])
    assert set(skewed) == {1, 2} and 0.65 < skewed.count(1) / 300 < 0.85
    assert cutoffs(5, None) == cutoffs(5, None)
    assert cutoffs(5, None) != cutoffs(6, None)


@pytest.mark.parametrize("probs", [[1, 1], [1, -1, 1, 1], [0, 0, 0, 0], [1, float("nan"), 1, 1]])
def test_random_progressive_rejects_bad_probabilities(probs: list[float]) -> None:
    with pytest.raises(SpecError, match="probabilities"):
        RandomizedProgressive(leaf_layers(mlp(depth=4)), clock=Clock(), probabilities=probs)


def test_layer_plans_reject_bad_layers_and_foreign_state() -> None:
    with pytest.raises(CadenceError, match="at least one"):
        LayerFreezing([], clock=Clock(budget=10))
    shared = nn.Linear(2, 2)
    with pytest.raises(CadenceError, match="shares a parameter"):
        LayerFreezing([shared, nn.Sequential(shared)], clock=Clock(budget=10))
    with pytest.raises(CadenceError, match="no trainable"):
        LayerFreezing([nn.ReLU()], clock=Clock(budget=10))
    clock = Clock(budget=10)
    layers = leaf_layers(mlp(depth=4))
    plan = RandomizedProgressive(layers, clock=clock, probabilities=[0, 0, 1, 0])
    other = RandomizedProgressive(layers, clock=clock, seed=9)
    freezing = LayerFreezing(layers, clock=clock)
    plan.update()
    before = (plan.trainable.copy(), plan.cutoff, [p.requires_grad for p in layers[0].parameters()])
    bad_mask = {**plan.state_dict(), "trainable": [True, False]}
    for state in (other.state_dict(), freezing.state_dict(), bad_mask, {"kind": plan.kind}, None):
        with pytest.raises(StateError):
            plan.load_state_dict(state)
    assert plan.trainable.tolist() == before[0].tolist() and plan.cutoff == before[1]
    assert [p.requires_grad for p in layers[0].parameters()] == before[2]


def test_user_frozen_parameters_stay_frozen() -> None:
    model = mlp(depth=3)
    layers = leaf_layers(model)
    layers[1].bias.requires_grad_(False)
    plan = LayerFreezing(layers, clock=Clock(budget=10), fraction=0.0)
    plan.update()
    plan.release()
    assert not layers[1].bias.requires_grad and layers[1].weight.requires_grad
