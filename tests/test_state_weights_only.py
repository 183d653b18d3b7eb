"""Every stateful component's ``state_dict`` survives ``torch.save`` and ``torch.load(...,
weights_only=True)`` (the safe loader, torch's default), and a fresh component loaded from it
continues exactly as the original does."""

from __future__ import annotations

import copy
import io
from typing import Any, Callable

import numpy as np
import pytest
import torch

from cadence import Clock
from cadence.averaging import EMA, CheckpointAverage
from cadence.curricula import POLICIES, Arms, CurriculumSampler, CyclicalPacing, Replay, make_policy
from cadence.integrations import RegimenLink
from cadence.integrations.tracking import TrackedSampler
from cadence.labs.rl.sources import SelectorSource
from cadence.optim import ScheduledLR
from cadence.progressive import BatchSizeSchedule, FreezeOut, LayerFreezing, RandomizedProgressive, SequenceLengthWarmup
from cadence.rl import (PCL, DynamicSampling, FixedAllocation, GVMAllocation, Hints, HybridGate, KnapsackAllocation,
                        PredictiveFilter, PromptSelector, ReplayBuffer, ValueModel)

N = 30
KEYS = [("add", i % 3) for i in range(N)]
DIFFICULTY = np.arange(N, dtype=float) % 7


def signals(ids: np.ndarray) -> dict[str, np.ndarray]:
    x = np.sin(np.asarray(ids) * 1.7)
    return {"loss": 1.5 + x, "reward": (x + 1) / 2, "advantage": x, "correct": (x > 0).astype(float)}


def policy(name: str, clock: Clock, seed: int = 3):
    arms = Arms(KEYS, difficulty=DIFFICULTY)
    k = arms.num_arms
    kwargs = {
        "fixed": {"weights": [1, 2, 3]},
        "scheduled": {"weights": ["linear(peak=1)", "ramp(start=0.1, end=1)", "constant(0.5)"], "clock": clock},
        "ordered": {"pacing": CyclicalPacing(start=0.25, stage=0.1), "clock": clock},
        "dump": {"window": 4},
        "doremi": {"reference": np.full(N, 1.0)},
        "skillit": {"graph": np.eye(k) + 0.5 * np.eye(k, k=1), "window": 2},
        "loss_reweighting": {"temperature": "linear(peak=2, floor=0.25)", "clock": clock},
        "pudf": {"difficulty": (DIFFICULTY - 3) / 2},
        "pass_rate": {"low": 0.2, "high": 0.8, "closed": "both"},
        "replay": {"fraction": 0.3, "old": arms.names[0], "tokens_per_row": 5},
    }.get(name, {})
    return make_policy(name, arms, seed=seed, **kwargs)


class Pair:
    """A component with the clock it reads (saved together, as a regimen checkpoint would)."""

    def __init__(self, clock: Clock, part: Any) -> None:
        self.clock, self.part = clock, part

    def state_dict(self) -> dict[str, Any]:
        return {"clock": self.clock.state_dict(), "part": self.part.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clock.load_state_dict(state["clock"])
        self.part.load_state_dict(state["part"])


Case = Callable[[], tuple[Any, Callable[[], Any]]]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[name] = fn
        return fn
    return register


for _name in sorted(POLICIES):
    def _policy_case(name: str = _name):
        clock = Clock(budget=20)
        p = policy(name, clock)

        def step():
            ids = p.sample(8)
            p.observe(ids, **{k: v for k, v in signals(ids).items() if k in p.requires})
            clock.advance()
            return ids.tolist(), p.probabilities().tolist()
        return Pair(clock, p), step
    CASES[f"policy:{_name}"] = _policy_case


@case("clock")
def _clock():
    clock = Clock(budget="100 steps")

    def step():
        clock.report(samples=3, tokens=40)
        clock.advance()
        return clock.position, clock.counts["samples"]
    return clock, step


@case("scheduled_lr")
def _scheduled_lr():
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0, weight_decay=0.0)
    sched = ScheduledLR(opt, lr="warmup(cosine(peak=0.1), 20%)", weight_decay="ramp(start=0, end=0.1)",
                        clock=Clock(budget=10))

    def step():
        opt.step()
        sched.step()
        return [g["lr"] for g in opt.param_groups], [g["weight_decay"] for g in opt.param_groups]
    return sched, step


