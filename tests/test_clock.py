"""The clock: durations, counting, conversions, budget changes and state."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadence import BudgetError, Clock, Duration, StateError, parse
from cadence.clock import Axis


@pytest.mark.parametrize(
    "text, amount, unit",
    [
        ("2%", 2.0, "%"),
        (0.02, 0.02, "fraction"),
        ("0.5", 0.5, "fraction"),
        ("500 steps", 500.0, "steps"),
        ("500steps", 500.0, "steps"),
        ("2M tokens", 2e6, "tokens"),
        ("1.5k samples", 1500.0, "samples"),
        ("30 min", 1800.0, "seconds"),
        ("1.5h", 5400.0, "seconds"),
        ("45 s", 45.0, "seconds"),
    ],
)
def test_duration_parses_fractions_and_amounts(text, amount, unit):
    d = Duration.parse(text)
    assert (d.amount, d.unit) == (amount, unit)


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("5 parsecs", "unknown unit 'parsecs'"),
        ("-3 steps", "non-negative"),
        ("150%", "must lie in [0, 1]"),
        (500, "write an amount with its unit"),
        ("2M", "has no unit"),
        (float("nan"), "must lie in [0, 1]"),
        (True, "cannot read"),
        ("", "cannot read"),
    ],
)
def test_duration_rejects_bad_input_by_name(bad, fragment):
    with pytest.raises(BudgetError) as e:
        Duration.parse(bad)
    assert fragment in str(e.value)


@given(st.one_of(
    st.builds(lambda x: f"{x}%", st.integers(0, 100)),
    st.builds(lambda x, u: f"{x} {u}", st.integers(1, 10**9), st.sampled_from(["steps", "tokens", "samples", "s", "min"])),
    st.floats(0, 1),
))
def test_duration_text_round_trips(value):
    d = Duration.parse(value)
    assert Duration.parse(str(d)) == d


def test_clock_counts_units_and_queued_reports():
    now = [0.0]
    clock = Clock(budget="1000 steps", timer=lambda: now[0])
    clock.report(samples=8, tokens=800)
    now[0] = 2.5
    clock.advance()
    clock.advance(samples=8, tokens=1200, seconds=1.0)
    assert (clock.steps, clock.samples, clock.tokens, clock.seconds) == (2, 16, 2000, 3.5)
    assert clock.rate("tokens") == 1000
    assert clock.progress == pytest.approx(0.002)
    assert clock.remaining == 998 and not clock.done


@pytest.mark.parametrize("bad", [dict(samples=-1), dict(tokens=float("nan")), dict(steps=float("inf"))])
def test_clock_rejects_bad_amounts(bad):
    clock = Clock()
    with pytest.raises(BudgetError):
        clock.advance(**bad)
    assert clock.steps == 0


def test_conversions_use_what_the_run_reports():
    clock = Clock(budget="1M tokens", tokens_per_step=1000)
    warm = parse("wsd(peak=1, warmup=100 steps, decay=10%)")
    assert warm(clock) == 0.0
    # before any report the nominal 1000 tokens/step places the warmup end at 100k tokens
    assert clock.axis.length(Duration.parse("100 steps")) == 100_000
    for _ in range(10):
        clock.advance(tokens=2000)  # the run reports 2000 tokens/step: the warmup now ends at 200k tokens
    assert clock.axis.length(Duration.parse("100 steps")) == 200_000
    assert warm(clock) == pytest.approx(20_000 / 200_000)


def test_fraction_in_an_open_ended_run_is_a_clear_error():
    clock = Clock()
    with pytest.raises(BudgetError, match="open-ended"):
        parse("cosine(peak=1)")(clock)
    assert parse("warmup(inverse_sqrt(timescale=100 steps), 10 steps)")(clock) == 0.0


def _run(clock, n):
    for _ in range(n):
        clock.advance()


def test_rescale_extension_keeps_values_continuous_and_reaches_the_floor():
    cosine = parse("cosine(peak=1, floor=0.1)")
    clock = Clock(budget=1000)
    _run(clock, 400)
    before = cosine(clock)
    clock.set_budget(2000)
    assert cosine(clock) == before  # no jump at the moment of change
    _run(clock, 1600)
    assert clock.done and cosine(clock) == pytest.approx(0.1)


def test_rescale_shortening_squeezes_what_remains():
    clock = Clock(budget=1000)
    _run(clock, 500)
    clock.set_budget(600)
    assert clock.progress == pytest.approx(0.5)
    _run(clock, 50)
    assert clock.progress == pytest.approx(0.75)


def test_rederive_evaluates_as_if_the_new_budget_had_always_been_set():
    wsd = parse("wsd(peak=1, warmup=5%, decay=20%)")
    clock = Clock(budget=1000, on_budget_change="rederive")
    _run(clock, 500)
    clock.set_budget(2000)
    fresh = Clock(budget=2000)
    _run(fresh, 500)
    for _ in range(1500):
        assert wsd(clock) == wsd(fresh)
        clock.advance()
        fresh.advance()


@pytest.mark.parametrize(
    "budget, fragment",
    [(500, "not beyond"), (400, "not beyond"), ("1M tokens", "cannot change"), (-5, "positive"), ("10%", "fraction")],
)
def test_impossible_budget_changes_are_rejected_and_nothing_changes(budget, fragment):
    clock = Clock(budget=1000)
    _run(clock, 500)
    before = clock.state_dict()
    with pytest.raises(BudgetError, match=fragment):
        clock.set_budget(budget)
    assert clock.state_dict() == before


def test_budget_change_that_a_watched_schedule_cannot_fit_is_rejected():
    # under "rescale" the schedule keeps its own span (what remains is squeezed), so it always fits;
    # under "rederive" the schedule is re-laid over the new budget and 400 + 300 steps no longer fit in 600
    clock = Clock(budget=1000, on_budget_change="rederive")
    clock.watch([parse("wsd(peak=1, warmup=400 steps, decay=300 steps)")])
    _run(clock, 10)
    before = clock.state_dict()
    with pytest.raises(BudgetError, match="longer than the budget"):
        clock.set_budget(600)
    assert clock.state_dict() == before


def test_open_ended_run_can_be_given_a_budget_and_wsd_then_cools_down():
    wsd = parse("wsd(peak=1, warmup=10 steps, decay=100 steps)")
    clock = Clock()
    _run(clock, 500)
    assert wsd(clock) == 1.0  # open-ended: hold the peak
    clock.set_budget(1000)
    assert wsd(clock) == 1.0
    _run(clock, 450)
    assert 0 < wsd(clock) < 1
    _run(clock, 50)
    assert wsd(clock) == 0.0


def test_state_dict_is_json_and_resumes_exactly():
    clock = Clock(budget="1M tokens", tokens_per_step=500)
    for i in range(7):
        clock.advance(tokens=300 + i)
    clock.set_budget("2M tokens")
    clock.report(tokens=5)
    state = json.loads(json.dumps(clock.state_dict()))
    other = Clock()
    other.load_state_dict(state)
    s = parse("wsd(peak=1, warmup=100 steps, decay=10%, shape=cosine)")
    for _ in range(100):
        clock.advance(tokens=411, seconds=0)
        other.advance(tokens=411, seconds=0)
        assert s(clock) == s(other)
        assert clock.position == other.position


@pytest.mark.parametrize("state", [{}, {"kind": "torch.Thing"}, {"kind": "cadence.Clock", "budget": None}, None])
def test_foreign_or_malformed_state_is_rejected(state):
    clock = Clock(budget=100)
    clock.advance()
    before = clock.state_dict()
    with pytest.raises(StateError):
        clock.load_state_dict(state)
    assert clock.state_dict() == before


def test_axis_conversion_errors_name_the_missing_rate():
    axis = Axis("tokens", 1e6)
    with pytest.raises(BudgetError, match="tokens_per_step"):
        axis.length(Duration.parse("10 steps"))
    assert math.isclose(Axis("steps", 100, {"tokens": 0.01}).convert(10, "tokens"), 1000)


def test_dropping_a_token_budget_keeps_positions_in_tokens():
    clock = Clock(budget="10K tokens")
    clock.advance(tokens=1000)
    clock.set_budget("20K tokens")
    before = clock.position
    clock.set_budget(None)
    assert clock.unit == "tokens" and clock.position == before and clock.progress is None
    clock.advance(tokens=500)
    assert clock.position == before + 500 * clock.state_dict()["anchor"][2]


def test_open_ended_step_run_given_a_token_budget_is_positioned_by_tokens_done():
    clock = Clock()
    for _ in range(10):
        clock.advance(tokens=100)
    clock.set_budget("2K tokens")
    assert clock.unit == "tokens" and clock.progress == 0.5
