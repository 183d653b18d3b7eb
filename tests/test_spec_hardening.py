"""The spec language under hostile input: only SpecError (never TypeError, OverflowError,
RecursionError, ZeroDivisionError), a stated nesting limit within which everything that parses
prints back, linear parse time, and specs that print without float noise. Property tests
(hypothesis) over arbitrary text and nested dicts."""

from __future__ import annotations

import gc
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadence import Clock
from cadence.clock import Axis, Duration
from cadence.errors import SpecError
from cadence.optim import ScheduledLR
from cadence.schedules import base as schedule_base
from cadence.schedules.base import REGISTRY
from cadence.spec import from_dict, parse, to_dict


MAX_DEPTH = 64        # the documented limit (docs/schedules.md)


def nested(depth: int, leaf: str = "constant(1)") -> str:
    return "warmup(" * (depth - 1) + leaf + ", 1%)" * (depth - 1)


def nested_dict(depth: int) -> dict:
    d: dict = {"type": "constant", "level": 1.0}
    for _ in range(depth - 1):
        d = {"type": "warmup", "inner": d, "warmup": "1%"}
    return d


@pytest.mark.parametrize("make", [
    lambda: from_dict({"type": ["cosine"]}),
    lambda: from_dict({"type": {"name": "cosine"}}),
    lambda: from_dict({"type": None}),
    lambda: from_dict({"type": "cosine", "peak": 10 ** 400}),
    lambda: from_dict({"type": "constant", "level": -(10 ** 5000)}),
    lambda: from_dict({"type": "step", "every": 10 ** 400}),
    lambda: parse("cosine(peak=" + "9" * 400 + ")"),
    lambda: parse(nested(500)),
    lambda: parse("multistep(at=" + "[" * 2000 + "]" * 2000 + ")"),
    lambda: from_dict(nested_dict(2000)),
    lambda: from_dict({"type": "multistep", "at": _deep_list(3000)}),
    lambda: parse("step(peak=1, every=5e-324 steps)"),
    lambda: parse("cyclic(low=0, high=1, period=5e-324 steps)"),
    lambda: parse("restarts(cosine(), period=1e-20 steps)"),
    lambda: parse("step(every=1e-12)"),
], ids=["type list", "type dict", "type None", "huge int", "huge negative int", "huge duration int",
        "huge literal", "deep calls", "deep lists", "deep dicts", "deep dict lists", "tiny step", "tiny cyclic",
        "tiny restarts", "tiny fraction"])
def test_hostile_specs_raise_only_spec_error(make):
    with pytest.raises(SpecError):
        make()


def _deep_list(depth: int) -> list:
    out: list = []
    for _ in range(depth):
        out = [out]
    return out


def test_depth_limit_is_exact_and_everything_within_it_prints_back():
    assert getattr(schedule_base, "MAX_DEPTH", None) == MAX_DEPTH
    deepest = parse(nested(MAX_DEPTH))
    assert deepest.depth == MAX_DEPTH
    assert parse(str(deepest)) == deepest and from_dict(to_dict(deepest)) == deepest
    with pytest.raises(SpecError, match=f"more than {MAX_DEPTH} deep"):
        parse(nested(MAX_DEPTH + 1))
    with pytest.raises(SpecError, match=f"more than {MAX_DEPTH} deep"):
        from_dict(nested_dict(MAX_DEPTH + 1))
    # a bare number becomes constant(...): one level more than the text shows, still refused cleanly
    with pytest.raises(SpecError, match=f"more than {MAX_DEPTH} deep"):
        parse(nested(MAX_DEPTH + 1, leaf="1"))
    opt = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    sched = ScheduledLR(opt, lr=str(deepest), clock=Clock(budget=10))
    assert sched.state_dict()["specs"]["lr"] == [str(deepest)]


def test_the_depth_limit_is_stated_in_the_docs():
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "schedules.md").read_text()
    assert f"{MAX_DEPTH} levels" in text


def test_periods_that_can_be_evaluated_still_work():
    axis = Axis("steps", 10_000)
    assert parse("step(peak=1, every=1e-9 steps, gamma=0.5)").value(1e-9, axis) == 0.5
    tri2 = parse("cyclic(low=0, high=1, period=1 steps, mode=triangular2)")
    assert tri2.value(5000.25, axis) == 0.0                           # far past 1024 halvings: 0, no OverflowError
    assert tri2.value(2.5, axis) == 0.25                              # the third cycle's peak: 1/2²


