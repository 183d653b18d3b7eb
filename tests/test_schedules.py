"""Schedules: formulas checked by hand, validation, and properties over random schedules."""

import dataclasses
import math
import pickle

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cadence import BudgetError, SpecError, from_dict, parse, to_dict
from cadence.clock import Axis, Duration
from cadence.schedules import REGISTRY, Join, Schedule

AX = Axis("steps", 1000)


def at(spec, t, axis=AX):
    return parse(spec).value(t, axis)


# ---------------------------------------------------------------------- formulas by hand
def test_decays_follow_their_formulas():
    assert at("linear(peak=2, floor=0.5)", 250) == pytest.approx(2 * (0.5 + 0.5 * 0.75))
    assert at("cosine(peak=1, floor=0.1)", 500) == pytest.approx(0.55)
    assert at("cosine(peak=1)", 250) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert at("polynomial(peak=1, power=2)", 500) == pytest.approx(0.25)
    z = 0.3
    assert at("rex(peak=1)", 300) == pytest.approx((1 - z) / (1 - z / 2))
    assert at("rex(peak=1, beta=0.9)", 300) == pytest.approx((1 - z) / (0.5 * (1 - 0.9 * z) + 0.5))
    c = 1 + math.cos(math.pi * z)
    assert at("uba(peak=1, phi=0.5)", 300) == pytest.approx(2 * c / (2 * 0.5 + 1.5 * c))
    for t in (0, 123, 500, 999, 1000):  # phi = 2 is exactly cosine
        assert at("uba(phi=2)", t) == pytest.approx(at("cosine()", t), abs=1e-15)


def test_open_ended_families():
    assert at("exponential(peak=1, half_life=100 steps)", 300) == pytest.approx(0.125)
    assert at("exponential(peak=1, half_life=100 steps, floor=0.2)", 100) == pytest.approx(0.2 + 0.8 * 0.5)
    assert at("exponential(peak=1, floor=0.01)", 500) == pytest.approx(0.1)
    assert at("inverse_sqrt(peak=1, timescale=100 steps)", 300) == pytest.approx(0.5)
    assert at("step(peak=1, every=100 steps, gamma=0.5)", 250) == 0.25
    assert [at("multistep(peak=1, at=[10%, 20%], gamma=0.1)", t) for t in (99, 100, 199, 200)] == pytest.approx(
        [1, 0.1, 0.1, 0.01])
    tri = [at("cyclic(low=0, high=1, period=100 steps)", t) for t in (0, 25, 50, 75, 100, 150)]
    assert tri == pytest.approx([0, 0.5, 1, 0.5, 0, 1])
    tri2 = at("cyclic(low=0, high=1, period=100 steps, mode=triangular2)", 150)
    assert tri2 == pytest.approx(0.5)


def test_wsd_phases():
    s = "wsd(peak=2, warmup=10%, decay=20%, shape=linear, floor=0.1)"
    assert at(s, 0) == pytest.approx(0.2)          # warmup rises from the floor
    assert at(s, 50) == pytest.approx(2 * (0.1 + 0.9 * 0.5))
    assert at(s, 100) == at(s, 799) == 2            # stable
    assert at(s, 900) == pytest.approx(2 * (0.1 + 0.9 * 0.5))
    assert at(s, 1000) == at(s, 5000) == pytest.approx(0.2)
    assert at("wsd(peak=1, decay=100%, shape=1-sqrt)", 250) == pytest.approx(0.5)
    assert at("wsd(peak=1, decay=100%, shape=1-square)", 500) == pytest.approx(0.75)
    assert at("wsd(peak=1, decay=100%, shape=exponential, floor=0.01)", 500) == pytest.approx(0.1)
    inv = at("wsd(peak=1, decay=100%, shape=inverse-linear, floor=0.1)", 500)
    assert inv == pytest.approx(1 / (0.5 + 0.5 / 0.1))


