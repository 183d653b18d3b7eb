"""How much a live forecast slows a training step (goal: at most 5%), with the fit in a worker process
(the default) and in the background thread itself, side by side.

A small PyTorch model (an MLP, one torch thread) trains on random data; every step also feeds a
:class:`cadence.forecast.live.LiveForecast` with a loss from a known annealing law (so every
background fit succeeds and costs what a real one does). Blocks of steps without the forecast,
with ``worker="thread"``, with ``worker="process"`` (both with ``max_share=1``: a fit every
``--every`` steps, i.e. running most of the time) and with the defaults (a worker process, fits
at most 10% of the wall time) rotate (``--blocks`` rounds), so machine load changes hit all arms
alike. The worker process is started (and its imports done) before measuring.

Prints the median step time of each arm, the ratios to no forecast, the median over the steps
taken while a fit was running, the longest ``observe`` call, the ratio of the training thread's
own CPU time per step (near 1: the slowdown is waiting, for the GIL or for a core), and that both
workers' final forecasts are identical.

    python benchmarks/live_forecast_overhead.py                   # ~3 min on one free core
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
    p.add_argument("--blocks", type=int, default=6, help="rounds of four blocks (one per arm)")
    p.add_argument("--every", type=int, default=20, help="steps between background fits")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(args.hidden, args.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.hidden, args.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.hidden, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(args.batch, args.hidden), torch.randn(args.batch, 1)
    steps = 4 * args.block * args.blocks
    lr = lr_per_step("warmup(cosine(peak=1e-3, floor=0.1), 2%)", steps)
    law = AnnealingLaw(L0=2.0, A=0.8, alpha=0.4, C=0.3, lam=0.99, lr_ref=1e-3, steps_ref=steps)
    curve = law.predict(lr) * (1 + 1e-3 * np.random.default_rng(0).standard_normal(steps))
    forecasts = {"thread": LiveForecast(lr, every=args.every, worker="thread", max_share=1.0),
                 "process": LiveForecast(lr, every=args.every, worker="process", max_share=1.0),
                 "process, max_share=0.1": LiveForecast(lr, every=args.every)}
    forecasts["process, max_share=0.1"].worker.forecast(np.arange(100, 201), curve[99:200], lr)
    forecasts["process"].worker.forecast(np.arange(100, 201), curve[99:200], lr)  # start the worker first

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(20):  # warm up the allocator and kernels
        train_step()
    arms = ("none", "thread", "process", "process, max_share=0.1")
    times: dict[str, list[float]] = {a: [] for a in arms}
    cpu: dict[str, list[float]] = {a: [] for a in arms}  # the training thread's own CPU time per step
    busy: dict[str, list[float]] = {a: [] for a in arms[1:]}
    step = 0
    for b in range(args.blocks):
        for arm in arms[b % 4:] + arms[:b % 4]:  # rotate which arm goes first
            forecast = forecasts.get(arm)
            for _ in range(args.block):
                step += 1
                running = forecast is not None and forecast._thread is not None and forecast._thread.is_alive()
                started, started_cpu = time.perf_counter(), time.thread_time()
                train_step()
                if forecast is not None:
                    forecast.observe(step, float(curve[step - 1]))
                took = time.perf_counter() - started
                times[arm].append(took)
                cpu[arm].append(time.thread_time() - started_cpu)
                if running:
                    busy[arm].append(took)
            if forecast is not None:
                forecast.wait()  # no fit spills into the next block
    base = float(np.median(times["none"]))
    print(f"{len(times['none'])} steps per arm, a fit every {args.every} steps; median step without the forecast "
          f"{base * 1e3:.2f} ms")
    for arm in arms[1:]:
        f, med = forecasts[arm], float(np.median(times[arm]))
        mean = float(np.mean(times[arm])) / float(np.mean(times["none"]))
        line = (f"worker={arm}: median step {med * 1e3:.2f} ms, ratio {med / base:.3f} "
                f"(goal <= 1.05: {'met' if med / base <= 1.05 else 'MISSED'}), mean step ratio {mean:.3f}; "
                f"{f.fits} fits")
        if busy[arm]:
            line += f"; while a fit ran ({len(busy[arm])} steps) ratio {np.median(busy[arm]) / base:.3f}"
        print(line + f"; longest observe {f.slowest_observe * 1e3:.2f} ms; training thread's CPU per step: ratio "
              f"{np.median(cpu[arm]) / np.median(cpu['none']):.3f}")
    final = {}
    for arm in arms[1:]:
        forecasts[arm].load_state_dict(forecasts["thread"].state_dict())
        forecasts[arm].refit()  # all on the same points: the same forecast
        forecasts[arm].wait()
        final[arm] = forecasts[arm].values()["cadence/forecast/final_loss"]
        forecasts[arm].close()
    print(f"final forecasts on the same points identical: {len(set(final.values())) == 1}")

if __name__ == "__main__":
    main()
