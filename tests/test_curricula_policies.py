"""Every policy behind one interface: distribution, sampling, feedback validation, exact resume (of
the policy alone and through the sampler, stopped inside a batch), rejection of foreign state; DUMP's
windows against a plain-Python reference; Skill-it's graph forms and graph validation."""

from __future__ import annotations

import pickle
import numpy as np
import pytest
import scipy.sparse

from cadence import Clock
from cadence.curricula import (POLICIES, Arms, CurriculumSampler, CyclicalPacing, EmptyArmWarning, MissingSignalError,
                               UnknownItemError, make_policy)
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
        "ordered": {"pacing": CyclicalPacing(start=0.25, stage=0.1), "clock": clock},   # 25% → 50% → 100% → …
        "dump": {"window": 8},                       # small: the rings complete laps within a few steps
        "doremi": {"reference": np.full(arms.num_items, 1.0)},
        "skillit": {"graph": np.eye(k) + 0.5 * np.eye(k, k=1)},
        "loss_reweighting": {"temperature": "linear(peak=2, floor=0.25)", "clock": clock},
        "pudf": {"difficulty": (DIFFICULTY - 8) / 4},
        "pass_rate": {"low": 0.2, "high": 0.8, "closed": "both"},
        "replay": {"fraction": 0.3, "old": names[0]},
    }.get(name, {})
    return make_policy(name, arms, seed=seed, **kwargs)


def signals(ids: np.ndarray) -> dict[str, np.ndarray]:
    x = np.sin(ids * 1.7)
    return {"loss": 1.5 + x, "reward": (x + 1) / 2, "advantage": x, "correct": (x > 0).astype(float)}


ALL = sorted(POLICIES)


def test_registry_has_every_policy_of_the_issue():
    assert set(ALL) == {"uniform", "fixed", "scheduled", "ordered", "dump", "sec", "exp3", "learning_progress",
                        "doremi", "skillit", "pudf", "loss_reweighting", "pass_rate", "replay"}


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


@pytest.mark.parametrize("replacement", [True, False])
@pytest.mark.parametrize("name", ALL)
def test_sampler_resume_mid_batch_is_exact(name, replacement):
    """Sampler + policy + clock saved in the middle of a batch and loaded into objects built with
    other seeds continue the uninterrupted id stream (feedback after every batch) and end equal."""
    if name == "replay" and not replacement:
        pytest.skip("a replay mixture counts each draw as one batch: it draws with replacement only")
    batch = 8

    def fresh(seed: int) -> tuple[Clock, CurriculumSampler]:
        clock = Clock(budget=20)
        return clock, CurriculumSampler(build(name, clock, seed=seed), batch, seed=seed, replacement=replacement,
                                        on_exhausted="refill")

    def run(clock: Clock, sampler: CurriculumSampler, n: int, out: list[int]) -> None:
        stream = iter(sampler)
        for _ in range(n):
            out.append(next(stream))
            if len(out) % batch == 0:                           # a batch finished: feed it back, one step
                ids = np.array(out[-batch:])
                sampler.observe(ids, **signals(ids))
                clock.advance()

    straight, first = fresh(5), fresh(5)
    s_out: list[int] = []
    f_out: list[int] = []
    run(*straight, 10 * batch, s_out)
    run(*first, 4 * batch + 5, f_out)                          # stops inside the fifth batch
    saved = pickle.loads(pickle.dumps({"clock": first[0].state_dict(), "sampler": first[1].state_dict()}))
    resumed = fresh(99)
    resumed[0].load_state_dict(saved["clock"])
    resumed[1].load_state_dict(saved["sampler"])
    run(*resumed, 5 * batch + 3, f_out)
    assert f_out == s_out
    assert pickle.dumps(resumed[1].state_dict()) == pickle.dumps(straight[1].state_dict())


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


