"""PCL, GVM-RAFT allocation, selective sample replay and hints: each rule by hand arithmetic, their
composition through PromptSelector, exact resume through weights_only checkpoints, and the lab."""

import copy
import dataclasses
import io
import math

import numpy as np
import pytest
import torch

from cadence.cli import main
from cadence.curricula import Arms, Uniform
from cadence.errors import CadenceError, StateError
from cadence.labs.rl.grpo import GRPOConfig, GRPOTrainer, suite_arms
from cadence.labs.rl.gradients import head_grad_norms
from cadence.labs.rl.groups import Groups, group_advantages
from cadence.labs.rl.guidance import hinted_groups
from cadence.labs.rl.policy import Rollouts, token_logprobs
from cadence.labs.rl.sources import SelectorSource, from_payload
from cadence.labs.rl.tasks import TaskSuite
from cadence.labs.rl.warmstart import WarmStartConfig, warm_start
from cadence.rl import (PCL, DynamicSampling, GVMAllocation, Hints, PromptSelector, ReplayBuffer, ValueModel,
                        gvm_sizes, gvm_weights)


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


class KnownValues:
    """A value model whose predictions are fixed: prompt i → values[i]."""

    def __init__(self, values):
        self.values = np.asarray(values, dtype=float)

    def predict(self, ids):
        return self.values[np.asarray(ids)]

    def update(self, ids, targets):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def bernoulli_rollout(solve, group=4, seed=0):
    rng = np.random.default_rng(seed)

    def rollout(ids):
        correct = (rng.random((len(ids), group)) < solve[ids, None]).astype(float)
        adv = (correct - correct.mean(1, keepdims=True)) / (correct.std(1, keepdims=True) + 1e-6)
        return {"correct": correct.reshape(-1), "advantage": adv.reshape(-1),
                "replay": [{"id": int(i), "adv": a} for i, a in zip(ids, adv)]}
    return rollout


# ---------------------------------------------------------------------------------------------- PCL
def test_pcl_picks_the_candidates_nearest_the_target_from_a_known_value_model():
    values = np.linspace(0.0, 1.0, 20)                     # prompt i predicted at i/19
    selector = PromptSelector(Uniform(Arms(["a"] * 20), seed=0), pcl=PCL(KnownValues(values), pool=4), seed=0)
    seen = []
    picks = selector.select(3, lambda ids: seen.append(ids) or {"correct": np.ones(2 * len(ids))})
    assert len(picks.ids) == 3 and len(seen) == 1           # 12 candidates scored, 3 generated for
    by_hand = PCL(KnownValues(values), pool=4)
    assert by_hand.choose(np.array([0, 19, 9, 10, 3]), 2).tolist() == [9, 10]     # |9/19 − .5| = |10/19 − .5|
    assert by_hand.choose(np.array([0, 19, 3, 15]), 2).tolist() == [3, 15]        # 0.158/0.789: .342 vs .289


def test_pcl_selection_through_the_selector_is_nearest_among_the_drawn_pool():
    values = np.random.default_rng(1).random(50)
    ref = PromptSelector(Uniform(Arms(["a"] * 50), seed=3), seed=3)
    pool = ref.draw(5 * 4)                                  # the same sampler RNG draws the same candidates
    selector = PromptSelector(Uniform(Arms(["a"] * 50), seed=3), pcl=PCL(KnownValues(values), pool=4), seed=3)
    chosen = selector.draw(5)
    best = sorted(pool.tolist(), key=lambda i: abs(values[i] - 0.5))[:5]
    assert sorted(chosen.tolist()) == sorted(best)


def test_value_model_learns_group_means_and_pcl_moves_to_intermediate_prompts():
    solve = np.r_[np.zeros(10), np.full(10, 0.5), np.ones(10)]
    model = ValueModel(np.eye(30), decay=1.0)
    selector = PromptSelector(Uniform(Arms(["a"] * 30), seed=0), pcl=PCL(model), seed=0)
    rollout = bernoulli_rollout(solve, group=8)
    for _ in range(30):
        picks = selector.select(4, lambda ids: {"correct": rollout(ids)["correct"]})
    assert np.all((picks.ids >= 10) & (picks.ids < 20))   # only the p = 0.5 prompts are chosen late on
    pred = model.predict(np.arange(30))
    assert pred[:10].max() < 0.3 and pred[20:].min() > 0.7


