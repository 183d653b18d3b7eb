"""How much a live forecast slows a training step (goal: at most 5%).

A small PyTorch model (an MLP, one torch thread) trains on random data; every step also feeds a
:class:`cadence.forecast.live.LiveForecast` with a loss from a known annealing law (so every
background fit succeeds and costs what a real one does). Blocks of steps without and with the
forecast alternate (``--blocks`` pairs), so machine load changes hit both sides alike; the forecast
refits every ``--every`` steps, i.e. its background thread is busy most of the time.

Prints the median step time without and with the forecast, their ratio, the median over the
steps taken while a fit was running, and the longest ``observe`` call.

    python benchmarks/live_forecast_overhead.py                   # ~2 min on one free core
    python benchmarks/live_forecast_overhead.py --hidden 256 --blocks 4
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cadence.forecast import AnnealingLaw, lr_per_step
from cadence.forecast.live import LiveForecast


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=1024, help="MLP width (sets the step time)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--block", type=int, default=100, help="steps per block")
    p.add_argument("--blocks", type=int, default=6, help="pairs of blocks (without, with)")
    p.add_argument("--every", type=int, default=20, help="steps between background fits")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(args.hidden, args.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.hidden, args.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.hidden, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(args.batch, args.hidden), torch.randn(args.batch, 1)
    steps = 2 * args.block * args.blocks
    lr = lr_per_step("warmup(cosine(peak=1e-3, floor=0.1), 2%)", steps)
    law = AnnealingLaw(L0=2.0, A=0.8, alpha=0.4, C=0.3, lam=0.99, lr_ref=1e-3, steps_ref=steps)
    curve = law.predict(lr) * (1 + 1e-3 * np.random.default_rng(0).standard_normal(steps))
    forecast = LiveForecast(lr, every=args.every)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(20):  # warm up the allocator and kernels
        train_step()
    plain, fed, busy = [], [], []
    step = 0
    for _ in range(args.blocks):
        for with_forecast in (False, True):
            for _ in range(args.block):
                step += 1
                running = forecast._thread is not None and forecast._thread.is_alive()
                started = time.perf_counter()
                train_step()
                if with_forecast:
                    forecast.observe(step, float(curve[step - 1]))
                took = time.perf_counter() - started
                (fed if with_forecast else plain).append(took)
                if with_forecast and running:
                    busy.append(took)
            forecast.wait()  # no fit spills into the next plain block
    base, with_f = float(np.median(plain)), float(np.median(fed))
    print(f"steps: {len(plain)} without, {len(fed)} with the live forecast (fit every {args.every} steps, "
          f"{forecast.fits} fits done)")
    print(f"median step: {base * 1e3:.2f} ms without, {with_f * 1e3:.2f} ms with: ratio {with_f / base:.3f} "
          f"(goal <= 1.05: {'met' if with_f / base <= 1.05 else 'MISSED'})")
    if busy:
        print(f"median step while a fit was running ({len(busy)} steps): {np.median(busy) * 1e3:.2f} ms "
              f"(ratio {np.median(busy) / base:.3f})")
    print(f"longest observe call: {forecast.slowest_observe * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