def test_minicpm_power_and_continual_segments():
    assert at("minicpm(peak=1, decay=10%, half_life=2%)", 940) == pytest.approx(0.5 ** 2)
    axis = Axis("steps", 1000, {"tokens": 1e-3, "samples": 1 / 8})  # 1000 tokens, 8 samples per step
    law = 8 * 4.6 * (500 * 1000) ** -0.51
    assert parse("power(peak=1, a=4.6, b=-0.51)").value(500, axis) == pytest.approx(law)
    assert parse("power(peak=1e-6, a=4.6)").value(500, axis) == 1e-6  # clipped at the peak
    assert parse("power(peak=1, warmup=100 steps, batch=8)").value(50, axis) == pytest.approx(
        0.5 * 8 * 4.6 * (100 * 1000) ** -0.51)
    rw = "rewarm(peak=1, warmup=10%, floor=0.1, start=0.2)"
    assert at(rw, 50) == pytest.approx(0.6)
    assert at(rw, 550) == pytest.approx(0.1 + 0.9 * 0.5)
    inf = "infinite(peak=1, warmup=10%, cooldown=10%, constant=0.4, anneal=10%, floor=0.04)"
    assert at(inf, 150) == pytest.approx(0.4 + 0.6 * 0.5)
    assert at(inf, 500) == pytest.approx(0.4)
    assert at(inf, 950) == pytest.approx(0.4 * (0.1) ** 0.5)
    open_ended = "infinite(peak=1, warmup=100 steps, cooldown=100 steps, constant=0.4, floor=0.04)"
    assert parse(open_ended).value(10**6, Axis("steps", None)) == pytest.approx(0.4)  # no end: hold


def test_combinators():
    w = "warmup(cosine(peak=1), 100 steps)"
    assert at(w, 50) == pytest.approx(0.5)
    assert at(w, 550) == pytest.approx(0.5)  # the cosine runs over the 900 steps that remain
    j = "join(constant(1), linear(peak=0.5), at=[40%])"
    assert at(j, 399) == 1 and at(j, 400) == 0.5 and at(j, 700) == pytest.approx(0.25)
    jc = "join(linear(peak=1, floor=0.5), cosine(peak=1), at=[50%], continuous=true)"
    assert at(jc, 500) == pytest.approx(0.5) and at(jc, 750) == pytest.approx(0.25)
    shift = "join(constant(2), ramp(start=0, end=1), at=[50%], continuous=true)"  # head 0: shifted
    assert at(shift, 500) == 2 and at(shift, 1000) == pytest.approx(3)
    assert at("product(constant(2), cosine(peak=1))", 500) == pytest.approx(1)
    assert at("scale(linear(), 3)", 500) == pytest.approx(1.5)
    assert at("min(constant(0.3), linear())", 100) == 0.3
    assert at("max(constant(0.3), linear())", 900) == 0.3
    assert at("clip(linear(), low=0.2, high=0.6)", 100) == 0.6
    assert at("floor(linear(), 0.25)", 900) == 0.25
    r = "restarts(linear(peak=1), period=100 steps, mult=2, decay=0.5)"
    assert at(r, 50) == pytest.approx(0.5) and at(r, 100) == pytest.approx(0.5)  # second cycle, half height
    assert at(r, 200) == pytest.approx(0.25) and at(r, 300) == pytest.approx(0.25)  # third cycle
    assert at("ramp(start=64, end=512, over=50%)", 250) == pytest.approx(288)
    assert at("ramp(start=64, end=512, over=50%)", 900) == 512
    assert (parse("cosine()") * 3).value(0, AX) == 3


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("cosine(peak=-1)", "'peak' must be >= 0"),
        ("linear(floor=1.5)", "'floor' must be <= 1"),
        ("polynomial(power=0)", "'power' must be > 0"),
        ("wsd(shape=exponential)", "needs floor > 0"),
        ("exponential(peak=1)", "floor must be > 0"),
        ("join(constant(1), constant(2))", "need 1 boundaries"),
        ("clip(linear(), low=0.5, high=0.1)", "must be <="),
        ("cyclic(low=1, high=0.5)", "must be >= low"),
        ("step(every=0 steps)", "every must be positive"),
        ("cosine(peek=1)", "unknown parameter 'peek'"),
        ("warmup()", "missing parameter 'inner'"),
        ("cosine(peak=[1])", "must be a number"),
        ("wsd(warmup=cosine())", "'warmup'"),
    ],
)
def test_bad_parameters_are_named(spec, fragment):
    with pytest.raises(SpecError) as e:
        parse(spec)
    assert fragment in str(e.value)


