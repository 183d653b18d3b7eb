"""Procedurally generated reasoning tasks with verifiable answers, by family and difficulty level.

A :class:`TaskFamily` makes ``(prompt, answer)`` pairs from a numpy ``Generator`` at each of its
levels; an arm is one family at one level, named ``"family/level"``. A :class:`TaskSuite` draws a
fixed train pool and a disjointly seeded eval set per arm, so a seed fixes everything, and checks
every item when it is built. Nothing is downloaded.

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

Bring your own family with :func:`register_family` (then any suite, and the CLI's ``--families``,
can name it) or pass a :class:`TaskFamily` to ``TaskSuite(families=...)`` directly:

    >>> def make_rev(rng, level):
    ...     digits = "".join(map(str, rng.integers(0, 10, size=level + 1)))
    ...     return f"r{digits}=", digits[::-1]
    >>> rev = TaskFamily("rev", make_rev, levels=(1, 2), chars="r")
    >>> suite = TaskSuite(families=("add", rev), items_per_arm=4, eval_per_arm=2, seed=0)
    >>> suite.arm_names
    ['add/1', 'add/2', 'add/3', 'rev/1', 'rev/2']
    >>> bool(suite.score(np.array(["4"]), np.array(["4"]))[0])
    True
"""

from __future__ import annotations

import importlib
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Callable

import numpy as np

from cadence.errors import CadenceError
from cadence.labs.rl.tokenizer import ALPHABET, EOS, FILLER, PAD, CharTokenizer

Maker = Callable[[np.random.Generator, int], tuple[str, str]]

LEVELS = (1, 2, 3)
"""The levels a family has unless it says otherwise."""
PROMPT_WIDTH = 14
"""The narrowest prompt width a suite fits itself to (the default suite's longest prompt)."""
MAX_ANSWER = 7
"""The shortest answer length a suite fits itself to (the default suite's longest answer)."""
_NAME = re.compile(r"[A-Za-z0-9_-]+")


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


@dataclass(frozen=True)
class TaskFamily:
    """A task family: ``maker(rng, level) -> (prompt, answer)`` at each of ``levels``.

    Args:
        name: letters, digits, ``_`` or ``-`` (arms are named ``name/level``).
        maker: a pure function of the generator and the level; a module-level function if the
            lab should train policies in worker processes (it is pickled by reference).
        levels: the family's difficulty levels (distinct positive integers).
        chars: characters the family uses beyond the lab's standard alphabet
            (:data:`~cadence.labs.rl.tokenizer.ALPHABET`); a suite's tokenizer adds them.
        seed_key: the family's entry in the seed of its data; default: the CRC-32 of the name,
            so a family's items depend on its name, level, split and the suite seed only, never
            on the other families or on registration order. The five built-in families keep the
            keys 0..4 they had before names were hashed, so the default suite's data is unchanged.

    Every drawn item is checked: two non-empty strings, characters in the family's alphabet,
    neither the padding ``_`` nor the end token ``$`` anywhere, no filler ``.`` in an answer.

        >>> family = TaskFamily("plus", make_add, levels=(1, 2))
        >>> prompt, answer = family.draw(np.random.default_rng(0), 2)
        >>> eval(prompt.rstrip("=")) == int(answer), family.key == zlib.crc32(b"plus")
        (True, True)
    """

    name: str
    maker: Maker
    levels: tuple[int, ...] = LEVELS
    chars: str = ""
    seed_key: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise CadenceError(f"a task family name uses letters, digits, '_' or '-' only, got {self.name!r}")
        if not callable(self.maker):
            raise CadenceError(f"task family {self.name!r}: maker must be callable (rng, level) -> (prompt, answer)")
        levels = tuple(self.levels)
        if (not levels or len(set(levels)) != len(levels)
                or not all(isinstance(lv, (int, np.integer)) and not isinstance(lv, bool) and lv >= 1 for lv in levels)):
            raise CadenceError(f"task family {self.name!r}: levels must be distinct positive integers, got {self.levels}")
        object.__setattr__(self, "levels", tuple(int(lv) for lv in levels))
        reserved = [c for c in str(self.chars) if c in (PAD, EOS)]
        if not isinstance(self.chars, str) or reserved:
            raise CadenceError(f"task family {self.name!r}: chars must be a string without the padding {PAD!r} "
                               f"or end token {EOS!r}, got {self.chars!r}")
        if self.seed_key is not None and (isinstance(self.seed_key, bool) or not isinstance(self.seed_key, int)
                                          or self.seed_key < 0):
            raise CadenceError(f"task family {self.name!r}: seed_key must be a non-negative integer, got {self.seed_key!r}")

    @property
    def key(self) -> int:
        """The family's entry in its data streams' seed: ``seed_key``, else the CRC-32 of the name."""
        return self.seed_key if self.seed_key is not None else zlib.crc32(self.name.encode())

    @property
    def alphabet(self) -> str:
        """The characters the family's prompts and answers may use."""
        return ALPHABET + "".join(dict.fromkeys(c for c in self.chars if c not in ALPHABET))

    @cached_property
    def _allowed(self) -> frozenset[str]:
        return frozenset(self.alphabet) - {PAD, EOS}

    def draw(self, rng: np.random.Generator, level: int) -> tuple[str, str]:
        """One checked ``(prompt, answer)`` at ``level``."""
        where = f"task family {self.name!r} level {level}"
        item = self.maker(rng, level)
        if not (isinstance(item, tuple) and len(item) == 2 and all(isinstance(s, str) and s for s in item)):
            raise CadenceError(f"{where}: the maker must return two non-empty strings (prompt, answer), got {item!r}")
        prompt, answer = str(item[0]), str(item[1])
        if set(prompt).union(answer) <= self._allowed and FILLER not in answer:
            return prompt, answer
        known = self.alphabet
        for what, text in ((f"prompt {prompt!r}", prompt), (f"answer {answer!r} to prompt {prompt!r}", answer)):
            for c in text:
                if c not in known or c in (PAD, EOS):
                    why = ("reserved (padding / end token)" if c in (PAD, EOS) else
                           f"not in the tokenizer's alphabet {known!r}; declare it with TaskFamily(chars=...)")
                    raise CadenceError(f"{where}: {what} uses {c!r}, which is {why}")
        if FILLER in answer:
            raise CadenceError(f"{where}: answer {answer!r} to prompt {prompt!r} contains the filler {FILLER!r}, "
                               "which scoring ignores")
        return prompt, answer


