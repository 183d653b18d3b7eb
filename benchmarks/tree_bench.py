"""WSD tree benchmark: one constant-LR trunk with cooldown branches vs four dedicated cosine runs.

    python benchmarks/tree_bench.py                       # budgets 200, 400, 800, 1600 steps (small lab model)
    python benchmarks/tree_bench.py --wsd-s -o tree.png   # also a WSD-S chain, and a plot
    python benchmarks/tree_bench.py --size tiny --base 20 # seconds

Goals (issue 5): total compute <= (1 - d)·B_max + d·ΣB_k steps; each branch's final validation loss
within 1% of (or below) its dedicated cosine run. Same as ``cadence bench tree``; flags are shared.
"""

from __future__ import annotations

import sys

from cadence.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "tree", *sys.argv[1:]]))
