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


# ---------------------------------------------------------------------- HF Trainer, TRL, Lightning
ROWS = ["easy"] * 4 + ["hard"] * 4  # the rows of test_integrations_hf.make_trainer's dataset
HF_FILE = {
    "budget": "10 steps",
    "lr": "constant(level=0.001)",
    "stages": [
        {"name": "easy", "budget": "4 steps", "objective": "sft",
         "curriculum": {"policy": "fixed", "arms": {"items": ROWS}, "batch_size": 2, "seed": 1,
                        "weights": {"easy": 1.0, "hard": 0.0}}},
        {"name": "all", "objective": "sft",
         "curriculum": {"policy": "loss_reweighting", "arms": {"items": ROWS}, "batch_size": 2, "seed": 2}},
    ],
}


def recorded(link):
    """Record every step's (ids, losses) the link's policy observes, and which policy got them."""
    seen = []
    observe = link.observe

    def spy(ids, **signals):
        seen.append((link.policy.name, np.asarray(ids).tolist(), np.asarray(signals["loss"]).tolist()))
        observe(ids, **signals)

    link.observe = spy
    return seen


def test_hf_trainer_switches_curricula_at_the_transition_as_hand_built_samplers(tmp_path):
    pytest.importorskip("transformers")
    from cadence.curricula import FixedMixture, LossReweighting
    from test_integrations_hf import make_trainer, without_seconds

    trainer = make_trainer(tmp_path / "run", max_steps=10, save_steps=4)
    callback = Regimen.from_dict(HF_FILE).attach(trainer)
    seen = recorded(callback.link)
    trainer.train()
    assert [name for name, _, _ in seen] == ["fixed"] * 4 + ["loss_reweighting"] * 6

    arms = Arms(ROWS)  # by hand: the two stages' samplers, the second's policy fed the same losses
    first = CurriculumSampler(FixedMixture(arms, {"easy": 1.0, "hard": 0.0}), batch_size=2, seed=1)
    second = CurriculumSampler(LossReweighting(Arms(ROWS)), batch_size=2, seed=2)
    streams = {id(first): iter(first), id(second): iter(second)}  # a DataLoader iterates its sampler
    for step, (_, ids, losses) in enumerate(seen):
        sampler = first if step < 4 else second
        assert ids == [next(streams[id(sampler)]) for _ in range(2)]
        sampler.observe(ids, loss=losses)
    assert all(ROWS[i] == "easy" for _, ids, _ in seen[:4] for i in ids)
    parts = callback.link.sampler.state_dict()["parts"]
    assert parts == [first.state_dict(), second.state_dict()]

    for cut in (4, 8):  # exactly at the transition, and inside the second stage
        resumed = make_trainer(tmp_path / "run", max_steps=10, save_steps=4)
        again = Regimen.from_dict(HF_FILE).attach(resumed)
        after = recorded(again.link)
        resumed.train(resume_from_checkpoint=str(tmp_path / "run" / f"checkpoint-{cut}"))
        assert after == seen[cut:]
        assert without_seconds(again.link.state_dict()) == without_seconds(callback.link.state_dict())
        for a, b in zip(trainer.model.parameters(), resumed.model.parameters()):
            assert torch.equal(a, b)
    roundtrip(callback.link.state_dict())  # plain data


def test_hosts_that_draw_ahead_or_cannot_switch_refuse_by_path(tmp_path):
    pytest.importorskip("transformers")
    from test_integrations_hf import make_trainer

    ruled = {**HF_FILE, "stages": [dict(HF_FILE["stages"][0], until={"metric": "loss", "below": 1.0}),
                                   HF_FILE["stages"][1]]}
    with pytest.raises(PathError, match=r"^stages\[0\]\.until: the HF Trainer's data loader draws batches ahead"):
        Regimen.from_dict(ruled).attach(make_trainer(tmp_path, max_steps=10))
    with pytest.raises(PathError, match=r"^stages\[0\]\.rl: the HF Trainer adapter runs no RL step"):
        Regimen.from_dict(FILE).attach(make_trainer(tmp_path, max_steps=12))