def test_value_model_rejects_bad_targets_and_features_changing_nothing():
    model = ValueModel(np.eye(3))
    before = copy.deepcopy(model.state_dict())
    for bad in ([np.nan, 0.5, 0.5], [1.5, 0, 0]):
        with pytest.raises(CadenceError, match="targets"):
            model.update([0, 1, 2], bad)
    assert model.state_dict() == before
    with pytest.raises(CadenceError, match="finite"):
        ValueModel(np.array([[np.inf, 0.0]]))
    with pytest.raises(CadenceError, match="pool"):
        PCL(model, pool=0)
    with pytest.raises(StateError):
        model.load_state_dict(ValueModel(np.eye(4)).state_dict())


# ---------------------------------------------------------------------------------------------- GVM
def test_gvm_allocation_sums_to_the_budget_and_matches_its_formula():
    p = np.array([0.1, 0.5, 0.9, 0.0, 0.3])
    g = np.array([2.0, 1.0, 1.0, 3.0, 0.0])
    w = g / np.sqrt(p + 1e-3 / np.where(p > 0, p, 1))       # G/sqrt(p + α/p); 0 where p = 0 or G = 0
    w[(p == 0) | (g == 0)] = 0
    assert np.allclose(gvm_weights(p, g), w)
    for total in (0, 1, 7, 40, 333):
        n = gvm_sizes(p, g, total)
        assert n.sum() == total
        assert np.all(np.abs(n - total * w / w.sum()) < 1)  # largest remainder: within one of the exact share
        assert n[3] == 0 and n[4] == 0
    # by hand, α = 0: w = G/√p = [2/√.1, 1/√.5, 1/√.9] = [6.325, 1.414, 1.054]; 20 rollouts → 14.3, 3.2, 2.4
    assert gvm_sizes([0.1, 0.5, 0.9], [2, 1, 1], 20, alpha=0).tolist() == [14, 3, 3]


def test_gvm_allocation_learns_rates_and_norms_of_correct_rollouts_only():
    alloc = GVMAllocation(np.zeros(2, dtype=int), group=4, decay=1.0)
    alloc.observe([0, 0, 1, 1], [1, 0, 1, 1], grad_norm=[2.0, 100.0, 1.0, 3.0])
    assert alloc.grad_norms([0, 1]).tolist() == [2.0, 2.0]   # the wrong rollout's 100 is ignored
    assert alloc.sizes(np.array([0, 1])).sum() == 8
    before = copy.deepcopy(alloc.state_dict())
    with pytest.raises(CadenceError, match="grad_norm"):
        alloc.observe([0, 1], [1, 1], grad_norm=[np.nan, 1.0])
    with pytest.raises(CadenceError):
        alloc.observe([0, 7], [1, 1], grad_norm=[1.0, 1.0])
    assert alloc.state_dict() == before
    fresh = GVMAllocation(np.zeros(2, dtype=int), group=4, decay=1.0)
    fresh.load_state_dict(roundtrip(alloc.state_dict()))
    assert fresh.sizes(np.array([0, 1])).tolist() == alloc.sizes(np.array([0, 1])).tolist()
    with pytest.raises(StateError):
        GVMAllocation(np.zeros(3, dtype=int), group=4).load_state_dict(before)


def test_head_grad_norms_equal_autograd_on_the_output_head():
    torch.manual_seed(0)
    suite = TaskSuite(families=("add",), levels=(1,), items_per_arm=4, eval_per_arm=2)
    warm = WarmStartConfig(steps=2, batch=4, d_model=16, n_layer=1, n_head=2)
    model = warm_start(suite, warm, seed=0)
    trainer = GRPOTrainer(model, suite, SelectorSource(PromptSelector(Uniform(suite_arms(suite), seed=0))),
                          GRPOConfig(steps=1, prompts_per_step=2, group=2), max_new_tokens=warm.max_new_tokens(suite))
    groups = trainer.rollout(np.array([0, 1]))
    norms = head_grad_norms(model, groups.rollouts)
    for row in range(len(norms)):
        r = groups.rollouts
        one = type(r)(r.tokens[row:row + 1], r.mask[row:row + 1], r.prompt_width)
        # the head's share only: detach the hidden state so the tied embedding's input path is left out
        x = model.tok(one.tokens[:, :-1]) + model.pos(torch.arange(one.tokens.shape[1] - 1))
        for block in model.blocks:
            x = block(x)
        h = model.ln_f(x).detach()[:, r.prompt_width - 1:]
        weight = model.head.weight.detach().clone().requires_grad_(True)
        logits = h @ weight.T
        nll = torch.nn.functional.cross_entropy(logits[0], one.responses[0], reduction="none")
        (nll * one.mask[0]).sum().backward()
        assert weight.grad.norm().item() == pytest.approx(norms[row], rel=1e-4)


