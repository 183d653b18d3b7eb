"""D³S, HBPO and LIMR: each rule by hand, D³S's subset against brute force, the lab hooks, exact
resume with weights-only state, the LIMR command on a lab pilot run, and bad input."""

import copy
import io
import itertools
import json
import math

import numpy as np
import pytest
import torch

from cadence import Clock
from cadence.cli import main
from cadence.curricula import Uniform
from cadence.errors import CadenceError, StateError
from cadence.labs.rl.grpo import GRPOConfig, GRPOTrainer, suite_arms
from cadence.labs.rl.limr import PoolSource, run_log, write_run_log
from cadence.labs.rl.sources import SelectorSource
from cadence.labs.rl.tasks import TaskSuite
from cadence.labs.rl.warmstart import WarmStartConfig, warm_start
from cadence.rl import DualDownsampling, HierarchicalBudget, PromptSelector, learning_impact, max_variance_subset
from cadence.rl.limr import limr, read_run_log, select, trajectories

WARM = WarmStartConfig(steps=30, batch=16, n_layer=1, n_head=2, d_model=32, filler_max=2)
SUITE = TaskSuite(families=("add", "count"), levels=(1, 2), items_per_arm=4, eval_per_arm=2, seed=0)
CONFIG = GRPOConfig(steps=4, prompts_per_step=4, group=4, eval_every=2, lr="constant(1e-3)")


@pytest.fixture(scope="module")
def warm():
    torch.set_num_threads(1)
    return warm_start(SUITE, WARM, seed=0)


# ------------------------------------------------------------------ D³S
def test_max_variance_subset_matches_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(2, 8))
        values = rng.integers(0, 2, n).astype(float) if trial % 2 else rng.normal(size=n).round(2)
        for k in range(1, n + 1):
            best = max(np.var(values[list(c)]) for c in itertools.combinations(range(n), k))
            pick = max_variance_subset(values, k)
            assert len(pick) == k and len(set(pick.tolist())) == k
            assert np.var(values[pick]) == pytest.approx(best, abs=1e-12)