BUILTIN = (TaskFamily("add", make_add, seed_key=0), TaskFamily("mul", make_mul, seed_key=1),
           TaskFamily("sort", make_sort, seed_key=2), TaskFamily("count", make_count, seed_key=3),
           TaskFamily("mod", make_mod, seed_key=4))
"""The families of the default suite."""

_REGISTRY: dict[str, TaskFamily] = {f.name: f for f in BUILTIN}
FAMILIES: Mapping[str, TaskFamily] = MappingProxyType(_REGISTRY)
"""Registered families by name (read-only; add with :func:`register_family`)."""

PROBE_ITEMS = 64
"""Items per level :func:`register_family` draws to check a family before registering it."""


def register_family(family: str | TaskFamily, maker: Maker | None = None, *, levels: tuple[int, ...] = LEVELS,
                    chars: str = "", seed_key: int | None = None, replace: bool = False) -> TaskFamily:
    """Register a family so suites (and ``--families`` on the command line) can name it.

    Pass a :class:`TaskFamily`, or its fields (``name, maker, levels=..., chars=..., seed_key=...``).
    The family is checked first: :data:`PROBE_ITEMS` items per level drawn from a probe stream
    must pass :meth:`TaskFamily.draw` and give one answer per prompt, and its seed key must differ
    from every other registered family's. Registering the same family again is a no-op; another
    family under a taken name is refused unless ``replace=True`` (e.g. re-running a notebook
    cell; suites already built keep the family they were built with). Returns the family.

        >>> def make_neg(rng, level):
        ...     n = int(rng.integers(1, 10 ** level))
        ...     return f"n{n}=", str(-n)
        >>> register_family("neg", make_neg, chars="n-").name in FAMILIES
        True
    """
    if isinstance(family, TaskFamily):
        if maker is not None:
            raise CadenceError("register_family takes a TaskFamily or (name, maker, ...), not both")
    else:
        family = TaskFamily(family, maker, tuple(levels), chars, seed_key)
    known = _REGISTRY.get(family.name)
    if known == family:
        return known
    if known is not None and not replace:
        raise CadenceError(f"a different task family named {family.name!r} is already registered "
                           "(replace=True swaps it)")
    clash = [f.name for f in _REGISTRY.values() if f.key == family.key and f.name != family.name]
    if clash:
        raise CadenceError(f"task family {family.name!r} has the seed key {family.key} of {clash[0]!r}; "
                           "give it another seed_key")
    answers: dict[str, str] = {}
    for level in family.levels:
        rng = np.random.default_rng(np.random.SeedSequence([0, 2, family.key, level]))
        for _ in range(PROBE_ITEMS):
            prompt, answer = family.draw(rng, level)
            if answers.setdefault(prompt, answer) != answer:
                raise CadenceError(f"task family {family.name!r} level {level}: prompt {prompt!r} has two answers, "
                                   f"{answers[prompt]!r} and {answer!r}")
    _REGISTRY[family.name] = family
    return family


