"""Each early stopper's one knob decided on one block of searches and judged on another, replayed
on the trials that ``cadence bench stoppers -o`` recorded (no training). The grids, the decision
rule and the goal are pre-registered in :mod:`cadence.labs.pretrain.stopper_choice`.

    cadence bench stoppers --seeds 5 --first-seed 5 -o held_out.json
    python benchmarks/stopper_holdout.py benchmarks/results/stoppers_5seeds.json held_out.json -o choice.json
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from cadence.errors import CadenceError
from cadence.labs.pretrain.stopper_bench import read_searches
from cadence.labs.pretrain.stopper_choice import GRIDS, Setting, decide, grid_rows, judge, label
from cadence.labs.rl.bench import interval
from cadence.progress import Progress


def line(s: Setting, *, ci: bool) -> str:
    rows = s.rows
    saved = ", ".join(f"{100 * r.saved:.0f}" for r in rows)
    ratios = [r.best_final / r.full_best_final for r in rows]
    mean, low, high = interval(ratios) if all(x < float("inf") for x in ratios) else (float("inf"),) * 3
    ratio = f"{mean:.3f} [{low:.3f}, {high:.3f}]" if ci else f"{mean:.3f}"
    name = label(s.method, s.value) if s.method in GRIDS else s.method
    return (f"| {name} | {100 * s.saved:.1f}% ({saved}) | {100 * s.net_saved:.0f}% | "
            f"{sum(r.stopped for r in rows) / len(rows):.1f} | {s.kept}/{len(rows)} | {ratio} |")


HEADER = ("| search | trial-steps saved, mean (per search, %) | net of forecast fits | trials stopped | "
          "best trial kept | best final kept / full search's |\n|---|---|---|---|---|---|")


def as_plain(s: Setting) -> dict:
    return {"method": s.method, "value": s.value, "kept": s.kept, "saved": s.saved, "net_saved": s.net_saved,
            "ratio": s.ratio, "rows": [dict(r.__dict__, saved=r.saved, net_saved=r.net_saved) for r in s.rows]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("deciding", help="records of the searches that decide each knob (cadence bench stoppers -o)")
    p.add_argument("judging", help="records of the held-out searches that judge the decided settings")
    p.add_argument("-o", "--output", default=None, help="write every setting's rows here (.json)")
    args = p.parse_args()
    torch.set_num_threads(1)
    deciding, deciding_step = read_searches(args.deciding)
    judging, judging_step = read_searches(args.judging)
    if set(deciding) & set(judging):
        raise CadenceError(f"the deciding and judging searches share seeds {sorted(set(deciding) & set(judging))}")
    print(f"deciding on seeds {sorted(deciding)}, judging on seeds {sorted(judging)}", flush=True)
    grids, decided = {}, {}
    with Progress(transient=True) as bar:
        task = bar.task("deciding", total=len(GRIDS), unit="stoppers")
        for method in GRIDS:
            grids[method] = grid_rows(deciding, method, step_seconds=deciding_step)
            decided[method] = decide(grids[method]).value
            task.advance()
    print("\nDeciding searches (every setting of every grid):\n" + HEADER)
    for method in GRIDS:
        for s in grids[method]:
            print(line(s, ci=False) + (" **decided**" if s.value == decided[method] else ""))
    held = judge(judging, decided, step_seconds=judging_step)
    print("\nHeld-out searches (default and decided settings):\n" + HEADER)
    for s in held:
        met = s.method in GRIDS and s.value == decided[s.method] and s.kept == len(s.rows) and s.saved > 0
        print(line(s, ci=True) + (" goal met" if met else ""))
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"deciding": args.deciding, "judging": args.judging, "decided": decided,
                       "grids": {m: [as_plain(s) for s in g] for m, g in grids.items()},
                       "held_out": [as_plain(s) for s in held]}, f, indent=1)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CadenceError as e:
        sys.exit(f"stopper_holdout: {e}")
