"""The framework-free parts of the adapters: RegimenLink state, JSON state, the tracked sampler."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import cadence
from cadence.curricula import Arms, CurriculumSampler, DoReMi
from cadence.integrations import RegimenLink
from cadence.integrations.jsonstate import decode, encode
from cadence.integrations.tracking import TrackedSampler
from cadence.optim import ScheduledLR

KEYS = ["a"] * 4 + ["b"] * 4


def make_link(seed: int = 0) -> RegimenLink:
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    sched = ScheduledLR(opt, lr="cosine(peak=0.1)", clock=cadence.Clock(budget=10))
    sampler = CurriculumSampler(DoReMi(Arms(KEYS), reference=[0.0, 0.0], seed=seed), batch_size=2, seed=seed)
    return RegimenLink(scheduler=sched, policy=sampler.policy, sampler=sampler, tracker=TrackedSampler(sampler),
                       knobs={"budget": "ramp(start=8, end=16)"})


def advance(link: RegimenLink, steps: int) -> None:
    stream = iter(link.tracker)
    for _ in range(steps):
        [next(stream) for _ in range(2)]
        link.scheduler.step()
        link.observe(link.tracker.consume(2), loss=np.array([1.0, 2.0]))


def test_state_survives_json_and_resumes_exactly():
    straight, resumed = make_link(), make_link()
    advance(straight, 3)
    state = json.loads(json.dumps(encode(straight.state_dict())))
    resumed.load_state_dict(decode(state))
    advance(straight, 3)
    advance(resumed, 3)
    a, b = encode(straight.state_dict()), encode(resumed.state_dict())
    for s in (a, b):
        for clock in (s["clock"], s["scheduler"]["clock"]):
            clock["counts"].pop("seconds")
    assert a == b
    assert straight.values()["cadence/budget"] == pytest.approx(8 + 8 * 0.6)


def test_foreign_state_is_rejected_and_nothing_changes():
    link = make_link()
    advance(link, 2)
    before = encode(link.state_dict())
    other = RegimenLink(policy=DoReMi(Arms(["x", "y"]), reference=[0.0, 0.0]))
    with pytest.raises(cadence.StateError):
        link.load_state_dict(other.state_dict())
    bad = make_link().state_dict()
    bad["sampler"]["batch_size"] = 4  # the clock and scheduler would load; the sampler refuses
    bad["clock"]["counts"]["steps"] = 99.0
    with pytest.raises(cadence.StateError, match="batch_size"):
        link.load_state_dict(bad)
    after = encode(link.state_dict())
    for s in (before, after):
        for clock in (s["clock"], s["scheduler"]["clock"]):
            clock["counts"].pop("seconds")
    assert after == before


def test_observe_names_a_missing_signal_and_a_missing_knob():
    link = make_link()
    with pytest.raises(cadence.CadenceError, match="loss"):
        link.observe([0, 1], reward=[1.0, 0.0])
    with pytest.raises(cadence.CadenceError, match="no knob named 'kl'"):
        link.knob("kl")


def test_tracker_hands_out_ids_in_draw_order_and_refuses_overdraw():
    tracked = TrackedSampler(CurriculumSampler(DoReMi(Arms(KEYS), reference=[0.0, 0.0]), batch_size=2), 4)
    drawn = list(tracked)
    assert tracked.consume(2).tolist() == drawn[:2]
    assert tracked.pending() == drawn[2:]
    with pytest.raises(cadence.CadenceError, match="drew only 2"):
        tracked.consume(3)


def test_core_imports_no_framework():
    code = ("import sys, cadence, cadence.integrations, cadence.curricula, cadence.optim; "
            "print(sorted(m for m in ('transformers', 'trl', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
