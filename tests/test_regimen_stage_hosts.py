"""A stage's own RL pieces, plans and averaging inside ONE attached host (plain loop, HF Trainer, TRL's
GRPOTrainer, Lightning): attached from a two-stage file they equal hand-built pieces step for step (values
and state), switch at the transition as a plain loop switches them, and resume mid-stage and exactly at the
transition bit-equal; states load with torch.load(weights_only=True)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from cadence.averaging import EMA, CheckpointAverage
from cadence.clock import Clock
from cadence.integrations.jsonstate import encode
from cadence.progressive import LayerFreezing, SequenceLengthWarmup
from cadence.regimen import PathError, Regimen, Stage, StageAveraging, StageRun
from cadence.regimen.staged import StageClock, StagePlans

FREEZE_LATE = "join(constant(level=0), constant(level=1), at=[50%])"  # freeze the lowest layer from mid-stage


def roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def same(a, b) -> bool:
    """Equal nested states, tensors compared exactly."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def plain(state: dict) -> dict:
    """A link state as JSON, wall-clock seconds removed (they differ between any two runs)."""
    state = json.loads(json.dumps(encode(state)))
    for clock in (state["clock"], state.get("scheduler", {}).get("clock") or {}):
        clock.get("counts", {}).pop("seconds", None)
    return state


def trainable(layers) -> list[bool]:
    return [all(p.requires_grad for p in layer.parameters()) for layer in layers]


# ---------------------------------------------------------------------- plain loop: a stage's own plans
class Blocks(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


LOOP_FILE = {
    "budget": "10 steps", "lr": "constant(level=0.1)",
    "plans": {"seq": {"plan": "sequence_length_warmup", "length": "ramp(start=8, end=64)"}},
    "stages": [{"name": "warm", "budget": "40%",
                "plans": {"freeze": {"plan": "layer_freezing", "layers": "layers", "fraction": FREEZE_LATE}}},
               {"name": "main"}],
}


def loop_run(steps, state=None):
    model = Blocks()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    link = Regimen.from_dict(LOOP_FILE).attach(opt, model=model)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        link.load_state_dict(state["link"])
    seen = []
    for _ in range(steps):
        link.begin_step()
        seen.append((link.stages.current.name, link.plans.values(), trainable(model.layers)))
        opt.zero_grad()
        model(torch.ones(1, 2)).pow(2).sum().backward()
        opt.step()
        link.step()
    return seen, model, opt, link


def averaged_by_hand(model, steps, names):
    """Two stages of ``len(steps)`` steps in all, halved: each step's recorded weights (``s["params"]``) put
    into ``model`` and averaged by an EMA in the first stage and a tail average of two in the second."""
    clock = Clock(budget=len(steps))
    run = StageRun([Stage(names[0], budget=0.5), Stage(names[1])], clock)
    hand = StageAveraging([EMA(model, clock, half_life="1 steps", start="0 steps"),
                           CheckpointAverage(model, clock, every="1 steps", keep=2,
                                             start=f"{len(steps) // 2} steps")], run)
    for s in steps:
        model.load_state_dict(s["params"], strict=False)
        clock.advance()
        run.update()
        hand.update()
    return hand


def test_a_plain_loop_runs_a_stage_s_own_plans_on_its_progress_as_hand_built_plans():
    seen, _, _, link = loop_run(10)
    assert type(link.plans).__name__ == "StagePlans"
    run_clock, stage_clock = Clock(budget=10), Clock(budget=4)  # by hand: the stage's plan on a 4-step clock
    layers = Blocks().layers
    freeze = LayerFreezing(layers, clock=stage_clock, fraction=FREEZE_LATE)
    seq = SequenceLengthWarmup(clock=run_clock, length="ramp(start=8, end=64)")
    hand = []
    for step in range(10):
        if step < 4:
            freeze.update()
            hand.append(("warm", {f"freeze/{k}": v for k, v in freeze.values().items()}, trainable(layers)))
            stage_clock.advance()
        else:
            if step == 4:
                freeze.release()  # the stage's layer plan lets go of its layers when its stage ends
            seq.update()
            hand.append(("main", {f"seq/{k}": v for k, v in seq.values().items()}, trainable(layers)))
        run_clock.advance()
    assert seen == hand
    assert [s[2] for s in seen[:4]] == [[True] * 3] * 2 + [[False, False, True]] * 2  # frozen from the stage's 50%
    assert [s[1]["seq/seq_len"] for s in seen[4:]] == [seq.length.value(t, run_clock.axis) // 8 * 8 for t in
                                                       range(4, 10)]  # the shared top-level plan: run progress


@pytest.mark.parametrize("cut", [3, 4, 7])  # mid-stage (layers frozen), exactly at the transition, mid second stage
def test_a_plain_loop_with_stage_plans_resumes_bit_equal(cut):
    whole, model, _, link = loop_run(10)
    before, m, o, first = loop_run(cut)
    saved = roundtrip({"model": m.state_dict(), "opt": o.state_dict(), "link": first.state_dict()})
    after, resumed_model, _, resumed = loop_run(10 - cut, state=saved)
    assert before + after == whole
    assert plain(resumed.state_dict()) == plain(link.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), resumed_model.parameters()))