def test_nan_and_inf_are_rejected_in_python_too():
    from cadence.schedules import WSD, Cosine

    with pytest.raises(SpecError, match="finite"):
        Cosine(peak=float("nan"))
    with pytest.raises(SpecError, match="peak"):
        WSD(peak=float("inf"))


@pytest.mark.parametrize(
    "spec, total",
    [
        ("wsd(warmup=60%, decay=50%)", 1000),
        ("wsd(warmup=600 steps, decay=500 steps)", 1000),
        ("warmup(cosine(), 2000 steps)", 1000),
        ("join(constant(1), constant(2), at=[1500 steps])", 1000),
        ("join(constant(1), constant(2), constant(3), at=[60%, 30%])", 1000),
        ("multistep(at=[70%, 20%])", 1000),
    ],
)
def test_durations_that_do_not_fit_the_budget_fail_check(spec, total):
    with pytest.raises(BudgetError):
        parse(spec).check(Axis("steps", total))


def test_schedules_are_picklable_hashable_and_compare_by_value():
    s = parse("join(warmup(wsd(peak=3e-4, decay=10%), 1%), constant(1e-5), at=[95%])")
    assert pickle.loads(pickle.dumps(s)) == s
    assert hash(s) == hash(parse(str(s)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.at = ()


def test_spec_example_from_the_issue_round_trips_through_text_and_dicts():
    s = parse("wsd(peak=3e-4, warmup=1%, decay=20%, shape=1-sqrt, floor=0.1)")
    assert s.peak == 3e-4 and s.warmup == Duration(1, "%") and s.floor == 0.1
    assert parse(str(s)) == s
    d = to_dict(s)
    assert d == {"type": "wsd", "peak": 3e-4, "warmup": "1%", "floor": 0.1}
    assert from_dict(d) == s
    yaml = pytest.importorskip("yaml")
    assert from_dict(yaml.safe_load(yaml.safe_dump(to_dict(parse("join(cosine(), linear(), at=[50%])"))))) == parse(
        "join(cosine(), linear(), at=[50%])")


@pytest.mark.parametrize(
    "text, pos",
    [("wsd(peak=3e-4, warmup=1%,, decay=20%)", 25), ("cosine(peak=1", 13), ("cosine(peak=1) x", 15),
     ("wsd(warmup=5 parsecs)", 13), ("nope(1)", 0), ("wsd(shape=2-sqrt)", 4)],
)
def test_parse_errors_point_at_the_offending_text(text, pos):
    with pytest.raises(SpecError) as e:
        parse(text)
    assert e.value.position == pos and "^" in str(e.value)


# ---------------------------------------------------------------------- properties
_CONTINUOUS = ("constant", "linear", "cosine", "polynomial", "rex", "uba", "wsd", "exponential", "inverse_sqrt", "ramp",
               "minicpm", "rewarm")
_PRIMITIVES = ("constant", "ramp", "linear", "cosine", "polynomial", "exponential", "inverse_sqrt", "step",
               "multistep", "cyclic", "rex", "uba", "wsd", "minicpm", "rewarm", "infinite")


def _float_for(f):
    lo = f.metadata.get("lo")
    hi = f.metadata.get("hi")
    lo = -2.0 if lo is None else lo
    hi = lo + 3.0 if hi is None else hi
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _duration():
    return st.one_of(st.integers(0, 30).map(lambda p: f"{p}%"), st.integers(1, 300).map(lambda n: f"{n} steps"))


def primitive(names=_PRIMITIVES):
    def build(name):
        cls = REGISTRY[name]
        kwargs = {}
        for f in dataclasses.fields(cls):
            kind = str(f.type)
            if kind.startswith("float"):
                kwargs[f.name] = _float_for(f)
            elif kind.startswith("Duration"):
                kwargs[f.name] = _duration()
            elif kind.startswith("tuple[Duration"):
                kwargs[f.name] = st.lists(_duration(), min_size=1, max_size=3)
            elif kind == "str":
                kwargs[f.name] = st.sampled_from(f.metadata["choices"])
        return st.fixed_dictionaries({}, optional=kwargs).map(lambda kw: (cls, kw))

    return st.sampled_from(names).flatmap(build)


def _make(pair):
    cls, kw = pair
    try:
        s = cls(**kw)
        s.check(AX)
    except (SpecError, BudgetError):
        return None
    return s


def schedules(names=_PRIMITIVES):
    base = primitive(names).map(_make).filter(lambda s: s is not None)

    def extend(children):
        return st.one_of(
            st.tuples(children, _duration()).map(lambda a: _try(lambda: parse("warmup(constant(1))").__class__(*a))),
            st.lists(children, min_size=2, max_size=3).map(lambda xs: _try(lambda: REGISTRY["product"](tuple(xs)))),
            st.lists(children, min_size=2, max_size=3).map(lambda xs: _try(lambda: REGISTRY["min"](tuple(xs)))),
            st.tuples(children, children, st.integers(1, 99), st.booleans()).map(
                lambda a: _try(lambda: Join((a[0], a[1]), at=(f"{a[2]}%",), continuous=a[3]))),
            st.tuples(children, st.floats(0, 1)).map(lambda a: _try(lambda: REGISTRY["clip"](a[0], low=a[1]))),
        ).filter(lambda s: s is not None)

    return st.recursive(base, extend, max_leaves=4)


def _try(make):
    try:
        s = make()
        s.check(AX)
        return s
    except (SpecError, BudgetError):
        return None


GRID = [i * 2.5 for i in range(401)] + [1000.0, 1200.0]
_settings = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                             HealthCheck.too_slow])