# ---------------------------------------------------------------------------------------------- replay
def test_replay_never_stores_or_replays_a_zero_advantage_group_and_counts_what_it_saves():
    solve = np.r_[np.zeros(20), np.ones(20), np.full(10, 0.5)]    # 80% of prompts give zero-advantage groups
    arms = Arms(["a"] * 50)
    plain = PromptSelector(Uniform(arms, seed=0), dynamic=DynamicSampling(max_extra_rounds=3), seed=0)
    replay = ReplayBuffer(16, seed=0)
    selector = PromptSelector(Uniform(arms, seed=0), dynamic=DynamicSampling(max_extra_rounds=3), replay=replay,
                              seed=0)
    rollout, rollout_plain = bernoulli_rollout(solve), bernoulli_rollout(solve)
    spent = spent_plain = saved = 0
    for _ in range(15):
        picks = selector.select(6, rollout)
        spent += picks.rollouts
        spent_plain += plain.select(6, rollout_plain).rollouts
        for payload in picks.replayed:
            assert np.abs(payload["adv"]).max() > 0          # never a zero-advantage group
            saved += len(payload["adv"])
        assert len(picks.chosen) + len(picks.replayed) <= 6
        assert not set(picks.replayed_ids) & set(picks.ids.tolist())
    assert all(np.abs(e.payload["adv"]).max() > 0 for e in replay.entries)
    assert replay.counts["refused"] > 0 and replay.counts["saved"] == saved > 0
    assert spent < spent_plain                              # replayed groups were not generated again


def test_replay_buffer_by_hand_and_bad_signals():
    buf = ReplayBuffer(2, seed=0)
    assert not buf.add(1, [0.0, 0.0, 0.0])
    assert buf.add(2, [1.0, -1.0]) and buf.add(3, [0.5, -0.5]) and buf.add(4, [2.0, -2.0])
    assert [e.item for e in buf.entries] == [3, 4]          # the oldest left
    draws = [ReplayBuffer(2, seed=s) for s in range(400)]
    for d in draws:
        d.add(3, [0.5, -0.5])
        d.add(4, [1.5, -1.5])
    share = np.mean([d.draw(1)[0].item == 4 for d in draws])
    assert abs(share - 0.75) < 0.07                         # P ∝ |A|: 1.5 / (0.5 + 1.5)
    before = copy.deepcopy(buf.state_dict())
    with pytest.raises(CadenceError, match="finite"):
        buf.add(5, [np.nan, 1.0])
    assert buf.state_dict() == before
    with pytest.raises(CadenceError, match="dynamic"):
        PromptSelector(Uniform(Arms(["a"] * 4)), replay=ReplayBuffer())
    selector = PromptSelector(Uniform(Arms(["a"] * 4)), dynamic=DynamicSampling(), replay=ReplayBuffer())
    with pytest.raises(CadenceError, match="'replay'"):
        selector.select(2, lambda ids: {"correct": np.ones(2 * len(ids)), "advantage": np.zeros(2 * len(ids))})


