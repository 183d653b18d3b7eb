"""PCL, hints and replay in TRL's GRPOTrainer: the value model chooses each round's prompts and learns
from their groups; plateaued all-wrong prompts are generated again with guidance written into the
prompt; groups dynamic sampling drops are replaced by stored groups with their own tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from cadence.curricula import Arms, CurriculumSampler, Uniform  # noqa: E402
from cadence.errors import CadenceError  # noqa: E402
from cadence.integrations.trl import attach, prompt_embedding_features  # noqa: E402
from cadence.rl import PCL, DynamicSampling, Hints, ReplayBuffer, ValueModel  # noqa: E402

from test_integrations_trl_rl import PROMPTS, SOURCES, accuracy, grpo, per_round, record_outputs  # noqa: E402


def hinted_accuracy(prompts, completions, cadence_id, **kwargs):
    """Prompts 0-7 are never solved plainly; with the tier-2 hint ("!!") they always are."""
    return [1.0 if p.endswith("!!") else 0.0 if i < 8 else float(sum(map(ord, c)) % 2)
            for p, c, i in zip(prompts, completions, cadence_id)]


def test_hints_rewrite_the_prompt_and_escalate_to_the_lowest_tier_that_solves(tmp_path):
    trainer = grpo(tmp_path, reward_funcs=(hinted_accuracy,), max_steps=3)
    rows = {"prompt": PROMPTS, "hint": [["!", "!!"]] * len(PROMPTS)}
    trainer.train_dataset = datasets.Dataset.from_dict(rows)
    seen: list[str] = []
    calculate = trainer._calculate_rewards
    trainer._calculate_rewards = lambda inputs, prompts, completions, completion_ids_list: (
        seen.extend(prompts), calculate(inputs, prompts, completions, completion_ids_list))[1]
    hints = Hints(len(PROMPTS), patience=1, levels=2)
    attach(trainer, sampler=CurriculumSampler(Uniform(Arms(SOURCES), seed=0), batch_size=per_round(trainer),
                                              num_replicas=1), correct="hinted_accuracy", hints=hints, guidance="hint")
    trainer.train()
    plain = [p for p in seen if not p.endswith("!")]
    tier1 = [p for p in seen if p.endswith("!") and not p.endswith("!!")]
    tier2 = [p for p in seen if p.endswith("!!")]
    assert plain and tier1 and len(tier1) == len(tier2)          # every tier-1 retry failed and went on to tier 2
    assert all(p[:-2] in PROMPTS[:8] for p in tier2)             # only never-solved prompts got guidance
    assert hints.counts["rescued"] == hints.counts["plateaued"] > 0 and hints.tier_counts[0] == 0
    logged = [k for logs in trainer.state.log_history for k in logs]
    assert "cadence/rl/hints/rescued_share" in logged


def test_pcl_chooses_by_the_value_model_and_learns_from_every_group(tmp_path):
    trainer = grpo(tmp_path, max_steps=3)
    features = prompt_embedding_features(trainer, dim=4)
    assert features(np.array([0, 5])).shape == (2, 4)
    pcl = PCL(ValueModel(features))
    attach(trainer, sampler=CurriculumSampler(Uniform(Arms(SOURCES), seed=0), batch_size=per_round(trainer),
                                              num_replicas=1), correct="accuracy", pcl=pcl)
    trainer.train()
    assert pcl.rounds == 3 and np.isfinite(pcl.error)


def test_hint_and_pcl_setups_that_cannot_work_get_clear_errors(tmp_path):
    sampler = lambda t: CurriculumSampler(Uniform(Arms(SOURCES)), batch_size=per_round(t), num_replicas=1)  # noqa: E731
    t = grpo(tmp_path)
    with pytest.raises(CadenceError, match="guidance"):
        attach(t, sampler=sampler(t), correct="accuracy", hints=Hints(len(PROMPTS)))
    with pytest.raises(CadenceError, match="no column"):
        attach(t, sampler=sampler(t), correct="accuracy", hints=Hints(len(PROMPTS)), guidance="nope")
    with pytest.raises(CadenceError, match="PCL needs to know"):
        attach(t, sampler=sampler(t), pcl=PCL(ValueModel(np.eye(16))))
    with pytest.raises(CadenceError, match="sampler="):
        attach(t, pcl=PCL(ValueModel(np.eye(16))))
    with pytest.raises(CadenceError, match="pass dynamic=DynamicSampling"):
        attach(t, sampler=sampler(t), correct="accuracy", replay=ReplayBuffer())


def test_replay_fills_dropped_groups_with_their_stored_tensors_and_counts_rollouts_saved(tmp_path):
    generated: list[int] = []

    def counted(completions, cadence_id, **kwargs):
        generated.append(len(completions))
        return accuracy(completions, cadence_id)

    counted.__name__ = "accuracy"
    trainer = grpo(tmp_path, [counted], max_steps=6)
    replay = ReplayBuffer(8, seed=0)
    callback = attach(trainer, sampler=CurriculumSampler(Uniform(Arms(SOURCES), seed=0), batch_size=per_round(trainer),
                                                         num_replicas=1),
                      correct="accuracy", dynamic=DynamicSampling(max_extra_rounds=1), replay=replay)
    selector, store = callback.link.sampler, trainer._cadence_replay
    steps: list[tuple] = []                     # per step: the picks and the replayed groups' stored tensors
    select = selector.select

    def watched(*args, **kwargs):
        picks = select(*args, **kwargs)
        steps.append((picks, [{k: v.clone() for k, v in store.get(s).items()} for s in picks.replayed]))
        return picks

    selector.select = watched
    outputs = record_outputs(trainer)
    trainer.train()
    g, n = trainer.num_generations, per_round(trainer)
    assert len(outputs) == len(steps) == 6
    replayed = 0
    for out, (picks, stored) in zip(outputs, steps):
        assert len(picks.chosen) + len(stored) == n and len(out["advantages"]) == n * g
        assert np.all(picks.replayed_ids >= 8)             # prompts 0-7 give zero-advantage groups: never stored
        for j, group in enumerate(stored):                 # replayed groups follow the generated ones
            assert group["advantages"].abs().max() > 0
            rows = slice((len(picks.chosen) + j) * g, (len(picks.chosen) + j + 1) * g)
            for key, value in group.items():
                got = out[key][rows]
                if value.dim() > 1:                        # the batch may be wider: padding on the prompt's left
                    width = value.shape[1]
                    got = got[:, -width:] if key.startswith("prompt") else got[:, :width]
                assert torch.equal(got, value), key
        replayed += len(stored)
    assert replayed > 0 and replay.counts["replayed"] == replayed and replay.counts["saved"] == replayed * g
    assert callback.link.clock.samples == sum(generated) == selector.dynamic.counts["rollouts"]   # only generated
    assert set(store.groups) == {e.payload for e in replay.entries}      # tensors kept only for the buffer's groups
    logged = [h["cadence/rl/replay/saved"] for h in trainer.state.log_history if "cadence/rl/replay/saved" in h]
    assert logged and logged[-1] == replay.counts["saved"]


def test_replay_stores_no_group_without_advantage(tmp_path):
    trainer = grpo(tmp_path, max_steps=2, prompts=PROMPTS[:8])            # always right or always wrong
    replay = ReplayBuffer(8, seed=0)
    attach(trainer, sampler=CurriculumSampler(Uniform(Arms(SOURCES[:8])), batch_size=2, num_replicas=1),
           correct="accuracy", dynamic=DynamicSampling(max_extra_rounds=1), replay=replay)
    trainer.train()
    assert replay.counts["refused"] == 8 and replay.counts["added"] == replay.counts["replayed"] == 0
    assert not trainer._cadence_replay.groups


def test_replay_group_tensors_refuse_foreign_state_and_name_a_missing_group():
    from cadence.errors import StateError
    from cadence.integrations.trl import ReplayGroups

    groups = ReplayGroups()
    serial = groups.add({"advantages": torch.tensor([0.5, -0.5])})
    before = groups.state_dict()
    for bad in ({"kind": "other"}, {"kind": ReplayGroups.kind, "groups": {0: {"a": torch.zeros(1)}}}, None):
        with pytest.raises(StateError):
            groups.load_state_dict(bad)
    assert groups.state_dict()["next"] == before["next"] and list(groups.groups) == [serial]   # nothing half-applied
    groups.keep([])
    with pytest.raises(StateError, match=f"group {serial}, whose tensors are missing"):
        groups.get(serial)