@_settings
@given(schedules())
def test_values_are_finite_and_within_declared_bounds(s: Schedule):
    lo, hi = s.bounds()
    tol = 1e-9 * max(1.0, abs(lo), abs(hi))
    for t in GRID:
        v = s.value(t, AX)
        assert math.isfinite(v)
        assert lo - tol <= v <= hi + tol, (str(s), t, v, (lo, hi))


_MONOTONE = ("ramp", "linear", "cosine", "polynomial", "exponential", "inverse_sqrt", "step", "multistep", "rex", "uba")


@_settings
@given(schedules(_MONOTONE))
def test_monotone_where_promised(s: Schedule):
    assume(s.direction != 0)
    vs = [s.value(t, AX) for t in GRID]
    tol = 1e-12 * max(1.0, *map(abs, vs))
    pairs = zip(vs, vs[1:])
    assert all((b - a) * s.direction >= -tol for a, b in pairs), str(s)


@_settings
@given(schedules(_CONTINUOUS), schedules(_CONTINUOUS), st.integers(1, 99))
def test_continuous_joins_are_continuous(a, b, cut):
    j = Join((a, b), at=(f"{cut}%",), continuous=True)
    assume(_try(lambda: j) is not None)  # the pieces must fit their spans (check passes)
    edge = cut * 10.0
    left = a.value(edge, AX.span(edge)) if edge else a.value(0, AX.span(0))  # the first piece's end value
    assert j.value(edge, AX) == pytest.approx(left, rel=1e-9, abs=1e-12)


@_settings
@given(schedules())
def test_spec_text_and_dict_round_trip(s: Schedule):
    assert parse(str(s)) == s
    assert from_dict(to_dict(s)) == s