def test_trl_switches_curricula_at_the_transition_as_hand_built_samplers(tmp_path):
    pytest.importorskip("trl")
    from cadence.curricula import FixedMixture
    from cadence.rl import PromptSelector
    from test_integrations_trl import SOURCES, grpo_trainer

    def run(resume=None):
        rounds = []

        def reward(completions, cadence_id, **kwargs):
            rounds.append(list(cadence_id))
            return [float(len(c) % 3) for c in completions]

        trainer = grpo_trainer(tmp_path, [reward], max_steps=4)
        trainer.args.save_strategy, trainer.args.save_steps = "steps", 1
        callback = Regimen.from_dict(d).attach(trainer)
        trainer.train(resume_from_checkpoint=resume)
        return rounds, callback, reward

    d = {"budget": "4 steps", "lr": "constant(level=0.001)",
         "stages": [{"name": "small", "budget": "50%", "objective": "grpo",
                     "curriculum": {"policy": "fixed", "arms": {"items": SOURCES}, "batch_size": 2, "seed": 1,
                                    "weights": {"small": 1.0, "large": 0.0}}},
                    {"name": "large", "objective": "grpo",
                     "curriculum": {"policy": "fixed", "arms": {"items": SOURCES}, "batch_size": 2, "seed": 2,
                                    "weights": {"small": 0.0, "large": 1.0}}}]}
    rounds, callback, reward = run()
    first = CurriculumSampler(FixedMixture(Arms(SOURCES), {"small": 1.0, "large": 0.0}), batch_size=2, seed=1)
    second = CurriculumSampler(FixedMixture(Arms(SOURCES), {"small": 0.0, "large": 1.0}), batch_size=2, seed=2)
    by_hand = [PromptSelector(first), PromptSelector(second)]  # each round: distinct prompts, 2 answers each
    hand = [np.repeat(by_hand[r >= 2].draw(2), 2).tolist() for r in range(4)]
    assert rounds == hand and callback.link.policy is callback.link.sampler.sampler.parts[1].policy
    assert all(SOURCES[i] == "small" for r in rounds[:2] for i in r)
    roundtrip(callback.link.state_dict())
    for cut in (1, 2, 3):  # mid-stage, exactly at the transition, mid second stage
        resumed_rounds, resumed, _ = run(str(tmp_path / f"checkpoint-{cut}"))
        assert resumed_rounds == rounds[cut:]
        assert resumed.link.sampler.state_dict() == callback.link.sampler.state_dict()

    trainer = grpo_trainer(tmp_path, [reward], max_steps=4)
    trainer.args.steps_per_generation = 2
    with pytest.raises(PathError, match=r"^stages\[0\]\.curriculum: a stage's own curriculum switches at the "
                                        r"generation round"):
        Regimen.from_dict(d).attach(trainer)
    d["stages"][1]["rl"] = {"d3s": {}}
    with pytest.raises(PathError, match=r"^stages\[1\]\.rl\.d3s: D3S masks TRL's loss through one hook"):
        Regimen.from_dict(d).attach(grpo_trainer(tmp_path, [reward], max_steps=4))


