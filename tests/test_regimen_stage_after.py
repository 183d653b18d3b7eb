"""One stage per trainer (``stop_on_transition=True``, then ``attach(next, after=link)``) with the stages'
own plans and averaging: each trainer's stage runs its own plans on its own progress; the averaging is handed
on with the link, so a regimen-wide averager continues from the previous trainer's state and each stage's
averager (its own, or one built from the top-level section for that stage) starts at its stage's start and is
kept afterwards, exactly as in one trainer; equal to hand-built pieces fed the same weights, and a resume inside
the last trainer is exact. And in ONE GRPOTrainer, a stage's own dynamic sampling and predictive filter select
exactly as independent hand-built PromptSelectors, one per stage, switched at the transition by hand."""

from __future__ import annotations

import pytest
import torch

from cadence.averaging import EMA, CheckpointAverage
from cadence.clock import Clock
from cadence.regimen import Regimen, Stage, StageAveraging, StageRun
from test_regimen_stage_hosts import averaged_by_hand, same

FREEZE_LATE = "join(constant(level=0), constant(level=1), at=[50%])"  # the lowest layer frozen from mid-stage
FREEZE = {"freeze": {"plan": "layer_freezing", "layers": "transformer.h", "fraction": FREEZE_LATE}}
FILE = {
    "budget": "6 steps", "lr": "constant(level=0.5)",
    "averaging": {"kind": "ema", "half_life": "1 steps"},  # regimen-wide, or per stage once one has its own
    "stages": [{"name": "warm", "budget": "2 steps", "objective": "sft", "plans": FREEZE},
               {"name": "sft", "budget": "2 steps", "objective": "sft"},
               {"name": "anneal", "objective": "sft", "plans": FREEZE,
                "averaging": {"kind": "tail", "every": "1 steps", "keep": 2}}],
}


def recorder(model, record):
    """A callback that appends, per optimizer step, which blocks train and the weights after the step."""
    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            record.append({"trainable": [all(p.requires_grad for p in b.parameters()) for b in model.transformer.h]})

        def on_step_end(self, args, state, control, **kwargs):
            record[-1]["params"] = {n: p.detach().clone() for n, p in model.named_parameters()}

    return Record()


def trainer_for(root, model, steps):
    from transformers import Trainer, TrainingArguments

    from test_integrations_hf import TEXTS, Rows, char_tokenizer

    args = TrainingArguments(output_dir=str(root), max_steps=steps, per_device_train_batch_size=2, learning_rate=1.0,
                             logging_steps=1, save_steps=1, report_to=[], use_cpu=True, seed=0, disable_tqdm=True)
    return Trainer(model=model, args=args, train_dataset=Rows(TEXTS["easy"] + TEXTS["hard"], char_tokenizer()))


def regimen(own: bool) -> dict:
    """FILE; without ``own``, no stage has averaging of its own (one EMA over the whole run)."""
    if own:
        return FILE
    return {**FILE, "stages": [{k: v for k, v in s.items() if k != "averaging"} for s in FILE["stages"]]}


def run_stage(root, model, after, steps, record, resume=None, own=True, file=None):
    """One trainer for the current stage (of ``file``, else of FILE); ``record`` gets each step's trainable
    layers and weights."""
    trainer = trainer_for(root, model, steps)
    callback = Regimen.from_dict(file or regimen(own)).attach(trainer, after=after, stop_on_transition=True)

    trainer.add_callback(recorder(model, record))
    trainer.train(resume_from_checkpoint=resume)
    return trainer, callback


