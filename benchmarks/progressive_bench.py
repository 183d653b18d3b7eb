"""Progressive layer plans vs full updates: wall-clock time and steps to a target accuracy.

A deep MLP learns a random teacher's labels (generated data, no downloads). Hidden and input
matrices are trained with ``torch.optim.Muon``, biases and the output layer with AdamW, all under a
cosine LR over the budget. Each plan runs on the same seeds, side by side in one process, and is
reported as ratios to the full-update run of the same seed: steps to the target test accuracy,
training seconds to it (evaluation excluded), and seconds per step. Timings are CPU, one thread.

    python benchmarks/progressive_bench.py                 # the default micro experiment
    python benchmarks/progressive_bench.py --quick         # a tiny smoke run
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from cadence import Clock
from cadence.optim import ScheduledLR
from cadence.progress import Progress
from cadence.progressive import FreezeOut, LayerFreezing, LayerPlan, RandomizedProgressive, leaf_layers


@dataclass(frozen=True)
class Setup:
    depth: int = 6
    width: int = 64
    inputs: int = 32
    classes: int = 8
    batch: int = 128
    budget: int = 300
    eval_every: int = 15
    target: float = 0.78
    optimizer: str = "muon"
    muon_lr: float = 0.02
    adamw_lr: float = 3e-3


@dataclass
class Result:
    steps_to_target: float  # nan when the target was never reached
    seconds_to_target: float
    seconds_per_step: float
    final_accuracy: float
    curve: list[tuple[int, float]]  # (step, test accuracy) at every evaluation


def make_data(setup: Setup, seed: int) -> tuple[torch.Tensor, ...]:
    """A random two-layer teacher labels Gaussian inputs; 16k training and 4k test examples."""
    g = torch.Generator().manual_seed(10_000 + seed)
    w1 = torch.randn(setup.inputs, 64, generator=g) / math.sqrt(setup.inputs)
    w2 = torch.randn(64, setup.classes, generator=g) / 8.0
    x = torch.randn(20_480, setup.inputs, generator=g)
    y = (torch.tanh(x @ w1) @ w2).argmax(1)
    return x[:16_384], y[:16_384], x[16_384:], y[16_384:]


def make_model(setup: Setup, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    mods: list[nn.Module] = [nn.Linear(setup.inputs, setup.width), nn.ReLU()]
    for _ in range(setup.depth - 2):
        mods += [nn.Linear(setup.width, setup.width), nn.ReLU()]
    mods.append(nn.Linear(setup.width, setup.classes))
    return nn.Sequential(*mods)


TARGETS = {"muon": 0.78, "adamw": 0.70}
"""Default targets per optimizer: the full-update run of seed 0 reaches each about 60% into its budget."""

PlanMaker = Callable[[list[nn.Module], Clock], LayerPlan | None]

PLANS: dict[str, tuple[PlanMaker, float]] = {  # name → (plan, budget as a multiple of the full run's)
    "full": (lambda layers, clock: None, 1.0),
    "drop-muon (uniform cutoff)": (lambda layers, clock: RandomizedProgressive(layers, clock=clock, seed=0), 1.0),
    "drop-muon, 2× steps": (lambda layers, clock: RandomizedProgressive(layers, clock=clock, seed=0), 2.0),
    "layer freezing (start 50%)": (lambda layers, clock: LayerFreezing(layers, clock=clock, start=0.5, level=1.0), 1.0),
    "freezeout (cubic, t0=0.8)": (lambda layers, clock: FreezeOut(layers, clock=clock, t0=0.8, shape="cubic"), 1.0),
}

def run(setup: Setup, name: str, seed: int) -> Result:
    x, y, x_test, y_test = make_data(setup, seed)
    model = make_model(setup, seed)
    layers = leaf_layers(model)
    make_plan, budget_scale = PLANS[name]
    budget = round(setup.budget * budget_scale)
    clock = Clock(budget=budget)
    plan = make_plan(layers, clock)
    head = {id(p) for p in layers[-1].parameters()}

    def is_muon(p: torch.Tensor) -> bool:  # Muon for hidden and input matrices, AdamW for biases and the head
        return setup.optimizer == "muon" and p.ndim == 2 and id(p) not in head

    freezeout = isinstance(plan, FreezeOut)  # one param group per layer, each with its own annealed LR
    optimizers, lrs = [], []
    for uses_muon in (True, False):
        select = (lambda p: is_muon(p) == uses_muon)  # noqa: E731
        params = plan.param_groups(select) if freezeout else [p for p in model.parameters() if select(p)]
        if not params:
            continue
        opt = torch.optim.Muon(params, lr=0.0) if uses_muon else torch.optim.AdamW(params, lr=0.0)
        peak = setup.muon_lr if uses_muon else setup.adamw_lr
        lr = plan.lr_schedules(opt, peak) if freezeout else f"cosine(peak={peak})"
        lrs.append(ScheduledLR(opt, lr=lr, clock=clock, advance_clock=not lrs))  # the first one moves the clock
        optimizers.append(opt)
    order = np.random.default_rng(seed).integers(0, len(x), size=(budget, setup.batch))
    train_seconds, reached, reached_seconds, accuracy, curve = 0.0, math.nan, math.nan, 0.0, []
    for step in range(budget):
        start = time.perf_counter()
        if plan is not None:
            plan.update()
        rows = torch.from_numpy(order[step])
        nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad()
        for lr in lrs:
            lr.step()
        train_seconds += time.perf_counter() - start
        if (step + 1) % setup.eval_every == 0 or step + 1 == budget:
            with torch.no_grad():
                accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
            curve.append((step + 1, accuracy))
            if math.isnan(reached) and accuracy >= setup.target:
                reached, reached_seconds = step + 1, train_seconds
    return Result(reached, reached_seconds, train_seconds / budget, accuracy, curve)


def geometric_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return math.exp(sum(map(math.log, finite)) / len(finite)) if finite else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=Setup.budget)
    parser.add_argument("--target", type=float, default=None,
                        help=f"test accuracy to reach (default: {TARGETS}, about 60%% into the full runs)")
    parser.add_argument("--width", type=int, default=Setup.width)
    parser.add_argument("--batch", type=int, default=Setup.batch)
    parser.add_argument("--optimizer", choices=("muon", "adamw"), default="muon",
                        help="muon: Muon on hidden matrices, AdamW on the rest; adamw: AdamW everywhere")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run (2 seeds, small model)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    target = TARGETS[args.optimizer] if args.target is None else args.target
    setup = Setup(width=args.width, batch=args.batch, budget=args.budget, target=target, optimizer=args.optimizer)
    seeds = args.seeds
    if args.quick:
        setup, seeds = Setup(depth=4, width=32, budget=60, eval_every=10, target=0.3, optimizer=args.optimizer), 2
    warm = nn.Parameter(torch.ones(2, 2))  # Muon's first step pays one-off start-up costs: pay them untimed
    warm.grad = torch.ones(2, 2)
    torch.optim.Muon([warm]).step()
    results: dict[str, list[Result]] = {name: [] for name in PLANS}
    with Progress() as progress:
        bar = progress.task("runs", total=seeds * len(PLANS))
        for seed in range(seeds):  # every plan on a seed before the next seed: timings side by side
            for name in PLANS:
                results[name].append(run(setup, name, seed))
                bar.advance()
    full = results["full"]
    print(f"\n{setup}\nseeds: {seeds}; ratios are to 'full' on the same seed (geometric mean over seeds where both "
          f"reached the target); < 1 is better for time and steps\n")
    print("| plan | reached target | steps to target (ratio) | time to target (ratio) | time per step (ratio) | "
          "final test acc (mean ± sd) |")
    print("|---|---|---|---|---|---|")
    for name, res in results.items():
        pairs = [(r, f) for r, f in zip(res, full)
                 if math.isfinite(r.steps_to_target) and math.isfinite(f.steps_to_target)]
        step_ratio = geometric_mean([r.steps_to_target / f.steps_to_target for r, f in pairs])
        time_ratio = geometric_mean([r.seconds_to_target / f.seconds_to_target for r, f in pairs])
        per_step = geometric_mean([r.seconds_per_step / f.seconds_per_step for r, f in zip(res, full)])
        acc = np.array([r.final_accuracy for r in res])
        n_reached = sum(math.isfinite(r.steps_to_target) for r in res)
        if n_reached:
            steps = f"{np.nanmean([r.steps_to_target for r in res]):.0f} ({step_ratio:.2f}×)"
            seconds = f"{np.nanmean([r.seconds_to_target for r in res]):.2f} s ({time_ratio:.2f}×)"
        else:
            steps = seconds = "not reached"
        print(f"| {name} | {n_reached}/{seeds} | {steps} | {seconds} | "
              f"{1e3 * np.mean([r.seconds_per_step for r in res]):.1f} ms ({per_step:.2f}×) | "
              f"{acc.mean():.3f} ± {acc.std():.3f} |")

if __name__ == "__main__":
    main()
