"""The regimen file: exact round trip, one error naming the full path of a bad field, the doctor's
format as a subset, every registered piece validated on load, plain-loop attach = hand-built."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cadence
from cadence.curricula import DUMP, Arms, CurriculumSampler
from cadence.doctor import Regimen as DoctorRegimen
from cadence.errors import CadenceError
from cadence.optim import ScheduledLR
from cadence.regimen import PathError, Regimen, RegimenLink, Stage, StageRun
from cadence.regimen.pieces import CURRICULA, PLANS, RL

SPECS = ["cosine(peak=0.001)", "wsd(peak=0.0003, warmup=10%, decay=20%)", "constant(level=0.5)",
         "linear(peak=0.01, floor=0.1)", "ramp(start=64, end=256)"]

TWO_STAGES = {
    "name": "sft-then-grpo",
    "budget": "20 steps",
    "lr": "cosine(peak=0.01)",
    "schedules": {"weight_decay": "constant(level=0.1)"},
    "knobs": {"kl": "constant(level=0.05)"},
    "stages": [
        {"name": "sft", "budget": "40%", "objective": "sft", "lr": "wsd(peak=0.01, warmup=25%, decay=25%)"},
        {"name": "grpo", "objective": "grpo", "knobs": {"kl": "ramp(start=0.0, end=0.1)"},
         "until": {"metric": "reward", "above": 0.9, "times": 2}},
    ],
}


@st.composite
def regimens(draw) -> dict:
    d: dict = {"budget": f"{draw(st.integers(10, 10_000))} steps", "lr": draw(st.sampled_from(SPECS))}
    if draw(st.booleans()):
        d["schedules"] = {"weight_decay": draw(st.sampled_from(SPECS))}
    if draw(st.booleans()):
        d["knobs"] = {draw(st.sampled_from(["kl", "length", "temperature"])): draw(st.sampled_from(SPECS))}
    if draw(st.booleans()):
        d["tokens_per_step"] = draw(st.floats(1, 1e6))
    if draw(st.booleans()):
        d["curriculum"] = {"policy": "dump", "arms": {"items": ["a", "b", "a"]}, "batch_size": draw(st.integers(1, 8)),
                           "temperature": draw(st.floats(0.01, 10)), "seed": draw(st.integers(0, 9))}
    if draw(st.booleans()):
        d["rl"] = {"dynamic": {"low": 0.0, "high": draw(st.floats(0.5, 1.0))},
                   "length_budget": {"schedule": "ramp(start=64, end=256)"}, "correct": "accuracy"}
    if draw(st.booleans()):
        d["plans"] = {"freeze": {"plan": "layer_freezing", "layers": "blocks", "start": draw(st.floats(0, 1))}}
    if draw(st.booleans()):
        d["averaging"] = {"kind": "ema", "half_life": f"{draw(st.integers(1, 50))} steps"}
    if draw(st.booleans()):
        d["continual"] = {"rewarm": draw(st.booleans()), "replay": draw(st.floats(0, 1))}
    n = draw(st.integers(0, 3))
    if n:
        shares = [draw(st.integers(1, 5)) for _ in range(n)]
        stages = []
        for i, share in enumerate(shares):
            s: dict = {"name": f"s{i}", "objective": draw(st.sampled_from(["sft", "grpo", "dpo", "warm up"]))}
            if i < n - 1:
                s["budget"] = f"{share}%"
            if draw(st.booleans()):
                s["lr"] = draw(st.sampled_from(SPECS))
            if draw(st.booleans()):
                s["plateau"] = {"metric": "reward", "delta": draw(st.floats(0, 1)), "window": draw(st.integers(1, 9)),
                                "mode": draw(st.sampled_from(["max", "min"]))}
            elif draw(st.booleans()):
                s["until"] = {"metric": "eval_loss", "below": draw(st.floats(-5, 5)), "times": draw(st.integers(1, 4))}
            if draw(st.booleans()):  # a stage's own pieces
                s["curriculum"] = {"policy": "replay", "fraction": draw(st.floats(0, 0.99)), "old": "old",
                                   "arms": {"items": ["old", "new", "new"]}, "batch_size": draw(st.integers(1, 8))}
            if draw(st.booleans()):
                s["rl"] = {"dynamic": {"low": 0.0, "high": draw(st.floats(0.5, 1.0))}}
            if draw(st.booleans()):
                s["plans"] = {"seq": {"plan": "sequence_length_warmup", "length": draw(st.sampled_from(
                    ["ramp(start=8, end=64)", "constant(level=32)"]))}}
            if draw(st.booleans()):
                s["averaging"] = {"kind": "tail", "every": f"{draw(st.integers(1, 9))} steps",
                                  "keep": draw(st.integers(1, 5))}
            stages.append(s)
        d["stages"] = stages
    return d


@settings(max_examples=60, deadline=None)
@given(regimens())
def test_every_field_round_trips_exactly(d):
    r = Regimen.from_dict(d)
    again = Regimen.from_dict(r.to_dict())
    assert again == r and again.to_dict() == r.to_dict()
    assert again.schedules == r.schedules and again.knobs == r.knobs and again.stages == r.stages
    assert [{k: v[0] for k, v in own.items()} for own in again.stage_pieces] == \
        [{k: v[0] for k, v in own.items()} for own in r.stage_pieces]
    assert Regimen.from_dict(json.loads(json.dumps(r.to_dict()))).to_dict() == r.to_dict()  # JSON-safe


def test_file_round_trip_yaml_and_json(tmp_path):
    r = Regimen.from_dict(TWO_STAGES)
    for name in ("r.yaml", "r.json"):
        r.to_file(tmp_path / name)
        assert Regimen.from_file(tmp_path / name) == r


@pytest.mark.parametrize("bad, path, words", [
    ({"stages": [{"name": "a", "budget": "50%"}, {"name": "b", "lr": "cosine(peak=1e-3)", "temperature": 1}]},
     "stages[1].temperature", "unknown field"),
    ({"stages": [{"name": "a", "budget": "50%"}, {"name": "b", "lr": "cosine(peek=1e-3)"}]}, "stages[1].lr", "peek"),
    ({"curriculum": {"policy": "dump", "arms": {"items": ["a", "b"]}, "batch_size": 2, "temprature": 0.1}},
     "curriculum.temprature", "takes no argument"),
    ({"curriculum": {"policy": "dump", "arms": {"items": ["a", "b"]}, "batch_size": 2, "temperature": -1}},
     "curriculum", "temperature"),
    ({"stages": [{"name": "a", "budget": "70%"}, {"name": "b", "budget": "50%"}]}, "stages", "more than its budget"),
    ({"stages": [{"name": "a", "budget": "70%"}, {"name": "b", "budget": "20%"}]}, "stages", "add up to 0.9"),
    ({"stages": [{"name": "a", "budget": "5 steps"}, {"name": "b", "budget": "200 tokens"}]}, "stages",
     "in tokens"),
    ({"stages": [{"name": "a", "until": {"metric": "r", "above": 1, "below": 0}}]}, "stages[0].until", "exactly one"),
    ({"stages": [{"name": "a", "plateau": {"metric": "r", "window": 0}}]}, "stages[0].plateau.window", "[1"),
    ({"stages": [{"name": "a", "plans": {"f": {"plan": "freeze_all"}}}]}, "stages[0].plans.f.plan", "unknown plan"),
    ({"stages": [{"name": "a", "curriculum": {"policy": "uniform", "arms": {"items": [1, 2]}, "batch_size": 2,
                                              "tempo": 1}}]}, "stages[0].curriculum.tempo", "takes no argument"),
    ({"rl": {"dynamic": {"low": 0.0, "high": 1.0, "max_extra": 2}}}, "rl.dynamic.max_extra", "takes no argument"),
    ({"rl": {"knapsak": {}}}, "rl.knapsak", "unknown piece"),
    ({"plans": {"f": {"plan": "layer_freezing", "layers": "blocks", "level": 2.0}}}, "plans.f", "level"),
    ({"averaging": {"kind": "ema", "half_life": "5 steps", "decay": 0.9}}, "averaging", "exactly one"),
    ({"lrr": "cosine(peak=1)"}, "lrr", "unknown field"),
    ({"budget": "lots"}, "budget", "budget"),
    ({"knobs": {"kl": True}}, "knobs.kl", "schedule spec"),
])
def test_a_bad_field_is_one_error_naming_its_path(bad, path, words):
    d = {"budget": "100 steps", "lr": "cosine(peak=1e-3)", **bad}
    with pytest.raises(PathError) as e:
        Regimen.from_dict(d)
    assert e.value.path == path and str(e.value).startswith(f"{path}: ") and words in str(e.value)


def test_old_doctor_files_load_and_check_unchanged(tmp_path):
    old = {"name": "cpt", "budget": "20000 steps", "elapsed": 100, "tokens_per_step": 4096,
           "lr": "wsd(peak=3e-4, warmup=1%, decay=20%)", "schedules": {"weight_decay": "cosine(peak=0.1)"},
           "curriculum": {"kind": "quality-ascending"}, "averaging": {"kind": "tail"},
           "continual": {"rewarm": True, "replay": 0.0}}
    r = Regimen.from_dict(old)
    assert DoctorRegimen.from_dict(r.to_dict()) == DoctorRegimen.from_dict(old)
    with pytest.raises(PathError, match="elapsed"):  # a run cannot start mid-way; the doctor can read it
        r.attach(torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0))


def test_every_registered_piece_names_its_host_arguments():
    for registry in (CURRICULA, RL, PLANS):
        for piece in registry.values():
            assert not set(piece.needs) & set(piece.arguments())  # the file never gives what the host provides


def plain_loop(link: RegimenLink, optimizer, steps: int) -> list[tuple]:
    model_params = optimizer.param_groups[0]["params"]
    out = []
    for _ in range(steps):
        loss = sum((p ** 2).sum() for p in model_params)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        link.step()
        link.log({"reward": 0.5, "loss": float(loss.detach())})
        out.append((dict(link.values()), [dict((k, v) for k, v in g.items() if k != "params")
                                           for g in optimizer.param_groups]))
    return out


def test_plain_loop_attach_equals_the_hand_built_regimen_step_for_step():
    d = {**TWO_STAGES, "curriculum": {"policy": "dump", "arms": {"items": ["a", "b"] * 4}, "batch_size": 4, "seed": 3,
                                      "temperature": 0.5}}
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    link = Regimen.from_dict(d).attach(opt)

    torch.manual_seed(0)
    model2 = torch.nn.Linear(3, 1)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1.0)
    clock = cadence.Clock(budget=20)
    stages = StageRun([Stage("sft", budget="40%", objective="sft", lr="wsd(peak=0.01, warmup=25%, decay=25%)"),
                       Stage("grpo", objective="grpo", knobs={"kl": "ramp(start=0.0, end=0.1)"},
                             rules=(cadence.regimen.Rule("reward", "above", threshold=0.9, times=2),))],
                      clock, defaults={"lr": "cosine(peak=0.01)", "weight_decay": "constant(level=0.1)",
                                       "kl": "constant(level=0.05)"})
    sampler = CurriculumSampler(DUMP(Arms(["a", "b"] * 4), temperature=0.5), 4, seed=3)
    hand = RegimenLink(scheduler=ScheduledLR(opt2, clock=clock, lr=stages.schedule("lr"),
                                             weight_decay=stages.schedule("weight_decay")),
                       knobs={"kl": stages.schedule("kl")}, policy=sampler.policy, sampler=sampler, stages=stages,
                       owns_scheduler=True)
    for a, b in zip(plain_loop(link, opt, 20), plain_loop(hand, opt2, 20)):
        a[0].pop("cadence/progress"), b[0].pop("cadence/progress")
        assert a == b
    sa, sb = link.state_dict(), hand.state_dict()
    for s in (sa, sb):
        s["clock"]["counts"].pop("seconds"), s["scheduler"]["clock"]["counts"].pop("seconds")
    assert sa == sb
    assert link.stages.current.name == "grpo" and link.knob("kl") == pytest.approx(0.1 * 12 / 12)


def test_hosts_refuse_pieces_they_cannot_run_by_name():
    r = Regimen.from_dict({"budget": "10 steps", "lr": "constant(level=0.1)",
                           "rl": {"knapsack": {"group": 4}}})
    with pytest.raises(PathError, match=r"^rl.knapsack: knapsack cannot run in the HF Trainer adapter"):
        r.refuse("hf")
    r.refuse("loop")


def test_a_stages_own_pieces_per_trainer_or_switched_in_one_loop():
    r = Regimen.from_dict({"budget": "10 steps", "lr": "constant(level=0.1)",
                           "curriculum": {"policy": "uniform", "arms": {"items": ["a", "b"]}, "batch_size": 2},
                           "stages": [{"name": "sft", "budget": "50%"},
                                      {"name": "rl", "rl": {"dynamic": {"low": 0.0, "high": 1.0}},
                                       "curriculum": {"policy": "dump", "arms": {"items": ["a", "b"]},
                                                      "batch_size": 2}}]})
    assert Regimen.from_dict(r.to_dict()) == r
    assert r.for_part(0).curriculum.name == "uniform" and r.for_part(1).curriculum.name == "dump"
    assert set(r.for_part(1).rl) == {"dynamic"} and r.for_part(0).rl == {}
    link = r.attach(torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0))  # one plain loop switches them
    assert (link.sampler.policy.name, list(link.rl.current())) == ("uniform", [])
    for _ in range(5):
        link.step()
    assert (link.sampler.policy.name, list(link.rl.current())) == ("dump", ["dynamic"])


def test_verl_overrides_from_a_file_match_the_documented_lines():
    """The lines verl reads (docs/integrations/verl.md), generated from a regimen file; verl itself is not
    imported here (it lives in its own environment), so the lines are compared, not run."""
    import re
    from pathlib import Path

    from cadence.integrations.verl_config import verl_overrides

    r = Regimen.from_dict({"budget": "200 steps", "lr": "wsd(peak=1e-6, warmup=5%, decay=20%)",
                           "curriculum": {"policy": "dump", "arms": {"column": "data_source"}, "batch_size": 1},
                           "rl": {"dynamic": {"low": 0, "high": 1}, "predictive": {"target_zero_variance": 0.25},
                                  "correct_threshold": 0.5}})
    lines = verl_overrides(r, train_batch_size=64, updates_per_step=4)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "integrations" / "verl.md").read_text()
    block = doc.split("<!-- verl-overrides -->", 1)[1].split("```", 2)[1]
    documented = {line.strip().rstrip("\\").strip() for line in block.splitlines()[1:]}
    documented = {re.sub(r", decay=20%\)", ")", line).replace("1e-6", "1e-06") for line in documented if line}
    assert set(lines) <= documented and len(lines) == len(set(lines))
    assert documented - set(lines) == {"python3 -m verl.trainer.main_ppo", "trainer.use_v1=True",
                                       "trainer.v1.trainer_mode=sync", "algorithm.adv_estimator=grpo",
                                       "data.train_batch_size=64", "data.dataloader_num_workers=0"}
    staged = Regimen.from_dict({"budget": "10 steps", "lr": "constant(level=0.1)",
                                "stages": [{"name": "a", "budget": "50%"}, {"name": "b"}]})
    with pytest.raises(CadenceError, match="^a regimen with stages reaches verl as its file"):
        verl_overrides(staged)
    own = staged.to_dict()  # a stage's own pieces: the first one verl cannot run, by path, with the reason
    own["stages"][1] |= {"rl": {"dynamic": {}}, "averaging": {"kind": "ema", "half_life": "1 steps"}}
    with pytest.raises(PathError, match=r"^stages\[1\]\.averaging: ema cannot run in the verl adapter"):
        verl_overrides(Regimen.from_dict(own))
    own["stages"][1] = {"name": "b", "plans": {"f": {"plan": "layer_freezing", "layers": "h"}}}
    with pytest.raises(PathError, match=r"^stages\[1\]\.plans\.f: layer_freezing cannot run in the verl adapter"):
        verl_overrides(Regimen.from_dict(own))
    with pytest.raises(PathError, match="^plans.f: layer_freezing cannot run in the verl adapter"):
        verl_overrides(Regimen.from_dict({"budget": "10 steps", "plans": {"f": {"plan": "layer_freezing",
                                                                                 "layers": "h"}}}))


def test_the_newer_rl_pieces_build_from_a_file_and_hosts_refuse_them_by_name():
    from cadence.rl import GVMAllocation, HierarchicalBudget, Hints, HybridGate, ReplayBuffer

    r = Regimen.from_dict({"budget": "10 steps", "lr": "constant(level=0.1)",
                           "rl": {"hpt": {"sft_gate": 1, "group": 4}, "gvm": {"group": 4}, "replay": {"capacity": 8},
                                  "hints": {"patience": 2}, "hbpo": {"budgets": [8, 16]}}})
    assert Regimen.from_dict(r.to_dict()) == r
    built = r.build_rl(num_items=3, arm_of=[0, 1, 1])
    assert isinstance(built["hpt"], HybridGate) and built["hpt"].sft_gate == 1
    assert isinstance(built["gvm"], GVMAllocation) and isinstance(built["replay"], ReplayBuffer)
    assert isinstance(built["hints"], Hints) and isinstance(built["hbpo"], HierarchicalBudget)
    r.refuse("loop")
    with pytest.raises(PathError, match=r"^rl\.(hpt|gvm|hbpo): \1 cannot run in the TRL adapter"):
        r.refuse("trl")
    replaying = Regimen.from_dict({"budget": "10 steps", "rl": {"dynamic": {}, "replay": {"capacity": 64}}})
    replaying.refuse("trl")                                  # TRL and verl run replay
    from pathlib import Path

    from cadence.integrations.verl_config import verl_overrides

    doc = (Path(__file__).resolve().parents[1] / "docs" / "integrations" / "verl.md").read_text()
    documented = doc.split("<!-- verl-replay -->", 1)[1].split("```", 2)[1].splitlines()[1].strip()
    assert documented in verl_overrides(replaying, train_batch_size=4)
    hinting = Regimen.from_dict({"budget": "10 steps", "rl": {"dynamic": {}, "hints": {"patience": 1, "levels": 2},
                                                             "guidance": "hints"}})
    hinting.refuse("trl")                                    # TRL and verl run hints, with a guidance column
    block = doc.split("<!-- verl-hints -->", 1)[1].split("```", 2)[1].splitlines()[1:]
    documented = {line.strip().rstrip("\\").strip() for line in block if line.strip()}
    assert documented <= set(verl_overrides(hinting, train_batch_size=4))
    with pytest.raises(PathError, match="^rl.guidance: verl's hints read"):
        verl_overrides(Regimen.from_dict({"budget": "10 steps", "rl": {"dynamic": {}, "hints": {}}}), train_batch_size=4)
    with pytest.raises(PathError, match="^rl.guidance: guidance is for hints"):
        Regimen.from_dict({"budget": "10 steps", "rl": {"guidance": "hints"}})
    with pytest.raises(PathError, match="^rl.guidance: must name the dataset column"):
        Regimen.from_dict({"budget": "10 steps", "rl": {"hints": {}, "guidance": 3}})
    with pytest.raises(PathError, match=r"^rl.hpt.sft_gat"):
        Regimen.from_dict({"budget": "10 steps", "rl": {"hpt": {"sft_gat": 1}}})
    d3s = Regimen.from_dict({"budget": "10 steps", "rl": {"d3s": {"token_ratio": "ramp(start=0.5, end=1)"}}})
    d3s.refuse("trl")   # TRL runs D3S's token level
    assert d3s.build_rl()["d3s"].ratios(cadence.Clock(budget=10))[1] == 0.5


def test_verl_overrides_of_a_staged_file_name_it_once_for_the_sampler_and_the_optimizer(tmp_path):
    """A file with stages reaches verl as its path (read by the sampler on the driver and by ScheduledAdamW
    in the workers); what verl cannot run is one error naming its path."""
    from cadence.integrations.verl_config import verl_overrides

    d = {"budget": "10 steps", "lr": "constant(level=0.1)", "rl": {"dynamic": {}},
         "stages": [{"name": "a", "budget": "50%"}, {"name": "b", "lr": "cosine(peak=0.1)", "rl": {"predictive": {}}}]}
    path = tmp_path / "regimen.yaml"
    Regimen.from_dict(d).to_file(path)
    lines = verl_overrides(str(path), train_batch_size=8, updates_per_step=4)
    assert f"+trainer.v1.sampler.sampler_kwargs.regimen={path}" in lines
    assert f"+actor_rollout_ref.actor.optim.override_optimizer_config.regimen={path}" in lines
    assert {"data.gen_batch_size=1", "+trainer.v1.sampler.sampler_kwargs.train_batch_size=8",
            "actor_rollout_ref.actor.optim.optimizer=ScheduledAdamW",
            "+actor_rollout_ref.actor.optim.override_optimizer_config.updates_per_step=4"} <= set(lines)
    assert not any("policy=" in line or "budget=" in line for line in lines)      # the file holds them
    with pytest.raises(CadenceError, match="train_batch_size"):
        verl_overrides(str(path))
    bad = [({"until": {"metric": "reward", "above": 0.5}}, 1, r"stages\[1\]\.until: verl trains trainer\.total_"),
           ({"plateau": {"metric": "reward", "delta": 0.01, "window": 3}}, 1, r"stages\[1\]\.plateau"),
           ({"schedules": {"momentum": "constant(level=0.9)"}}, None, r"stages\[0\]\.schedules\.momentum: verl's"),
           ({"rl": {"knapsack": {"group": 4}}}, 1, r"stages\[1\]\.rl\.knapsack: an allocation spreads a whole fetch"),
           ({"rl": {"dynamic": {"max_extra_rounds": 2}}}, 1, r"stages\[1\]\.rl\.dynamic\.max_extra_rounds"),
           ({"rl": {"dynamic": {}, "hints": {}}}, 1, r"stages\[1\]\.rl\.guidance: verl's hints read"),
           ({"curriculum": {"policy": "uniform", "arms": {"items": ["a"]}, "batch_size": 1}}, 1,
            r"stages\[1\]\.curriculum\.arms: verl reads each prompt's arm from one dataset column"),
           ({"averaging": {"kind": "ema", "half_life": "1 steps"}}, 1, r"stages\[1\]\.averaging: ema cannot run")]
    for extra, i, message in bad:
        broken = json.loads(json.dumps(d))
        for stage in broken["stages"] if i is None else [broken["stages"][i]]:
            stage |= extra
        Regimen.from_dict(broken).to_file(path)
        with pytest.raises(PathError, match="^" + message):
            verl_overrides(str(path), train_batch_size=8)
    ruled = json.loads(json.dumps(d))                 # a rule on a stage but the last runs in verl
    ruled["stages"][0]["until"] = {"metric": "val-core/reward", "above": 0.5, "times": 2}
    Regimen.from_dict(ruled).to_file(path)
    assert f"+trainer.v1.sampler.sampler_kwargs.regimen={path}" in verl_overrides(str(path), train_batch_size=8)