# ---------------------------------------------------------------------------------------------- hints
def test_hint_tiers_escalate_only_after_the_plateau_and_reset_when_solved():
    arms = Arms(["a"])
    hints = Hints(1, patience=3, levels=3)
    selector = PromptSelector(Uniform(arms, seed=0), hints=hints, seed=0)
    solved = {"plain": False}
    calls = []

    def rollout(ids):
        return {"correct": np.full(4 * len(ids), 1.0 if solved["plain"] else 0.0)}

    def hinted(ids, levels):
        calls.append(int(levels[0]))
        return {"correct": np.tile([1.0, 0, 0, 0] if levels[0] >= 2 else [0.0] * 4, len(ids))}

    for _ in range(2):
        picks = selector.select(1, rollout, hinted)
        assert calls == [] and picks.chosen == [(0, 0)]     # before the plateau: no guidance
    picks = selector.select(1, rollout, hinted)
    assert calls == [1, 2]                                  # tier 1 fails, tier 2 yields a correct answer
    assert picks.levels == [0, 1, 2] and picks.chosen == [(2, 0)] and picks.pass_rates.tolist() == [0.25]
    assert hints.tier_counts.tolist() == [0, 1, 0] and hints.values()["rescued_share"] == 1.0
    selector.select(1, rollout, hinted)                     # still on the plateau: guided again
    assert calls == [1, 2, 1, 2]
    solved["plain"] = True
    selector.select(1, rollout, hinted)                     # solved without guidance: the streak resets
    solved["plain"] = False
    calls.clear()
    for _ in range(2):
        selector.select(1, rollout, hinted)
    assert calls == [] and hints.streak.tolist() == [2]
    selector.select(1, rollout, hinted)
    assert calls == [1, 2]


def test_hints_count_learnable_groups_and_prompts_later_solved_without_guidance():
    hints = Hints(3, patience=1, levels=1)
    selector = PromptSelector(Uniform(Arms(["a"] * 3), seed=0), hints=hints, seed=0)
    plain = {0: [0.0] * 4, 1: [0.0] * 4, 2: [1.0, 0, 0, 0]}
    guided = {0: [1.0] * 4, 1: [1.0, 0, 1, 0], 2: [0.0] * 4}   # prompt 0: all right with the hint

    def rollout(ids):
        return {"correct": np.concatenate([plain[int(i)] for i in ids])}

    def hinted(ids, levels):
        return {"correct": np.concatenate([guided[int(i)] for i in ids])}

    selector.select(3, rollout, hinted)          # 0 and 1 all wrong: both rescued, only 1 learnable
    assert hints.counts["plateaued"] == 2 and hints.counts["rescued"] == 2 and hints.counts["learnable"] == 1
    values = hints.values()
    assert values["rescued_share"] == 1.0 and values["learnable_share"] == 0.5
    assert values["stuck_prompts"] == 2 and values["freed_share"] == 0.0
    plain[1] = [0.0, 1.0, 0.0, 0.0]              # prompt 1 now solved without guidance
    selector.select(3, rollout, hinted)
    assert hints.values()["freed_share"] == 0.5 and hints.freed.tolist() == [False, True, False]
    restored = Hints(3, patience=1, levels=1)
    restored.load_state_dict(roundtrip(hints.state_dict()))
    assert restored.values() == hints.values()
    with pytest.raises(CadenceError, match="learnable"):
        hints.record(1, rescued=1, rollouts=4, learnable=2)
    assert restored.values() == hints.values()


def test_hints_bad_input_is_refused_with_nothing_half_applied():
    hints = Hints(3, patience=2)
    hints.observe([0], [0.0])
    before = copy.deepcopy(hints.state_dict())
    with pytest.raises(CadenceError):
        hints.observe([0, 1], [0.0, 1.5])
    with pytest.raises(CadenceError):
        hints.observe([0, 9], [0.0, 0.0])
    assert hints.state_dict() == before
    selector = PromptSelector(Uniform(Arms(["a"] * 3)), hints=hints)
    with pytest.raises(CadenceError, match="hinted="):
        selector.select(1, lambda ids: {"correct": np.zeros(2)})
    with pytest.raises(CadenceError, match="cover"):
        PromptSelector(Uniform(Arms(["a"] * 4)), hints=hints)
    with pytest.raises(StateError):
        Hints(3, patience=1).load_state_dict(before)