_ALPHABET = "abcdefghijklmnopqrstuvwxyz_-+.,=()[]%'\" 0123456789eEkMB"
_FRAGMENTS = ["wsd(", "cosine(", "join(", "warmup(", "peak=", "at=[", "1%", "500 steps", "2M tokens", ")", ",", "]",
              "shape=1-sqrt", "nan", "inf", "-1", "1e999", "true"]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(_ALPHABET, max_size=40), st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join)))
def test_parser_raises_only_its_own_error(text):
    try:
        result = parse(text)
    except SpecError:
        return
    assert isinstance(result, Schedule)


# ---------------------------------------------------------------------- shift and glide (schedules changed mid-run)
def test_shift_continues_a_whole_run_schedule_inside_a_join():
    whole = parse("wsd(peak=2, decay=30%)")
    joined = parse("join(constant(5), shift(wsd(peak=2, decay=30%), by=400 steps, total=1000 steps), at=[400 steps])")
    for t in (400, 650, 700, 850, 999, 1000):
        assert joined.value(t, AX) == whole.value(t, AX)
    assert joined.value(399, AX) == 5
    last = parse("join(constant(5), shift(cosine(peak=2), by=400 steps), at=[400 steps])")  # last piece: total inferred
    assert last.value(700, AX) == parse("cosine(peak=2)").value(700, AX)
    open_ended = parse("join(constant(5), shift(wsd(peak=2, warmup=0 steps), by=400 steps, open=true), at=[400 steps])")
    assert open_ended.value(999, AX) == 2  # the shifted WSD sees an open-ended run: it holds its peak


def test_shift_rejects_a_span_past_its_total_and_both_total_and_open():
    with pytest.raises(BudgetError, match="runs past"):
        parse("shift(cosine(), by=500 steps, total=1000 steps)").check(AX)
    with pytest.raises(SpecError, match="not both"):
        parse("shift(cosine(), total=1000 steps, open=true)")


def test_glide_starts_at_its_value_and_reaches_the_inner_schedule():
    g = parse("glide(cosine(peak=2), start=0.5, over=100 steps)")
    inner = parse("cosine(peak=2)")
    assert g.value(0, AX) == 0.5
    assert g.value(50, AX) == pytest.approx(inner.value(50, AX) * (1 + 0.5 * (0.25 - 1)))  # factor fades linearly
    assert [g.value(t, AX) for t in (100, 400)] == [inner.value(100, AX), inner.value(400, AX)]
    lrs = [g.value(t, AX) for t in range(0, 101)]
    assert max(abs(b - a) for a, b in zip(lrs, lrs[1:])) < 0.03  # no jump: 1.5 spread over 100 steps
    from_zero = parse("glide(linear(peak=1), start=0.3, over=10 steps)")  # inner(0) = 1: factor form
    assert from_zero.value(5, AX) == pytest.approx(parse("linear(peak=1)").value(5, AX) * (1 + 0.5 * (0.3 - 1)))
    offset = parse("glide(ramp(start=0, end=1), start=0.3, over=10 steps)")  # inner(0) = 0: offset form
    assert offset.value(5, AX) == pytest.approx(0.005 + 0.5 * 0.3)
    assert all(v >= 0 for v in (g.value(t, AX) for t in range(0, 1001, 7)))


@pytest.mark.parametrize("phi", [1e308, 1e200, 5e-324])
def test_uba_with_an_extreme_phi_stays_a_decay_from_1_to_0(phi):
    values = [at(f"uba(phi={phi})", t) for t in range(0, 1001, 50)]
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values), values
    assert values[0] == pytest.approx(1.0) and values[-1] == 0.0
    assert values == sorted(values, reverse=True)


def test_the_docs_say_wsd_warms_up_from_its_floor():
    """docs/schedules.md states where wsd's warmup starts, and it is true."""
    from pathlib import Path

    row = next(line for line in (Path(__file__).parents[1] / "docs" / "schedules.md").read_text().splitlines()
               if line.startswith("| `wsd("))
    assert "rises from `floor·peak`" in row and "not from 0" in row
    assert at("wsd(peak=2, warmup=10%, floor=0.1)", 0) == pytest.approx(0.2)
