"""cadence agrees with transformers' ``get_scheduler`` and torch's schedulers at every step to 1e-9.

Both sides drive a real optimizer: the peer through its own scheduler, cadence through
``ScheduledLR``; the learning rates are compared after every ``step()``.
"""

import math

import pytest
import torch
from torch.optim import lr_scheduler as torch_sched

from cadence import Clock
from cadence.optim import ScheduledLR

transformers = pytest.importorskip("transformers")
from transformers import get_scheduler  # noqa: E402

BASE = 3e-4
TOTAL = 1000
WARMUP = 70


def _opt(momentum: bool = False):
    p = torch.nn.Parameter(torch.zeros(2))
    if momentum:
        return torch.optim.SGD([p], lr=BASE, momentum=0.9)
    return torch.optim.AdamW([p], lr=BASE)


def _compare(make_peer, spec, steps=TOTAL, budget=TOTAL, momentum=False):
    peer_opt, ours_opt = _opt(momentum), _opt(momentum)
    peer = make_peer(peer_opt)
    ours = ScheduledLR(ours_opt, lr=spec, clock=Clock(budget=budget))
    worst = abs(peer.get_last_lr()[0] - ours.get_last_lr()[0])
    for _ in range(steps):
        peer_opt.step()
        ours_opt.step()
        peer.step()
        ours.step()
        worst = max(worst, abs(peer.get_last_lr()[0] - ours.get_last_lr()[0]))
        assert peer_opt.param_groups[0]["lr"] == pytest.approx(ours_opt.param_groups[0]["lr"], abs=1e-9, rel=0)
    return worst


HF_CASES = [
    ("cosine", {}, f"warmup(cosine(peak={BASE}), {WARMUP} steps)"),
    ("linear", {}, f"warmup(linear(peak={BASE}), {WARMUP} steps)"),
    ("constant_with_warmup", {}, f"warmup(constant({BASE}), {WARMUP} steps)"),
    ("polynomial", {"lr_end": 1e-6, "power": 2.0}, f"warmup(polynomial(peak={BASE}, floor={1e-6 / BASE!r}, power=2), {WARMUP} steps)"),
    ("inverse_sqrt", {}, f"warmup(inverse_sqrt(peak={BASE}, timescale={WARMUP} steps), {WARMUP} steps)"),
    ("inverse_sqrt", {"timescale": 250}, f"warmup(inverse_sqrt(peak={BASE}, timescale=250 steps), {WARMUP} steps)"),
]


@pytest.mark.parametrize("name, kwargs, spec", HF_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(HF_CASES)])
def test_agrees_with_transformers(name, kwargs, spec):
    worst = _compare(lambda o: get_scheduler(name, o, num_warmup_steps=WARMUP, num_training_steps=TOTAL,
                                             scheduler_specific_kwargs=kwargs), spec)
    assert worst <= 1e-9


@pytest.mark.parametrize("warmup_type", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("decay_type", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("floor", [0.0, 0.1])
def test_agrees_with_transformers_warmup_stable_decay(warmup_type, decay_type, floor):
    kwargs = {"num_decay_steps": 200, "warmup_type": warmup_type, "decay_type": decay_type, "min_lr_ratio": floor}
    spec = (f"wsd(peak={BASE}, warmup={WARMUP} steps, decay=200 steps, shape={decay_type}, floor={floor}, "
            f"warmup_shape={warmup_type})")
    worst = _compare(lambda o: get_scheduler("warmup_stable_decay", o, num_warmup_steps=WARMUP,
                                             num_training_steps=TOTAL, scheduler_specific_kwargs=kwargs), spec)
    assert worst <= 1e-9


TORCH_CASES = [
    (lambda o: torch_sched.CosineAnnealingLR(o, T_max=TOTAL, eta_min=1e-5), f"cosine(peak={BASE}, floor={1e-5 / BASE!r})"),
    (lambda o: torch_sched.PolynomialLR(o, total_iters=TOTAL, power=1.5), f"polynomial(peak={BASE}, power=1.5)"),
    (lambda o: torch_sched.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=TOTAL), f"linear(peak={BASE})"),
    (lambda o: torch_sched.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=300),
     f"ramp(start={0.1 * BASE!r}, end={BASE}, over=300 steps)"),
    (lambda o: torch_sched.ExponentialLR(o, gamma=0.995),
     f"exponential(peak={BASE}, half_life={math.log(0.5) / math.log(0.995)!r} steps)"),
    (lambda o: torch_sched.StepLR(o, step_size=150, gamma=0.5), f"step(peak={BASE}, every=150 steps, gamma=0.5)"),
    (lambda o: torch_sched.MultiStepLR(o, milestones=[300, 700], gamma=0.1), f"multistep(peak={BASE}, at=[30%, 70%])"),
    (lambda o: torch_sched.CosineAnnealingWarmRestarts(o, T_0=100, T_mult=2, eta_min=1e-5),
     f"restarts(cosine(peak={BASE}, floor={1e-5 / BASE!r}), period=100 steps, mult=2)"),
    (lambda o: torch_sched.CosineAnnealingWarmRestarts(o, T_0=90), f"restarts(cosine(peak={BASE}), period=90 steps)"),
]


@pytest.mark.parametrize("make, spec", TORCH_CASES, ids=[c[1].split("(")[0] + str(i) for i, c in enumerate(TORCH_CASES)])
def test_agrees_with_torch(make, spec):
    assert _compare(make, spec) <= 1e-9


@pytest.mark.parametrize("mode", ["triangular", "triangular2"])
def test_agrees_with_torch_cyclic(mode):
    def make(o):
        return torch_sched.CyclicLR(o, base_lr=1e-5, max_lr=BASE, step_size_up=50, mode=mode, cycle_momentum=False)

    assert _compare(make, f"cyclic(low=1e-5, high={BASE}, period=100 steps, mode={mode})", momentum=True) <= 1e-9