# ---------------------------------------------------------------------------------------------- state
def test_a_selector_with_every_new_part_resumes_exactly_from_a_weights_only_checkpoint():
    solve = np.r_[np.zeros(12), np.full(12, 0.4), np.ones(6)]

    def build():
        arms = Arms(["a"] * 15 + ["b"] * 15)
        return PromptSelector(Uniform(arms, seed=2), dynamic=DynamicSampling(max_extra_rounds=2),
                              pcl=PCL(ValueModel(np.eye(30))), replay=ReplayBuffer(8, seed=3),
                              hints=Hints(30, patience=2), seed=2)

    def hinted(ids, levels):
        return {"correct": np.tile([1.0, 0, 0, 0] if levels[0] == 3 else [0.0] * 4, len(ids)),
                "advantage": np.zeros(4 * len(ids))}

    def run(selector, steps, seed):
        rollout = bernoulli_rollout(solve, seed=seed)
        return [selector.select(4, rollout, hinted) for _ in range(steps)]

    straight = build()
    a = run(straight, 4, seed=0) + run(straight, 4, seed=1)
    first = build()
    run(first, 4, seed=0)
    state = roundtrip(first.state_dict())
    resumed = build()
    resumed.load_state_dict(state)
    b = run(resumed, 4, seed=1)
    for x, y in zip(a[4:], b):
        assert x.ids.tolist() == y.ids.tolist() and x.levels == y.levels
        assert [p["id"] for p in x.replayed] == [p["id"] for p in y.replayed]
    assert straight.values() == resumed.values()
    broken = copy.deepcopy(state)
    broken["hints"]["streak"] = [0]
    fresh = build()
    before = fresh.state_dict()
    with pytest.raises(StateError):
        fresh.load_state_dict(broken)
    assert fresh.state_dict()["pcl"] == before["pcl"] and fresh.state_dict()["replay"] == before["replay"]


# ---------------------------------------------------------------------------------------------- lab
SUITE = TaskSuite(families=("add", "count"), levels=(1, 2), items_per_arm=8, eval_per_arm=2, seed=0)
WARM = WarmStartConfig(steps=20, batch=16, n_layer=1, n_head=2, d_model=32)


@pytest.fixture(scope="module")
def warm():
    torch.set_num_threads(1)
    return warm_start(SUITE, WARM, seed=0)


def test_hinted_groups_give_the_answer_prefix_and_train_only_the_rest(warm):
    source = SelectorSource(PromptSelector(Uniform(suite_arms(SUITE), seed=0)))
    trainer = GRPOTrainer(copy.deepcopy(warm), SUITE, source, GRPOConfig(steps=1, prompts_per_step=2, group=3),
                          max_new_tokens=WARM.max_new_tokens(SUITE))
    item = int(np.flatnonzero([len(a) >= 2 for a in SUITE.answers])[0])
    groups = hinted_groups(trainer, np.array([item]), np.array([3]))
    given = min(round(0.75 * len(SUITE.answers[item])), len(SUITE.answers[item]) - 1)
    width = groups.rollouts.prompt_width
    expected = torch.from_numpy(SUITE.tokenizer.encode(SUITE.answers[item][:given]))
    assert torch.equal(groups.rollouts.tokens[:, width:width + given], expected.expand(3, -1))
    assert groups.rollouts.mask[:, :given].sum() == 0 and groups.sizes.tolist() == [3]


@pytest.mark.parametrize("policy", ["replay", "pcl", "gvm", "hints"])
def test_lab_policies_resume_exactly_through_weights_only_state(warm, policy):
    from cadence.labs.rl.experiment import make_source

    config = GRPOConfig(steps=4, prompts_per_step=4, group=4, eval_every=2, lr="constant(3e-3)")

    def make():
        alloc = GVMAllocation(SUITE.arm_of, config.group) if policy == "gvm" else None
        return GRPOTrainer(copy.deepcopy(warm), SUITE, make_source(policy, SUITE, config, 0), config,
                           max_new_tokens=WARM.max_new_tokens(SUITE), allocator=alloc, seed=1)

    straight = make()
    straight.run()
    first = make()
    first.run(2)
    resumed = make()
    resumed.load_state_dict(roundtrip(first.state_dict()))
    resumed.run()
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert straight.history.step_rollouts == resumed.history.step_rollouts