for _replacement in (True, False):
    def _sampler_case(replacement: bool = _replacement):
        clock = Clock(budget=20)
        sampler = CurriculumSampler(policy("dump", clock), batch_size=4, replacement=replacement, seed=7)
        stream = iter(sampler)

        def step():
            ids = [next(stream) for _ in range(3)]          # stops inside a batch
            sampler.observe(np.array(ids), advantage=signals(np.array(ids))["advantage"])
            return ids
        return sampler, step
    CASES[f"sampler:replacement={_replacement}"] = _sampler_case


@case("tracked_sampler")
def _tracked():
    sampler = CurriculumSampler(policy("doremi", Clock(budget=5)), batch_size=2, seed=1)
    tracked = TrackedSampler(sampler)
    holder = {"it": None}

    class Both:
        def state_dict(self):
            return {"sampler": sampler.state_dict(), "tracker": tracked.state_dict()}

        def load_state_dict(self, state):
            sampler.load_state_dict(state["sampler"])
            tracked.load_state_dict(state["tracker"])
            holder["it"] = None

    def step():
        if holder["it"] is None:
            holder["it"] = iter(tracked)
        while len(tracked._unconsumed) < 4:             # a loader keeps two batches drawn ahead
            next(holder["it"])
        used = tracked.consume(2)
        sampler.observe(used, loss=signals(used)["loss"])
        return used.tolist()
    return Both(), step


@case("regimen_link")
def _link():
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    sched = ScheduledLR(opt, lr="cosine(peak=0.1)", clock=Clock(budget=10))
    sampler = CurriculumSampler(policy("doremi", sched.clock), batch_size=2, seed=4)
    link = RegimenLink(scheduler=sched, policy=sampler.policy, sampler=sampler, tracker=TrackedSampler(sampler),
                       knobs={"budget": "ramp(start=8, end=16)"},
                       plans=[SequenceLengthWarmup(clock=sched.clock, length="ramp(start=8, end=64)")])
    holder = {"it": None}

    class Wrapped:
        def state_dict(self):
            return link.state_dict()

        def load_state_dict(self, state):
            link.load_state_dict(state)
            holder["it"] = None

    def step():
        if holder["it"] is None:
            holder["it"] = iter(link.tracker)
        link.begin_step()
        [next(holder["it"]) for _ in range(2)]
        sched.step()
        ids = link.tracker.consume(2)
        link.observe(ids, loss=np.array([1.0, 2.0]))
        return list(ids), link.values()["cadence/budget"]
    return Wrapped(), step


@case("replay")
def _replay():
    replay = Replay(0.05)

    def step():
        return replay.split(16, tokens_per_row=33)
    return replay, step


@case("hybrid_gate")
def _hybrid_gate():
    gate = HybridGate(sft_gate=1, off_policy_gate=2, group=4)

    def step():   # the gate holds no RNG: the inputs follow from its state
        rng = np.random.default_rng(int(gate.counts.sum()))
        gate.route((rng.random(12) < 0.4).astype(float), np.full(3, 4))
        return gate.stats()
    return gate, step


def _layers(n: int = 4) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [torch.nn.Linear(3, 3) for _ in range(n)]


for _plan_name, _make_plan in {
    "layer_freezing": lambda clock: LayerFreezing(_layers(), clock=clock, start="30%", level=0.75),
    "freezeout": lambda clock: FreezeOut(_layers(), clock=clock, t0=0.5),
    "randomized_progressive": lambda clock: RandomizedProgressive(_layers(), clock=clock, seed=3),
    "batch_size_schedule": lambda clock: BatchSizeSchedule(clock=clock, batch_size="ramp(start=4, end=32)",
                                                           base_batch_size=8),
    "sequence_length_warmup": lambda clock: SequenceLengthWarmup(clock=clock, length="ramp(start=8, end=64)"),
}.items():
    def _plan_case(make=_make_plan):
        clock = Clock(budget=20)
        plan = make(clock)

        def step():
            plan.update()
            values = plan.values()
            clock.advance()
            return values
        return Pair(clock, plan), step
    CASES[f"plan:{_plan_name}"] = _plan_case


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))


