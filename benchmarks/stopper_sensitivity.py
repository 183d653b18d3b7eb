"""How the early stoppers' savings and lost best trials depend on when they may first decide,
replayed on the trials that ``cadence bench stoppers -o FILE`` recorded (no training).

A sensitivity read-out on the same trials the benchmark measured, not a way to choose settings:
a setting picked from this table would be judged on the data it was picked on (settings are
decided on one block of searches and judged on another by ``benchmarks/stopper_holdout.py``).

    cadence bench stoppers --seeds 5 -o stoppers.json
    python benchmarks/stopper_sensitivity.py stoppers.json
"""

from __future__ import annotations

import argparse

import numpy as np

from cadence.integrations.ray_tune import EarlyRankingStopper, ForecastStopper
from cadence.labs.pretrain.stopper_bench import read_searches, replay


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", help="the JSON written by cadence bench stoppers -o")
    p.add_argument("--at", default="1,2,3,4,6,8", help="reports at which the stoppers may first decide")
    args = p.parse_args()
    searches = list(read_searches(args.results)[0].values())
    reports = len(searches[0][0].report_steps)
    print(f"{len(searches)} searches of {len(searches[0])} trials, {reports} reports each")
    print("| stopper | first decision (report) | trial-steps saved, mean | best trial kept "
          "| best final kept / full, geometric mean |")
    print("|---|---|---|---|---|")
    for name in ("ForecastStopper", "EarlyRankingStopper"):
        for k in (int(x) for x in args.at.split(",")):
            saved, kept, ratios = [], 0, []
            for trials in searches:
                stopper = ForecastStopper(min_iterations=k) if name == "ForecastStopper" else \
                    EarlyRankingStopper(at_iteration=k)
                ended = replay(stopper, trials, forecast=name == "ForecastStopper")
                steps = trials[0].steps
                finals = [t.final for t in trials]
                done = [i for i, e in enumerate(ended) if e == steps]
                saved.append(1 - sum(ended) / (len(trials) * steps))
                kept += int(np.argmin(finals)) in done
                ratios.append(min(finals[i] for i in done) / min(finals))
            print(f"| {name} | {k} ({100 * k / reports:.0f}%) | {100 * np.mean(saved):.1f}% | {kept}/{len(searches)} | "
                  f"{np.exp(np.mean(np.log(ratios))):.3f} |")


if __name__ == "__main__":
    main()