def test_a_rollout_cap_stops_the_same_run_with_its_last_evaluation_within_the_cap(warm):
    from cadence.labs.rl.experiment import make_source

    config = GRPOConfig(steps=6, prompts_per_step=4, group=4, eval_every=3, lr="constant(3e-3)")

    def make():
        return GRPOTrainer(copy.deepcopy(warm), SUITE, make_source("dynamic", SUITE, config, 0), config,
                           max_new_tokens=WARM.max_new_tokens(SUITE), seed=1)

    full = make().run()
    cap = int(np.cumsum(full.step_rollouts)[2]) - 1            # inside the third step
    capped = make().run(max_rollouts=cap)
    n = len(capped.step_rollouts)
    assert n == 3 and capped.step_rollouts == full.step_rollouts[:n] and capped.rollouts > cap
    within = [r for r in capped.eval_rollouts if r <= cap]
    assert within[-1] == sum(capped.step_rollouts[:2])          # evaluated after the last step within the cap
    at = capped.eval_steps[capped.eval_rollouts.index(within[-1])]
    assert at == 2 and 2 not in full.eval_steps                 # an evaluation the full run does not make
    assert capped.eval_accuracy[0] == full.eval_accuracy[0]
    with pytest.raises(CadenceError, match="max_rollouts"):
        make().run(max_rollouts=0)


def test_compare_at_equal_rollouts_stops_every_policy_at_uniforms_rollouts(warm):
    from cadence.labs.rl.experiment import LabConfig, compare

    lab = LabConfig(suite=SUITE, warm=WARM, grpo=GRPOConfig(steps=4, prompts_per_step=4, group=4, eval_every=2),
                    policies=("uniform", "replay"))
    capped = compare(lab, 0, equal_rollouts=True)
    budget = capped.histories["uniform"].rollouts
    replay = capped.histories["replay"]
    assert budget == 4 * 16 and sum(replay.step_rollouts[:-1]) < budget <= replay.rollouts
    assert list(capped.histories) == ["uniform", "replay"]
    with pytest.raises(CadenceError, match="uniform"):
        compare(LabConfig(suite=SUITE, warm=WARM, policies=("replay",), target=0.5), 0, equal_rollouts=True)


def test_bench_rl_runs_every_new_policy_at_tiny_size(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["bench", "rl", "--size", "tiny", "--seeds", "1", "--steps", "2", "--target", "0.01",
                 "--policies", "uniform,pcl,gvm,replay,hints"]) == 0
    printed = capsys.readouterr().out
    for name in ("PCL", "GVM-RAFT", "replay", "hints"):
        assert name in printed


def test_methods_bench_counts_prompts_freed_and_merges_only_agreeing_runs():
    from dataclasses import replace

    from benchmarks.rl_methods_bench import freed, merged
    from cadence.labs.rl.experiment import SIZES, Comparison
    from cadence.labs.rl.grpo import History

    h = History(step_samples=[[[0, 0.0], [1, 0.0]], [[0, 0.5], [2, 0.0]], [[1, 0.0], [2, 0.25]]])
    assert freed(h) == (3, 2 / 3) and freed(h, steps=2) == (3, 1 / 3) and freed(h, steps=1) == (2, 0.0)
    a = Comparison(SIZES["tiny"], 0, [], None, 0.1, {"uniform": h, "replay": History(step_rollouts=[4])},
                   {"uniform": 1.0, "replay": 2.0})
    b = replace(a, histories={"uniform": h, "pcl": History(step_rollouts=[3])}, seconds={"uniform": 1.0, "pcl": 3.0})
    (both,) = merged([a, b])
    assert list(both.histories) == ["uniform", "replay", "pcl"] and both.seconds["pcl"] == 3.0
    assert list(a.histories) == ["uniform", "replay"]          # the inputs are left as they were
    with pytest.raises(CadenceError, match="uniform"):
        merged([a, replace(b, histories={"uniform": History(step_rollouts=[1])})])


