"""A stage's own curriculum and RL pieces within ONE attached host: the data stream and the RL pieces switch
at the transition, equal to hand-built pieces step for step; resume mid-stage and exactly at a transition
is bit-equal; states load with torch.load(weights_only=True); hosts that cannot switch refuse by path."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from cadence.curricula import DUMP, EXP3, Arms, CurriculumSampler
from cadence.regimen import PathError, Regimen
from cadence.rl import DynamicSampling, PredictiveFilter

KEYS = ["easy"] * 6 + ["mid"] * 6 + ["hard"] * 6
FILE = {
    "budget": "12 steps",
    "lr": "constant(level=0.1)",
    "stages": [
        {"name": "warm", "budget": "5 steps",
         "curriculum": {"policy": "exp3", "arms": {"items": KEYS}, "batch_size": 4, "seed": 3, "gamma": 0.2},
         "rl": {"dynamic": {"low": 0.0, "high": 1.0}}},
        {"name": "main",
         "curriculum": {"policy": "dump", "arms": {"items": KEYS}, "batch_size": 4, "seed": 5, "c": 0.5},
         "rl": {"predictive": {"p_min": 0.2}}},
    ],
}


def reward(ids):
    """A deterministic per-item signal (feedback the policies learn from)."""
    return ((np.asarray(ids) * 7) % 5) / 4.0


def attached():
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    return Regimen.from_dict(FILE).attach(opt, num_items=len(KEYS)), opt


def run(link, steps):
    """A plain loop: draw the step's batch, feed its signals back, step. The ids of each step."""
    drawn = []
    for _ in range(steps):
        ids = link.sampler.next_batch()
        link.observe(ids, reward=reward(ids), advantage=reward(ids) - 0.5)
        link.step()
        drawn.append(ids.tolist())
    return drawn


def roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def without_seconds(state):
    for clock in (state["clock"], state["scheduler"]["clock"]):
        clock["counts"].pop("seconds")
    return state


def test_a_plain_loop_switches_curricula_and_rl_pieces_at_the_transition_as_hand_built_pieces():
    link, _ = attached()
    assert isinstance(link.rl.current()["dynamic"], DynamicSampling)
    drawn = run(link, 5)
    assert link.stages.current.name == "main" and list(link.rl.current()) == ["predictive"]
    assert isinstance(link.rl.current()["predictive"], PredictiveFilter)
    drawn += run(link, 7)

    arms = Arms(KEYS)  # by hand: one sampler per stage, each fed its own steps' signals
    first = CurriculumSampler(EXP3(arms, gamma=0.2), batch_size=4, seed=3)
    second = CurriculumSampler(DUMP(Arms(KEYS), c=0.5), batch_size=4, seed=5)
    hand = []
    for step in range(12):
        sampler = first if step < 5 else second
        ids = sampler.next_batch()
        sampler.observe(ids, reward=reward(ids), advantage=reward(ids) - 0.5)
        hand.append(ids.tolist())
    assert drawn == hand
    parts = link.sampler.state_dict()["parts"]
    assert parts == [first.state_dict(), second.state_dict()]
    assert link.values()["cadence/curriculum/probabilities/hard"] == \
        second.policy.probabilities()[second.policy.arms.names.index("hard")]


@pytest.mark.parametrize("cut", [3, 5, 8])  # mid-stage, exactly at the transition, mid second stage
def test_resume_mid_stage_and_at_the_transition_is_bit_equal(cut):
    link, _ = attached()
    whole = run(link, 12)
    link.rl.current()["predictive"].observe(np.arange(4), np.ones(4))

    first, _ = attached()
    before = run(first, cut)
    saved = roundtrip(first.state_dict())
    resumed, _ = attached()
    resumed.load_state_dict(saved)
    assert before + run(resumed, 12 - cut) == whole
    resumed.rl.current()["predictive"].observe(np.arange(4), np.ones(4))
    assert without_seconds(roundtrip(resumed.state_dict())) == without_seconds(roundtrip(link.state_dict()))


def test_a_stage_without_a_curriculum_shares_the_top_level_one():
    d = {**FILE, "curriculum": {"policy": "uniform", "arms": {"items": KEYS}, "batch_size": 4, "seed": 9},
         "stages": [{"name": "warm", "budget": "5 steps"}, FILE["stages"][1]]}
    link = Regimen.from_dict(d).attach(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0),
                                       num_items=len(KEYS))
    assert [len(p) for p in link.rl.state_dict()["parts"]] == [0, 1]
    assert len(link.sampler.parts) == 2 and link.sampler.policy.name == "uniform"
    run(link, 6)
    assert link.sampler.policy.name == "dump"


def test_stages_that_cannot_share_one_data_stream_are_refused_by_path():
    d = {**FILE, "stages": [{"name": "warm", "budget": "5 steps"}, FILE["stages"][1]]}
    with pytest.raises(PathError, match=r"^stages\[0\]\.curriculum: other stages draw"):
        Regimen.from_dict(d).attach(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0), num_items=18)
    wide = {**FILE, "stages": [FILE["stages"][0], {**FILE["stages"][1],
                                                   "curriculum": {**FILE["stages"][1]["curriculum"], "batch_size": 6}}]}
    with pytest.raises(PathError, match=r"^stages: stages\[1\]\.curriculum: batch_size is 6, stage 0's is 4"):
        Regimen.from_dict(wide).attach(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0), num_items=18)


def test_foreign_stage_sampler_state_changes_nothing():
    link, _ = attached()
    run(link, 2)
    before = roundtrip(link.state_dict())
    bad = dict(before, sampler=dict(before["sampler"], parts=before["sampler"]["parts"][:1]))
    with pytest.raises(Exception, match="stage samplers"):
        link.load_state_dict(bad)
    assert roundtrip(link.state_dict()) == before
