"""Procedurally generated reasoning tasks with verifiable answers, by family and difficulty level.

Each family makes ``(prompt, answer)`` pairs from a numpy ``Generator`` at a level 1..3; an arm
is one family at one level, named ``"family/level"``. A :class:`TaskSuite` draws a fixed train
pool and a disjointly seeded eval set per arm, so a seed fixes everything. Nothing is downloaded.

Default suite (chosen before any training run, kept as is): five families × three levels, with
levels spread so a tiny model finds some arms already solved after its warm start, some
learnable within minutes and some out of reach:

=========  ===========================  ==================  ==============
family     level 1                      level 2             level 3
=========  ===========================  ==================  ==============
add        1-digit + 1-digit            2 + 2 digits        3 + 3 digits
mul        1 × 1 digits                 2 × 1 digits        2 × 2 digits
sort       sort 3 digits                sort 5 digits       sort 7 digits
count      count ``a`` in 4 letters     in 8 letters        in 12 letters
mod        2-digit mod 1-digit          3-digit mod 1-digit 4-digit mod 2-digit
=========  ===========================  ==================  ==============

Parity is left out on purpose: a coin-flip answer keeps pass rates near 0.5 (maximal advantage)
while nothing is learnt, which would test a curriculum's robustness to noise, not its speed.

    >>> suite = TaskSuite(items_per_arm=4, eval_per_arm=2, seed=0)
    >>> suite.arm_names[:3]
    ['add/1', 'add/2', 'add/3']
    >>> bool(suite.score(np.array(["4"]), np.array(["4"]))[0])
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from cadence.errors import CadenceError

Maker = Callable[[np.random.Generator, int], tuple[str, str]]


def _digits(rng: np.random.Generator, n: int) -> int:
    """A uniformly random number with exactly ``n`` digits (1..9 for n = 1)."""
    return int(rng.integers(10 ** (n - 1) if n > 1 else 1, 10 ** n))


def make_add(rng: np.random.Generator, level: int) -> tuple[str, str]:
    a, b = _digits(rng, level), _digits(rng, level)
    return f"{a}+{b}=", str(a + b)


def make_mul(rng: np.random.Generator, level: int) -> tuple[str, str]:
    a, b = _digits(rng, 1 if level == 1 else 2), _digits(rng, 2 if level == 3 else 1)
    return f"{a}*{b}=", str(a * b)


def make_sort(rng: np.random.Generator, level: int) -> tuple[str, str]:
    ds = rng.integers(0, 10, size=2 * level + 1)
    return "s" + "".join(map(str, ds)) + "=", "".join(map(str, np.sort(ds)))


def make_count(rng: np.random.Generator, level: int) -> tuple[str, str]:
    letters = rng.choice(np.array(list("ab")), size=4 * level)
    return "c" + "".join(letters) + "=", str(int((letters == "a").sum()))


def make_mod(rng: np.random.Generator, level: int) -> tuple[str, str]:
    a = _digits(rng, level + 1)
    m = int(rng.integers(10, 100)) if level == 3 else int(rng.integers(2, 10))
    return f"{a}%{m}=", str(a % m)


FAMILIES: dict[str, Maker] = {"add": make_add, "mul": make_mul, "sort": make_sort, "count": make_count, "mod": make_mod}
"""Family name → maker ``(rng, level) -> (prompt, answer)``."""

LEVELS = (1, 2, 3)
PROMPT_WIDTH = 14
"""Every prompt fits in this many characters (left-padded to it)."""
MAX_ANSWER = 7
"""The longest answer in the suite (sorting 7 digits)."""
FILLER = "."
"""A filler character a response may contain anywhere; it is ignored when scoring."""


def arm_name(family: str, level: int) -> str:
    return f"{family}/{level}"


@dataclass(frozen=True)
class TaskSuite:
    """A fixed, seeded pool of training prompts and an eval set per arm (family × level).

    Item ``i`` of the train pool has ``prompts[i]``, ``answers[i]`` and arm ``arm_of[i]``
    (an index into :attr:`arm_names`). The eval set is drawn from a separate seed stream.
    """

    families: tuple[str, ...] = tuple(FAMILIES)
    levels: tuple[int, ...] = LEVELS
    items_per_arm: int = 256
    eval_per_arm: int = 32
    seed: int = 0
    prompts: np.ndarray = field(init=False, repr=False, compare=False)
    answers: np.ndarray = field(init=False, repr=False, compare=False)
    arm_of: np.ndarray = field(init=False, repr=False, compare=False)
    eval_prompts: np.ndarray = field(init=False, repr=False, compare=False)
    eval_answers: np.ndarray = field(init=False, repr=False, compare=False)
    eval_arm_of: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise CadenceError(f"unknown task families {unknown}; known: {sorted(FAMILIES)}")
        bad = [lv for lv in self.levels if lv not in LEVELS]
        if bad or not self.levels:
            raise CadenceError(f"task levels must be among {LEVELS}, got {self.levels}")
        if self.items_per_arm < 1 or self.eval_per_arm < 1:
            raise CadenceError("items_per_arm and eval_per_arm must be positive")
        train, evals = self._draw(self.items_per_arm, 0), self._draw(self.eval_per_arm, 1)
        for name, value in zip(("prompts", "answers", "arm_of"), train):
            object.__setattr__(self, name, value)
        for name, value in zip(("eval_prompts", "eval_answers", "eval_arm_of"), evals):
            object.__setattr__(self, name, value)

    @property
    def arm_names(self) -> list[str]:
        return [arm_name(f, lv) for f in self.families for lv in self.levels]

    @property
    def item_arm_names(self) -> list[str]:
        """The arm name of every train item (the keys a curriculum's ``Arms`` is built from)."""
        names = self.arm_names
        return [names[a] for a in self.arm_of]

    def _draw(self, per_arm: int, stream: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        prompts, answers, arms = [], [], []
        for a, (family, level) in enumerate((f, lv) for f in self.families for lv in self.levels):
            # one independent stream per (split, family, level): adding a family changes no other arm
            key = [self.seed, stream, list(FAMILIES).index(family), level]
            rng = np.random.default_rng(np.random.SeedSequence(key))
            for _ in range(per_arm):
                p, ans = FAMILIES[family](rng, level)
                prompts.append(p)
                answers.append(ans)
                arms.append(a)
        return np.array(prompts), np.array(answers), np.array(arms, dtype=np.int64)

    @staticmethod
    def score(responses: np.ndarray, answers: np.ndarray) -> np.ndarray:
        """1.0 where a response, filler removed, equals the answer, else 0.0."""
        cleaned = np.char.replace(np.asarray(responses, dtype=str), FILLER, "")
        return (cleaned == np.asarray(answers, dtype=str)).astype(np.float64)