def test_methods_bench_compares_replay_with_dynamic_sampling_alone_by_hand():
    from benchmarks.rl_methods_bench import against
    from cadence.labs.rl.experiment import SIZES, Comparison
    from cadence.labs.rl.grpo import History

    def run(steps, evals):   # evals: [step, rollouts, pass@1]
        return History(step_rollouts=steps, eval_steps=[e[0] for e in evals], eval_rollouts=[e[1] for e in evals],
                       eval_accuracy=[[e[2]] for e in evals])

    uniform = run([10] * 4, [[0, 0, 0.1], [4, 40, 0.2]])
    seeds = [Comparison(SIZES["tiny"], s, [], None, 0.2, {
        "uniform": uniform,
        # replay: 8 rollouts per step, 5 steps within uniform's 40; dynamic: 12, 3 steps (4th past 40)
        "replay": run([8] * 5, [[0, 0, 0.1], [2, 16, 0.3 + s / 10], [4, 32, 0.35], [5, 40, 0.4]]),
        "dynamic": run([12] * 4, [[0, 0, 0.1], [2, 24, 0.25], [3, 36, 0.3], [4, 48, 0.5]])}, {}) for s in (0, 1)]
    vs = against(seeds, "replay", "dynamic")
    assert vs["rollouts_per_step"] == {"replay": 8.0, "dynamic": 12.0}
    assert vs["rollouts_saved_in_common_steps_per_seed"] == [48 - 32, 48 - 32]   # first 4 steps each
    assert vs["saved_share"] == [pytest.approx(16 / 48), 0.0]
    # at uniform's 40 rollouts: replay's step-5 evaluation 0.4, dynamic's step-3 one 0.3
    assert vs["delta_pass@1_at_uniform_rollouts"] == [pytest.approx(0.1), 0.0]
    # last evaluation step both made: 4 (0.35 vs 0.5); step 2: 0.3 / 0.4 vs 0.25
    assert vs["delta_pass@1_at_common_eval_step_per_seed"] == [pytest.approx(-0.15), pytest.approx(-0.15)]
    assert vs["common_steps_and_eval_step_per_seed"] == [[4, 4], [4, 4]]


# ------------------------------------------------------------------------- replay's off-policy ratio
def hand_groups(ids, width=2):
    """Two answers per prompt: even prompts one right one wrong (non-zero advantage), odd ones all wrong."""
    ids = np.asarray(ids, dtype=np.int64)
    correct = np.concatenate([[1.0, 0.0] if i % 2 == 0 else [0.0, 0.0] for i in ids])
    sizes = np.full(len(ids), 2)
    rollouts = Rollouts(torch.zeros(2 * len(ids), 3 + width, dtype=torch.int64), torch.ones(2 * len(ids), width), 3)
    return Groups(ids, sizes, rollouts, correct, correct, group_advantages(correct, sizes), np.full(2 * len(ids), 2.0))


def test_replay_keeps_the_behaviour_logprobs_of_the_step_that_generated_each_group():
    version, scored, calls = [0], [], []

    def logprobs(rollouts):            # the "policy" of step v gives every token log-prob −1 − v
        scored.append(len(rollouts.tokens))
        return torch.full(rollouts.responses.shape, -1.0 - version[0])

    def rollout(ids):
        calls.append(np.asarray(ids))
        return hand_groups(ids)

    def source(how="stored"):
        selector = PromptSelector(Uniform(Arms(["a"] * 8), seed=0), dynamic=DynamicSampling(max_extra_rounds=0),
                                  replay=ReplayBuffer(8, seed=0), seed=0)
        return SelectorSource(selector, replay_logprobs=how)

    stored, replayed_rows = source(), 0
    for step in range(6):
        version[0], scored[:], calls[:] = step, [], []
        groups, _ = stored.next_batch(rollout, 4, logprobs=logprobs)
        # scored once per round, only the groups with non-zero advantage (the only ones ever stored)
        assert scored == [2 * int(np.sum(c % 2 == 0)) for c in calls if np.any(c % 2 == 0)]
        b = groups.behaviour_logp
        if b is None:                  # nothing replayed this step
            continue
        fresh = torch.isnan(b).all(1)
        old = b[~fresh]
        replayed_rows += len(old)
        assert not torch.isnan(old).any() and np.all(groups.row_items[~fresh.numpy()] % 2 == 0)
        assert ((old <= -1.0) & (old > -1.0 - step)).all()       # stored at an earlier step, never this step's
    assert replayed_rows > 0 and stored.values()["replay/replayed"] * 2 == replayed_rows
    # "current" stores none: replayed groups take the ratio to the current policy
    current = source("current")
    for _ in range(6):
        groups, _ = current.next_batch(hand_groups, 4)
        assert groups.behaviour_logp is None
    assert current.values()["replay/replayed"] > 0
    with pytest.raises(CadenceError, match="logprobs"):
        source().next_batch(hand_groups, 4)
    with pytest.raises(CadenceError, match="replay_logprobs"):
        SelectorSource(PromptSelector(Uniform(Arms(["a"] * 8), seed=0)), replay_logprobs="fresh")