for _avg_name, _make_avg in {
    "ema": lambda model, clock: EMA(model, clock, half_life="10%"),
    "checkpoint_average": lambda model, clock: CheckpointAverage(model, clock, every="10%", keep=3, weights="linear"),
}.items():
    def _avg_case(make=_make_avg):
        clock = Clock(budget=20)
        model = _model()
        avg = make(model, clock)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(0)

        class Trio:                          # the model and its optimizer come from the caller's checkpoint
            def state_dict(self):
                return {"clock": clock.state_dict(), "avg": avg.state_dict(), "model": model.state_dict(),
                        "opt": opt.state_dict(), "gen": gen.get_state()}

            def load_state_dict(self, state):
                clock.load_state_dict(state["clock"])
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["opt"])
                gen.set_state(state["gen"])
                avg.load_state_dict(state["avg"])

        def step():
            opt.zero_grad()
            model(torch.randn(5, 3, generator=gen)).pow(2).mean().backward()
            opt.step()
            clock.advance()
            avg.update()
            return {k: v.tolist() for k, v in avg.averaged().items()}
        return Trio(), step
    CASES[f"averaging:{_avg_name}"] = _avg_case


ARM_OF = np.arange(N) % 3


def _correct(ids: np.ndarray, group: int) -> np.ndarray:
    rows = np.repeat(np.asarray(ids), group)
    return (np.sin(rows * 2.3 + np.arange(len(rows))) > 0).astype(float)


def _rollout(ids: np.ndarray) -> dict[str, np.ndarray]:
    correct = _correct(ids, 4)
    return {"correct": correct, "reward": correct, "advantage": correct - correct.mean()}


for _alloc_name, _make_alloc in {
    "fixed_allocation": lambda: FixedAllocation(4),
    "knapsack_allocation": lambda: KnapsackAllocation(ARM_OF, 4),
}.items():
    def _alloc_case(make=_make_alloc):
        alloc = make()

        def step():
            items = np.array([0, 1, 2, 4])
            sizes = alloc.sizes(items)
            alloc.observe(np.repeat(items, 4), _correct(items, 4))
            return sizes.tolist()
        return alloc, step
    CASES[f"rl:{_alloc_name}"] = _alloc_case


@case("rl:gvm_allocation")
def _gvm():
    alloc = GVMAllocation(ARM_OF, 4)

    def step():
        items = np.array([0, 1, 2, 4])
        sizes = alloc.sizes(items)
        alloc.observe(np.repeat(items, 4), _correct(items, 4), grad_norm=np.linspace(0.5, 2.0, 16))
        return sizes.tolist()
    return alloc, step


def _rollout_with_payloads(ids: np.ndarray) -> dict:
    out = _rollout(ids)
    out["replay"] = [{"item": int(i), "tokens": torch.arange(3) + int(i)} for i in ids]
    return out


def _hinted(ids: np.ndarray, levels: np.ndarray) -> dict[str, np.ndarray]:
    return {"correct": np.tile([1.0, 0.0, 0.0, 0.0] if levels[0] >= 2 else [0.0] * 4, len(ids))}


@case("rl:selector_new_methods")
def _selector_new_methods():
    selector = PromptSelector(policy("uniform", Clock(budget=5)), seed=1, dynamic=DynamicSampling(max_extra_rounds=1),
                              pcl=PCL(ValueModel(np.eye(N))), replay=ReplayBuffer(4, seed=2), hints=Hints(N))

    def step():
        picks = selector.select(4, _rollout_with_payloads, hinted=_hinted)
        return [picks.ids.tolist(), picks.levels, [p["item"] for p in picks.replayed]]
    return selector, step


@case("rl:predictive_filter")
def _predictive():
    filt = PredictiveFilter(N, seed=2)

    def step():
        ids = np.arange(0, N, 2)
        admitted = filt.admit(ids)
        filt.observe(np.repeat(ids, 4), (np.repeat(ids, 4) % 3 == 0).astype(float))
        return admitted.tolist()
    return filt, step


