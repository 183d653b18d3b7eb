"""Selective sample replay — SSR (VL-Rethinker, "VL-Rethinker: Incentivizing Self-Reflection of
Vision-Language Models with Reinforcement Learning", arXiv 2504.08837).

GRPO groups whose rewards are all equal have zero advantage ("vanishing advantages"). SSR keeps a
buffer of recent groups with non-zero advantage and, where the batch would otherwise be short, trains
on groups drawn from it with probability

    P(j) = |A_j|^α / Σ_k |A_k|^α,   α = 1   (the paper's rule)

instead of generating again. Here an entry is one prompt's group and ``|A_j|`` its mean absolute
advantage (the authors' code works per response; a group keeps GRPO's group structure). A group whose
advantages are all zero is never stored, so never replayed. Entries stay in the buffer after a draw
(the authors' code draws with replacement from a bounded deque); the oldest leave when it is full.
Replayed groups keep their stored advantages; the host decides how to weight off-policy samples
(the authors reuse the stored old log-probabilities). The buffer size is a cadence choice
(UNCONFIRMED: the paper's size and α sweep).

With :class:`cadence.rl.PromptSelector` (``replay=``, together with dynamic sampling) the groups
dynamic sampling drops are replaced from the buffer before any new round is generated; the
rollouts so saved are counted (``saved``).

    >>> buf = ReplayBuffer(capacity=4, seed=0)
    >>> buf.add(7, advantages=[0.0, 0.0], payload="all right")   # zero advantage: refused
    False
    >>> buf.add(3, advantages=[1.0, -1.0], payload="mixed")
    True
    >>> [(e.item, e.payload) for e in buf.draw(1)], buf.counts["saved"]
    ([(3, 'mixed')], 2)
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from cadence.errors import CadenceError, StateError
from cadence.state import plain

ZERO = 1e-9
"""An advantage at most this large in absolute value counts as zero."""

COUNTERS = ("added", "refused", "replayed", "saved")
"""Groups stored, groups refused (all-zero advantage), groups replayed, rollouts saved by replaying."""


@dataclass(frozen=True)
class Entry:
    """One stored group: its prompt id, rollouts, mean |advantage| and the host's payload."""

    item: int
    size: int
    score: float
    payload: Any


class ReplayBuffer:
    """The most recent ``capacity`` groups with non-zero advantage (module docs).

    Args:
        capacity: groups kept (oldest leave first).
        alpha: priority exponent of ``|A|``.
        seed: seed of the buffer's own generator.
    """

    kind = "cadence.ReplayBuffer"

    def __init__(self, capacity: int = 256, *, alpha: float = 1.0, seed: int = 0) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
            raise CadenceError(f"replay capacity must be a positive integer, got {capacity!r}")
        if not 0 <= alpha < np.inf:
            raise CadenceError(f"replay alpha must be finite and >= 0, got {alpha!r}")
        self.capacity, self.alpha = int(capacity), float(alpha)
        self.entries: deque[Entry] = deque(maxlen=self.capacity)
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, item: int, advantages: Any, payload: Any = None) -> bool:
        """Store one group (its per-rollout advantages); a group whose advantages are all zero is
        refused (returns False). NaN/inf advantages are an error and store nothing."""
        adv = np.asarray(advantages, dtype=np.float64).reshape(-1)
        if not len(adv) or not np.all(np.isfinite(adv)):
            raise CadenceError("replay needs a group's finite advantages (one per rollout, no NaN/inf)")
        score = float(np.mean(np.abs(adv)))
        if np.max(np.abs(adv)) <= ZERO:
            self.counts["refused"] += 1
            return False
        self.entries.append(Entry(int(item), len(adv), score, payload))
        self.counts["added"] += 1
        return True

    def draw(self, k: int, exclude: Any = ()) -> list[Entry]:
        """Up to ``k`` entries of distinct prompts not in ``exclude``, drawn without replacement with
        probability ∝ ``score^α``; counted as replayed (and their rollouts as saved)."""
        banned = {int(i) for i in np.asarray(exclude, dtype=np.int64).reshape(-1)}
        chosen: list[Entry] = []
        pool = [e for e in self.entries if e.item not in banned]
        while len(chosen) < k and pool:
            weight = np.array([e.score for e in pool]) ** self.alpha
            pick = pool[int(self.rng.choice(len(pool), p=weight / weight.sum()))]
            chosen.append(pick)
            pool = [e for e in pool if e.item != pick.item]
        self.counts["replayed"] += len(chosen)
        self.counts["saved"] += sum(e.size for e in chosen)
        return chosen

    def values(self) -> dict[str, float]:
        """Logged: groups in the buffer, groups replayed and rollouts saved over the run."""
        return {"size": float(len(self)), "replayed": float(self.counts["replayed"]),
                "saved": float(self.counts["saved"])}

    def state_dict(self) -> dict[str, Any]:
        """Plain data: entries (payloads as plain data: arrays become lists, tensors stay), counters, RNG."""
        return {"kind": self.kind, "capacity": self.capacity, "alpha": self.alpha,
                "entries": [{"item": e.item, "size": e.size, "score": e.score, "payload": plain(e.payload)}
                            for e in self.entries],
                "counts": dict(self.counts), "rng": copy.deepcopy(self.rng.bit_generator.state)}

    def load_state_dict(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict")
        if state.get("capacity") != self.capacity or state.get("alpha") != self.alpha:
            raise StateError(f"state is for ReplayBuffer(capacity={state.get('capacity')}, alpha={state.get('alpha')}),"
                             f" this is ReplayBuffer(capacity={self.capacity}, alpha={self.alpha})")
        try:
            entries = [Entry(int(e["item"]), int(e["size"]), float(e["score"]), e["payload"]) for e in state["entries"]]
            counts = {k: int(state["counts"][k]) for k in COUNTERS}
            rng = np.random.default_rng()
            rng.bit_generator.state = copy.deepcopy(state["rng"])
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed {self.kind} state_dict: {e!r}") from None
        self.entries, self.counts, self.rng = deque(entries, maxlen=self.capacity), counts, rng
