"""PCL and hints in TRL's GRPOTrainer: the value model chooses each round's prompts and learns from
their groups; plateaued all-wrong prompts are generated again with guidance written into the prompt."""

from __future__ import annotations

import numpy as np
import pytest

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from cadence.curricula import Arms, CurriculumSampler, Uniform  # noqa: E402
from cadence.errors import CadenceError  # noqa: E402
from cadence.integrations.trl import attach, prompt_embedding_features  # noqa: E402
from cadence.rl import PCL, Hints, ValueModel  # noqa: E402

from test_integrations_trl_rl import PROMPTS, SOURCES, grpo, per_round  # noqa: E402


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