def test_bad_stage_plans_are_one_error_naming_their_path():
    opt = torch.optim.SGD(Blocks().parameters(), lr=0.1)
    bad = {**LOOP_FILE, "stages": [LOOP_FILE["stages"][0], {"name": "main", "plans": {
        "freeze": {"plan": "layer_freezing", "layers": "blocks", "fraction": FREEZE_LATE}}}]}
    with pytest.raises(PathError, match=r"^stages\[1\]\.plans\.freeze\.layers: the model has no attribute path"):
        Regimen.from_dict(bad).attach(opt, model=Blocks())
    with pytest.raises(PathError, match=r"^stages\[0\]\.plans\.f: layer_freezing: .*fraction must stay in \[0, 1\]"):
        Regimen.from_dict({**LOOP_FILE, "stages": [{"name": "a", "budget": "40%", "plans": {
            "f": {"plan": "layer_freezing", "layers": "layers", "fraction": "ramp(start=0, end=7)"}}}, {"name": "b"}]})


def test_a_stage_clock_follows_a_stage_that_a_rule_ended_early():
    from cadence.regimen import Rule

    run = StageRun([Stage("a", budget=0.5, rules=(Rule("loss", "below", threshold=1.0),)), Stage("b")],
                   Clock(budget=10))
    view = StageClock(run, 1)
    assert (view.schedule_total, view.position) == (5.0, 0.0)
    run.clock.advance(2)
    run.log({"loss": 0.5})  # stage a ends at step 2: b spans the 8 steps that remain
    run.clock.advance(2)
    assert (view.schedule_total, view.position, view.progress) == (8.0, 2.0, 0.25)
    run.clock.set_budget(20)  # a longer run (rescale): the stage's progress goes on from where it was, slower
    assert view.progress == 0.25
    run.clock.advance(2)
    assert 0.25 < view.progress < 0.5
    with pytest.raises(Exception, match="view of the run's clock"):
        view.advance()


# ---------------------------------------------------------------------- HF Trainer: averaging and plans
HF_FILE = {
    "budget": "6 steps", "lr": "constant(level=0.001)",
    "averaging": {"kind": "ema", "half_life": "1 steps"},
    "stages": [{"name": "train", "budget": "50%"},
               {"name": "anneal", "averaging": {"kind": "tail", "every": "1 steps", "keep": 2},
                "plans": {"freeze": {"plan": "layer_freezing", "layers": "transformer.h", "fraction": FREEZE_LATE}}}],
}


def hf_run(root, resume=None):
    pytest.importorskip("transformers")
    from transformers import TrainerCallback

    from test_integrations_hf import make_trainer

    trainer = make_trainer(root, max_steps=6, save_steps=1)
    callback = Regimen.from_dict(HF_FILE).attach(trainer)
    steps = []

    class Record(TrainerCallback):  # the weights after each step, and which layers trained in it
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            steps.append({"trainable": trainable(trainer.model.transformer.h)})

        def on_step_end(self, args, state, control, **kwargs):
            steps[-1]["params"] = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    trainer.add_callback(Record())
    trainer.train(resume_from_checkpoint=resume)
    return trainer, callback, steps