def test_the_ratio_of_a_replayed_group_is_to_its_stored_logprobs_by_hand(warm):
    source = SelectorSource(PromptSelector(Uniform(suite_arms(SUITE), seed=0)))
    trainer = GRPOTrainer(copy.deepcopy(warm), SUITE, source, GRPOConfig(steps=1, prompts_per_step=1, group=2),
                          max_new_tokens=WARM.max_new_tokens(SUITE), seed=0)
    groups = trainer.rollout(np.array([0]))
    groups.advantages = np.array([1.0, -1.0])
    with torch.no_grad():
        now = token_logprobs(trainer.model, groups.rollouts)
    n0, n1 = groups.rollouts.mask.sum(1).tolist()
    # stored log-probs log 2 below / above the current ones: ρ = 2 (A = +1) and ρ = 0.5 (A = −1), ε = 0.2:
    # −min(2·1, 1.2·1) = −1.2 and −min(0.5·(−1), 0.8·(−1)) = 0.8 per token, both clipped (no gradient)
    behaviour = torch.stack([now[0] - math.log(2), now[1] + math.log(2)])
    loss, _ = trainer.loss(dataclasses.replace(groups, behaviour_logp=behaviour))
    assert loss.item() == pytest.approx((-1.2 * n0 + 0.8 * n1) / (n0 + n1), rel=1e-5)
    loss.backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in trainer.model.parameters())
    # a row generated this step (NaN) takes the ratio to the current policy: ρ = 1, −A per token
    mixed = torch.stack([behaviour[0], torch.full_like(now[1], torch.nan)])
    loss, _ = trainer.loss(dataclasses.replace(groups, behaviour_logp=mixed))
    assert loss.item() == pytest.approx((-1.2 * n0 + 1.0 * n1) / (n0 + n1), rel=1e-5)
    loss, _ = trainer.loss(groups)
    assert loss.item() == pytest.approx((-n0 + n1) / (n0 + n1), rel=1e-5)


def test_lab_replay_trains_on_stored_logprobs_that_checkpoint_through_weights_only_state(warm):
    from cadence.labs.rl.experiment import make_source

    config = GRPOConfig(steps=6, prompts_per_step=4, group=4, eval_every=6, lr="constant(3e-3)")
    seen = []

    def make(how):
        source = make_source("replay", SUITE, config, 0)
        source.replay_logprobs = how
        trainer = GRPOTrainer(copy.deepcopy(warm), SUITE, source, config, max_new_tokens=WARM.max_new_tokens(SUITE),
                              seed=1)
        loss = trainer.loss

        def spy(groups, old=None):
            if groups.behaviour_logp is not None:
                rows = ~torch.isnan(groups.behaviour_logp).all(1)
                with torch.no_grad():
                    now = token_logprobs(trainer.model, groups.rollouts)
                m = groups.rollouts.mask[rows] > 0
                seen.append((groups.behaviour_logp[rows][m] - now[rows][m]).abs().max().item())
            return loss(groups, old)
        trainer.loss = spy
        return trainer

    stored = make("stored")
    stored.run()
    assert seen and max(seen) > 1e-4        # replayed rows kept log-probs the current policy no longer gives
    current = make("current")
    current.run()
    assert stored.source.values()["replay/replayed"] == current.source.values()["replay/replayed"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(stored.model.state_dict().values(),
                                                    current.model.state_dict().values()))
    first = make("stored")
    first.run(3)
    resumed = make("stored")
    resumed.load_state_dict(roundtrip(first.state_dict()))
    resumed.run()
    assert resumed.source.values() == stored.source.values()
    for a, b in zip(stored.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    state = roundtrip(stored.source.state_dict())
    payloads = [e["payload"] for e in state["selector"]["replay"]["entries"]]
    assert payloads and all(isinstance(p["behaviour_logp"], torch.Tensor) for p in payloads)
    again = make_source("replay", SUITE, config, 0)
    again.load_state_dict(state)
    a, b = from_payload(stored.source.selector.replay.entries[0].payload), from_payload(
        again.selector.replay.entries[0].payload)
    assert torch.equal(a.behaviour_logp, b.behaviour_logp)
