"""Task families written for the TRL and RL-method benches after the lab's were fixed, and never tuned on: the
held-out check that a policy's savings are not an artefact of the five built-in families.

=========  ==================  ==================  ==================
family     level 1             level 2             level 3
=========  ==================  ==================  ==================
rev        reverse 3 digits    reverse 5 digits    reverse 7 digits
sub        1-digit − 1-digit   2 − 2 digits        3 − 3 digits
maxd       largest of 4 digits largest of 8        largest of 12
=========  ==================  ==================  ==================

(``sub`` keeps the larger number first, so answers are never negative.) Use them on the command
line as ``--families cadence.labs.rl.families:REV,cadence.labs.rl.families:SUB,cadence.labs.rl.families:MAXD``.

    >>> import numpy as np
    >>> prompt, answer = REV.draw(np.random.default_rng(0), 1)
    >>> prompt[1:-1][::-1] == answer
    True
"""

from __future__ import annotations

import numpy as np

from cadence.labs.rl.tasks import TaskFamily


def make_rev(rng: np.random.Generator, level: int) -> tuple[str, str]:
    digits = "".join(map(str, rng.integers(0, 10, size=2 * level + 1)))
    return f"r{digits}=", digits[::-1]


def make_sub(rng: np.random.Generator, level: int) -> tuple[str, str]:
    low = 10 ** (level - 1) if level > 1 else 0
    a, b = sorted(int(x) for x in rng.integers(low, 10 ** level, size=2))[::-1]
    return f"{a}-{b}=", str(a - b)


def make_maxd(rng: np.random.Generator, level: int) -> tuple[str, str]:
    digits = rng.integers(0, 10, size=4 * level)
    return "m" + "".join(map(str, digits)) + "=", str(int(digits.max()))


REV = TaskFamily("rev", make_rev, chars="r")
SUB = TaskFamily("sub", make_sub, chars="-")
MAXD = TaskFamily("maxd", make_maxd, chars="m")
HELD_OUT = (REV, SUB, MAXD)