for _selector_name, _make_selector in {
    "selector": lambda: PromptSelector(policy("dump", Clock(budget=5)), seed=1),
    "selector_filtered": lambda: PromptSelector(policy("pass_rate", Clock(budget=5)), seed=1,
                                                predictive=PredictiveFilter(N, seed=3),
                                                dynamic=DynamicSampling(0.2, 0.8, max_extra_rounds=2)),
    "selector_source": lambda: SelectorSource(PromptSelector(policy("sec", Clock(budget=5)), seed=1)),
}.items():
    def _selector_case(make=_make_selector):
        part = make()

        def step():
            if isinstance(part, SelectorSource):
                return part.selector.select(4, _rollout).ids.tolist()
            return part.select(4, _rollout).ids.tolist()
        return part, step
    CASES[f"rl:{_selector_name}"] = _selector_case


@case("rl:grpo_trainer")
def _grpo():
    from cadence.curricula import DUMP
    from cadence.labs.rl.grpo import GRPOConfig, GRPOTrainer, suite_arms
    from cadence.labs.rl.tasks import TaskSuite
    from cadence.labs.rl.warmstart import WarmStartConfig
    from cadence.labs.tinygpt import TinyGPT

    torch.set_num_threads(1)
    suite = TaskSuite(families=("add",), levels=(1,), items_per_arm=8, eval_per_arm=2, seed=0)
    warm = WarmStartConfig(n_layer=1, n_head=1, d_model=8)
    torch.manual_seed(0)
    model = TinyGPT(warm.model_config(suite))
    config = GRPOConfig(steps=6, prompts_per_step=2, group=2, eval_every=100, lr="constant(1e-3)")
    trainer = GRPOTrainer(model, suite, SelectorSource(PromptSelector(DUMP(suite_arms(suite), seed=1), seed=1)),
                          config, max_new_tokens=warm.max_new_tokens(suite),
                          allocator=KnapsackAllocation(suite.arm_of, 2), seed=5)

    def step():
        trainer.step()
        return [float(p.detach().double().sum()) for p in trainer.model.parameters()][:3]
    return trainer, step


@case("pretrain:document_stream")
def _stream():
    from cadence.labs.pretrain.corpus import load_corpus
    from cadence.labs.pretrain.stream import DocumentStream

    stream = DocumentStream(load_corpus(), batch_size=2, context=8, seed=3, order=np.arange(40)[::-1])

    def step():
        x, y = stream.next_batch()
        return x.tolist()
    return stream, step


def _safe_roundtrip(state: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def comparable(value: Any) -> Any:
    """State as nested plain values (tensors and arrays with their dtype), wall-clock seconds left out."""
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), value.tolist())
    if isinstance(value, np.ndarray):
        return ("ndarray", str(value.dtype), value.tolist())
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, (list, tuple)):
        return [comparable(v) for v in value]
    return value


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_loads_weights_only_and_resumes_exactly(name):
    straight, step_straight = CASES[name]()
    for _ in range(3):
        step_straight()
    saved = straight.state_dict()
    loaded = _safe_roundtrip(copy.deepcopy(saved))
    assert comparable(loaded) == comparable(saved)            # exact: nothing rounded, dtypes kept

    resumed, step_resumed = CASES[name]()
    step_resumed()                                            # the fresh one has moved on: loading resets it
    resumed.load_state_dict(loaded)
    for _ in range(3):
        assert step_resumed() == step_straight()
    assert comparable(_safe_roundtrip(resumed.state_dict())) == comparable(_safe_roundtrip(straight.state_dict()))


def test_states_saved_with_numpy_arrays_still_load():
    """States from before (numpy arrays inside) load and resume as the plain ones do."""
    straight, step_straight = CASES["policy:dump"]()
    for _ in range(3):
        step_straight()
    state = straight.state_dict()
    legacy = {**state, "part": {k: np.asarray(v) if isinstance(v, list) and k not in ("arms",) else v
                                for k, v in state["part"].items()}}
    resumed, step_resumed = CASES["policy:dump"]()
    resumed.load_state_dict(legacy)
    assert [step_resumed() for _ in range(2)] == [step_straight() for _ in range(2)]

    model = _model()
    ema = EMA(model, Clock(budget=10), half_life="10%")
    old = {**ema.state_dict(), "average": {n: t.numpy().copy() for n, t in ema.state_dict()["average"].items()}}
    fresh = EMA(_model(), Clock(budget=10), half_life="10%")
    fresh.load_state_dict(old)
    assert all(torch.equal(a, b) for a, b in zip(fresh.averaged().values(), ema.averaged().values()))
