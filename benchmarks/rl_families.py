"""Task families written for the RL-methods bench (PCL, GVM-RAFT, replay, hints): two families the
warm start has not seen, with the hardest level mostly all-wrong at the start — where hints and
gradient-variance allocation should matter.

    cadence bench rl --families benchmarks.rl_families:REV,benchmarks.rl_families:SUB ...

(run from the repository root so ``benchmarks`` is importable.)
"""

from __future__ import annotations

import numpy as np

from cadence.labs.rl.families import REV  # noqa: F401  (the shared digit-reversal family)
from cadence.labs.rl.tasks import TaskFamily


def make_sub(rng: np.random.Generator, level: int) -> tuple[str, str]:
    """``a − b`` with ``a`` one digit longer than ``b`` (``level`` digits), so never negative (unlike
    :data:`cadence.labs.rl.families.SUB`, whose operands have the same number of digits)."""
    a = int(rng.integers(10 ** level, 10 ** (level + 1)))
    b = int(rng.integers(10 ** (level - 1) if level > 1 else 1, 10 ** level))
    return f"{a}-{b}=", str(a - b)


SUB = TaskFamily("sub", make_sub, levels=(1, 2, 3), chars="-")
