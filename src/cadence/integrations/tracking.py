"""Which drawn item ids the training loop has actually used: feedback alignment and exact resume.

DataLoaders (and Accelerate, and Lightning's fetcher) draw batches ahead of training. A curriculum
sampler's state therefore runs ahead of what was trained on. :class:`TrackedSampler` wraps a
curriculum sampler, records the ids it hands out, and lets the adapter :meth:`~TrackedSampler.consume`
them in order as micro-batches are trained, so per-sample signals meet the right ids. Its
:meth:`~TrackedSampler.pending` ids (drawn, not trained) go into checkpoints and are replayed first
after a resume, so the resumed id stream equals the uninterrupted one.

Both layouts resume at another number of processes with the same global batch: an unsharded
stream that the host shards (Hugging Face/Accelerate) keeps global pending ids and a global count;
a sampler that shards itself (Lightning) has its pending ids, this process's own, folded back into
the sampler's position by :meth:`~TrackedSampler.fold` when saving, so the checkpoint holds no
per-process ids. Pending ids that cannot be folded are refused on load at more than one process.

    >>> from cadence.curricula import Arms, CurriculumSampler, Uniform
    >>> tracked = TrackedSampler(CurriculumSampler(Uniform(Arms(["a", "b"] * 4)), batch_size=2), num_samples=6)
    >>> stream = iter(tracked); drawn = [next(stream) for _ in range(4)]   # a loader drew two batches
    >>> tracked.consume(2).tolist() == drawn[:2], tracked.pending() == drawn[2:]
    (True, True)
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterator

import numpy as np
from torch.utils.data import Sampler

from cadence.errors import CadenceError, StateError


class TrackedSampler(Sampler[int]):
    """Yields a curriculum sampler's ids (``num_samples`` over the whole run, or endlessly) and remembers which
    ones the training loop has not consumed yet (DataLoaders prefetch), so feedback reaches the
    right ids and a checkpoint can replay the prefetched ones on resume.

    ``world``/``rank``: when Accelerate shards the stream batch by batch across processes, each
    training micro-batch of ``n`` rows consumes ``n * world`` ids, of which this rank's are the
    ``rank``-th ``n``.

    ``host_skips``: the host fast-forwards its data loader past the batches it already trained
    (Hugging Face's resume does, then restores its RNG). After :meth:`load_state_dict` the first
    ``iter()`` then begins with that many placeholder ids, which the host discards unseen.
    """

    def __init__(self, sampler: Any, num_samples: int | None = None, *, world: int = 1, rank: int = 0,
                 host_skips: bool = False) -> None:
        self.sampler, self.world, self.rank, self.host_skips = sampler, world, rank, host_skips
        self._placeholders = 0
        self.num_samples = None if num_samples is None else int(num_samples)
        self._unconsumed: deque[int] = deque()
        self._replay: deque[int] = deque()
        self._iterator: Iterator[int] | None = None
        self.consumed = 0  # ids trained on so far, over all ranks

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError("an endless TrackedSampler has no length")
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        placeholders, self._placeholders = self._placeholders, 0
        for _ in range(placeholders):  # discarded by the host's fast-forward, never trained on
            yield self._replay[0] if self._replay else 0
        left = None if self.num_samples is None else self.num_samples - self.consumed - len(self._unconsumed)
        while left is None or left > 0:
            if left is not None:
                left -= 1
            item = self._replay.popleft() if self._replay else self._next()
            self._unconsumed.append(item)
            yield item

    def _next(self) -> int:
        if self._iterator is None:
            self._iterator = iter(self.sampler)
        try:
            return int(next(self._iterator))
        except StopIteration:
            self._iterator = iter(self.sampler)
            return int(next(self._iterator))

    def consume(self, n: int) -> np.ndarray:
        """The ids of the next micro-batch of ``n`` rows on this rank, in the order they were drawn."""
        need = n * self.world
        if len(self._unconsumed) < need:
            raise CadenceError(f"the training loop used {need} rows but the curriculum drew only "
                               f"{len(self._unconsumed)} not yet used; is the Trainer's sampler replaced?")
        ids = np.array([self._unconsumed.popleft() for _ in range(need)], dtype=np.int64)
        self.consumed += need
        return ids[self.rank * n:(self.rank + 1) * n]

    def pending(self) -> list[int]:
        """Ids drawn but not yet trained on (replayed first after a resume)."""
        return list(self._replay) + list(self._unconsumed)

    def state_dict(self) -> dict[str, Any]:
        """The pending ids and the consumed count (the wrapped sampler checkpoints itself). For a
        sampler that shards itself, ``shards`` records its ``num_replicas``: the pending ids are then
        this process's own."""
        state = {"kind": "cadence.TrackedSampler", "pending": [int(i) for i in self.pending()],
                 "consumed": int(self.consumed)}
        if self._shards() > 1:
            state["shards"] = self._shards()
        return state

    def _shards(self) -> int:
        return int(getattr(self.sampler, "num_replicas", 1)) if self.world == 1 else 1

    def fold(self, sampler_state: dict[str, Any], state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(sampler_state, state)`` with the pending ids put back into the wrapped sampler's position
        when they are the tail of its current shard (a loader prefetched them): the sampler then yields
        them again on resume, on whichever process and at whichever number of processes. Unchanged
        when they cannot be folded."""
        unyield = getattr(self.sampler, "unyield_state", None)
        folded = None if unyield is None else unyield(sampler_state, state["pending"])
        if folded is None:
            return sampler_state, state
        return folded, {k: v for k, v in state.items() if k != "shards"} | {"pending": []}

    def load_state_dict(self, state: Any) -> None:
        """Replay the saved pending ids before drawing anew (load the wrapped sampler's state too)."""
        if not isinstance(state, dict) or state.get("kind") != "cadence.TrackedSampler":
            raise StateError("not a TrackedSampler state_dict (missing kind='cadence.TrackedSampler')")
        try:
            pending, consumed = deque(int(i) for i in state["pending"]), int(state["consumed"])
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed TrackedSampler state_dict: {e!r}") from e
        shards = state.get("shards", 1)
        if pending and shards > 1:
            raise StateError(f"the checkpoint holds {len(pending)} ids that one of {shards} processes drew but had not "
                             f"trained (prefetched past a global batch); they are that process's own and cannot be "
                             f"handed to {self._shards()} process(es). Resume from a checkpoint saved with the "
                             f"DataLoader prefetching at most one batch (num_workers=0)")
        self._replay, self._unconsumed, self._iterator, self.consumed = pending, deque(), None, consumed
        self._placeholders = consumed if self.host_skips else 0  # the host skips its shard of the global stream