def resolve_family(family: str | TaskFamily) -> TaskFamily:
    """A :class:`TaskFamily` as is, the registered family of that name, or for ``"module:attr"``
    the :class:`TaskFamily` object ``attr`` of an importable module (how the command line's
    ``--families`` reaches a family in your own file)."""
    if isinstance(family, TaskFamily):
        return family
    if isinstance(family, str) and ":" in family:
        module, _, attr = family.partition(":")
        try:
            found = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as e:
            raise CadenceError(f"cannot load task family {family!r}: {e} (is its folder on PYTHONPATH?)") from None
        if not isinstance(found, TaskFamily):
            raise CadenceError(f"{family!r} is a {type(found).__name__}, not a TaskFamily")
        return found
    if not isinstance(family, str) or family not in _REGISTRY:
        raise CadenceError(f"unknown task family {family!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[family]


def arm_name(family: str, level: int) -> str:
    return f"{family}/{level}"


@dataclass(frozen=True)
class TaskSuite:
    """A fixed, seeded pool of training prompts and an eval set per arm (family × level).

    ``families``: registered names, ``"module:attr"`` paths or :class:`TaskFamily` objects
    (stored as the latter);
    ``levels``: the levels to use, which every family must have; ``None``: each family's own.
    ``prompt_width`` / ``max_answer``: the prompt and answer lengths the suite must fit in;
    ``None``: fitted to its items, at least :data:`PROMPT_WIDTH` / :data:`MAX_ANSWER` (so
    the built-in families always get the same model shape). The fitted values are
    :attr:`prompt_len` and :attr:`answer_len`; :attr:`tokenizer` knows every character used.

    Item ``i`` of the train pool has ``prompts[i]``, ``answers[i]`` and arm ``arm_of[i]``
    (an index into :attr:`arm_names`). Arm ``family/level``'s items come from a stream seeded by
    ``(seed, split, family.key, level)``, so adding or reordering families changes no other arm.
    Building checks every item: see :meth:`TaskFamily.draw`, the widths, and that a prompt has
    one answer across the whole suite; errors name the family, level, prompt and character.
    """

    families: tuple[str | TaskFamily, ...] = tuple(f.name for f in BUILTIN)
    levels: tuple[int, ...] | None = None
    items_per_arm: int = 256
    eval_per_arm: int = 32
    seed: int = 0
    prompt_width: int | None = None
    max_answer: int | None = None
    prompt_len: int = field(init=False, repr=False, compare=False)
    answer_len: int = field(init=False, repr=False, compare=False)
    prompts: np.ndarray = field(init=False, repr=False, compare=False)
    answers: np.ndarray = field(init=False, repr=False, compare=False)
    arm_of: np.ndarray = field(init=False, repr=False, compare=False)
    eval_prompts: np.ndarray = field(init=False, repr=False, compare=False)
    eval_answers: np.ndarray = field(init=False, repr=False, compare=False)
    eval_arm_of: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.families, (str, TaskFamily)) or not self.families:
            raise CadenceError(f"a suite needs a non-empty sequence of task families, got {self.families!r}")
        families = tuple(resolve_family(f) for f in self.families)
        names = [f.name for f in families]
        for i, f in enumerate(families):
            if f.name in names[:i]:
                raise CadenceError(f"task family {f.name!r} appears twice in the suite")
            same_key = [g.name for g in families[:i] if g.key == f.key]
            if same_key:
                raise CadenceError(f"task families {same_key[0]!r} and {f.name!r} share the seed key {f.key}")
        object.__setattr__(self, "families", families)
        if self.levels is not None:
            levels = tuple(self.levels)
            if not levels or len(set(levels)) != len(levels):
                raise CadenceError(f"suite levels must be distinct and non-empty, got {self.levels}")
            for f in families:
                missing = [lv for lv in levels if lv not in f.levels]
                if missing:
                    raise CadenceError(f"task family {f.name!r} has no level {missing[0]} "
                                       f"(its levels: {', '.join(map(str, f.levels))})")
            object.__setattr__(self, "levels", levels)
        if self.items_per_arm < 1 or self.eval_per_arm < 1:
            raise CadenceError("items_per_arm and eval_per_arm must be positive")
        for name in ("prompt_width", "max_answer"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise CadenceError(f"TaskSuite.{name} must be a positive integer or None, got {value!r}")
        train, evals = self._draw(self.items_per_arm, 0), self._draw(self.eval_per_arm, 1)
        for name, value in zip(("prompts", "answers", "arm_of"), train):
            object.__setattr__(self, name, value)
        for name, value in zip(("eval_prompts", "eval_answers", "eval_arm_of"), evals):
            object.__setattr__(self, name, value)
        self._check()

    @property
    def family_names(self) -> list[str]:
        return [f.name for f in self.families]

    @property
    def arms(self) -> list[tuple[TaskFamily, int]]:
        """``(family, level)`` of every arm, in arm order."""
        return [(f, lv) for f in self.families for lv in (self.levels or f.levels)]

    @property
    def arm_names(self) -> list[str]:
        return [arm_name(f.name, lv) for f, lv in self.arms]

    @property
    def item_arm_names(self) -> list[str]:
        """The arm name of every train item (the keys a curriculum's ``Arms`` is built from)."""
        names = self.arm_names
        return [names[a] for a in self.arm_of]

    @property
    def alphabet(self) -> str:
        """The tokenizer's alphabet: the standard one plus every family's extra characters."""
        return ALPHABET + "".join(dict.fromkeys(c for f in self.families for c in f.alphabet if c not in ALPHABET))

    @property
    def tokenizer(self) -> CharTokenizer:
        return CharTokenizer(self.alphabet)

    def _draw(self, per_arm: int, stream: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        prompts, answers, arms = [], [], []
        for a, (family, level) in enumerate(self.arms):
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, stream, family.key, level]))
            for _ in range(per_arm):
                p, ans = family.draw(rng, level)
                prompts.append(p)
                answers.append(ans)
                arms.append(a)
        return np.array(prompts), np.array(answers), np.array(arms, dtype=np.int64)

    def _check(self) -> None:
        """Fit or check the widths; one answer per prompt across the suite (train and eval)."""
        arms = self.arms
        items = [(p, ans, arms[a]) for split in ((self.prompts, self.answers, self.arm_of),
                                                 (self.eval_prompts, self.eval_answers, self.eval_arm_of))
                 for p, ans, a in zip(*split)]
        for name, length, floor, index in (("prompt_width", "prompt_len", PROMPT_WIDTH, 0),
                                           ("max_answer", "answer_len", MAX_ANSWER, 1)):
            longest = max(items, key=lambda it: len(it[index]))
            limit = getattr(self, name)
            if limit is not None and len(longest[index]) > limit:
                (f, lv), what = longest[2], ("prompt", "answer")[index]
                raise CadenceError(f"task family {f.name!r} level {lv}: {what} {str(longest[index])!r} (prompt "
                                   f"{str(longest[0])!r}) has {len(longest[index])} characters, more than "
                                   f"TaskSuite.{name}={limit}")
            object.__setattr__(self, length, limit if limit is not None else max(floor, len(longest[index])))
        seen: dict[str, tuple[str, tuple[TaskFamily, int]]] = {}
        for p, ans, arm in items:
            first = seen.setdefault(str(p), (str(ans), arm))
            if first[0] != ans:
                (f, lv), (g, lw) = first[1], arm
                raise CadenceError(f"prompt {str(p)!r} has two answers: {first[0]!r} (task family {f.name!r} level "
                                   f"{lv}) and {str(ans)!r} (task family {g.name!r} level {lw})")

    @staticmethod
    def score(responses: np.ndarray, answers: np.ndarray) -> np.ndarray:
        """1.0 where a response, filler removed, equals the answer, else 0.0."""
        cleaned = np.char.replace(np.asarray(responses, dtype=str), FILLER, "")
        return (cleaned == np.asarray(answers, dtype=str)).astype(np.float64)
