"""Every plan resumes exactly: N steps straight equal N/2 + save + load into fresh objects + N/2."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
from torch import nn

from cadence import Clock
from cadence.labs.tinygpt import GPTConfig, TinyGPT
from cadence.optim import ScheduledLR
from cadence.progressive import (
    BatchSizeSchedule, FreezeOut, LayerFreezing, Plan, RandomizedProgressive, SequenceLengthWarmup, leaf_layers,
)

STEPS = 12
DATA = torch.Generator().manual_seed(0)
X = torch.randn(512, 6, generator=DATA)
Y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
TOKENS = torch.randint(0, 16, (8, 17), generator=DATA)


@dataclass
class Run:
    model: nn.Module
    optimizers: list[torch.optim.Optimizer]
    sched: ScheduledLR
    plan: Plan
    step: Callable[[], torch.Tensor]  # computes the loss of this step's batch

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opts": [o.state_dict() for o in self.optimizers],
                "sched": self.sched.state_dict(), "plan": self.plan.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for o, s in zip(self.optimizers, state["opts"]):
            o.load_state_dict(s)
        self.sched.load_state_dict(state["sched"])
        self.plan.load_state_dict(state["plan"])


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                         nn.Linear(16, 3))


def classify(model: nn.Module, clock: Clock, rows: int = 32) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        start = int(clock.samples) % (len(X) - rows)
        clock.report(samples=rows)
        return nn.functional.cross_entropy(model(X[start:start + rows]), Y[start:start + rows])
    return step


def muon_and_adamw(model: nn.Module) -> list[torch.optim.Optimizer]:
    return [torch.optim.Muon([p for p in model.parameters() if p.ndim == 2], lr=0.02),
            torch.optim.AdamW([p for p in model.parameters() if p.ndim != 2], lr=0.01)]


def layer_run(make_plan: Callable[[list[nn.Module], Clock], Plan]) -> Run:
    model, clock = mlp(), Clock(budget=STEPS)
    plan = make_plan(leaf_layers(model), clock)
    opts = muon_and_adamw(model)
    return Run(model, opts, ScheduledLR(opts[0], lr="cosine(peak=0.02)", clock=clock), plan, classify(model, clock))


def freezeout_run() -> Run:
    model, clock = mlp(), Clock(budget=STEPS)
    plan = FreezeOut(leaf_layers(model), clock=clock, t0=0.3, shape="linear")
    opt = torch.optim.AdamW(plan.param_groups(), lr=0.0)
    sched = ScheduledLR(opt, lr=plan.lr_schedules(opt, 0.01), clock=clock)
    return Run(model, [opt], sched, plan, classify(model, clock))


def gpt_run(truncate: bool) -> Run:
    torch.manual_seed(0)
    model, clock = TinyGPT(GPTConfig(vocab_size=16, context=16, n_layer=1, n_head=2, d_model=16)), Clock(budget=STEPS)
    plan = SequenceLengthWarmup(clock=clock, length="ramp(start=4, end=16, over=60%)", multiple_of=4, truncate=truncate)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def step() -> torch.Tensor:
        batch = plan.apply({"x": TOKENS[:, :-1], "y": TOKENS[:, 1:]})
        return nn.functional.cross_entropy(model(batch["x"]).flatten(0, 1), batch["y"].flatten())
    return Run(model, [opt], ScheduledLR(opt, lr="cosine(peak=1e-2)", clock=clock), plan, step)


def batch_run() -> Run:
    model, clock = mlp(), Clock(budget=STEPS)
    plan = BatchSizeSchedule(clock=clock, batch_size="ramp(start=8, end=64)", multiple_of=8, rule="sqrt")
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)

    def step() -> torch.Tensor:
        start = int(clock.samples) % (len(X) - plan.batch_size)
        rows = slice(start, start + plan.batch_size)
        return nn.functional.cross_entropy(model(X[rows]), Y[rows])
    return Run(model, [opt], ScheduledLR(opt, lr=plan.coupled_lr("cosine(peak=1e-2)"), clock=clock), plan, step)


BUILDERS: dict[str, Callable[[], Run]] = {
    "freezing": lambda: layer_run(lambda layers, clock: LayerFreezing(layers, clock=clock, start=0.25)),
    "random_progressive": lambda: layer_run(lambda layers, clock: RandomizedProgressive(layers, clock=clock, seed=4)),
    "freezeout": freezeout_run,
    "seq_truncate": lambda: gpt_run(truncate=True),
    "seq_reshape": lambda: gpt_run(truncate=False),
    "batch_size": batch_run,
}


def train(build: Callable[[], Run], resume_at: int | None = None) -> tuple[list[torch.Tensor], list[dict[str, float]]]:
    run, logged = build(), []
    for i in range(STEPS):
        if i == resume_at:
            buffer = io.BytesIO()
            torch.save(run.state(), buffer)
            run = build()  # fresh objects, as in a new process
            buffer.seek(0)
            run.load(torch.load(buffer, weights_only=False))
        run.plan.update()
        json.dumps(run.plan.state_dict())  # plain types only
        logged.append(run.plan.values())
        run.step().backward()
        for opt in run.optimizers:
            opt.step()
            opt.zero_grad()
        run.sched.step()
    return [p.detach().clone() for p in run.model.parameters()], logged


@pytest.mark.parametrize("name", list(BUILDERS))
def test_stop_and_resume_gives_identical_parameters(name: str) -> None:
    straight, logged = train(BUILDERS[name])
    resumed, logged_resumed = train(BUILDERS[name], resume_at=STEPS // 2)
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))
    assert logged == logged_resumed
    assert len({tuple(v.items()) for v in logged}) > 1  # the plan actually changed something during the run
