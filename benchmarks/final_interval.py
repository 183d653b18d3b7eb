"""The last-point final-loss interval (``FitResult.final_interval(lr, "last")``) against the run
envelope at the final point (``final_interval``'s default).

    nice -n 15 python benchmarks/final_interval.py [--law annealing] [--sets multipower-25m,...]

Each set is fitted once with the shipped setting (the protocol's fitted curves; nothing tuned on the
held-out ones). The last-point interval's scale is decided on the FIRST set only (the candidate
whose share of held-out final losses inside is nearest 80%, the smaller on a tie) and judged on the
others, next to the run envelope at its shipped scale (``RUNS_INTERVAL_SCALE``) at the final point.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cadence.forecast.evaluate import SCALES, Setting, choose_scale, held_out
from cadence.forecast.fit import DEFAULT_LEVEL, RUNS_INTERVAL_SCALE
from cadence.forecast.published import load_curves


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--law", default="annealing")
    parser.add_argument("--sets", default="multipower-25m,multipower-100m,schaipp-124m,schaipp-210m")
    args = parser.parse_args()
    sets = args.sets.split(",")
    scores = {}
    for name in sets:
        started = time.process_time()
        scores[name] = held_out(load_curves(name), Setting(law=args.law))
        s = scores[name]
        print(f"{name} ({args.law}): fitted in {time.process_time() - started:.1f} CPU-s; held out: "
              + ", ".join(f"{n} {f:+.3%}" for n, f in zip(s.names, s.final)), flush=True)
        print("  final-loss interval, finals inside per scale: "
              + ", ".join(f"{k:g}: {sum(v)}/{len(v)}" for k, v in s.final_interval_covered.items())
              + f"; half-width per unit scale {s.final_width:.3%}", flush=True)
        print(f"  run envelope (scale {RUNS_INTERVAL_SCALE:g}): {s.mean_coverage(RUNS_INTERVAL_SCALE, 'runs'):.0%} of "
              f"points, finals {sum(s.runs_final_covered[RUNS_INTERVAL_SCALE])}/{len(s.names)}; half-width "
              f"{RUNS_INTERVAL_SCALE * s.runs_width:.3%}", flush=True)
    scale = choose_scale(scores[sets[0]], DEFAULT_LEVEL, "final")
    print(f"\nfinal-loss interval scale decided on {sets[0]}: {scale:g} (candidates {SCALES})")
    print("| judged on | last-point final-loss interval: finals inside | half-width "
          "| run envelope at the final point | half-width |")
    print("|---|---|---|---|---|")
    final_in = runs_in = n = 0
    widths: dict[str, list[float]] = {"final": [], "runs": []}
    for name in sets[1:]:
        s = scores[name]
        a, b = sum(s.final_interval_covered[scale]), sum(s.runs_final_covered[RUNS_INTERVAL_SCALE])
        final_in, runs_in, n = final_in + a, runs_in + b, n + len(s.names)
        widths["final"].append(scale * s.final_width)
        widths["runs"].append(RUNS_INTERVAL_SCALE * s.runs_width)
        print(f"| {name} | {a}/{len(s.names)} | ±{scale * s.final_width:.3%} | {b}/{len(s.names)} | "
              f"±{RUNS_INTERVAL_SCALE * s.runs_width:.3%} |")
    print(f"| all judged | {final_in}/{n} ({final_in / n:.0%}) | mean ±{np.mean(widths['final']):.3%} | "
          f"{runs_in}/{n} ({runs_in / n:.0%}) | mean ±{np.mean(widths['runs']):.3%} |")


if __name__ == "__main__":
    main()
