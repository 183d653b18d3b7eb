"""Replay for continual pre-training: a fixed fraction of every batch from the old data.

"Simple and Scalable Strategies to Continually Pre-train Large Language Models" (Ibrahim et al.,
arXiv 2403.08763) re-warms and re-decays the LR on the new data and replays a fraction ρ of the old
data in every batch at a fixed total ("compute-equivalent replay"): of each batch's tokens, ρ come
from the old data D₀ and 1 − ρ from the new data D₁, and the batch stays the same size.

:class:`Replay` decides how many of a batch's rows come from the old data. It counts tokens (the
clock's unit in pre-training): the old rows of batch k make the old tokens of batches 1..k as close
to ρ × (all their tokens) as whole rows allow, so the replayed share is exact over many batches
(off by less than one row's tokens at any moment), whatever ρ × batch is. Which rows of the old
data are drawn is the host's sampler's business (uniform over D₀ in the paper, UNCONFIRMED).

    >>> replay = Replay(0.05)
    >>> [replay.split(16, tokens_per_row=33)[0] for _ in range(5)]      # 0.8 old rows per batch
    [1, 1, 0, 1, 1]
    >>> replay.old_tokens / replay.tokens
    0.05
    >>> Replay.from_dict(replay.to_dict()).fraction
    0.05

:class:`ReplayMixture` puts it into a data stream: a curriculum policy over arms that tag each row
old or new, whose every draw of a batch takes :meth:`Replay.split`'s old rows uniformly from the old
arm and the rest uniformly from the new rows. In a regimen file it is ``curriculum: {policy: replay,
fraction: 0.05, old: old, arms: {column: corpus}, batch_size: ...}``, so every host that draws from a
curriculum (plain loop, HF Trainer, Lightning) draws from the mixture.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from cadence.curricula.arms import Arms
from cadence.curricula.base import Policy
from cadence.errors import CadenceError, SpecError, StateError


class Replay:
    """A fraction ``fraction`` (ρ, in [0, 1)) of every batch's tokens drawn from the old data.

    Args:
        fraction: ρ, the share of tokens replayed from the old data (0: none; 0.05 for a weak shift,
            0.25 for a strong one in Ibrahim et al.).
    """

    kind = "replay"

    def __init__(self, fraction: float) -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not math.isfinite(fraction) \
                or not 0.0 <= fraction < 1.0:
            raise SpecError(f"replay fraction must be a number in [0, 1), got {fraction!r}")
        self.fraction = float(fraction)
        self.old_tokens = 0
        self.tokens = 0

    def split(self, rows: int, tokens_per_row: int = 1) -> tuple[int, int]:
        """``(old rows, new rows)`` of the next batch of ``rows`` rows of ``tokens_per_row`` tokens each;
        counts them (call once per batch)."""
        for name, v in (("rows", rows), ("tokens_per_row", tokens_per_row)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CadenceError(f"Replay.split needs a positive integer {name}, got {v!r}")
        tokens = rows * tokens_per_row
        due = self.fraction * (self.tokens + tokens) - self.old_tokens   # old tokens this batch owes
        old = min(rows, max(0, math.floor(due / tokens_per_row + 0.5)))
        self.old_tokens += old * tokens_per_row
        self.tokens += tokens
        return old, rows - old

    @property
    def realized(self) -> float:
        """The share of tokens replayed so far (``fraction`` up to one row)."""
        return self.old_tokens / self.tokens if self.tokens else 0.0

    # ------------------------------------------------------------------ spec and state
    def to_dict(self) -> dict[str, Any]:
        """The constructor's arguments as plain data (:meth:`from_dict` rebuilds it)."""
        return {"kind": self.kind, "fraction": self.fraction}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Replay:
        """Build from :meth:`to_dict` output (``kind`` optional); unknown fields are an error."""
        if not isinstance(d, Mapping):
            raise SpecError(f"a replay spec must be a mapping like {{'fraction': 0.05}}, got {d!r}")
        unknown = sorted(set(d) - {"kind", "fraction"})
        if unknown or d.get("kind", cls.kind) != cls.kind:
            raise SpecError(f"a replay spec has fields kind='replay' and fraction; got {dict(d)!r}")
        if "fraction" not in d:
            raise SpecError("a replay spec needs a fraction (e.g. {'fraction': 0.05})")
        return cls(d["fraction"])

    def state_dict(self) -> dict[str, Any]:
        """Tokens counted so far (plain ints) and the fraction they were counted for."""
        return {"kind": "cadence.curricula.Replay", "fraction": self.fraction, "old_tokens": self.old_tokens,
                "tokens": self.tokens}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; foreign or mismatched state raises :class:`StateError`, changing nothing."""
        if not isinstance(state, Mapping) or state.get("kind") != "cadence.curricula.Replay":
            raise StateError("not a Replay state_dict (kind='cadence.curricula.Replay')")
        if state.get("fraction") != self.fraction:
            raise StateError(f"this replay state was counted for fraction {state.get('fraction')!r}, "
                             f"this Replay has {self.fraction}")
        old, total = state.get("old_tokens"), state.get("tokens")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (old, total)) or old > total:
            raise StateError(f"malformed Replay state: old_tokens={old!r}, tokens={total!r}")
        self.old_tokens, self.tokens = old, total


__all__ = ["Replay"]


class ReplayMixture(Policy):
    """A curriculum policy drawing a fraction ``fraction`` of every batch's tokens from the ``old`` arm.

    Each :meth:`draw` of ``n`` rows is one batch: :meth:`Replay.split` gives its old rows (exact over
    many batches), drawn uniformly with replacement from the old arm's items, and its new rows, drawn
    uniformly from every other item; the rows are then shuffled. Use it with a sampler that draws
    with replacement (a without-replacement sampler redraws, which would count batches twice).

    Args:
        arms: the items' arms; ``old`` names the old data's arm, every other arm is new data.
        fraction: ρ in [0, 1).
        old: the old data's arm name.
        tokens_per_row: tokens in each row (rows of one length: the token share equals the row share).

        >>> policy = ReplayMixture(Arms(["old"] * 4 + ["new"] * 12), 0.25)
        >>> rng = np.random.default_rng(0)
        >>> sum(int(i < 4) for _ in range(10) for i in policy.draw(6, rng)), policy.tokens
        (15, 60)
    """

    name = "replay"
    exact_batches = True  # each draw is one batch (samplers that redraw refuse it)
    _state = ("old_tokens", "tokens")

    def __init__(self, arms: Arms, fraction: float, *, old: Any = "old", tokens_per_row: int = 1, seed: int = 0,
                 clock: Any = None) -> None:
        super().__init__(arms, seed=seed, clock=clock)
        self.replay = Replay(fraction)
        if old not in arms.names:
            raise CadenceError(f"ReplayMixture: no arm {old!r} for the old data; arms are {arms.names!r}")
        if isinstance(tokens_per_row, bool) or not isinstance(tokens_per_row, int) or tokens_per_row < 1:
            raise CadenceError(f"ReplayMixture: tokens_per_row must be a positive integer, got {tokens_per_row!r}")
        self.old, self.tokens_per_row = arms.index(old), tokens_per_row
        self.old_items = arms.items(self.old).astype(np.int64)
        self.new_items = np.flatnonzero(arms.item_arm != self.old).astype(np.int64)
        if len(self.old_items) == 0 and self.replay.fraction > 0:
            raise CadenceError(f"ReplayMixture: the old arm {old!r} has no items to replay")
        if len(self.new_items) == 0:
            raise CadenceError("ReplayMixture: no new data (every item is in the old arm)")

    @property
    def old_tokens(self) -> int:
        return self.replay.old_tokens

    @old_tokens.setter
    def old_tokens(self, value: int) -> None:
        self.replay.old_tokens = int(value)

    @property
    def tokens(self) -> int:
        return self.replay.tokens

    @tokens.setter
    def tokens(self, value: int) -> None:
        self.replay.tokens = int(value)

    def _arm_weights(self) -> np.ndarray:
        """The expected share of rows per arm: ρ on the old arm, the rest over the new arms by size."""
        w = self.arms.sizes * (1 - self.replay.fraction) / len(self.new_items)
        w[self.old] = self.replay.fraction
        return w

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """One batch of ``n`` rows: :meth:`Replay.split`'s old rows from the old arm, the rest new, shuffled."""
        if n < 0:
            raise CadenceError(f"cannot draw a negative number of items ({n})")
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        old, new = self.replay.split(int(n), self.tokens_per_row)
        ids = np.concatenate([self.old_items[rng.integers(len(self.old_items), size=old)] if old else
                              np.zeros(0, dtype=np.int64), self.new_items[rng.integers(len(self.new_items), size=new)]])
        return ids[rng.permutation(n)]

    def stats(self) -> dict[str, Any]:
        return super().stats() | {"replayed": self.replay.realized}

    def _check_state(self, staged: dict[str, Any]) -> None:
        old, total = staged["old_tokens"], staged["tokens"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (old, total)) or old > total:
            raise StateError(f"malformed ReplayMixture state: old_tokens={old!r}, tokens={total!r}")
