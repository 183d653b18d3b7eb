"""Overhead of cadence schedules: one evaluation, and a ``ScheduledLR.step()`` vs ``LambdaLR.step()``.

Both schedulers drive identical AdamW optimizers with the same cosine-with-warmup shape; rounds
alternate between them so both see the same machine load, and the ratio of medians is reported.

    python benchmarks/schedule_overhead.py            # full run (about 20 s)
    python benchmarks/schedule_overhead.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from cadence import Clock, parse
from cadence.optim import ScheduledLR

SPECS = {
    "cosine": "cosine(peak=3e-4, floor=0.1)",
    "wsd": "wsd(peak=3e-4, warmup=1%, decay=20%, shape=1-sqrt, floor=0.1)",
    "warmup(cosine)": "warmup(cosine(peak=3e-4), 2%)",
    "join of three": "join(warmup(constant(3e-4), 1%), cosine(peak=3e-4), constant(3e-5), at=[10%, 90%])",
}


def time_evaluations(n: int, rounds: int) -> dict[str, float]:
    """Median µs per ``schedule(clock)`` call (position and cached axis read from a live clock)."""
    out = {}
    for name, spec in SPECS.items():
        s = parse(spec)
        clock = Clock(budget=n)
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(n):
                s(clock)
            samples.append((time.perf_counter() - start) / n * 1e6)
        out[name] = statistics.median(samples)
    return out


def time_binding_vs_lambdalr(n: int, rounds: int) -> tuple[float, float]:
    """Median µs per scheduler step for ``LambdaLR`` and ``ScheduledLR`` on identical optimizers."""
    warmup, total = n // 50, n * rounds

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    def make_opt() -> torch.optim.Optimizer:
        return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(4))], lr=3e-4)

    lam = torch.optim.lr_scheduler.LambdaLR(make_opt(), factor)
    ours = ScheduledLR(make_opt(), lr=f"warmup(cosine(peak=3e-4), {warmup} steps)", clock=Clock(budget=total))
    for opt in (lam.optimizer, ours.optimizer):
        opt.step()  # silence the "scheduler before optimizer" warning
    lam_t, ours_t = [], []
    for _ in range(rounds):
        for sched, samples in ((lam, lam_t), (ours, ours_t)):
            start = time.perf_counter()
            for _ in range(n):
                sched.step()
            samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(lam_t), statistics.median(ours_t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few thousand calls only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, rounds = (2_000, 3) if args.quick else (20_000, 9)
    print(f"one evaluation, median of {rounds} rounds of {n:,} calls (goal <= 2 µs)")
    for name, us in time_evaluations(n, rounds).items():
        print(f"  {name:<16} {us:6.2f} µs")
    lam, ours = time_binding_vs_lambdalr(n, rounds)
    print(f"scheduler step, median of {rounds} interleaved rounds of {n:,} steps (goal: ratio <= 1.2)")
    print(f"  LambdaLR        {lam:6.2f} µs")
    print(f"  ScheduledLR     {ours:6.2f} µs   ratio {ours / lam:.2f}x")


if __name__ == "__main__":
    main()