def test_skillit_graph_forms_give_the_same_mixture():
    arms = Arms(["a", "b", "c"] * 4)
    dense = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.25, 0.0, 1.0]])
    forms = {"dense": dense, "csr": scipy.sparse.csr_matrix(dense), "coo array": scipy.sparse.coo_array(dense),
             "edges": {("a", "b"): 0.5, ("b", "c"): 0.5, ("c", "a"): 0.25}}
    policies = {k: make_policy("skillit", arms, graph=g, eta=0.7, window=2) for k, g in forms.items()}
    assert [scipy.sparse.issparse(p.graph) for p in policies.values()] == [False, True, True, True]
    for losses in ([2.0, 1.0, 3.0], [1.5, 1.0, 2.0], [1.0, 0.5, 1.0]):
        for policy in policies.values():
            policy.observe_eval(losses)
        expected = policies["dense"].probabilities()
        for policy in policies.values():
            np.testing.assert_allclose(policy.probabilities(), expected, rtol=1e-12)
            np.testing.assert_allclose(policy.scores()["graph_signal"], policies["dense"].scores()["graph_signal"],
                                       rtol=1e-12)


@pytest.mark.parametrize("graph,message", [
    (np.full((3, 3), np.nan), r"entry \[0, 0\] \(arm 'a' → 'a'\) is nan"),
    (np.array([[1.0, -0.5, 0], [0, 1, 0], [0, 0, 1]]), r"entry \[0, 1\] \(arm 'a' → 'b'\) is -0.5"),
    (scipy.sparse.coo_array(([1.0, -1.0], ([0, 2], [0, 1])), shape=(3, 3)),
     r"entry \[2, 1\] \(arm 'c' → 'b'\) is -1.0"),
    (scipy.sparse.csr_array(([np.inf], ([1], [0])), shape=(3, 3)), r"entry \[1, 0\] \(arm 'b' → 'a'\) is inf"),
    (np.ones((2, 3)), r"one row per arm \(3\).*\(2, 3\)"),
    (np.ones(3), r"one row per arm \(3\).*\(3,\)"),
    (np.ones((3, 4)) * [1, 1, 1, -1], r"entry \[0, 3\] \(arm 'a', evaluation skill 3\) is -1.0"),
    ([[1, 2], [3]], "2-D array, a scipy.sparse matrix or a mapping"),
    ({("a", "zz"): 0.5}, "unknown arm 'zz'"),
    ({("a",): 0.5}, r"keyed \(source arm, target arm\)"),
    ({("a", "b"): "strong"}, "weight 'strong', not a number"),
    ({("a", "b"): -1.0}, r"entry \[0, 1\] \(arm 'a' → 'b'\) is -1.0"),
])
def test_skillit_rejects_a_bad_graph_naming_the_entry(graph, message):
    with pytest.raises(CadenceError, match=message):
        make_policy("skillit", Arms(["a", "b", "c"]), graph=graph)


def test_dump_resumes_from_a_state_with_fortran_ordered_arrays():
    """DUMP writes its rings through a flat view; a loaded state in another memory layout must still work."""
    arms = Arms(KEYS)
    straight = make_policy("dump", arms, window=4)
    ids = np.arange(N)
    straight.observe(ids, advantage=np.sin(ids))
    state = straight.state_dict()
    state["window_values"] = np.asfortranarray(state["window_values"])
    resumed = make_policy("dump", arms, window=4)
    resumed.load_state_dict(state)
    for policy in (straight, resumed):
        policy.observe(ids[:7], advantage=np.cos(ids[:7]))
    assert resumed.window_values.tobytes() == straight.window_values.tobytes()
    assert resumed.mean_abs.tobytes() == straight.mean_abs.tobytes()