def test_rollout_subset_and_token_share_by_hand():
    d3s = DualDownsampling("constant(0.5)", "constant(0.25)")
    clock = Clock(budget=4)
    # group 1: 2 right / 4 wrong, k = 3: two of one kind and one of the other (both variances equal: the rule
    # takes the fewest from the top, so the first two wrong and the last right); group 2: k = 2, the extremes
    adv = np.array([-0.7, 1.4, -0.7, -0.7, 1.4, -0.7, 0.5, 0.0, -0.5])
    keep = d3s.keep_rollouts(adv, np.array([6, 3]), clock)
    assert keep.tolist() == [True, False, True, False, True, False, True, False, True]
    # scores |A|·H: row 0 -> [0.2, 0.4, (pad)], row 1 -> [3.0, 0.6, 0.1]; 5 valid tokens, keep ceil(1.25) = 2
    entropy = torch.tensor([[0.1, 0.2, 9.0], [1.0, 0.2, 0.1 / 3]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    kept = d3s.keep_tokens(torch.tensor([2.0, -3.0]), entropy, mask, clock)
    assert kept.tolist() == [[False, False, False], [True, True, False]]


def test_both_ratios_relax_on_the_clock():
    d3s = DualDownsampling()
    clock = Clock(budget=10)
    assert d3s.ratios(clock) == (0.5, 0.5)
    clock.advance(10)
    assert d3s.ratios(clock) == (1.0, 1.0)
    assert d3s.keep_rollouts(np.array([1.0, -1.0, 0.0, 2.0]), np.array([4]), clock).all()


def test_d3s_bad_input_is_a_clear_error():
    with pytest.raises(CadenceError, match="sample_ratio"):
        DualDownsampling("ramp(start=0, end=1)")
    with pytest.raises(CadenceError, match="token_ratio"):
        DualDownsampling(token_ratio=1.5)
    d3s, clock = DualDownsampling(), Clock(budget=2)
    with pytest.raises(CadenceError, match="finite"):
        d3s.keep_rollouts(np.array([np.nan, 1.0]), np.array([2]), clock)
    with pytest.raises(CadenceError, match="sizes"):
        d3s.keep_rollouts(np.array([0.0, 1.0]), np.array([3]), clock)
    with pytest.raises(CadenceError, match="k must"):
        max_variance_subset([1.0, 2.0], 3)
    with pytest.raises(CadenceError, match="shape"):
        d3s.keep_tokens(torch.zeros(2), torch.zeros(2, 3), torch.ones(2, 2), clock)


def make_trainer(warm, **hooks) -> GRPOTrainer:
    source = SelectorSource(PromptSelector(Uniform(suite_arms(SUITE), seed=1), seed=1))
    longest = WARM.max_new_tokens(SUITE) - (1 if "budgets" in hooks else 0)
    return GRPOTrainer(copy.deepcopy(warm), SUITE, source, CONFIG, max_new_tokens=longest, seed=5, **hooks)


def test_d3s_in_the_lab_trains_on_fewer_tokens_and_resumes_exactly_from_weights_only_state(warm):
    plain = make_trainer(warm)
    plain.run(1)
    straight = make_trainer(warm, downsample=DualDownsampling())
    straight.run()
    h = straight.history
    assert h.step_rollouts[0] == plain.history.step_rollouts[0] == 16       # same rollouts generated
    assert h.step_trained_tokens[0] < plain.history.step_trained_tokens[0]  # fewer tokens in the loss
    first = make_trainer(warm, downsample=DualDownsampling())
    first.run(2)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = make_trainer(warm, downsample=DualDownsampling())
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    resumed.run()
    assert resumed.history == h
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------ HBPO
def test_hbpo_reward_by_hand():
    hb = HierarchicalBudget(budgets=(4, 8), max_length=16)
    f = lambda x: 4 * math.cos(math.pi * x / 32)  # noqa: E731
    r = hb.reward(correct=[1, 1, 1, 0, 1, 1, 1], lengths=[3, 10, 6, 3, 17, 5, 5],
                  budgets=[4, 8, 8, 4, 8, float("nan"), 4], formatted=[1, 1, 1, 1, 1, 1, 0])
    expected = [min(f(3) - 1 / 16, f(4)),   # correct, 1 token under its budget
                min(f(10) - 2 / 16, f(8)),  # correct, 2 over
                min(f(6) - 2 / 16, f(8)),   # correct, 2 under its budget
                0.0,                        # wrong
                0.0,                        # longer than M
                f(5),                       # no budget stated
                -1.0]                       # unformatted
    assert r.tolist() == pytest.approx(expected)
    assert r[2] == pytest.approx(f(8))      # the ceiling f(b) binds when the answer is shorter than the budget


def test_hbpo_advantage_by_hand():
    hb = HierarchicalBudget(budgets=(4, 8), max_length=16)
    f = lambda x: 4 * math.cos(math.pi * x / 32)  # noqa: E731
    rewards = np.array([3.0, 1.0, 2.0, 2.0, 5.0, 5.0])
    budgets = np.array([4.0, 4.0, 8.0, 8.0, 4.0, 8.0])
    adv = hb.advantages(rewards, np.array([4, 2]), budgets)
    std = math.sqrt(((1.0) ** 2 + 1 + 0 + 0) / 3)  # group 1: mean 2, unbiased std
    assert adv[:4].tolist() == pytest.approx([1 / (std + 1e-6) + 2 - f(4), -1 / (std + 1e-6) + 2 - f(4),
                                              0 + 2 - f(8), 0 + 2 - f(8)])
    assert adv[4:].tolist() == pytest.approx([5 - f(4), 5 - f(8)])  # equal rewards: no inter term
    assert hb.subgroup_budgets(4).tolist() == [4, 4, 8, 8]


def test_hbpo_bad_input_is_a_clear_error():
    with pytest.raises(CadenceError, match="increasing"):
        HierarchicalBudget(budgets=(8, 4))
    with pytest.raises(CadenceError, match="max_length"):
        HierarchicalBudget(budgets=(4, 8), max_length=6)
    hb = HierarchicalBudget(budgets=(4, 8), max_length=16)
    with pytest.raises(CadenceError, match="equal budget subgroups"):
        hb.subgroup_budgets(3)
    with pytest.raises(CadenceError, match="finite"):
        hb.advantages([1.0, np.nan], [2], [4, 8])
    with pytest.raises(CadenceError, match="correct in"):
        hb.reward([2], [3], [4])
    with pytest.raises(CadenceError, match="differ in length"):
        hb.reward([1, 0], [3], [4])


def test_hbpo_in_the_lab_states_each_subgroup_budget_and_uses_its_advantage(warm):
    hb = HierarchicalBudget(budgets=(2, 4), max_length=WARM.max_new_tokens(SUITE) - 1)
    trainer = make_trainer(warm, budgets=hb)
    groups = trainer.rollout(np.array([0, 5]))
    prompts = groups.rollouts.tokens[:, :groups.rollouts.prompt_width]
    marks = SUITE.tokenizer.decode(prompts[:, -1].tolist())
    assert marks == "00110011"  # budget index after each prompt, two subgroups of two per group
    row_budgets = np.tile([2.0, 2.0, 4.0, 4.0], 2)
    assert np.allclose(groups.rewards, hb.reward(groups.correct, groups.lengths, row_budgets))
    assert np.allclose(groups.advantages, hb.advantages(groups.rewards, groups.sizes, row_budgets))
    with pytest.raises(CadenceError, match="max_new_tokens"):
        GRPOTrainer(copy.deepcopy(warm), SUITE, SelectorSource(PromptSelector(Uniform(suite_arms(SUITE)))), CONFIG,
                    max_new_tokens=WARM.max_new_tokens(SUITE), budgets=hb)


# ------------------------------------------------------------------ LIMR
def test_limr_score_by_hand_with_backfill_and_dropped_samples():
    nan = float("nan")
    rewards = np.array([[nan, 0.5, 1.0],    # epoch 0 back-filled from epoch 1 -> [0.5, 0.5, 1]
                        [0.0, 0.0, 1.0],
                        [1.0, 1.0, nan]])   # unseen in the last epoch: dropped
    scale = 0.75 ** 2 * 2                   # the curve of the two complete samples is [0.25, 0.25, 1]
    expected = [1 - (0.25 ** 2 * 2) / scale, 1 - (0.25 ** 2 * 2) / scale]
    scores = learning_impact(rewards)
    assert scores[:2].tolist() == pytest.approx(expected) and math.isnan(scores[2])
    assert select(["a", "b", "c"], scores, 0.8) == ["a", "b"] and select(["a", "b", "c"], scores, 0.9) == []


def test_trajectories_average_each_epoch():
    records = [{"step": 0, "id": 7, "reward": 1.0}, {"step": 1, "id": 7, "reward": 0.0},
               {"step": 2, "id": "x", "reward": 0.5}, {"step": 3, "id": 7, "reward": 1.0}]
    ids, r = trajectories(records, steps_per_epoch=2)
    assert ids == [7, "x"]
    assert np.array_equal(r, np.array([[0.5, 1.0], [np.nan, 0.5]]), equal_nan=True)
    with pytest.raises(CadenceError, match="record 0"):
        trajectories([{"step": 0, "id": 1}])
    with pytest.raises(CadenceError, match="finite"):
        trajectories([{"step": 0, "id": 1, "reward": float("nan")}])
    with pytest.raises(CadenceError, match="undefined"):
        learning_impact(np.ones((2, 3)))


def test_limr_command_on_a_lab_pilot_run(warm, tmp_path):
    pool = np.arange(len(SUITE.prompts))
    source = PoolSource(pool, Uniform(suite_arms(SUITE), seed=0), seed=0)
    pilot = GRPOTrainer(copy.deepcopy(warm), SUITE, source, CONFIG, max_new_tokens=WARM.max_new_tokens(SUITE), seed=3)
    history = pilot.run()
    assert sorted(i for i, _ in sum(history.step_samples[:4], [])) == pool.tolist()  # one epoch = the whole pool
    log = write_run_log(history, tmp_path / "pilot.jsonl")
    assert read_run_log(log) == run_log(history)
    out = tmp_path / "ids.json"
    assert main(["rl", "limr", str(log), "-o", str(out), "--steps-per-epoch", "2", "--threshold", "0.2"]) == 0
    written = json.loads(out.read_text())
    # the same selection computed from the history directly
    ids = [int(i) for i in pool]
    matrix = np.full((len(ids), 2), np.nan)
    for step, samples in enumerate(history.step_samples):
        for item, reward in samples:
            matrix[item, step // 2] = reward
    expected, _ = limr(run_log(history), steps_per_epoch=2, threshold=0.2)
    assert written["ids"] == expected
    assert sorted(written["ids"]) == sorted(select(ids, learning_impact(matrix), 0.2))


def test_limr_command_rejects_bad_input_before_writing(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 0, "id": 1, "reward": 1.0}\nnot json\n')
    out = tmp_path / "ids.json"
    assert main(["rl", "limr", str(log), "-o", str(out)]) == 2
    assert "line 2 is not JSON" in capsys.readouterr().err and not out.exists()
    assert main(["rl", "limr", str(log), "-o", str(tmp_path / "nope" / "ids.json")]) == 2
    assert main(["rl", "limr", str(log), "-o", str(out), "--threshold", "nan"]) == 2
    assert main(["rl", "limr", str(log), "-o", str(out), "--steps-per-epoch", "0"]) == 2
    assert not out.exists()


def test_pool_source_state_round_trips_weights_only_and_resumes_exactly():
    arms = suite_arms(SUITE)
    a = PoolSource(np.arange(10), Uniform(arms, seed=0), seed=4)
    a.draw(7)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = PoolSource(np.arange(10), Uniform(arms, seed=0), seed=99)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    assert a.draw(25).tolist() == b.draw(25).tolist() and a.epoch == b.epoch == 3
    other = PoolSource(np.arange(5), Uniform(arms, seed=0))
    before = other.state_dict()
    with pytest.raises(StateError, match="another prompt pool"):
        other.load_state_dict(a.state_dict())
    assert other.state_dict() == before
    with pytest.raises(CadenceError, match="distinct"):
        PoolSource([1, 1], Uniform(arms))


@pytest.mark.parametrize("argv, rows", [
    (["--policies", "uniform,d3s", "--target", "0.01"], ["uniform", "D³S"]),
    (["--experiment", "length"], ["tightened", "fixed", "hbpo"]),
    (["--experiment", "limr"], ["whole pool", "LIMR subset"]),
])
def test_bench_rl_runs_d3s_hbpo_and_limr_at_the_tiny_size(capsys, monkeypatch, argv, rows):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["bench", "rl", "--size", "tiny", "--seeds", "1", "--steps", "2", *argv]) == 0
    printed = capsys.readouterr().out
    assert all(row in printed for row in rows)