def test_hf_trainer_averages_and_plans_per_stage_as_hand_built_pieces(tmp_path):
    trainer, callback, steps = hf_run(tmp_path / "run")
    assert isinstance(callback.averaging, StageAveraging)
    assert [s["trainable"] for s in steps] == [[True, True]] * 5 + [[False, True]]  # the anneal's 50%: its 3rd step

    # by hand: the same weights after each step through an EMA (train) and a tail average (anneal)
    from test_integrations_hf import char_tokenizer, tiny_model

    hand = averaged_by_hand(tiny_model(len(char_tokenizer())), steps, ("train", "anneal"))  # the initial weights
    assert same(callback.averaging.state_dict(), hand.state_dict())
    assert same(callback.averaging.averaged(), hand.averaged())

    for cut in (2, 3, 4):  # mid-stage, exactly at the transition, mid second stage
        resumed, again, after = hf_run(tmp_path / "run", resume=str(tmp_path / "run" / f"checkpoint-{cut}"))
        assert [s["trainable"] for s in after] == [s["trainable"] for s in steps[cut:]]
        assert same([s["params"] for s in after], [s["params"] for s in steps[cut:]])
        assert same(again.averaging.state_dict(), callback.averaging.state_dict())
        assert plain(again.link.state_dict()) == plain(callback.link.state_dict())
    saved = torch.load(tmp_path / "run" / "checkpoint-4" / "cadence_averaging.pt", weights_only=True)
    assert saved["kind"] == "cadence.StageAveraging"


def test_hf_trainer_refuses_a_stage_s_own_rl_with_the_reason(tmp_path):
    pytest.importorskip("transformers")
    from test_integrations_hf import make_trainer

    d = {**HF_FILE, "stages": [HF_FILE["stages"][0], {"name": "anneal", "rl": {"dynamic": {}}}]}
    with pytest.raises(PathError, match=r"^stages\[1\]\.rl: the HF Trainer adapter runs no RL step"):
        Regimen.from_dict(d).attach(make_trainer(tmp_path, max_steps=6))


# ---------------------------------------------------------------------- TRL: a stage's own RL pieces
def trl_file():
    from test_integrations_trl import SOURCES

    return {
        "budget": "4 steps", "lr": "constant(level=0.001)",
        "curriculum": {"policy": "uniform", "arms": {"items": SOURCES}, "batch_size": 2, "seed": 1},
        "rl": {"correct": "right", "length_budget": {"schedule": "constant(level=3)", "name": "length"}},
        "averaging": {"kind": "ema", "half_life": "1 steps"},
        "stages": [{"name": "grpo", "budget": "50%"},
                   {"name": "filtered",
                    "rl": {"dynamic": {"max_extra_rounds": 1}, "predictive": {"p_min": 0.2, "seed": 3},
                           "length_budget": {"schedule": "ramp(start=4, end=2)", "name": "length"}},
                    "averaging": {"kind": "tail", "every": "1 steps", "keep": 2},
                    "plans": {"freeze": {"plan": "layer_freezing", "layers": "transformer.h",
                                         "fraction": "constant(level=1)"}}}],
    }


def trl_run(root, attach, resume=None):
    pytest.importorskip("trl")
    from test_integrations_trl import grpo_trainer

    rounds = []

    def right(completions, cadence_id, length, trainer_state, **kwargs):
        rounds.append((trainer_state.global_step, list(cadence_id), list(length)))
        return [float(len(set(c)) % 2) for c in completions]  # varies within a group

    trainer = grpo_trainer(root, [right], max_steps=4)
    trainer.args.save_strategy, trainer.args.save_steps = "steps", 1
    callback = attach(trainer)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, callback, rounds


