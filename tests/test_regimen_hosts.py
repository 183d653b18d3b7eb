"""One regimen file attached unchanged to HF Trainer, TRL's GRPOTrainer and Lightning equals the
hand-built regimen step for step (values and state); stages end and resume inside each host."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("trl")
pl = pytest.importorskip("lightning.pytorch")

import cadence  # noqa: E402
from cadence.curricula import DUMP, Arms, CurriculumSampler  # noqa: E402
from cadence.integrations import hf, lightning, trl  # noqa: E402
from cadence.integrations.jsonstate import encode  # noqa: E402
from cadence.regimen import Regimen, Rule, Stage, StageRun  # noqa: E402

from test_integrations_hf import make_trainer  # noqa: E402
from test_integrations_lightning import Points, Regression  # noqa: E402
from test_integrations_trl import PROMPTS, SOURCES, grpo_trainer  # noqa: E402

TWO_STAGES = {
    "budget": "10 steps",
    "lr": "cosine(peak=0.001)",
    "schedules": {"weight_decay": "constant(level=0.01)"},
    "knobs": {"max_response_length": "constant(level=4)"},
    "stages": [
        {"name": "sft", "budget": "60%", "objective": "sft", "lr": "wsd(peak=0.002, warmup=20%, decay=50%)",
         "until": {"metric": "loss", "below": 100.0, "times": 2}},
        {"name": "grpo", "objective": "grpo", "knobs": {"max_response_length": "ramp(start=2, end=4)"}},
    ],
}


def hand_stages(clock):
    return StageRun([Stage("sft", budget="60%", objective="sft", lr="wsd(peak=0.002, warmup=20%, decay=50%)",
                           rules=(Rule("loss", "below", threshold=100.0, times=2),)),
                     Stage("grpo", objective="grpo", knobs={"max_response_length": "ramp(start=2, end=4)"})],
                    clock, defaults={"lr": "cosine(peak=0.001)", "weight_decay": "constant(level=0.01)",
                                     "max_response_length": "constant(level=4)"})


def plain(state: dict) -> dict:
    state = json.loads(json.dumps(encode(state)))
    for clock in (state["clock"], (state.get("scheduler") or {}).get("clock") or {}):
        clock.get("counts", {}).pop("seconds", None)
    return state


def cadence_logs(trainer) -> list[dict]:
    return [{k: v for k, v in h.items() if k.startswith("cadence/") and k != "cadence/progress"}
            for h in trainer.state.log_history if "loss" in h]


def test_hf_trainer_from_a_file_equals_the_hand_built_regimen(tmp_path):
    filed = make_trainer(tmp_path / "file", max_steps=10, save_steps=5)
    events = []
    Regimen.from_dict(TWO_STAGES).to_file(tmp_path / "regimen.yaml")
    callback = Regimen.from_file(tmp_path / "regimen.yaml").attach(filed)  # the file, attached unchanged
    callback.link.stages.on_transition(events.append)
    filed.train()

    hand = make_trainer(tmp_path / "hand", max_steps=10, save_steps=5)
    clock = cadence.Clock(budget=10)
    stages = hand_stages(clock)
    hand_cb = hf.attach(hand, lr=stages.schedule("lr"), clock=clock, stages=stages,
                        knobs={"max_response_length": stages.schedule("max_response_length")},
                        weight_decay=stages.schedule("weight_decay"))
    hand.train()

    assert cadence_logs(filed) == cadence_logs(hand) and len(cadence_logs(filed)) == 10
    assert plain(callback.link.state_dict()) == plain(hand_cb.link.state_dict())
    for a, b in zip(filed.model.parameters(), hand.model.parameters()):
        assert torch.equal(a, b)
    assert [(e.previous, e.position, e.reason) for e in events] == [("sft", 2.0, "below on loss")]
    logs = cadence_logs(filed)
    assert [h["cadence/stage"] for h in logs] == [0, 1] + [1] * 8  # the stage that is current after each step

    resumed = make_trainer(tmp_path / "file", max_steps=10, save_steps=5)
    again = Regimen.from_dict(TWO_STAGES).attach(resumed)
    resumed.train(resume_from_checkpoint=str(tmp_path / "file" / "checkpoint-5"))
    assert plain(again.link.state_dict()) == plain(callback.link.state_dict())
    for a, b in zip(filed.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_hf_refuses_a_budget_that_disagrees_with_max_steps(tmp_path):
    with pytest.raises(cadence.CadenceError, match="^budget: the regimen's budget is 10 steps, but the Trainer"):
        Regimen.from_dict(TWO_STAGES).attach(make_trainer(tmp_path, max_steps=6))


def test_trl_grpo_from_a_file_equals_the_hand_built_regimen(tmp_path):
    d = {**TWO_STAGES, "budget": "4 steps",
         "curriculum": {"policy": "dump", "arms": {"items": SOURCES}, "batch_size": 2, "seed": 1},
         "rl": {"length_budget": {"schedule": "constant(level=3)", "name": "length"}}}
    d["stages"] = [dict(d["stages"][0], until={"metric": "reward", "above": 50.0}), d["stages"][1]]

    def rollouts():
        rounds = []

        def reward(completions, cadence_id, max_response_length, length, **kwargs):
            rounds.append((list(cadence_id), list(max_response_length), list(length)))
            return [float(len(c) % 3) for c in completions]
        return rounds, reward

    rounds_a, reward_a = rollouts()
    filed = grpo_trainer(tmp_path / "a", [reward_a], max_steps=4)
    callback = Regimen.from_dict(d).attach(filed)
    filed.train()

    rounds_b, reward_b = rollouts()
    hand = grpo_trainer(tmp_path / "b", [reward_b], max_steps=4)
    clock = cadence.Clock(budget=4)
    stages = StageRun([Stage("sft", budget="60%", objective="sft", lr="wsd(peak=0.002, warmup=20%, decay=50%)",
                             rules=(Rule("reward", "above", threshold=50.0),)),
                       Stage("grpo", objective="grpo", knobs={"max_response_length": "ramp(start=2, end=4)"})],
                      clock, defaults={"lr": "cosine(peak=0.001)", "weight_decay": "constant(level=0.01)",
                                       "max_response_length": "constant(level=4)"})
    hand_cb = trl.attach(hand, sampler=CurriculumSampler(DUMP(Arms(SOURCES)), batch_size=2, num_replicas=1, seed=1),
                         knobs={"max_response_length": stages.schedule("max_response_length")},
                         lr=stages.schedule("lr"), clock=clock, stages=stages,
                         length_budget=cadence.rl.LengthBudget("constant(level=3)", name="length"),
                         weight_decay=stages.schedule("weight_decay"))
    hand.train()

    assert rounds_a == rounds_b and len(rounds_a) == 4
    assert [r[1][0] for r in rounds_a] == [4.0, 4.0, 4.0, 2.75]  # sft ends at 2.4 steps; grpo ramps from there
    assert cadence_logs(filed) == cadence_logs(hand)
    assert plain(callback.link.state_dict()) == plain(hand_cb.link.state_dict())
    for a, b in zip(filed.model.parameters(), hand.model.parameters()):
        assert torch.equal(a, b)


def test_trl_refuses_a_piece_it_cannot_run_by_name(tmp_path):
    trainer = grpo_trainer(tmp_path, [lambda completions, **kw: [0.0] * len(completions)], max_steps=4)
    r = Regimen.from_dict({"budget": "4 steps", "lr": "constant(level=0.001)", "rl": {"knapsack": {"group": 2}}})
    with pytest.raises(cadence.CadenceError, match="^rl.knapsack: knapsack cannot run in the TRL adapter"):
        r.attach(trainer)
    replaying = Regimen.from_dict({"budget": "4 steps", "lr": "constant(level=0.001)",
                                   "curriculum": {"policy": "uniform", "arms": {"items": SOURCES}, "batch_size": 2},
                                   "rl": {"dynamic": {}, "replay": {"capacity": 8},
                                          "correct": "<lambda>"}})
    selector = replaying.attach(trainer).link.sampler               # TRL runs replay
    assert selector.replay.capacity == 8 and selector.dynamic is not None
    hinting = Regimen.from_dict({**replaying.to_dict(), "rl": {"hints": {"patience": 2}, "correct": "<lambda>"}})
    with pytest.raises(cadence.CadenceError, match="^rl.guidance: TRL re-rolls hinted prompts"):
        hinting.attach(grpo_trainer(tmp_path, [lambda completions, **kw: [0.0] * len(completions)], max_steps=4))
    trainer = grpo_trainer(tmp_path, [lambda completions, **kw: [0.0] * len(completions)], max_steps=4)
    trainer.train_dataset = trainer.train_dataset.add_column("hint", [[" 1"]] * len(trainer.train_dataset))
    hinted = Regimen.from_dict({**hinting.to_dict(), "rl": {**hinting.to_dict()["rl"], "guidance": "hint"}})
    assert hinted.attach(trainer).link.sampler.hints.patience == 2     # TRL runs hints from a file


def lightning_run(tmp_path, attach, ckpt_path=None):
    t = pl.Trainer(max_steps=10, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=str(tmp_path), limit_val_batches=1,
                   val_check_interval=1, check_val_every_n_epoch=None, num_sanity_val_steps=0,
                   callbacks=[pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path), every_n_train_steps=5, save_top_k=-1)])
    callback = attach(t)
    lrs = []

    class Module(Regression):
        def on_train_batch_start(self, batch, batch_idx):
            lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", ((self.net(x).squeeze(-1) - y) ** 2).mean())

    loader = torch.utils.data.DataLoader(Points(), batch_size=2)
    t.fit(Module(), loader, loader, ckpt_path=ckpt_path)
    return callback, lrs, t


def test_lightning_from_a_file_equals_the_hand_built_regimen(tmp_path):
    d = {**TWO_STAGES, "stages": [dict(TWO_STAGES["stages"][0], until={"metric": "val_loss", "below": 100.0,
                                                                        "times": 3}), TWO_STAGES["stages"][1]]}
    filed, lrs, t = lightning_run(tmp_path / "a", lambda t: Regimen.from_dict(d).attach(t))

    def hand(t):
        clock = cadence.Clock(budget=10)
        stages = StageRun([Stage("sft", budget="60%", lr="wsd(peak=0.002, warmup=20%, decay=50%)", objective="sft",
                                 rules=(Rule("val_loss", "below", threshold=100.0, times=3),)),
                           Stage("grpo", objective="grpo", knobs={"max_response_length": "ramp(start=2, end=4)"})],
                          clock, defaults={"lr": "cosine(peak=0.001)", "weight_decay": "constant(level=0.01)",
                                           "max_response_length": "constant(level=4)"})
        callback = lightning.CadenceCallback(lr=stages.schedule("lr"), clock=clock, stages=stages,
                                             knobs={"max_response_length": stages.schedule("max_response_length")},
                                             weight_decay=stages.schedule("weight_decay"))
        t.callbacks.insert(0, callback)
        return callback

    built, hand_lrs, t2 = lightning_run(tmp_path / "b", hand)
    assert lrs == hand_lrs and len(lrs) == 10
    assert plain(filed.link.state_dict()) == plain(built.link.state_dict())
    assert filed.link.stages.ended == {0: 3.0}  # three validation runs below the threshold end sft at step 3
    assert lrs[3] == cadence.parse("cosine(peak=0.001)").value(0, cadence.Axis("steps", 7))
    for a, b in zip(t.lightning_module.parameters(), t2.lightning_module.parameters()):
        assert torch.equal(a, b)

    resumed, after, t3 = lightning_run(tmp_path / "c", lambda t: Regimen.from_dict(d).attach(t),
                                       ckpt_path=str(tmp_path / "a" / "epoch=0-step=5.ckpt"))
    assert after == lrs[5:]
    assert plain(resumed.link.state_dict()) == plain(filed.link.state_dict())
    # (weights are not compared: a plain DataLoader restarts its epoch on a mid-epoch Lightning resume)