@pytest.mark.parametrize("num_arms", [3, 40_000])        # small arm indices sort as int16, large ones as int64
def test_dump_windows_match_a_plain_python_reference(num_arms):
    rng = np.random.default_rng(num_arms)
    arms = Arms.from_codes(np.arange(num_arms), list(range(num_arms)))
    policy = make_policy("dump", arms, window=5)
    hot = rng.choice(num_arms, 3, replace=False)          # a few arms get runs longer than the window
    windows: dict[int, list[float]] = {}
    responses = np.zeros(num_arms, dtype=np.int64)
    for _ in range(6):
        ids = np.concatenate([rng.choice(hot, 9), rng.integers(0, num_arms, 7)])
        rng.shuffle(ids)
        advantage = rng.normal(size=len(ids))
        policy.observe(ids, advantage=advantage)
        for i, a in zip(ids.tolist(), advantage.tolist()):
            windows[i] = (windows.get(i, []) + [abs(a)])[-5:]
            responses[i] += 1
        seen = np.array(sorted(windows))
        np.testing.assert_allclose(policy.mean_abs[seen], [np.mean(windows[i]) for i in seen], rtol=1e-12)
        unseen = np.ones(num_arms, dtype=bool)
        unseen[seen] = False
        assert np.array_equal(policy.responses, responses) and not policy.mean_abs[unseen].any()


def _docs_doremi_run(reference):
    """The toy loop of docs/curricula.md (three sources, noise 0.1 / 0.5 / 1.0) under DoReMi for 30 steps."""
    import torch

    from cadence.curricula import Arms, DoReMi

    source = np.array(["easy"] * 100 + ["mid"] * 100 + ["hard"] * 100)
    torch.manual_seed(0)
    x = torch.randn(300, 8)
    noise = torch.tensor([{"easy": 0.1, "mid": 0.5, "hard": 1.0}[s] for s in source]).unsqueeze(1)
    y = x.sum(dim=1, keepdim=True) + torch.randn(300, 1) * noise
    arms = Arms(source)
    doremi = DoReMi(arms, reference, eta=1.0, smoothing=1e-3)
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(30):
        ids = torch.as_tensor(doremi.sample(32))
        per_sample = ((model(x[ids]) - y[ids]) ** 2).squeeze(1)
        opt.zero_grad()
        per_sample.mean().backward()
        opt.step()
        doremi.observe(ids, loss=per_sample.detach())
    return dict(zip(arms.names, doremi.probabilities()))


def test_doremi_with_the_paper_defaults_does_not_collapse_given_a_real_reference():
    flat = _docs_doremi_run(np.full(300, 0.5))
    assert flat["hard"] > 0.95  # a flat reference counts the noisy source's irreducible loss as excess
    noise = _docs_doremi_run({"easy": 0.01, "mid": 0.25, "hard": 1.0})  # the docs' reference
    assert max(noise.values()) < 0.7 and min(noise.values()) > 0.05


def test_doremi_per_item_clipping_favours_a_noisy_source_even_with_a_per_row_reference():
    """The documented caveat: max(loss − reference, 0) per item turns the proxy's zero-mean wobble on
    noisy rows into positive excess, so weight drifts to the noisy half (docs/curricula.md)."""
    torch = pytest.importorskip("torch")
    from cadence.curricula import DoReMi

    finals = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(200, 4, generator=g)
        noisy = torch.arange(200) >= 100
        y = x.sum(1) + noisy * torch.randn(200, generator=g) * 2.0
        design = torch.cat([x, torch.ones(200, 1)], 1)       # the reference: least squares, scored per row
        reference = (design @ torch.linalg.lstsq(design, y.unsqueeze(1)).solution).squeeze(1).sub(y).pow(2)
        doremi = DoReMi(Arms(["noisy" if n else "clean" for n in noisy.tolist()]), reference.numpy(), eta=0.1, seed=seed)
        torch.manual_seed(seed)
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for _ in range(100):
            ids = torch.as_tensor(doremi.sample(16))
            per_sample = (model(x[ids]).squeeze(1) - y[ids]) ** 2
            opt.zero_grad()
            per_sample.mean().backward()
            opt.step()
            doremi.observe(ids, loss=per_sample.detach())
        finals.append(dict(zip(doremi.arms.names, doremi.probabilities()))["noisy"])
    print("p(noisy) at the end:", np.round(finals, 2).tolist())
    assert min(finals) > 0.6, finals