def test_trl_switches_a_stage_s_own_rl_pieces_at_the_transition_as_hand_built_pieces(tmp_path):
    from cadence.curricula import Arms, CurriculumSampler, Uniform
    from cadence.integrations import trl
    from cadence.regimen import StageRL
    from cadence.rl import DynamicSampling, LengthBudget, PredictiveFilter
    from test_integrations_trl import SOURCES

    filed, callback, rounds = trl_run(tmp_path / "a", lambda t: Regimen.from_dict(trl_file()).attach(t))

    def by_hand(t):
        clock = Clock(budget=4)
        run = StageRun([Stage("grpo", budget=0.5), Stage("filtered")], clock, defaults={"lr": "constant(level=0.001)"})
        rl = StageRL([{"length_budget": LengthBudget("constant(level=3)", name="length")},
                      {"dynamic": DynamicSampling(max_extra_rounds=1),
                       "predictive": PredictiveFilter(6, p_min=0.2, seed=3),
                       "length_budget": LengthBudget("ramp(start=4, end=2)", name="length")}], run, own=[False, True])
        plans = StagePlans([{}, {"freeze": LayerFreezing(t.model.transformer.h, clock=StageClock(run, 1),
                                                         fraction="constant(level=1)")}], run)
        averaging = StageAveraging([EMA(t.model, clock, half_life="1 steps", start="0 steps"),
                                    CheckpointAverage(t.model, clock, every="1 steps", keep=2, start="2 steps")], run)
        return trl.attach(t, sampler=CurriculumSampler(Uniform(Arms(SOURCES)), batch_size=2, num_replicas=1, seed=1),
                          correct="right", stage_rl=rl, lr=run.schedule("lr"), clock=clock, stages=run, plans=plans,
                          averaging=averaging)

    hand, hand_cb, hand_rounds = trl_run(tmp_path / "b", by_hand)
    assert rounds == hand_rounds
    cadence_logs = [[{k: v for k, v in h.items() if k.startswith("cadence/")} for h in t.state.log_history]
                    for t in (filed, hand)]
    assert cadence_logs[0] == cadence_logs[1]  # every step's regimen values
    assert {r[0]: r[2][0] for r in rounds} == {0: 3.0, 1: 3.0, 2: 4.0, 3: 3.0}  # the stage's own ramp: its progress
    logged = {h["step"]: h for h in filed.state.log_history if "loss" in h}
    assert not any(k.startswith("cadence/rl/predictive") for s in (1, 2) for k in logged[s])  # plain GRPO first
    assert all("cadence/rl/predictive/skipped_share" in logged[s] and "cadence/rl/kept_fraction" in logged[s]
               for s in (3, 4))  # then the stage's own filter and dynamic sampling
    assert plain(callback.link.state_dict()) == plain(hand_cb.link.state_dict())
    assert same(callback.averaging.state_dict(), hand_cb.averaging.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(filed.model.parameters(), hand.model.parameters()))
    assert trainable(filed.model.transformer.h) == [False, True]
    roundtrip(callback.link.state_dict())

    for cut in (1, 2, 3):  # mid-stage, exactly at the transition, mid second stage
        resumed, again, after = trl_run(tmp_path / "a", lambda t: Regimen.from_dict(trl_file()).attach(t),
                                        resume=str(tmp_path / "a" / f"checkpoint-{cut}"))
        assert after == [r for r in rounds if r[0] >= cut]
        assert plain(again.link.state_dict()) == plain(callback.link.state_dict())
        assert same(again.averaging.state_dict(), callback.averaging.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(filed.model.parameters(), resumed.model.parameters()))


