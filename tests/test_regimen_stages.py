"""Stages on one clock: schedules on each stage's own progress, ends by budget and by rule, one event,
exact resume mid-stage and at a transition, a budget change without a jump."""

from __future__ import annotations

import io

import pytest
import torch

import cadence
from cadence.errors import CadenceError, StateError
from cadence.regimen import Regimen, Rule, Stage, StageRun

FILE = {
    "budget": "100 steps",
    "lr": "cosine(peak=0.01)",
    "knobs": {"kl": "constant(level=0.0)"},
    "stages": [
        {"name": "sft", "budget": "30%", "objective": "sft", "lr": "wsd(peak=0.01, warmup=10%, decay=20%)"},
        {"name": "grpo", "budget": "50%", "objective": "grpo", "knobs": {"kl": "ramp(start=0.0, end=0.1)"},
         "plateau": {"metric": "reward", "delta": 0.01, "window": 3}},
        {"name": "anneal", "objective": "grpo", "lr": "linear(peak=0.001)"},
    ],
}


def attached(d=FILE):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    link = Regimen.from_dict(d).attach(opt)
    events = []
    link.stages.on_transition(events.append)
    return link, opt, events


def run(link, opt, rewards, start=0):
    """Step the link, logging rewards[i] after step i; the LRs every step used."""
    lrs = []
    for i in range(start, len(rewards)):
        lrs.append(opt.param_groups[0]["lr"])
        link.step()
        if rewards[i] is not None:
            link.log({"reward": rewards[i]})
    return lrs


def test_schedules_run_on_the_stage_progress_and_the_clock_on_the_run():
    link, opt, events = attached()
    wsd = cadence.parse("wsd(peak=0.01, warmup=10%, decay=20%)")
    lrs = run(link, opt, [0.02 * i for i in range(100)])  # rewards rise: no plateau
    for t in range(30):
        assert lrs[t] == wsd.value(t, cadence.Axis("steps", 30))  # sft's warmup is 10% of the stage: 3 steps
    cosine = cadence.parse("cosine(peak=0.01)")
    assert lrs[30] == cosine.value(0, cadence.Axis("steps", 50))  # grpo runs the top-level lr from its own start
    assert lrs[55] == cosine.value(25, cadence.Axis("steps", 50))
    assert [(e.previous, e.current, e.position, e.reason) for e in events] == [
        ("sft", "grpo", 30.0, "budget"), ("grpo", "anneal", 80.0, "budget")]
    assert link.clock.progress == 1.0 and link.stages.current.name == "anneal"


def test_a_plateau_ends_the_stage_and_the_rest_share_what_remains():
    link, opt, events = attached()
    rewards = [None] * 30 + [0.1, 0.3, 0.5, 0.505, 0.5, 0.49] + [None] * 64
    run(link, opt, rewards)
    assert [(e.previous, e.position, e.reason) for e in events] == [("sft", 30.0, "budget"),
                                                                    ("grpo", 36.0, "plateau on reward")]
    assert link.stages.boundaries() == [30.0, 36.0]  # anneal was planned 20%, it now takes the remaining 64 steps
    link2, opt2, _ = attached()
    run(link2, opt2, rewards[:36])
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.001)  # anneal's linear starts at its peak at step 36
    assert link2.knob("kl") == 0.0  # the top-level knob again in the last stage


def test_until_ends_the_last_stage_and_the_run_is_done():
    d = {"budget": "10 steps", "lr": "constant(level=0.1)",
         "stages": [{"name": "only", "until": {"metric": "acc", "above": 0.8, "times": 2}}]}
    link, opt, events = attached(d)
    for acc in (0.9, 0.7, 0.85):
        link.step()
        link.log({"acc": acc})
        assert not link.done
    link.step()
    link.log({"acc": 0.95})
    assert link.done and events[-1].current is None and events[-1].position == 4.0


def test_a_rule_over_a_metric_never_logged_is_an_error_at_the_stage_end():
    d = {**FILE, "stages": [dict(FILE["stages"][0]), {**FILE["stages"][1], "plateau": {"metric": "rewrd"}},
                            FILE["stages"][2]]}
    link, opt, _ = attached(d)
    with pytest.raises(CadenceError, match="'rewrd' was never logged \\(logged: \\['reward'\\]\\)"):
        run(link, opt, [0.5] * 100)


def save(link) -> bytes:
    buf = io.BytesIO()
    torch.save(link.state_dict(), buf)
    return buf.getvalue()


def load(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), weights_only=True)


@pytest.mark.parametrize("cut", [20, 30, 34, 36, 37])  # mid-sft, at the budget transition, mid-plateau, at it, after
def test_resume_is_exact_mid_stage_and_at_a_transition(cut):
    rewards = [None] * 30 + [0.1, 0.3, 0.5, 0.505, 0.5, 0.49] + [0.2] * 64
    link, opt, _ = attached()
    straight = run(link, opt, rewards)
    first, opt1, _ = attached()
    run(first, opt1, rewards[:cut])
    state = load(save(first))
    resumed, opt2, _ = attached()
    resumed.load_state_dict(state)
    after = run(resumed, opt2, rewards, start=cut)
    assert after == straight[cut:]  # bit-equal LRs
    assert resumed.stages.state_dict() == link.stages.state_dict()
    assert resumed.knob("kl") == link.knob("kl")


def test_a_budget_change_rederives_the_remaining_stages_without_a_jump():
    link, opt, _ = attached()
    run(link, opt, [None] * 40)
    before = link.scheduler.get_lr(), link.knob("kl")
    link.clock.set_budget(200)
    assert (link.scheduler.get_lr(), link.knob("kl")) == before  # no value jumps at the change
    assert link.stages.boundaries() == [30.0, 80.0]  # positions: the clock stretches what remains
    steps = 0
    while link.stages.current.name == "grpo":
        link.step()
        link.log({"reward": 0.01 * steps})  # rising: no plateau
        steps += 1
    assert steps == 107  # grpo's remaining 40 of 60 positions now take 40/60 of the 160 steps left (106.7)


def test_stage_state_is_plain_and_foreign_state_is_refused():
    link, _, _ = attached()
    with pytest.raises(StateError, match="stages"):
        link.stages.load_state_dict({**link.stages.state_dict(), "stages": ["a", "b", "c"]})
    with pytest.raises(StateError):
        link.stages.load_state_dict({"kind": "cadence.StageRun", "stages": ["sft", "grpo", "anneal"]})
    clock = cadence.Clock(budget=10)
    with pytest.raises(CadenceError, match="at most one stage"):
        StageRun([Stage("a"), Stage("b")], clock)
    assert Rule("x", "below", threshold=1.0, times=3).met([0.5, 0.5, 0.5])
