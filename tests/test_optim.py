"""The torch binding: param-group fields, exact resume, and refusal of bad input."""

import io

import pytest
import torch

from cadence import BudgetError, CadenceError, Clock, StateError, parse
from cadence.optim import ScheduledLR


def _model_and_opt(kind="adamw"):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))
    groups = [{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": 0.5}]
    if kind == "sgd":
        return model, torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=0.0)
    return model, torch.optim.AdamW(groups, lr=0.1, weight_decay=0.01)


def _train_step(model, opt, sched, i):
    x = torch.linspace(-1, 1, 16).reshape(4, 4) * (i + 1)
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def test_drives_several_fields_per_group():
    model, opt = _model_and_opt()
    sched = ScheduledLR(
        opt,
        lr=["wsd(peak=1e-3, warmup=10%, decay=20%)", None],
        clock=Clock(budget=100),
        weight_decay="cosine(peak=0.1)",
        betas=("ramp(start=0.85, end=0.95)", None),
    )
    for i in range(50):
        _train_step(model, opt, sched, i)
    g0, g1 = opt.param_groups
    assert g0["lr"] == 1e-3 and g1["lr"] == 0.5  # group 1 is left alone
    assert g0["weight_decay"] == pytest.approx(0.05) and g1["weight_decay"] == pytest.approx(0.05)
    assert g0["betas"] == (pytest.approx(0.90), 0.999)
    assert sched.values() == {"lr/0": 1e-3, "weight_decay/0": pytest.approx(0.05), "weight_decay/1": pytest.approx(0.05),
                              "betas0/0": pytest.approx(0.9), "betas0/1": pytest.approx(0.9)}


def test_relative_mode_multiplies_initial_values_like_lambdalr():
    _, opt = _model_and_opt()
    sched = ScheduledLR(opt, lr="linear()", clock=Clock(budget=10), relative=True)
    for _ in range(5):
        opt.step()
        sched.step()
    assert sched.get_last_lr() == [pytest.approx(0.05), pytest.approx(0.25)]


def test_step_commits_tokens_reported_to_the_clock():
    _, opt = _model_and_opt()
    clock = Clock(budget="10K tokens")
    sched = ScheduledLR(opt, lr="linear(peak=1)", clock=clock)
    clock.report(tokens=2500)
    opt.step()
    sched.step()
    assert clock.tokens == 2500 and sched.get_last_lr()[0] == pytest.approx(0.75)


def _run(n_steps, *, resume_at=None, change_budget_at=None, kind="adamw"):
    """Train n_steps, optionally saving and restoring everything at resume_at; return lr history."""
    spec = "join(warmup(cosine(peak=1e-3, floor=0.1), 7%), constant(1e-4), at=[90%])"
    model, opt = _model_and_opt(kind)
    sched = ScheduledLR(opt, lr=spec, clock=Clock(budget=100), weight_decay="linear(peak=0.01)")
    history = []
    for i in range(n_steps):
        if i == change_budget_at:
            sched.clock.set_budget(150)
        if i == resume_at:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
            buf.seek(0)
            saved = torch.load(buf, weights_only=True)
            model, opt = _model_and_opt(kind)
            sched = ScheduledLR(opt, lr=spec, clock=Clock(budget=100), weight_decay="linear(peak=0.01)")
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["opt"])
            sched.load_state_dict(saved["sched"])
        _train_step(model, opt, sched, i)
        history.append([(g["lr"], g["weight_decay"]) for g in opt.param_groups])
    return history, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_resume_is_bit_identical(kind):
    straight, params = _run(120, kind=kind)
    resumed, params_resumed = _run(120, resume_at=50, kind=kind)
    assert straight == resumed
    assert all(torch.equal(a, b) for a, b in zip(params, params_resumed))


def test_resume_after_a_budget_change_is_bit_identical():
    straight, _ = _run(150, change_budget_at=40)
    resumed, _ = _run(150, change_budget_at=40, resume_at=90)
    assert straight == resumed
    assert straight[39][0][0] == pytest.approx(straight[40][0][0], rel=0.05)  # no jump when the budget grew


def test_state_for_other_schedules_is_rejected_and_nothing_changes():
    _, opt = _model_and_opt()
    saved = ScheduledLR(opt, lr="cosine(peak=1e-3)", clock=Clock(budget=100)).state_dict()
    _, opt2 = _model_and_opt()
    other = ScheduledLR(opt2, lr="linear(peak=1e-3)", clock=Clock(budget=100))
    before = (other.state_dict(), [g["lr"] for g in opt2.param_groups])
    with pytest.raises(StateError, match="saved for schedules"):
        other.load_state_dict(saved)
    with pytest.raises(StateError, match="not a cadence"):
        other.load_state_dict({"last_epoch": 3})
    assert (other.state_dict(), [g["lr"] for g in opt2.param_groups]) == before


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        (dict(lr=["cosine()"]), CadenceError, "1 schedules for 2 param groups"),
        (dict(momentum="cosine()"), CadenceError, "no field 'momentum'"),
        (dict(betas="cosine()"), CadenceError, "give a tuple"),
        (dict(lr="wsd(warmup=80%, decay=30%)"), BudgetError, "longer than the budget"),
        (dict(lr="cosine(peak=nan)"), CadenceError, "peak"),
        (dict(), CadenceError, "needs at least one schedule"),
    ],
)
def test_bad_configuration_leaves_the_optimizer_untouched(kwargs, error, fragment):
    _, opt = _model_and_opt()
    before = [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups]
    with pytest.raises(error, match=fragment):
        ScheduledLR(opt, clock=Clock(budget=100), **kwargs)
    assert [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups] == before


def test_epoch_argument_is_refused():
    _, opt = _model_and_opt()
    sched = ScheduledLR(opt, lr=parse("cosine()"), clock=Clock(budget=10))
    with pytest.raises(CadenceError, match="without an epoch"):
        sched.step(3)