def test_trl_refuses_stage_rl_pieces_it_cannot_switch_by_path(tmp_path):
    pytest.importorskip("trl")
    from test_integrations_trl import grpo_trainer

    def right(completions, **kwargs):
        return [1.0] * len(completions)

    d = trl_file()
    d["stages"][1]["rl"] = {"dynamic": {}, "correct": "other"}
    with pytest.raises(PathError, match=r"^stages\[1\]\.rl\.correct: is 'other', but another rl section gives 'right'"):
        Regimen.from_dict(d).attach(grpo_trainer(tmp_path, [right], max_steps=4))
    d["stages"][1]["rl"] = {"dynamic": {}}  # the first stage has a length budget (the top level's), this one none
    with pytest.raises(PathError, match=r"^stages\[1\]\.rl: another stage has a length budget"):
        Regimen.from_dict(d).attach(grpo_trainer(tmp_path, [right], max_steps=4))
    bare = {k: v for k, v in d.items() if k not in ("curriculum", "rl")}
    with pytest.raises(PathError, match=r"^stages\[1\]\.rl\.dynamic: chooses among a curriculum's prompts"):
        Regimen.from_dict(bare).attach(grpo_trainer(tmp_path, [right], max_steps=4))
    d["stages"][1]["rl"] = {"knapsack": {"group": 2}}
    with pytest.raises(PathError, match=r"^stages\[1\]\.rl\.knapsack: knapsack cannot run in the TRL adapter"):
        Regimen.from_dict(d).attach(grpo_trainer(tmp_path, [right], max_steps=4))


# ---------------------------------------------------------------------- Lightning: averaging and plans
def lightning_file():
    from test_integrations_lightning import KEYS

    return {
        "budget": "6 steps", "lr": "constant(level=0.01)",
        "curriculum": {"policy": "uniform", "arms": {"items": KEYS}, "batch_size": 2, "seed": 4},
        "averaging": {"kind": "ema", "half_life": "1 steps"},
        "stages": [{"name": "train", "budget": "50%"},
                   {"name": "anneal", "averaging": {"kind": "tail", "every": "1 steps", "keep": 2},
                    "plans": {"freeze": {"plan": "layer_freezing", "layers": "blocks", "fraction": FREEZE_LATE}}}],
    }


def lightning_run(root, attach, ckpt_path=None):
    pl = pytest.importorskip("lightning.pytorch")
    from test_integrations_lightning import Points

    class Deep(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)])
            self.trained = []

        def training_step(self, batch, batch_idx):
            self.trained.append(trainable(self.blocks))
            x, y = batch
            per_sample = (self.blocks[1](self.blocks[0](x)).squeeze(-1) - y) ** 2
            return {"loss": per_sample.mean(), "sample_loss": per_sample}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1.0)

    module = Deep()
    t = pl.Trainer(max_steps=6, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=str(root),
                   callbacks=[pl.callbacks.ModelCheckpoint(dirpath=str(root), every_n_train_steps=1, save_top_k=-1)])
    callback = attach(t, module)
    t.fit(module, torch.utils.data.DataLoader(Points(), batch_size=2, sampler=callback.sampler), ckpt_path=ckpt_path)
    return module, callback


def test_lightning_averages_and_plans_per_stage_as_hand_built_pieces(tmp_path):
    from cadence.curricula import Arms, CurriculumSampler, Uniform
    from cadence.integrations import lightning
    from test_integrations_lightning import KEYS

    filed, callback = lightning_run(tmp_path / "a", lambda t, m: Regimen.from_dict(lightning_file()).attach(t, model=m))
    assert filed.trained == [[True, True]] * 5 + [[False, True]]

    def by_hand(t, m):
        clock = Clock(budget=6)
        run = StageRun([Stage("train", budget=0.5), Stage("anneal")], clock, defaults={"lr": "constant(level=0.01)"})
        cb = lightning.CadenceCallback(
            lr=run.schedule("lr"), clock=clock, stages=run,
            sampler=CurriculumSampler(Uniform(Arms(KEYS)), batch_size=2, seed=4),
            plans=StagePlans([{}, {"freeze": LayerFreezing(m.blocks, clock=StageClock(run, 1), fraction=FREEZE_LATE)}],
                             run),
            averaging=StageAveraging([EMA(m, clock, half_life="1 steps", start="0 steps"),
                                      CheckpointAverage(m, clock, every="1 steps", keep=2, start="3 steps")], run))
        t.callbacks.insert(0, cb)
        return cb

    hand, hand_cb = lightning_run(tmp_path / "b", by_hand)
    assert filed.trained == hand.trained
    assert plain(callback.link.state_dict()) == plain(hand_cb.link.state_dict())
    assert same(callback.averaging.state_dict(), hand_cb.averaging.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(filed.parameters(), hand.parameters()))

    for cut in (2, 3, 4):  # mid-stage, exactly at the transition, mid second stage
        resumed, again = lightning_run(tmp_path / f"r{cut}",
                                       lambda t, m: Regimen.from_dict(lightning_file()).attach(t, model=m),
                                       ckpt_path=str(tmp_path / "a" / f"epoch=0-step={cut}.ckpt"))
        assert resumed.trained == filed.trained[cut:]
        assert plain(again.link.state_dict()) == plain(callback.link.state_dict())
        assert same(again.averaging.state_dict(), callback.averaging.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(filed.parameters(), resumed.parameters()))
    saved = torch.load(tmp_path / "a" / "epoch=0-step=4.ckpt", weights_only=True)
    assert any(isinstance(s, dict) and s.get("averaging", {}).get("kind") == "cadence.StageAveraging"
               for s in saved["callbacks"].values())