@pytest.mark.parametrize("own", [True, False], ids=["stage-averagers", "one-averager"])
def test_one_trainer_per_stage_runs_its_plans_and_hands_the_averaging_on(tmp_path, own):
    pytest.importorskip("transformers")
    from test_integrations_hf import char_tokenizer, tiny_model

    model, steps, links, callbacks = tiny_model(len(char_tokenizer())), [], [None], []
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name in ("warm", "sft", "anneal"):
        _, callback = run_stage(tmp_path / name, model, links[-1], 2, steps, own=own)
        links.append(callback.link)
        callbacks.append(callback)
    assert [link.stages.current.name for link in links[1:]] == ["sft", "anneal", "anneal"]
    assert links[-1].clock.steps == 6
    # each stage's own plan freezes at the middle of its own stage; the plain stage between trains every layer
    assert [s["trainable"] for s in steps] == [[True, True], [False, True], [True, True], [True, True],
                                               [True, True], [False, True]]

    # by hand, over the same weights: an EMA per stage from its start (the anneal: its own tail average), or one
    # EMA over the run; the previous trainers' averagers are kept (not restarted) in the next trainer
    hand_model = tiny_model(len(char_tokenizer()))
    hand_model.load_state_dict(start)
    clock = Clock(budget=6)
    run = StageRun([Stage("warm", budget="2 steps"), Stage("sft", budget="2 steps"), Stage("anneal")], clock)
    if own:
        hand = StageAveraging([EMA(hand_model, clock, half_life="1 steps", start="0 steps"),
                               EMA(hand_model, clock, half_life="1 steps", start="2 steps"),
                               CheckpointAverage(hand_model, clock, every="1 steps", keep=2, start="4 steps")], run)
    else:
        hand = EMA(hand_model, clock, half_life="1 steps")
    states = []
    for s in steps:
        hand_model.load_state_dict(s["params"], strict=False)
        clock.advance()
        run.update()
        hand.update()
        states.append(hand.state_dict())
    for callback, done in zip(callbacks, (2, 4, 6)):  # each trainer's averager, at the end of its stage
        assert same(callback.averaging.state_dict(), states[done - 1])
    assert same(callbacks[-1].averaging.averaged(), hand.averaged())

    # resumed inside the last trainer (its first step done): the same steps, averages and link state
    again = []  # a fresh process: a fresh model (the checkpoint gives its weights)
    resumed, callback = run_stage(tmp_path / "anneal", tiny_model(len(char_tokenizer())), links[2], 2, again,
                                  resume=str(tmp_path / "anneal" / "checkpoint-1"), own=own)
    assert [s["trainable"] for s in again] == [s["trainable"] for s in steps[5:]]
    assert same([s["params"] for s in again], [s["params"] for s in steps[5:]])
    assert same(callback.averaging.state_dict(), callbacks[-1].averaging.state_dict())
    assert callback.link.clock.steps == 6 and callback.link.stages.current.name == "anneal"


def test_a_run_wide_plan_goes_on_across_trainers_as_in_one_trainer(tmp_path):
    pytest.importorskip("transformers")
    from test_integrations_hf import char_tokenizer, tiny_model

    file = {"budget": "6 steps", "lr": "constant(level=0.5)", "plans": FREEZE,  # from the middle of the run
            "stages": [{"name": "a", "budget": "2 steps"}, {"name": "b", "budget": "2 steps"}, {"name": "c"}]}
    one, per_stage, after = [], [], None
    trainer = trainer_for(tmp_path / "one", tiny_model(len(char_tokenizer())), 6)
    Regimen.from_dict(file).attach(trainer)
    trainer.add_callback(recorder(trainer.model, one))
    trainer.train()
    model = tiny_model(len(char_tokenizer()))
    for name in ("a", "b", "c"):
        after = run_stage(tmp_path / name, model, after, 2, per_stage, file=file)[1].link
    assert [s["trainable"] for s in one] == [[True, True]] * 3 + [[False, True]] * 3
    assert [s["trainable"] for s in per_stage] == [s["trainable"] for s in one]


def test_after_a_link_that_averages_differently_is_refused(tmp_path):
    pytest.importorskip("transformers")
    from cadence.errors import CadenceError
    from test_integrations_hf import char_tokenizer, tiny_model

    model = tiny_model(len(char_tokenizer()))
    plain = {k: v for k, v in FILE.items() if k != "averaging"}
    plain["stages"] = [{k: v for k, v in s.items() if k != "averaging"} for s in FILE["stages"]]
    first = trainer_for(tmp_path / "a", model, 2)
    link = Regimen.from_dict(plain).attach(first, stop_on_transition=True).link
    first.train()
    with pytest.raises(CadenceError, match="after: the previous trainer's regimen averages"):
        Regimen.from_dict(FILE).attach(trainer_for(tmp_path / "b", model, 2), after=link)