def test_lightning_switches_curricula_at_the_transition_as_hand_built_samplers(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from cadence.curricula import DoReMi, FixedMixture
    from test_integrations_lightning import KEYS as POINTS, Points, Regression, without_seconds

    d = {"budget": "6 steps", "lr": "constant(level=0.01)",
         "stages": [{"name": "near", "budget": "3 steps",
                     "curriculum": {"policy": "fixed", "arms": {"items": POINTS}, "batch_size": 2, "seed": 4,
                                    "weights": {"near": 1.0, "far": 0.0}}},
                    {"name": "both", "curriculum": {"policy": "doremi", "arms": {"items": POINTS}, "batch_size": 2,
                                                    "seed": 2, "reference": {"near": 0.0, "far": 0.0}}}]}

    def fit(root, ckpt_path=None):
        saver = pl.callbacks.ModelCheckpoint(dirpath=str(root), every_n_train_steps=1, save_top_k=-1)
        t = pl.Trainer(max_steps=6, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                       enable_model_summary=False, default_root_dir=str(root), callbacks=[saver])
        callback = Regimen.from_dict(d).attach(t)
        seen = []  # the link is built when training starts: record at the stage samplers' policies
        for part in callback.curriculum.parts:
            def spy(ids, observe=part.policy.observe, name=part.policy.name, **signals):
                seen.append((name, np.asarray(ids).tolist(), np.asarray(signals["loss"]).tolist()))
                observe(ids, **signals)
            part.policy.observe = spy
        t.fit(Regression(), torch.utils.data.DataLoader(Points(), batch_size=2, sampler=callback.sampler),
              ckpt_path=ckpt_path)
        return callback, seen, t

    callback, seen, t = fit(tmp_path / "a")
    assert [name for name, _, _ in seen] == ["fixed"] * 3 + ["doremi"] * 3
    first = CurriculumSampler(FixedMixture(Arms(POINTS), {"near": 1.0, "far": 0.0}), batch_size=2, seed=4)
    second = CurriculumSampler(DoReMi(Arms(POINTS), reference={"near": 0.0, "far": 0.0}), batch_size=2, seed=2)
    streams = {id(first): iter(first), id(second): iter(second)}

    def draw(step):  # Lightning's fetcher draws one batch ahead: step k + 1's before step k's feedback
        return [next(streams[id(first if step < 3 else second)]) for _ in range(2)]  # (also past the end)

    ahead = draw(0)
    for step, (_, ids, losses) in enumerate(seen):
        batch, ahead = ahead, draw(step + 1)
        assert ids == batch
        (first if step < 3 else second).observe(ids, loss=losses)
    assert [p["policy"] for p in callback.link.sampler.state_dict()["parts"]] == \
        [first.policy.state_dict(), second.policy.state_dict()]

    for cut in (2, 3, 5):  # mid-stage, exactly at the transition, mid second stage
        resumed, after, t2 = fit(tmp_path / f"r{cut}", ckpt_path=str(tmp_path / "a" / f"epoch=0-step={cut}.ckpt"))
        assert after == seen[cut:]
        assert without_seconds(resumed.link.state_dict()) == without_seconds(callback.link.state_dict())
        for a, b in zip(t.lightning_module.parameters(), t2.lightning_module.parameters()):
            assert torch.equal(a, b)


def test_a_stage_averages_with_its_own_averager_as_hand_built_averagers():
    from cadence.averaging import EMA, CheckpointAverage
    from cadence.clock import Clock

    d = {"budget": "10 steps", "lr": "constant(level=0.1)", "averaging": {"kind": "ema", "half_life": "2 steps"},
         "stages": [{"name": "train", "budget": "60%"},
                    {"name": "anneal", "averaging": {"kind": "tail", "every": "1 steps", "keep": 3}}]}
    assert Regimen.from_dict(Regimen.from_dict(d).to_dict()) == Regimen.from_dict(d)

    def train(model, opt, steps, after):
        for _ in range(steps):
            opt.zero_grad()
            model(torch.ones(1, 2)).pow(2).sum().backward()
            opt.step()
            after()

    def filed(steps=10, state=None):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        regimen = Regimen.from_dict(d)
        link = regimen.attach(opt, model=model)
        averaging = regimen.build_averaging(model, link.clock, link.stages)
        if state is not None:
            model.load_state_dict(state["model"])
            link.load_state_dict(state["link"])
            averaging.load_state_dict(state["averaging"])
        train(model, opt, steps, lambda: (link.step(), averaging.update()))
        return model, link, averaging

    model, link, averaging = filed()
    torch.manual_seed(0)
    hand = torch.nn.Linear(2, 1)
    opt, clock = torch.optim.SGD(hand.parameters(), lr=0.1), Clock(budget=10)
    ema = EMA(hand, clock, half_life="2 steps", start="0 steps")
    tail = CheckpointAverage(hand, clock, every="1 steps", keep=3, start="6 steps")
    train(hand, opt, 10, lambda: (clock.advance(), clock.steps < 6 and ema.update(), tail.update()))
    for name, value in averaging.averaged().items():
        assert torch.equal(value, tail.averaged()[name])
    assert all(torch.equal(a, b) for a, b in zip(averaging.averagers[0].averaged().values(), ema.averaged().values()))

    half, half_link, half_avg = filed(steps=6)  # resumed exactly at the transition
    saved = roundtrip({"model": half.state_dict(), "link": half_link.state_dict(), "averaging": half_avg.state_dict()})
    _, _, resumed = filed(steps=4, state=saved)
    assert all(torch.equal(a, b) for a, b in zip(resumed.averaged().values(), averaging.averaged().values()))
