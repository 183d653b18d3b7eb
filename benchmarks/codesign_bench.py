"""Curriculum x LR co-design study ("How Learning Rate Decay Wastes Your Best Data in Curriculum-Based LLM
Pretraining", Luo et al., arXiv 2511.18903) on the pre-training lab.

    python benchmarks/codesign_bench.py                      # 500 steps, 3 seeds (small lab model)
    python benchmarks/codesign_bench.py --steps 40 --seeds 2 --size tiny   # seconds

Quality-ascending order vs a random order of the same documents, each with (a) cosine to 0,
(b) cosine to 0.3 x peak, (c) constant LR, scored as it ends and as the uniform average of its last
5 checkpoints; prints validation loss mean ± std over seeds. Same as ``cadence bench codesign``.
"""

from __future__ import annotations

import sys

from cadence.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "codesign", *sys.argv[1:]]))