# ---------------------------------------------------------------------- TRL: a stage's own dynamic sampling
def test_trl_selects_as_one_hand_built_prompt_selector_per_stage_switched_at_the_transition(tmp_path):
    """A two-stage file attached to ONE GRPOTrainer (the second stage with its own dynamic sampling and
    predictive filter) asks for the same rollouts, keeps and refills the same groups and ends in the same states,
    round for round, as two independent ``PromptSelector``s over the shared curriculum, the first used for the
    first stage's steps and the second from the transition on, fed the run's own rollout results."""
    pytest.importorskip("trl")
    import copy

    import numpy as np

    from cadence.curricula import Arms, CurriculumSampler, Uniform
    from cadence.rl import DynamicSampling, PredictiveFilter, PromptSelector
    from test_integrations_trl import SOURCES, grpo_trainer

    d = {"budget": "4 steps", "lr": "constant(level=0.001)",
         "curriculum": {"policy": "uniform", "arms": {"items": SOURCES}, "batch_size": 2, "seed": 1},
         "rl": {"correct": "right"},
         "stages": [{"name": "grpo", "budget": "50%"},
                    {"name": "filtered", "rl": {"dynamic": {"max_extra_rounds": 2},
                                                "predictive": {"p_min": 0.2, "seed": 3}}}]}

    def right(completions, **kwargs):  # all-equal groups are common: dynamic sampling drops and refills
        return [float(len(c) > 0 and c[0] in "13579") for c in completions]

    trainer = grpo_trainer(tmp_path, [right], max_steps=4)
    callback = Regimen.from_dict(d).attach(trainer)
    staged = callback.link.sampler                      # the StageSelector; its PromptSelector does the work
    inner, calls = staged.selector, []

    def recording(n, rollout, hinted=None):
        asked = []

        def recorded(ids):
            out = rollout(ids)
            asked.append((np.array(ids).copy(), {k: np.array(v).copy() for k, v in out.items()}))
            return out

        picks = PromptSelector.select(inner, n, recorded, hinted=hinted)
        pieces = staged.rl.current()
        calls.append({"step": callback.link.clock.steps, "n": n, "asked": asked, "picks": picks,
                      "sampler": copy.deepcopy(inner.sampler.state_dict()),
                      "pieces": {k: copy.deepcopy(p.state_dict()) for k, p in pieces.items()}})
        return picks

    inner.select = recording
    trainer.train()
    assert [c["step"] for c in calls] == [0, 1, 2, 3]

    # by hand: one selector per stage over the shared top-level curriculum, switched at step 2 (50% of 4)
    sampler = CurriculumSampler(Uniform(Arms(SOURCES)), batch_size=2, num_replicas=1, seed=1)
    hand = [PromptSelector(sampler),
            PromptSelector(sampler, dynamic=DynamicSampling(max_extra_rounds=2),
                           predictive=PredictiveFilter(len(SOURCES), p_min=0.2, seed=3))]
    for call in calls:
        selector = hand[0 if call["step"] < 2 else 1]
        queue = list(call["asked"])

        def replay(ids):  # the run's own rollouts, in order; the hand selector must ask for the same prompts
            want, signals = queue.pop(0)
            assert np.array_equal(ids, want)
            return signals

        picks = selector.select(call["n"], replay)
        assert not queue                                  # as many rounds (refills) as the run generated
        ran = call["picks"]
        assert [r.tolist() for r in picks.rounds] == [r.tolist() for r in ran.rounds]
        assert picks.chosen == ran.chosen and picks.ids.tolist() == ran.ids.tolist()
        assert picks.filled == ran.filled and picks.rollouts == ran.rollouts
        assert np.array_equal(picks.pass_rates, ran.pass_rates, equal_nan=True)
        assert sampler.state_dict() == call["sampler"]
        own = {"dynamic": selector.dynamic, "predictive": selector.predictive}
        assert {k: p.state_dict() for k, p in own.items() if p is not None} == call["pieces"]
    assert sum(len(c["asked"]) for c in calls[2:]) > 2     # the stage's dynamic sampling did refill
    final = staged.state_dict()
    assert final["sampler"] == sampler.state_dict()
    assert final["forced"] == sum(h.forced for h in hand) and final["repeated"] == sum(h.repeated for h in hand)
    assert final["rl"]["parts"] == [{}, {"dynamic": hand[1].dynamic.state_dict(),
                                          "predictive": hand[1].predictive.state_dict()}]


