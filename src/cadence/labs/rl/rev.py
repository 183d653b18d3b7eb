"""A task family written for the D³S / HBPO / LIMR benchmarks: reverse a string of digits.

Answers grow with the level (3, 5, 7 digits), so response length and per-token credit matter more
than in the default suite, where most answers are one or two tokens. Name it on the command line
as ``cadence.labs.rl.rev:REV``.

    >>> import numpy as np
    >>> make_rev(np.random.default_rng(0), 1)
    ('r865=', '568')
"""

from __future__ import annotations

import numpy as np

from cadence.labs.rl.tasks import TaskFamily


def make_rev(rng: np.random.Generator, level: int) -> tuple[str, str]:
    """``r<digits>=`` → the digits reversed; ``2·level + 1`` digits."""
    digits = "".join(map(str, rng.integers(0, 10, size=2 * level + 1)))
    return f"r{digits}=", digits[::-1]


REV = TaskFamily("rev", make_rev, levels=(1, 2, 3), chars="r")
