"""Every policy behind one interface: distribution, sampling, feedback validation, exact resume,
rejection of foreign state."""

from __future__ import annotations

import pickle
import numpy as np
import pytest

from cadence import Clock
from cadence.curricula import POLICIES, Arms, EmptyArmWarning, MissingSignalError, UnknownItemError, make_policy
from cadence.errors import CadenceError, StateError

N = 60
KEYS = [("add", i % 3) for i in range(N)]               # 3 arms of 20 items, tuple keys
DIFFICULTY = np.arange(N, dtype=float) % 17


def build(name: str, clock: Clock, seed: int = 0, arms: Arms | None = None):
    arms = arms or Arms(KEYS, difficulty=DIFFICULTY)
    names = arms.names
    k = len(names)
    kwargs = {
        "fixed": {"weights": {n: i + 1 for i, n in enumerate(names)}},
        "scheduled": {"weights": {n: ("linear(peak=1)" if i == 0 else "ramp(start=0.1, end=1)")
                                  for i, n in enumerate(names)}, "clock": clock},
        "ordered": {"clock": clock},
        "doremi": {"reference": np.full(arms.num_items, 1.0)},
        "skillit": {"graph": np.eye(k) + 0.5 * np.eye(k, k=1)},
        "loss_reweighting": {"temperature": "linear(peak=2, floor=0.25)", "clock": clock},
        "pudf": {"difficulty": (DIFFICULTY - 8) / 4},
        "pass_rate": {"low": 0.2, "high": 0.8, "closed": "both"},
    }.get(name, {})
    return make_policy(name, arms, seed=seed, **kwargs)


def signals(ids: np.ndarray) -> dict[str, np.ndarray]:
    x = np.sin(ids * 1.7)
    return {"loss": 1.5 + x, "reward": (x + 1) / 2, "advantage": x, "correct": (x > 0).astype(float)}


ALL = sorted(POLICIES)


def test_registry_has_every_policy_of_the_issue():
    assert set(ALL) == {"uniform", "fixed", "scheduled", "ordered", "dump", "sec", "exp3", "learning_progress",
                        "doremi", "skillit", "pudf", "loss_reweighting", "pass_rate"}


@pytest.mark.parametrize("name", ALL)
def test_distribution_sampling_and_feedback(name):
    clock = Clock(budget=20)
    policy = build(name, clock)
    p = policy.probabilities()
    assert p.shape == (3,) and np.all(p >= 0) and p.sum() == pytest.approx(1.0)
    ids = policy.sample(32)
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < N
    for _ in range(5):
        policy.observe(ids, **{k: v for k, v in signals(ids).items() if k in policy.requires})
        clock.advance()
        ids = policy.sample(32)
    assert policy.probabilities().sum() == pytest.approx(1.0)
    stats = policy.stats()
    assert stats["policy"] == name and len(stats["probabilities"]) == 3
    assert sum(stats["drawn"]) == 32 * 6
    assert sum(stats["observed"]) == 32 * 5


@pytest.mark.parametrize("name", [n for n in ALL if POLICIES[n].requires or n in ("exp3", "learning_progress")])
def test_missing_signal_is_named(name):
    policy = build(name, Clock(budget=20))
    needed = sorted(policy.requires)[0]
    others = {k: v for k, v in signals(np.arange(4)).items() if k not in policy.requires}
    with pytest.raises(MissingSignalError, match=repr(needed)):
        policy.observe(np.arange(4), **others)


@pytest.mark.parametrize("name", ALL)
def test_unknown_id_is_named_and_nothing_changes(name):
    policy = build(name, Clock(budget=20))
    before = pickle.dumps(policy.state_dict())
    ids = np.array([0, 1, N + 7])
    with pytest.raises(UnknownItemError, match=str(N + 7)):
        policy.observe(ids, **signals(np.array([0, 1, 2])))
    assert pickle.dumps(policy.state_dict()) == before


@pytest.mark.parametrize("name", [n for n in ALL if POLICIES[n].requires or n in ("exp3", "learning_progress")])
def test_non_finite_signals_are_dropped_and_counted(name):
    policy = build(name, Clock(budget=20))
    ids = np.arange(6)
    sig = {k: v.copy() for k, v in signals(ids).items()}
    needed = sorted(policy.requires)[0]
    sig[needed][:] = np.nan
    sig[needed][1] = np.inf
    before = pickle.dumps({k: v for k, v in policy.state_dict().items() if k != "dropped"})
    policy.observe(ids, **sig)
    assert policy.dropped[needed] == 6
    assert pickle.dumps({k: v for k, v in policy.state_dict().items() if k != "dropped"}) == before


def _run(policy, clock, steps, sink):
    for _ in range(steps):
        ids = policy.sample(16)
        sink.append(ids.copy())
        if policy.requires:
            policy.observe(ids, **{k: v for k, v in signals(ids).items() if k in policy.requires})
        clock.advance()