def test_parse_time_is_linear_in_the_length_of_a_list():
    """Every number used to copy the rest of the text (a 400k-character list took seconds)."""
    def seconds(n: int, tries: int) -> float:
        text = ") " + "0.5, " * n                  # tokenised whole, then refused at its first character
        best = float("inf")
        for _ in range(tries):                     # the best of a few: the machine may be busy
            gc.collect()
            gc.disable()                           # the parser's own work, not the collector's
            try:
                start = time.perf_counter()
                with pytest.raises(SpecError):
                    parse(text)
                best = min(best, time.perf_counter() - start)
            finally:
                gc.enable()
        return best

    small, large = seconds(10_000, 5), seconds(320_000, 2)   # 32× the text (1.6M characters)
    assert large < 100 * small, (small, large)                 # linear: ~32×; before: about 200×


@pytest.mark.parametrize("text, shown", [
    ("step(every=1.1h)", "step(every=66 min)"),
    ("step(every=4.35h)", "step(every=261 min)"),
    ("step(every=0.07h)", "step(every=252 s)"),
])
def test_unit_conversions_print_the_intended_decimal(text, shown):
    s = parse(text)
    assert str(s) == shown and parse(str(s)) == s


def test_freezeout_specs_print_without_float_noise():
    from cadence.progressive import FreezeOut

    plan = FreezeOut([torch.nn.Linear(2, 2) for _ in range(5)], clock=Clock(budget=100), t0=0.8)
    assert plan.freeze_times.tolist()[:3] == [0.512, 0.614125, 0.729]
    spec = str(plan.lr_schedule(0, 0.02))
    assert spec == "join(cosine(peak=0.0390625), constant(level=0), at=[0.512])"
    assert parse(spec) == plan.lr_schedule(0, 0.02)


def test_decimal_durations_are_the_nearest_float_to_the_decimal():
    assert Duration.parse("1.1M tokens").amount == 1_100_000.0      # not 1.1 * 1e6 = 1100000.0000000002
    assert Duration.parse("4.35 h").amount == 15_660.0


# ---------------------------------------------------------------------------------------- properties
SPEC_ALPHABET = st.sampled_from(list("()[],=.%-+eE '\"") + list("0123456789") +
                                ["cosine", "warmup", "join", "step", "cyclic", "peak", "at", "every", "steps",
                                 "tokens", "M", "k", "true", "wsd", "constant", "1e308", "5e-324", "9" * 30])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=60), st.lists(SPEC_ALPHABET, max_size=30).map("".join)))
def test_parse_raises_only_spec_error(text):
    try:
        s = parse(text)
    except SpecError:
        return
    assert parse(str(s)) == s


leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10 ** 300),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                 st.sampled_from(["1%", "500 steps", "2M tokens", "cosine(peak=1)", "5e-324 steps", "1-sqrt"]))
names = st.sampled_from(sorted(REGISTRY) + ["nope"])
keys = st.sampled_from(["peak", "floor", "warmup", "decay", "inner", "at", "every", "period", "level", "gamma",
                        "low", "high", "shape", "mode", "start", "end", "type", "x"])
dicts = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.fixed_dictionaries({"type": st.one_of(names, children)}, optional={}).flatmap(
            lambda d: st.dictionaries(keys, children, max_size=4).map(lambda extra: {**extra, **d}))),
    max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dicts)
def test_from_dict_raises_only_spec_error(d):
    try:
        s = from_dict(d)
    except SpecError:
        return
    assert from_dict(to_dict(s)) == s and parse(str(s)) == s


@pytest.mark.parametrize("leaf", ["join(constant(1), constant(2), at=[50%])", "product(constant(1), cosine(peak=1))",
                                  "max(constant(1), constant(2))"])
def test_specs_of_several_schedules_at_the_depth_limit_round_trip_as_dicts(leaf):
    """The dict form of ``join(a, b)`` holds its pieces in a list: that list adds no level, as in the text."""
    deepest = parse("warmup(" * (MAX_DEPTH - 2) + leaf + ", 1%)" * (MAX_DEPTH - 2))
    assert from_dict(to_dict(deepest)) == deepest


@pytest.mark.parametrize("text", ["1e99999999999999999999 steps", "1e-99999999999999999999 min",
                                  "1" * 400 + "e" + "9" * 400 + " tokens"])
def test_a_duration_beyond_the_decimal_range_is_a_budget_error(text):
    from cadence.errors import BudgetError

    with pytest.raises(BudgetError, match="out of range"):
        Duration.parse(text)
    with pytest.raises(SpecError):
        parse(f"wsd(peak=1, warmup={text})")
