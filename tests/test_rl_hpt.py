"""HPT's per-prompt gate: the rule by hand, its spec and state, and the gate inside the RL lab's
GRPO loop (an all-SFT gate is exactly an SFT step; resume is exact; equal SFT tokens in the bench)."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cadence.curricula import Uniform
from cadence.errors import CadenceError, SpecError, StateError
from cadence.labs.rl.grpo import GRPOConfig, GRPOTrainer, suite_arms
from cadence.labs.rl.policy import answer_batch
from cadence.labs.rl.sources import SelectorSource
from cadence.labs.rl.tasks import TaskSuite
from cadence.labs.rl.warmstart import WarmStartConfig, warm_start
from cadence.rl import HybridGate, PromptSelector
from cadence.rl.hpt import OFF_POLICY, RL, SFT

WARM = WarmStartConfig(steps=20, batch=16, n_layer=1, n_head=2, d_model=16)
SUITE = TaskSuite(families=("add", "count"), levels=(1, 2), items_per_arm=16, eval_per_arm=4, seed=0)
CONFIG = GRPOConfig(steps=3, prompts_per_step=4, group=4, eval_every=3, lr="constant(1e-3)")


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def groups_with(counts, size):
    correct = np.concatenate([np.arange(size) < s for s in counts]).astype(float)
    return correct, np.full(len(counts), size)


def test_gate_rule_by_hand():
    # γ = 2, γ_off = 4 of G = 8: s ≤ 2 → SFT, 2 < s ≤ 4 → off-policy, s > 4 → RL
    gate = HybridGate(sft_gate=2, off_policy_gate=4, group=8)
    routes = gate.route(*groups_with([0, 1, 2, 3, 4, 5, 7, 8], 8))
    assert routes.tolist() == [SFT, SFT, SFT, OFF_POLICY, OFF_POLICY, RL, RL, RL]
    assert gate.stats() == {"sft": 3, "off_policy": 2, "rl": 3}
    # the paper's Qwen default γ = γ_off = 0: SFT only when all 8 are wrong
    default = HybridGate()
    assert default.names(default.route(*groups_with([0, 1, 8], 8))) == ["sft", "rl", "rl"]
    # groups of 4 against γ = 2 of 8: pass rate ≤ 2/8, i.e. at most 1 of 4 correct
    assert HybridGate(sft_gate=2, group=8).route(*groups_with([0, 1, 2, 4], 4)).tolist() == [SFT, SFT, RL, RL]
    # uneven sizes: 1 of 3 (0.33 > 0.25) is RL, 1 of 5 (0.2) is SFT
    correct = np.array([1, 0, 0, 1, 0, 0, 0, 0], dtype=float)
    assert HybridGate(sft_gate=2, group=8).route(correct, np.array([3, 5])).tolist() == [RL, SFT]


def test_gate_spec_state_and_errors():
    gate = HybridGate(sft_gate=1, off_policy_gate=3, sft_coef=0.3, group=8)
    assert HybridGate.from_dict(gate.to_dict()).to_dict() == gate.to_dict()
    gate.route(*groups_with([0, 2, 5], 8))
    other = HybridGate.from_dict(gate.to_dict())
    other.load_state_dict(roundtrip(gate.state_dict()))
    assert other.stats() == gate.stats() == {"sft": 1, "off_policy": 1, "rl": 1}
    with pytest.raises(StateError, match="saved for"):
        HybridGate().load_state_dict(gate.state_dict())
    with pytest.raises(StateError, match="not a HybridGate"):
        gate.load_state_dict({"kind": "x"})
    for bad in ({"sft_gate": 3, "off_policy_gate": 2}, {"sft_gate": -1}, {"sft_gate": True}, {"sft_coef": float("nan")},
                {"sft_gate": 9, "group": 8}, {"group": 0}, {"gate": 1}):
        with pytest.raises(SpecError):
            HybridGate.from_dict(bad)
    with pytest.raises(CadenceError):
        gate.route([1.0, 0.5], [2])          # correctness must be 0/1
    with pytest.raises(CadenceError):
        gate.route([1.0, 0.0], [3])          # sizes must cover the rows


@pytest.fixture(scope="module")
def warm():
    torch.set_num_threads(1)
    return warm_start(SUITE, WARM, seed=0)


def trainer(warm, gate, config=CONFIG):
    source = SelectorSource(PromptSelector(Uniform(suite_arms(SUITE), seed=1), seed=1))
    return GRPOTrainer(copy.deepcopy(warm), SUITE, source, config, max_new_tokens=WARM.max_new_tokens(SUITE), seed=3,
                       gate=gate)


def test_an_all_sft_gate_is_an_sft_step(warm):
    t = trainer(warm, HybridGate(sft_gate=4, group=4))   # every group goes to SFT
    seen = []
    loss_fn = t.sft_loss
    t.sft_loss = lambda items: (seen.append(items.copy()), loss_fn(items))[1]
    before = copy.deepcopy(t.model)
    t.step()
    (items,) = seen
    assert len(items) == CONFIG.prompts_per_step
    # by hand: AdamW at lr 1e-3 on the token-mean NLL of the suite's answers to those prompts
    opt = torch.optim.AdamW(before.parameters(), lr=1e-3, weight_decay=0.0)
    tokens, mask = answer_batch(SUITE.prompts[items], SUITE.answers[items], SUITE.tokenizer,
                                np.zeros(len(items), dtype=np.int64), WARM.max_new_tokens(SUITE),
                                width=SUITE.prompt_len)
    nll = F.cross_entropy(before(tokens[:, :-1]).transpose(1, 2), tokens[:, 1:], reduction="none")
    ((nll * mask[:, 1:]).sum() / mask[:, 1:].sum()).backward()
    opt.step()
    for a, b in zip(t.model.parameters(), before.parameters()):
        torch.testing.assert_close(a, b)
    assert t.history.step_sft_tokens == [int(mask.sum())] and t.history.step_groups == [0]
    assert t.gate.stats() == {"sft": 4, "off_policy": 0, "rl": 0}


def test_gated_resume_is_exact(warm):
    whole = trainer(warm, HybridGate(sft_gate=1, group=4))
    whole.run()
    first = trainer(warm, HybridGate(sft_gate=1, group=4))
    first.run(steps=2)
    resumed = trainer(warm, HybridGate(sft_gate=1, group=4))
    resumed.load_state_dict(roundtrip(first.state_dict()))
    resumed.run()
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    assert whole.gate.stats() == resumed.gate.stats()
    assert whole.history.step_sft_tokens == resumed.history.step_sft_tokens


def test_the_lab_refuses_the_off_policy_route(warm):
    with pytest.raises(CadenceError, match="off_policy_gate"):
        trainer(warm, HybridGate(sft_gate=0, off_policy_gate=2, group=4))


def test_bench_gives_sft_then_grpo_the_same_sft_tokens():
    from cadence.labs.rl.experiment import SIZES
    from cadence.labs.rl.hpt_bench import bench_hpt

    rows = {r.method: r for r in bench_hpt(SIZES["tiny"], seeds=1).rows}
    assert rows["grpo"].rollouts == rows["hpt"].rollouts == rows["sft_then_grpo"].rollouts
    assert rows["grpo"].sft_tokens == 0
    longest = SIZES["tiny"].warm.max_new_tokens(SIZES["tiny"].suite)
    assert 0 <= rows["sft_then_grpo"].sft_tokens - rows["hpt"].sft_tokens < longest   # at most one row more
