"""How the shipped intervals cover every held-out schedule, and whether a final-loss interval
calibrated on one family of published curves holds on another.

    nice -n 15 python benchmarks/final_interval_families.py [--law annealing]

First, per set and over all sets, the share of held-out points and of final losses inside the
pooled interval (``INTERVAL_SCALE``) and the run envelope (``RUNS_INTERVAL_SCALE``), both at their
shipped scales. Then the run envelope at the final point (``FitResult.final_interval``'s default) is scaled by the
candidate (``evaluate.SCALES``) whose share of held-out final losses inside, pooled over one
family's sets, is nearest 80% (the smaller on a tie); the scale is then judged on the other
family's held-out final losses. Both directions are printed. A check of how far a calibration
travels, not a default: the shipped scale is ``RUNS_INTERVAL_SCALE``, decided on the 25M curves.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from cadence.forecast.evaluate import SCALES, Setting, held_out
from cadence.forecast.fit import DEFAULT_LEVEL, INTERVAL_SCALE, RUNS_INTERVAL_SCALE
from cadence.forecast.published import load_curves

FAMILIES = {
    "Multi-Power Law (25M, 100M)": ("multipower-25m", "multipower-100m"),
    "Schaipp et al. (124M at 1e-3, 2e-3, 5e-4; 210M)": ("schaipp-124m", "schaipp-124m-lr2e-3", "schaipp-124m-lr5e-4",
                                                        "schaipp-210m"),
}


def finals_inside(scores, scale: float) -> tuple[int, int]:
    """Held-out final losses inside the run envelope at ``scale``, and their number, over ``scores``."""
    inside = [c for s in scores for c in s.runs_final_covered[scale]]
    return sum(inside), len(inside)


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--law", default="annealing")
    args = parser.parse_args()
    scores = {family: [held_out(load_curves(name), Setting(law=args.law)) for name in names]
              for family, names in FAMILIES.items()}
    print("| set | pooled: points | pooled: finals | run envelope: points | run envelope: finals |")
    print("|---|---|---|---|---|")
    every = [(name, s) for family, names in FAMILIES.items() for name, s in zip(names, scores[family])]
    for name, s in every:
        print(f"| {name} | {s.mean_coverage(INTERVAL_SCALE):.0%} | {sum(s.final_covered[INTERVAL_SCALE])}/{len(s.names)} "
              f"| {s.mean_coverage(RUNS_INTERVAL_SCALE, 'runs'):.0%} | "
              f"{sum(s.runs_final_covered[RUNS_INTERVAL_SCALE])}/{len(s.names)} |")
    points = {m: [c for _, s in every for c in s.covers(m)[0][k]] for m, k in (("pooled", INTERVAL_SCALE),
                                                                              ("runs", RUNS_INTERVAL_SCALE))}
    finals = {m: [c for _, s in every for c in s.covers(m)[1][k]] for m, k in (("pooled", INTERVAL_SCALE),
                                                                              ("runs", RUNS_INTERVAL_SCALE))}
    print(f"| all held-out schedules ({len(finals['runs'])}) | {np.mean(points['pooled']):.0%} | "
          f"{sum(finals['pooled'])}/{len(finals['pooled'])} | {np.mean(points['runs']):.0%} | "
          f"{sum(finals['runs'])}/{len(finals['runs'])} |\n")
    print("| decided on | scale | finals inside there | judged on | finals inside there |")
    print("|---|---|---|---|---|")
    for decide, judge in (tuple(FAMILIES), tuple(FAMILIES)[::-1]):
        def share(scale: float) -> float:
            inside, n = finals_inside(scores[decide], scale)
            return inside / n
        scale = min(SCALES, key=lambda s: (abs(share(s) - DEFAULT_LEVEL), s))
        a, n = finals_inside(scores[decide], scale)
        b, m = finals_inside(scores[judge], scale)
        print(f"| {decide} | {scale:g} | {a}/{n} ({a / n:.0%}) | {judge} | {b}/{m} ({b / m:.0%}) |", flush=True)


if __name__ == "__main__":
    main()