@pytest.mark.parametrize("name", ALL)
def test_resume_is_exact(name):
    clock_a = Clock(budget=20)
    straight = build(name, clock_a, seed=5)
    stream_a: list[np.ndarray] = []
    _run(straight, clock_a, 10, stream_a)

    clock_b = Clock(budget=20)
    first = build(name, clock_b, seed=5)
    stream_b: list[np.ndarray] = []
    _run(first, clock_b, 5, stream_b)
    saved = pickle.loads(pickle.dumps({"policy": first.state_dict(), "clock": clock_b.state_dict()}))
    clock_c = Clock(budget=20)
    clock_c.load_state_dict(saved["clock"])
    resumed = build(name, clock_c, seed=999)
    resumed.load_state_dict(saved["policy"])
    _run(resumed, clock_c, 5, stream_b)
    assert all(np.array_equal(a, b) for a, b in zip(stream_a, stream_b))
    assert resumed.probabilities().tobytes() == straight.probabilities().tobytes()
    assert pickle.dumps(resumed.state_dict()) == pickle.dumps(straight.state_dict())


@pytest.mark.parametrize("name", ALL)
def test_foreign_state_is_rejected_and_nothing_changes(name):
    clock = Clock(budget=20)
    policy = build(name, clock)
    _run(policy, clock, 2, [])
    before = pickle.dumps(policy.state_dict())
    other_arms = Arms([("add", i % 4) for i in range(N)], difficulty=DIFFICULTY)
    with pytest.raises(StateError, match="another arm set"):
        policy.load_state_dict(build(name, Clock(budget=20), arms=other_arms).state_dict())
    other_kind = "sec" if name != "sec" else "dump"
    with pytest.raises(StateError, match="not"):
        policy.load_state_dict(build(other_kind, Clock(budget=20)).state_dict())
    broken = policy.state_dict()
    for key, value in broken.items():
        if isinstance(value, np.ndarray) and key not in ("drawn", "observed"):
            broken[key] = np.zeros(value.shape[0] + 1)
            with pytest.raises(StateError, match=key):
                policy.load_state_dict(broken)
            break
    assert pickle.dumps(policy.state_dict()) == before


def test_empty_arm_is_excluded_with_a_warning():
    with pytest.warns(EmptyArmWarning, match="'ghost'"):
        arms = Arms(["a", "b", "a"], names=["a", "b", "ghost"])
    for name in ("uniform", "dump", "sec", "exp3"):
        policy = make_policy(name, arms)
        p = policy.probabilities()
        assert p[arms.index("ghost")] == 0 and p.sum() == pytest.approx(1)
    with pytest.raises(CadenceError, match="weight 0"):
        make_policy("fixed", arms, weights={"a": 0, "b": 0, "ghost": 1})


def test_unknown_policy_name_lists_choices():
    with pytest.raises(CadenceError, match="dump"):
        make_policy("dumpp", Arms(["a"]))


def test_bad_hyperparameters_are_named():
    arms = Arms(["a", "b"])
    for name, kwargs, word in [("dump", {"temperature": 0}, "temperature"), ("sec", {"alpha": 1.5}, "alpha"),
                               ("sec", {"absent": "zero"}, "absent"), ("exp3", {"gamma": 0}, "gamma"),
                               ("pass_rate", {"low": 0.8, "high": 0.2}, "low")]:
        with pytest.raises(CadenceError, match=word):
            make_policy(name, arms, **kwargs)


def test_scheduled_mixture_weights_follow_the_clock():
    clock = Clock(budget=100)
    arms = Arms(["web", "code"])
    policy = make_policy("scheduled", arms, weights={"web": "linear(peak=1)", "code": "ramp(start=0, end=1)"},
                         clock=clock)
    assert policy.probabilities().tolist() == [0.0, 1.0]        # names sorted: code, web
    clock.advance(50)
    assert policy.probabilities().tolist() == pytest.approx([0.5, 0.5])
    clock.advance(25)
    assert policy.probabilities().tolist() == pytest.approx([0.75, 0.25])


def test_ordered_admits_a_growing_easiest_prefix():
    clock = Clock(budget=100)
    difficulty = np.arange(100.0)[::-1]                    # item 99 easiest
    policy = make_policy("ordered", Arms(["x"] * 100, difficulty=difficulty), pacing="ramp(start=0.1, end=1)",
                         clock=clock)
    assert set(policy.sample(500).tolist()) == set(range(90, 100))
    clock.advance(50)
    assert set(policy.sample(2000).tolist()) == set(range(45, 100))
    assert make_policy("ordered", Arms(["x"] * 100, difficulty=difficulty), clock=clock,
                       reverse=True, pacing="constant(0.1)").admitted().tolist() == list(range(10))


def test_ordered_admits_ties_together():
    clock = Clock(budget=10)
    arms = Arms(["x"] * 6, difficulty=[0, 0, 0, 1, 1, 2])
    assert make_policy("ordered", arms, pacing="constant(0.2)", clock=clock).window() == (0, 3)
    assert make_policy("ordered", arms, pacing="constant(0.6)", clock=clock).window() == (0, 3)
    assert make_policy("ordered", arms, pacing="constant(0.7)", clock=clock).window() == (0, 3)
    assert make_policy("ordered", arms, pacing="constant(0.84)", clock=clock).window() == (0, 5)


def test_observe_accepts_torch_tensors():
    import torch

    policy = make_policy("dump", Arms(["a", "b"]))
    policy.observe(torch.tensor([0, 1]), advantage=torch.tensor([0.5, -0.5]))
    assert policy.responses.tolist() == [1, 1]


def test_signal_length_mismatch_is_an_error():
    with pytest.raises(CadenceError, match="3 values for 2 item ids"):
        make_policy("dump", Arms(["a", "b"])).observe([0, 1], advantage=[0.1, 0.2, 0.3])
