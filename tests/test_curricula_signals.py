"""Signals as they come from training: low-precision and integer tensors work in every policy's
``observe``; malformed signals and ids raise cadence's error naming them, changing nothing; finite
signals of any size (up to the float maximum) never leave a policy unable to give probabilities.
Property tests (hypothesis) cover arbitrary arrays of any dtype, shape and value."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cadence import Clock
from cadence.curricula import POLICIES, Arms, make_policy
from cadence.errors import CadenceError

N = 12
KEYS = [i % 3 for i in range(N)]
DIFFICULTY = np.arange(N, dtype=float) % 5
FLOAT_MAX = float(np.finfo(np.float64).max)
LEARNING = sorted(n for n in POLICIES if n not in ("uniform", "fixed", "scheduled", "ordered", "replay"))


def build(name: str, **extra):
    clock = Clock(budget=50)
    arms = Arms(KEYS, difficulty=DIFFICULTY)
    kwargs = {
        "fixed": {"weights": [1, 2, 3]},
        "scheduled": {"weights": ["linear(peak=1)", "constant(1)", "constant(0.5)"], "clock": clock},
        "ordered": {"pacing": "ramp(start=0.3, end=1)", "clock": clock},
        "doremi": {"reference": np.full(N, 1.0)},
        "skillit": {"graph": np.eye(3) + 0.5 * np.eye(3, k=1)},
        "pudf": {"difficulty": DIFFICULTY - 2},
        "replay": {"fraction": 0.3, "old": 0},
    }.get(name, {})
    return make_policy(name, arms, seed=0, **{**kwargs, **extra})


def feed(policy, ids, values) -> None:
    """``values`` as every signal the policy needs (0/1 for ``correct``)."""
    sig = {k: values for k in policy.requires}
    policy.observe(ids, **sig)


def snapshot(policy) -> bytes:
    return pickle.dumps(policy.state_dict())


IDS = np.array([0, 1, 2, 3, 4, 5])
VALUES = [0.0, 1.0, 1.0, 0.0, 1.0, 0.5]          # exact in bfloat16 and float16 (0.5: not for 'correct')


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.int64, torch.bool, np.float16,
                                   np.int32, np.uint8, np.bool_])
@pytest.mark.parametrize("name", LEARNING)
def test_low_precision_integer_and_bool_signals_match_float64(name, dtype):
    values = [float(v >= 0.5) if dtype in (torch.int64, torch.bool, np.int32, np.uint8, np.bool_) or
              "correct" in POLICIES[name].requires else v for v in VALUES]
    reference, policy = build(name), build(name)
    feed(reference, IDS, np.array(values))
    if isinstance(dtype, torch.dtype):
        given_values = torch.tensor(values).to(dtype)
    else:
        given_values = np.array(values).astype(dtype)
    feed(policy, torch.tensor(IDS) if isinstance(dtype, torch.dtype) else IDS, given_values)
    assert snapshot(policy) == snapshot(reference)


BAD_SIGNALS = {
    "string": "0.5",
    "strings": ["a", "b", "c", "d", "e", "f"],
    "dict": {"loss": 1.0},
    "ragged": [[1.0, 2.0], [3.0]],
    "complex": [1 + 2j, 0, 0, 0, 0, 0],
    "complex tensor": torch.ones(6, dtype=torch.complex64),
    "objects": np.array([object()] * 6, dtype=object),
    "int beyond float": [10 ** 400, 0, 0, 0, 0, 0],
    "int too long to print": [10 ** 5000, 0, 0, 0, 0, 0],
    "datetimes": np.array(["2024-01-01"] * 6, dtype="datetime64[D]"),
}


@pytest.mark.parametrize("bad", sorted(BAD_SIGNALS))
@pytest.mark.parametrize("name", LEARNING)
def test_malformed_signal_is_named_and_changes_nothing(name, bad):
    policy = build(name)
    feed(policy, IDS, np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0]))
    before = snapshot(policy)
    needed = sorted(policy.requires)[0]
    with pytest.raises(CadenceError, match=repr(needed)):
        feed(policy, IDS, BAD_SIGNALS[bad])
    assert snapshot(policy) == before


BAD_IDS = {k: v for k, v in BAD_SIGNALS.items() if k not in ("int too long to print",)}
BAD_IDS["bfloat16 fractions"] = torch.tensor([0.5] * 6, dtype=torch.bfloat16)
BAD_IDS["none inside"] = [None, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("name", LEARNING)
def test_none_is_a_missing_value_like_nan(name):
    """The one rule (cadence.curricula.base.MISSING): None (a TRL reward function's answer for a completion
    it does not score) and NaN both drop the row, counted in ``dropped``."""
    with_none, with_nan = build(name), build(name)
    values = [0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    feed(with_none, IDS, [None, *values[1:]])
    feed(with_nan, IDS, [float("nan"), *values[1:]])
    assert snapshot(with_none) == snapshot(with_nan)
    assert sum(with_none.dropped.values()) == 1
    feed(with_none, IDS, [None] * 6)  # nothing left to learn from: no error, all counted
    assert sum(with_none.dropped.values()) == 7


def test_skillit_eval_losses_follow_the_same_rules():
    from cadence.errors import CadenceError

    policy, reference = build("skillit"), build("skillit")
    with pytest.raises(CadenceError, match="'loss'"):
        policy.observe_eval(["a", "b", "c"])
    policy.observe_eval([1.0, None, 2.0])
    reference.observe_eval([1.0, float("nan"), 2.0])
    assert snapshot(policy) == snapshot(reference) and policy.dropped["loss"] == 1


@pytest.mark.parametrize("bad", sorted(BAD_IDS))
@pytest.mark.parametrize("name", ["dump", "doremi", "pass_rate", "uniform"])
def test_malformed_ids_raise_cadence_error_and_change_nothing(name, bad):
    policy = build(name)
    before = snapshot(policy)
    with pytest.raises(CadenceError, match="item id"):
        feed(policy, BAD_IDS[bad], np.ones(6))
    assert snapshot(policy) == before


def test_bfloat16_integer_ids_are_accepted():
    policy = build("dump")
    policy.observe(torch.tensor([0, 1, 2], dtype=torch.bfloat16), advantage=torch.ones(3, dtype=torch.bfloat16))
    assert policy.observed.sum() == 3


def valid(p: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(p)) and np.all(p >= 0) and abs(p.sum() - 1) < 1e-9)


@pytest.mark.parametrize("huge", [1e307, FLOAT_MAX, -FLOAT_MAX])
@pytest.mark.parametrize("name", LEARNING)
def test_huge_finite_signals_never_break_probabilities(name, huge):
    """Before: DoReMi NaN for good, Skill-it NaN a round later, DUMP/SEC invalid until the window or
    an update moved on."""
    for extra in ({}, {"eta": 1e6} if name == "doremi" else {"temperature": 1e-3} if name in ("dump", "sec") else
                  {"normalize_loss": True} if name == "skillit" else {}):
        policy = build(name, **extra)
        with warnings.catch_warnings():
            warnings.simplefilter("error")                   # and silently: no overflow warnings
            for round_ in range(6):
                ids = policy.sample(6)
                values = np.full(6, huge) if round_ in (1, 2) else np.sin(ids + round_) + 1
                if "correct" in policy.requires:
                    values = (values > 0).astype(float)
                feed(policy, ids, values)
                assert valid(policy.probabilities()), (round_, policy.probabilities())


def test_huge_signals_move_the_mixture_the_way_their_sign_says():
    dump = build("dump", window=4)
    dump.observe([0, 1], advantage=[FLOAT_MAX, 0.1])
    assert dump.probabilities()[0] > 0.99                          # the arm with the huge |advantage| wins
    doremi = build("doremi", smoothing=0.0)
    doremi.observe([0, 1, 2], loss=[FLOAT_MAX, 1.0, 1.0])        # arm 0's excess loss is the float maximum
    assert doremi.probabilities()[0] == 1.0
    doremi.observe([1, 2], loss=[2.0, 1.0])                        # normal losses afterwards: still a distribution
    assert valid(doremi.probabilities())


# ---------------------------------------------------------------------------------------- properties
dtypes = st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.int8, np.uint16, np.bool_, np.complex64,
                          "U3", object])
arrays = dtypes.flatmap(lambda dt: hnp.arrays(
    dt, hnp.array_shapes(min_dims=0, max_dims=2, max_side=7),
    elements=None if dt is object else
    (st.floats(allow_nan=True, allow_infinity=True, width=16 if dt is np.float16 else 32 if dt is np.float32 else 64)
     if dt in (np.float64, np.float32, np.float16) else None)) if dt is not object else
    st.lists(st.one_of(st.floats(), st.integers(), st.text(max_size=2), st.none()), max_size=7).map(
        lambda xs: np.array(xs + [None], dtype=object)[:len(xs)]))
torch_arrays = st.tuples(st.sampled_from([torch.bfloat16, torch.float16, torch.float32, torch.int32, torch.bool]),
                         st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=7)
                         ).map(lambda t: torch.tensor(t[1], dtype=torch.float32).to(t[0]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(POLICIES)), ids=st.one_of(arrays, torch_arrays, st.lists(st.integers(-3, 14))),
       values=st.one_of(arrays, torch_arrays), huge=st.booleans())
def test_observe_raises_only_cadence_errors_and_keeps_probabilities_valid(name, ids, values, huge):
    policy = build(name)
    if huge and isinstance(values, np.ndarray) and values.dtype == np.float64:
        with np.errstate(over="ignore"):
            values = values * 1e300
    before = snapshot(policy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            policy.observe(ids, **{k: values for k in policy.requires})
        except CadenceError:
            assert snapshot(policy) == before
    assert valid(policy.probabilities())


def test_pass_rate_select_takes_bfloat16_verdicts():
    policy = build("pass_rate")
    kept = policy.select([0, 0, 1, 1], torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.bfloat16))
    assert kept.kept.tolist() == [0] and kept.mask.tolist() == [True, True, False, False]