# ---------------------------------------------------------------------- SFT in HF Trainer, then GRPO in TRL
SFT_GRPO = {
    "budget": "4 steps", "lr": "constant(level=0.001)",
    "averaging": {"kind": "ema", "half_life": "1 steps"},                 # the SFT stage's
    "stages": [{"name": "sft", "budget": "50%", "objective": "sft"},
               {"name": "grpo", "objective": "grpo", "rl": {"correct": "right", "dynamic": {"max_extra_rounds": 1}},
                "curriculum": {"policy": "uniform", "arms": {"column": "source"}, "batch_size": 2, "seed": 1},
                "averaging": {"kind": "tail", "every": "1 steps", "keep": 2},
                "plans": {"freeze": {"plan": "layer_freezing", "layers": "transformer.h", "fraction": FREEZE_LATE}}}],
}


def grpo_stage(root, model, after, record, resume=None):
    import datasets
    import trl

    from test_integrations_hf import char_tokenizer
    from test_integrations_trl import PROMPTS, SOURCES

    def right(completions, **kwargs):
        return [float(len(c) > 0 and c[0] in "13579") for c in completions]

    tokenizer = char_tokenizer()
    tokenizer.eos_token = "[PAD]"
    config = trl.GRPOConfig(output_dir=str(root), per_device_train_batch_size=4, num_generations=2,
                            max_completion_length=4, max_steps=2, learning_rate=1e-3, logging_steps=1, report_to=[],
                            use_cpu=True, save_strategy="steps", save_steps=1, beta=0.0, disable_tqdm=True, seed=0)
    trainer = trl.GRPOTrainer(model=model, reward_funcs=[right], args=config, processing_class=tokenizer,
                              train_dataset=datasets.Dataset.from_dict({"prompt": PROMPTS, "source": SOURCES}))
    callback = Regimen.from_dict(SFT_GRPO).attach(trainer, after=after)

    trainer.add_callback(recorder(model, record))
    trainer.train(resume_from_checkpoint=resume)
    return trainer, callback


def test_sft_in_hf_trainer_then_grpo_in_trl_hands_the_averaging_on_and_runs_the_stage_s_own_plans(tmp_path):
    pytest.importorskip("trl")
    from transformers import TrainerCallback

    from test_integrations_hf import char_tokenizer, tiny_model

    model, steps = tiny_model(len(char_tokenizer())), []
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sft = trainer_for(tmp_path / "sft", model, 2)
    link = Regimen.from_dict(SFT_GRPO).attach(sft, stop_on_transition=True).link

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps.append({"trainable": [True, True],
                          "params": {n: p.detach().clone() for n, p in model.named_parameters()}})

    sft.add_callback(Record())
    sft.train()
    assert link.stages.current.name == "grpo" and link.clock.steps == 2
    grpo, callback = grpo_stage(tmp_path / "grpo", model, link, steps)
    logged = [h for h in grpo.state.log_history if "loss" in h]
    assert all("cadence/rl/kept_fraction" in h for h in logged)            # the GRPO stage's own dynamic sampling
    assert [s["trainable"] for s in steps] == [[True, True]] * 3 + [[False, True]]   # its plan: from its 50%

    hand_model = tiny_model(len(char_tokenizer()))
    hand_model.load_state_dict(start)
    hand = averaged_by_hand(hand_model, steps, ("sft", "grpo"))
    assert same(callback.averaging.state_dict(), hand.state_dict())         # the SFT stage's EMA kept, not restarted

    again = []
    _, resumed = grpo_stage(tmp_path / "grpo", tiny_model(len(char_tokenizer())), link, again,
                            resume=str(tmp_path / "grpo" / "checkpoint-1"))
    assert [s["trainable"] for s in again] == [s["trainable"] for s in steps[3:]]
    assert same([s["params"] for s in again], [s["params"] for s in steps[3:]])
    assert same(resumed.averaging.state_dict(), callback.averaging.state_dict())