def test_reading_a_file_leaves_the_global_random_stream_alone():
    """Checking plans and averaging builds them on stand-in layers; that must not draw from torch's RNG
    (a trainer built before the file was read would then sample differently)."""
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    Regimen.from_dict({**HF_FILE, "plans": {"f": {"plan": "layer_freezing", "layers": "x", "fraction": FREEZE_LATE}}})
    assert torch.equal(torch.rand(3), expected)


def test_trl_runs_a_stage_s_own_replay_and_resumes_its_stored_groups_exactly(tmp_path):
    """Replay only in the second stage: the groups stored there (tensors in the checkpoint's replay file)
    come back on resume mid-stage, and the run continues bit-equal."""
    def filed():
        d = trl_file()
        del d["averaging"], d["stages"][1]["averaging"], d["stages"][1]["plans"]
        d["stages"][1]["rl"] = {"dynamic": {"max_extra_rounds": 0}, "replay": {},
                                "length_budget": {"schedule": "constant(level=4)", "name": "length"}}
        return Regimen.from_dict(d)

    trainer, callback, rounds = trl_run(tmp_path / "a", lambda t: filed().attach(t))
    selector = callback.link.sampler
    assert [list(p) for p in selector.rl.parts] == [["length_budget"], ["dynamic", "replay", "length_budget"]]
    buffer = selector.every("replay")[0]
    assert buffer.entries and buffer.state_dict() == roundtrip(buffer.state_dict())  # it stored groups
    resumed, again, after = trl_run(tmp_path / "a", lambda t: filed().attach(t),
                                    resume=str(tmp_path / "a" / "checkpoint-3"))
    assert after == [r for r in rounds if r[0] >= 3]
    assert plain(again.link.state_dict()) == plain(callback.link.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(trainer.model.parameters(), resumed.model.parameters()))


def test_trl_runs_a_stage_s_own_hints_with_the_stage_s_guidance_column(tmp_path):
    pytest.importorskip("trl")
    from test_integrations_trl import SOURCES, grpo_trainer

    rounds = []

    def wrong(prompts, completions, **kwargs):  # never right: the hints' stage re-rolls with guidance
        rounds.append(list(prompts))
        return [0.0] * len(completions)

    d = {"budget": "4 steps", "lr": "constant(level=0.001)", "rl": {"correct": "wrong"},
         "curriculum": {"policy": "uniform", "arms": {"items": SOURCES}, "batch_size": 2, "seed": 1},
         "stages": [{"name": "plain", "budget": "50%"},
                    {"name": "hinted", "rl": {"hints": {"patience": 1}, "guidance": "hint"}}]}
    trainer = grpo_trainer(tmp_path, [wrong], max_steps=4)
    trainer.train_dataset = trainer.train_dataset.add_column("hint", [[" HINT"]] * len(trainer.train_dataset))
    callback = Regimen.from_dict(d).attach(trainer)
    assert callback.link.sampler.current().hints is None
    trainer.train()
    assert callback.link.sampler.current().hints.patience == 1
    guided = [r for r in rounds if any(p.endswith(" HINT") for p in r)]
    assert guided and all(not p.endswith(" HINT") for r in rounds[:2] for p in r)  # guidance in the hinted stage only
