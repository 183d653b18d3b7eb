"""Faithfulness: feed fixed signal streams and compare with values computed by hand, in this file,
from the papers' formulas (DUMP, SEC, balanced filtering, DAPO, pacing, PUDF, Skill-it, DoReMi, loss
reweighting; EXP3 from Auer et al. 2002)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cadence.curricula import (DUMP, EXP3, PUDF, SEC, Arms, BabySteps, Competence, CyclicalPacing, DoReMi,
                               GeometricPacing, LinearPacing, PassRateFilter, RootPacing, SkillIt, estimate_ability,
                               fit_rasch, loss_weights)

# three arms "a", "b", "c"; items 0-3 in a, 4-7 in b, 8-11 in c
ARMS = Arms(["a"] * 4 + ["b"] * 4 + ["c"] * 4)
ARM_OF = {i: i // 4 for i in range(12)}

# a fixed stream of batches: (item ids, signed advantages)
STREAM = [
    ([0, 1, 4, 4, 4, 5], [0.5, -0.25, 1.0, -1.0, 0.0, 0.5]),
    ([8, 9, 0], [0.2, -0.4, 0.9]),
    ([4, 5, 6, 7, 4, 5], [0.1, 0.1, -0.3, 0.3, 2.0, -0.6]),   # 6 responses for b: window 4 keeps the last 4
    ([2, 10], [-0.05, 0.7]),
]


def _softmax(xs: list[float], tau: float) -> list[float]:
    m = max(xs)
    e = [math.exp((x - m) / tau) for x in xs]
    return [v / sum(e) for v in e]


def test_dump_matches_hand_computed_ucb_and_softmax():
    window, c, tau = 4, 1.0, 0.5
    policy = DUMP(ARMS, window=window, c=c, temperature=tau)
    assert policy.probabilities().tolist() == pytest.approx([1 / 3] * 3, abs=1e-15)   # uniform before data
    windows: list[list[float]] = [[], [], []]
    n = [0, 0, 0]
    for ids, adv in STREAM:
        policy.observe(ids, advantage=adv)
        for i, a in zip(ids, adv):
            windows[ARM_OF[i]].append(abs(a))
            windows[ARM_OF[i]] = windows[ARM_OF[i]][-window:]
            n[ARM_OF[i]] += 1
        total = sum(n)
        mu = [sum(w) / len(w) if w else 0.0 for w in windows]
        ucb = [mu[j] + c * math.sqrt(2 * math.log(total + 1) / (n[j] + 1)) for j in range(3)]
        assert policy.mean_abs.tolist() == pytest.approx(mu, rel=1e-12, abs=1e-15)
        assert policy.ucb().tolist() == pytest.approx(ucb, rel=1e-12)
        assert policy.probabilities().tolist() == pytest.approx(_softmax(ucb, tau), rel=1e-10)
    assert sorted(policy.window_values[1].tolist()) == sorted(windows[1]) == [0.3, 0.3, 0.6, 2.0]


def test_dump_drops_nan_advantages_and_counts_them():
    policy = DUMP(ARMS, window=4)
    policy.observe([0, 4, 8], advantage=[0.5, float("nan"), float("inf")])
    assert policy.dropped["advantage"] == 2
    assert policy.responses.tolist() == [1, 0, 0]
    assert np.all(np.isfinite(policy.window_values))


@pytest.mark.parametrize("absent", ["keep", "decay"])
def test_sec_matches_hand_computed_td_values(absent):
    alpha, tau = 0.5, 0.4
    policy = SEC(ARMS, alpha=alpha, temperature=tau, absent=absent)
    q = [0.0, 0.0, 0.0]
    for ids, adv in STREAM:
        policy.observe(ids, advantage=adv)
        per_arm: dict[int, list[float]] = {}
        for i, a in zip(ids, adv):
            per_arm.setdefault(ARM_OF[i], []).append(abs(a))
        for j in range(3):
            if j in per_arm:
                r = sum(per_arm[j]) / len(per_arm[j])
                q[j] = alpha * r + (1 - alpha) * q[j]
            elif absent == "decay":
                q[j] = (1 - alpha) * q[j]
        assert policy.q.tolist() == pytest.approx(q, rel=1e-12, abs=1e-15)
        assert policy.probabilities().tolist() == pytest.approx(_softmax(q, tau), rel=1e-10)
    assert policy.steps == len(STREAM)


def test_sec_absent_modes_differ_for_unsampled_arm():
    keep, decay = SEC(ARMS, alpha=0.5, absent="keep"), SEC(ARMS, alpha=0.5, absent="decay")
    for p in (keep, decay):
        p.observe([8], advantage=[1.0])
        p.observe([0], advantage=[1.0])
    assert keep.q[2] == pytest.approx(0.5) and decay.q[2] == pytest.approx(0.25)


def test_exp3_matches_hand_computed_weights():
    gamma = 0.2
    policy = EXP3(ARMS, gamma=gamma, signal="reward")
    w = [1.0, 1.0, 1.0]
    rewards = [([0, 1, 4], [1.0, 0.0, 0.5]), ([8, 8, 0], [1.0, 1.0, 0.25]), ([5, 9], [0.0, 0.75])]
    for ids, x in rewards:
        p = [(1 - gamma) * wj / sum(w) + gamma / 3 for wj in w]
        assert policy.probabilities().tolist() == pytest.approx(p, rel=1e-12)
        policy.observe(ids, reward=x)
        per_arm: dict[int, list[float]] = {}
        for i, r in zip(ids, x):
            per_arm.setdefault(ARM_OF[i], []).append(r)
        for j, rs in per_arm.items():
            xhat = (sum(rs) / len(rs)) / p[j]
            w[j] *= math.exp(gamma * xhat / 3)
    p = [(1 - gamma) * wj / sum(w) + gamma / 3 for wj in w]
    assert policy.probabilities().tolist() == pytest.approx(p, rel=1e-12)


def test_exp3_scales_rewards_into_unit_range():
    policy = EXP3(ARMS, gamma=0.5, signal="reward", value_range=(-1.0, 1.0))
    policy.observe([0], reward=[0.0])                  # scaled to 0.5
    p0 = 0.5 / 3 + 0.5 / 3
    assert policy.log_weights[0] - policy.log_weights[1] == pytest.approx(0.5 * (0.5 / p0) / 3)


def test_pass_rate_filter_band_and_history_by_hand():
    filt = PassRateFilter(ARMS, 0.25, 0.75, closed="both")
    ids = [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    correct = [1, 1, 1, 1] + [1, 0, 0, 0] + [1, 1, 0, 1] + [0, 0, 0, 0]
    sel = filt.select(ids, correct)
    rates = {0: 4 / 4, 1: 1 / 4, 2: 3 / 4, 3: 0 / 4}
    assert sel.prompts.tolist() == [0, 1, 2, 3]
    assert sel.pass_rate.tolist() == [rates[i] for i in range(4)]
    assert sel.kept.tolist() == [i for i in range(4) if 0.25 <= rates[i] <= 0.75]       # [1, 2]
    assert sel.mask.tolist() == [i in (1, 2) for i in ids]
    strict = PassRateFilter(ARMS, 0.25, 0.75, closed="neither")
    assert strict.select(ids, correct).kept.tolist() == [i for i in range(4) if 0.25 < rates[i] < 0.75]
    dapo = PassRateFilter(ARMS)                                                          # 0 < p < 1
    assert dapo.select(ids, correct).kept.tolist() == [1, 2]
    filt.select([1, 1], [1, 1])                       # history accumulates: prompt 1 now 3/6
    assert filt.pass_rate([1, 2, 5]).tolist()[:2] == [3 / 6, 3 / 4] and math.isnan(filt.pass_rate([5])[0])
    assert filt.last_rate[1] == 1.0 and filt.attempts[1] == 6 and filt.successes[1] == 3


def test_pass_rate_fill_refills_until_full_or_bound():
    group = 4

    def rollout_for(calls):
        def rollout(prompts):
            calls.append(np.asarray(prompts).copy())
            return np.array([[1] * (p % 5) + [0] * (group - p % 5) if p % 5 < group else [1] * group
                             for p in prompts])
        return rollout

    def in_band(p):
        return 0 < min(p % 5, group) / group < 1

    calls: list[np.ndarray] = []
    filt = PassRateFilter(ARMS, seed=3)
    result = filt.fill(6, rollout_for(calls), chunk=4)
    kept_by_hand = [int(p) for c in calls for p in c if in_band(int(p))]
    assert result.kept.tolist() == kept_by_hand[:6] and result.full
    assert result.rounds == len(calls)
    assert result.rollouts == sum(len(c) for c in calls) * group
    assert result.extra_rollouts == sum(len(c) for c in calls[1:]) * group

    calls = []
    bounded = PassRateFilter(ARMS, 0.9, 1.0, closed="neither", max_extra_rollouts=2 * 4 * group, seed=3)
    res = bounded.fill(6, rollout_for(calls), chunk=4)           # nothing is ever in (0.9, 1): stop at the bound
    assert res.kept.tolist() == [] and not res.full
    assert len(calls) == 3 and res.extra_rollouts == sum(len(c) for c in calls[1:]) * group <= 2 * 4 * group


@pytest.mark.parametrize("pacing,u,expected", [
    (LinearPacing(start=0.2, full_at=0.5), 0.25, 0.2 + 0.8 * 0.5),
    (RootPacing(start=0.1, full_at=1.0), 0.36, 0.1 + 0.9 * 0.6),
    (Competence(c0=0.01, power=2), 0.5, math.sqrt(0.5 * (1 - 0.01 ** 2) + 0.01 ** 2)),
    (Competence(c0=0.01, power=1), 0.5, 0.5 * 0.99 + 0.01),
    (GeometricPacing(start=0.2, factor=2, every=0.1), 0.15, 0.4),
    (BabySteps(buckets=4), 0.6, 3 / 4),
    (CyclicalPacing(start=0.25, end=1.0, multiplier=0.5, stage=0.1), 0.45, 0.25),
])
def test_pacing_functions_follow_the_formulas(pacing, u, expected):
    assert pacing(u) == pytest.approx(expected, rel=1e-12)


def test_cyclical_sizes_follow_kesgin_sequence():
    assert CyclicalPacing().sizes() == [0.25, 0.5, 1.0, 0.5]


def test_doremi_update_by_hand():
    ref = np.array([1.0] * 12)
    policy = DoReMi(ARMS, reference=ref, eta=0.5, smoothing=0.1)
    alpha = [1 / 3] * 3
    lam = [0.0, 0.0, 0.0]
    batches = [([0, 1, 4], [2.0, 0.5, 1.5]), ([8, 9], [3.0, 1.0])]
    for ids, losses in batches:
        policy.observe(ids, loss=losses)
        per: dict[int, list[float]] = {}
        for i, l in zip(ids, losses):
            per.setdefault(ARM_OF[i], []).append(max(l - 1.0, 0.0))
        for j, v in per.items():
            lam[j] = sum(v) / len(v)
        logits = [math.log(a) + 0.5 * l for a, l in zip(alpha, lam)]
        m = max(logits)
        e = [math.exp(x - m) for x in logits]
        alpha = [0.9 * x / sum(e) + 0.1 / 3 for x in e]
        assert policy.probabilities().tolist() == pytest.approx(alpha, rel=1e-12)


def test_skillit_update_by_hand():
    graph = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    policy = SkillIt(ARMS, graph, eta=0.8, window=2)

    def mix(total):
        z = [0.8 * sum(graph[i][j] * total[j] for j in range(3)) for i in range(3)]
        return _softmax(z, 1.0)

    assert policy.probabilities().tolist() == pytest.approx(mix([1, 1, 1]), rel=1e-12)
    rounds = [[2.0, 1.0, 3.0], [1.5, 1.0, 2.0], [1.0, 0.5, 1.0]]
    for k, losses in enumerate(rounds):
        policy.observe_eval(losses)
        window = rounds[max(0, k - 1):k + 1]
        assert policy.probabilities().tolist() == pytest.approx(mix([sum(r[j] for r in window) for j in range(3)]),
                                                                rel=1e-12)


def test_loss_weights_by_hand():
    losses = [1.0, 2.0, 4.0]
    norm = [2 * (l - 1.0) / 3.0 - 1 for l in losses]              # δ = 1
    for strategy, score in {"linupper": lambda x: min(x + 1, 1), "quadratic": lambda x: 1 - x * x,
                            "extremes": abs, "uniform": lambda x: 0.0}.items():
        expected = _softmax([score(x) for x in norm], 0.5)
        assert loss_weights(np.array(losses), strategy, temperature=0.5).tolist() == pytest.approx(expected, rel=1e-12)


def test_pudf_ability_is_the_map_of_the_stated_objective():
    b = np.array([-1.0, 0.0, 0.5, 1.5, 2.0])
    y = np.array([1, 1, 0, 1, 0])
    theta = estimate_ability(b, y)

    def objective(t):
        s = [1 / (1 + math.exp(-(t - bi))) for bi in b]
        return -t * t / 2 + sum(math.log(1 + (2 * si - 1) * (1 if yi else -1)) for si, yi in zip(s, y))

    for delta in (1e-3, -1e-3, 0.1, -0.1):
        assert objective(theta) > objective(theta + delta)


def test_pudf_admits_items_with_difficulty_at_most_ability_and_bumps_when_stalled():
    difficulty = np.linspace(-2, 2, 12)
    policy = PUDF(ARMS, difficulty, bump=0.1, patience=2)
    assert sorted(policy.admitted().tolist()) == [i for i in range(12) if difficulty[i] <= 0.0]
    probe = np.arange(12)
    correct = (difficulty <= 0.5).astype(int)
    policy.observe(probe, correct=correct)
    theta = policy.ability
    assert theta == pytest.approx(estimate_ability(difficulty, correct))
    assert sorted(policy.admitted().tolist()) == [i for i in range(12) if difficulty[i] <= theta]
    policy.observe(probe, correct=correct)            # same estimate: stalled once
    policy.observe(probe, correct=correct)            # stalled twice: threshold + 0.1
    assert policy.bump_total == pytest.approx(0.1)
    assert sorted(policy.admitted().tolist()) == [i for i in range(12) if difficulty[i] <= theta + 0.1]


def test_rasch_fit_recovers_difficulty_order():
    rng = np.random.default_rng(0)
    true_b = np.linspace(-2, 2, 40)
    theta = rng.normal(size=30)
    responses = (rng.random((30, 40)) < 1 / (1 + np.exp(-(theta[:, None] - true_b[None, :])))).astype(float)
    fit = fit_rasch(responses)
    assert np.corrcoef(fit.difficulty, true_b)[0, 1] > 0.9
    assert np.corrcoef(fit.ability, theta)[0, 1] > 0.8
