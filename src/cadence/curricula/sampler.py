"""Torch adapters: :class:`CurriculumSampler` (a ``Sampler`` of item ids) and
:class:`CurriculumDataset` (an ``IterableDataset`` wrapper).

The sampler draws one **global batch** at a time from the policy with its own RNG, so adaptive
policies see feedback between batches; under torch.distributed every rank draws the same global
batch and yields its contiguous shard (``batch_size / num_replicas`` ids).

* ``replacement=True``: an endless stream (or ``batches_per_epoch`` batches per ``iter()``).
* ``replacement=False``: no item repeats within an epoch. Arms are still chosen by the policy;
  an arm (or an admitted window) that runs out gets probability 0. **Exhaustion** happens when
  the items the policy may draw cannot fill the next global batch: with ``on_exhausted="stop"``
  (default) the partial batch is dropped, the epoch ends (iteration stops, ``exhausted`` counts
  the event, ``epoch`` increases) and the next ``iter()`` starts a fresh epoch; with ``"refill"``
  all items become available again and the batch is completed from the new epoch.

``state_dict()`` holds the policy's state, the sampler's RNG, the used-item mask and the position
inside the current batch, so the id stream after ``load_state_dict`` equals the uninterrupted one.

**Another number of processes.** The global batch is drawn by one RNG and only sharded, so a state
saved at ``num_replicas=N`` loads into a sampler with ``num_replicas=M`` and the same global
``batch_size``: the global stream continues exactly, each process taking its new shard. That needs
the state to lie at a global-batch boundary (each process had yielded none or all of its shard);
saved part-way through a shard, the rest of that batch cannot be split into M shards that continue
the N old ones, and the load is refused (a :class:`~cadence.errors.StateError` saying so).

    >>> from cadence.curricula import Arms, Uniform
    >>> sampler = CurriculumSampler(Uniform(Arms(["a", "b"] * 4)), batch_size=4, replacement=False)
    >>> sorted(list(sampler))        # one epoch: 8 items, each once
    [0, 1, 2, 3, 4, 5, 6, 7]
"""

from __future__ import annotations

import copy
from typing import Any, Iterator, Literal, Mapping

import numpy as np
from torch.utils.data import IterableDataset, Sampler, get_worker_info

from cadence.curricula.base import Policy
from cadence.curricula.distributed import gather_feedback, world
from cadence.errors import CadenceError, StateError
from cadence.state import plain


class SamplerExhausted(CadenceError):
    """A without-replacement sampler cannot fill the next global batch (the epoch is over)."""


def _first_unique(ids: np.ndarray) -> np.ndarray:
    """``ids`` without repeats, keeping first occurrences in order."""
    return ids[np.sort(np.unique(ids, return_index=True)[1])]


class CurriculumSampler(Sampler[int]):
    """A ``torch.utils.data.Sampler`` of item ids chosen by a curriculum policy.

    Args:
        policy: any :class:`~cadence.curricula.base.Policy`.
        batch_size: the **global** batch size (divisible by ``num_replicas``).
        seed: seed of the sampler's own RNG (the policy's RNG is not used for batches).
        replacement: draw with replacement (default) or without, within an epoch.
        num_replicas, rank: data-parallel world; default from torch.distributed (or 1, 0). With
            ``num_replicas=1`` the rank defaults to 0 (one stream a framework shards itself).
        batches_per_epoch: with replacement, how many global batches one ``iter()`` yields
            (``None``: endless).
        on_exhausted: ``"stop"`` or ``"refill"``, see the module docs.

    Use ``DataLoader(dataset, batch_size=sampler.local_batch_size, sampler=sampler)`` with
    ``num_workers=0`` or a small ``prefetch_factor`` (prefetched batches are drawn before the
    feedback of the current step arrives).
    """

    def __init__(self, policy: Policy, batch_size: int, *, seed: int = 0, replacement: bool = True,
                 num_replicas: int | None = None, rank: int | None = None, batches_per_epoch: int | None = None,
                 on_exhausted: Literal["stop", "refill"] = "stop") -> None:
        if not isinstance(policy, Policy):
            raise CadenceError(f"CurriculumSampler needs a curriculum Policy, got {type(policy).__name__}")
        size, my_rank = world()
        self.num_replicas = size if num_replicas is None else int(num_replicas)
        # an explicit single replica (one stream that a framework shards itself) is rank 0
        self.rank = int(rank) if rank is not None else (my_rank if self.num_replicas > 1 else 0)
        if not isinstance(batch_size, int) or batch_size < 1 or batch_size % self.num_replicas:
            raise CadenceError(f"batch_size must be a positive multiple of num_replicas={self.num_replicas}, "
                               f"got {batch_size!r}")
        if not 0 <= self.rank < self.num_replicas:
            raise CadenceError(f"rank {self.rank} out of range for num_replicas={self.num_replicas}")
        if on_exhausted not in ("stop", "refill"):
            raise CadenceError(f"on_exhausted must be 'stop' or 'refill', got {on_exhausted!r}")
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise CadenceError(f"batches_per_epoch must be positive or None, got {batches_per_epoch!r}")
        if not replacement and getattr(policy, "exact_batches", False):
            raise CadenceError(f"{type(policy).__name__} counts each draw as one batch; draw it with replacement=True")
        if not replacement and batch_size > policy.arms.num_items:
            raise CadenceError(f"batch_size {batch_size} exceeds the {policy.arms.num_items} items; "
                               f"a without-replacement batch cannot be filled")
        self.policy, self.batch_size, self.replacement = policy, batch_size, replacement
        self.local_batch_size = batch_size // self.num_replicas
        self.batches_per_epoch, self.on_exhausted = batches_per_epoch, on_exhausted
        self.rng = np.random.default_rng(seed)
        self.used = None if replacement else np.zeros(policy.arms.num_items, dtype=bool)
        self.epoch = 0
        self.batches = 0            # global batches drawn in total
        self.epoch_batches = 0      # global batches drawn in this epoch
        self.exhausted = 0          # exhaustion events
        self._batch: np.ndarray | None = None      # the current global batch
        self._pos = 0                              # ids of this rank's shard already yielded

    # ------------------------------------------------------------------ drawing
    def next_batch(self, size: int | None = None) -> np.ndarray:
        """Draw the next **global** batch (all ranks get the same one) and record it as drawn;
        ``size`` ids instead of ``batch_size`` when given (RL prompt selection draws refills).

        Raises :class:`SamplerExhausted` (without replacement, ``on_exhausted="stop"``) when the
        batch cannot be filled; the epoch is then over and the used mask is reset.
        """
        size = self.batch_size if size is None else size
        if not isinstance(size, (int, np.integer)) or size < 0:
            raise CadenceError(f"a batch size must be a non-negative integer, got {size!r}")
        if self.replacement:
            ids = self.policy.draw(size, self.rng)
        else:
            ids = self._draw_unused(size)
        self.policy.record_drawn(ids)
        self.batches += 1
        self.epoch_batches += 1
        return ids

    def _draw_unused(self, n: int) -> np.ndarray:
        taken: list[np.ndarray] = []
        need = n
        for _ in range(4):                      # fast path: draw, reject used ids
            ids = self.policy.draw(2 * need, self.rng)
            fresh = _first_unique(ids[~self.used[ids]])[:need]
            self.used[fresh] = True
            taken.append(fresh)
            low_yield = 2 * len(fresh) < need
            need -= len(fresh)
            if need == 0 or low_yield:          # done, or most draws were used ids: go exact
                break
        refilled = False
        while need > 0:
            try:
                fresh = self._draw_exact(need)
            except SamplerExhausted:
                self._new_epoch()
                if self.on_exhausted == "stop":
                    self.exhausted += 1
                    raise
                if refilled:
                    raise SamplerExhausted(f"the items the policy admits cannot fill one batch of {self.batch_size} "
                                           f"even after a refill") from None
                refilled = True
                self.used[np.concatenate(taken)] = True
                continue
            taken.append(fresh)
            need -= len(fresh)
        out = np.concatenate(taken)
        return out[self.rng.permutation(len(out))]

    def _draw_exact(self, n: int) -> np.ndarray:
        """Draw ``n`` unused items with the same law as the fast path: arm a with weight
        ``p_a·(unused_a / candidates_a)``, then uniform over its unused candidates."""
        p = self.policy.probabilities()
        arms = np.flatnonzero(p > 0)
        pools, sizes = [], np.zeros(len(arms))
        for i, a in enumerate(arms):
            cand = self.policy.candidates(int(a))
            pools.append(cand[~self.used[cand]])
            sizes[i] = max(len(cand), 1)
        weights = p[arms] * np.array([len(pool) for pool in pools]) / sizes
        out: list[np.ndarray] = []
        need = n
        while need > 0:
            if weights.sum() <= 0:
                raise SamplerExhausted(f"epoch {self.epoch}: the items the policy may draw cannot fill a batch of "
                                       f"{self.batch_size} without replacement")
            picks = self.policy.draw_arms(need, self.rng, weights / weights.sum())
            for i, count in zip(*np.unique(picks, return_counts=True)):
                pool = pools[i]
                chosen = self.rng.choice(len(pool), size=min(int(count), len(pool)), replace=False)
                out.append(pool[chosen])
                self.used[pool[chosen]] = True
                pools[i] = np.delete(pool, chosen)
                weights[i] = p[arms[i]] * len(pools[i]) / sizes[i]
                need -= len(chosen)
        return np.concatenate(out)

    def _new_epoch(self) -> None:
        self.used[:] = False
        self.epoch += 1
        self.epoch_batches = 0

    def local(self, global_batch: np.ndarray) -> np.ndarray:
        """This rank's contiguous shard of a global batch."""
        k = self.local_batch_size
        return global_batch[self.rank * k:(self.rank + 1) * k]

    def __iter__(self) -> Iterator[int]:
        while True:
            if self._batch is None or self._pos >= self.local_batch_size:
                if (self.replacement and self.batches_per_epoch is not None
                        and self.epoch_batches >= self.batches_per_epoch):
                    self.epoch += 1
                    self.epoch_batches = 0
                    self._batch = None
                    return
                try:
                    self._batch = self.next_batch()
                except SamplerExhausted:
                    self._batch = None
                    return
                self._pos = 0
            i = self._pos
            self._pos += 1
            yield int(self.local(self._batch)[i])

    def __len__(self) -> int:
        """Ids this rank yields per epoch (with replacement only when ``batches_per_epoch`` is set;
        without replacement an upper bound: policies that admit a subset end epochs sooner)."""
        if self.replacement:
            if self.batches_per_epoch is None:
                raise TypeError("an endless CurriculumSampler has no length; set batches_per_epoch")
            return self.batches_per_epoch * self.local_batch_size
        return self.policy.arms.num_items // self.batch_size * self.local_batch_size

    # ------------------------------------------------------------------ feedback
    def observe(self, item_ids: Any, **signals: Any) -> None:
        """Feed this rank's signals back; under torch.distributed they are all-gathered first so
        every rank's policy sees the whole global batch in rank order. (With ``num_replicas > 1``
        but no initialised process group, only this rank's signals reach the policy.)"""
        if self.num_replicas > 1:
            item_ids, signals = gather_feedback(item_ids, signals)
        self.policy.observe(item_ids, **signals)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Sampler and policy state (plain Python values: ``weights_only`` loading reads it)."""
        return plain({"kind": "CurriculumSampler", "policy": self.policy.state_dict(),
                      "rng": self.rng.bit_generator.state, "batch_size": self.batch_size,
                      "replacement": self.replacement, "num_replicas": self.num_replicas,
                      "used": None if self.used is None else np.packbits(self.used),
                      "epoch": self.epoch, "batches": self.batches, "epoch_batches": self.epoch_batches,
                      "exhausted": self.exhausted, "pos": self._pos, "batch": self._batch})

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (policy included); rejects a mismatched sampler. A state saved
        at another ``num_replicas`` (same global ``batch_size``) loads when it lies at a global-batch
        boundary (see the module docs)."""
        if not isinstance(state, Mapping) or state.get("kind") != "CurriculumSampler":
            raise StateError("state is not a CurriculumSampler state")
        if state.get("batch_size") != self.batch_size:
            raise StateError(f"sampler state has batch_size={state.get('batch_size')!r}, this sampler has "
                             f"{self.batch_size!r}: the global stream continues only with the same global batch size "
                             f"(at another number of processes, keep batch_size global; each takes batch_size/num_replicas)")
        if state.get("replacement") != self.replacement:
            raise StateError(f"sampler state has replacement={state.get('replacement')!r}, this sampler has "
                             f"{self.replacement!r}")
        pos = self._resharded(state)
        used = None
        if not self.replacement:
            used = np.unpackbits(np.asarray(state["used"], dtype=np.uint8))[:self.policy.arms.num_items].astype(bool)
            if used.shape != self.used.shape:
                raise StateError("sampler state's used-item mask does not match the arm set")
        rng = np.random.default_rng()
        rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.policy.load_state_dict(state["policy"])        # validates the arm set; raises before we change
        self.rng, self.used = rng, used
        self.epoch, self.batches = int(state["epoch"]), int(state["batches"])
        self.epoch_batches, self.exhausted = int(state["epoch_batches"]), int(state["exhausted"])
        self._pos = pos
        self._batch = None if state["batch"] is None else np.asarray(state["batch"], dtype=np.int64).copy()

    def _resharded(self, state: Mapping[str, Any]) -> int:
        """The position in this sampler's shard of the saved current batch (saved at any ``num_replicas``)."""
        saved, pos = state.get("num_replicas"), state.get("pos")
        if not isinstance(saved, int) or saved < 1 or self.batch_size % saved or not isinstance(pos, int):
            raise StateError(f"malformed sampler state: num_replicas={saved!r}, pos={pos!r}")
        if saved == self.num_replicas:
            return pos
        shard = self.batch_size // saved
        if state.get("batch") is None or pos == 0:
            return 0
        if pos >= shard:
            return self.local_batch_size
        raise StateError(f"sampler state was saved {pos} ids into each process's {shard}-id shard of a global batch "
                         f"at num_replicas={saved}; at num_replicas={self.num_replicas} the rest of that batch cannot "
                         f"be split so that each process continues its own shard. Resume with {saved} processes, or "
                         f"save at a global-batch boundary (after the step that trained the whole batch)")

    def unyield_state(self, state: Mapping[str, Any], ids: Any) -> dict[str, Any] | None:
        """A copy of ``state`` (this sampler's :meth:`state_dict`) in which ``ids``, the last ids this
        process yielded (a loader prefetched them, nothing trained on them), count as not yet yielded;
        ``None`` when they are not the tail of this process's shard of the current batch.

            >>> from cadence.curricula import Arms, Uniform
            >>> sampler = CurriculumSampler(Uniform(Arms(["a"] * 8)), batch_size=4, num_replicas=2, rank=1)
            >>> stream = iter(sampler); shard = [next(stream), next(stream)]
            >>> sampler.unyield_state(sampler.state_dict(), shard)["pos"], sampler.unyield_state(sampler.state_dict(), [9])
            (0, None)
        """
        ids = [int(i) for i in ids]
        pos, batch = int(state["pos"]), state["batch"]
        if not ids:
            return dict(state)
        if batch is None or len(ids) > pos:
            return None
        if self.local(np.asarray(batch))[pos - len(ids):pos].tolist() != ids:
            return None
        return {**state, "pos": pos - len(ids)}


class CurriculumDataset(IterableDataset):
    """An ``IterableDataset`` yielding ``dataset[i]`` (or ``(i, dataset[i])`` with ``with_ids``)
    for the ids a :class:`CurriculumSampler` draws. Runs in the main process only
    (``num_workers=0``): the policy must see feedback between batches.

        >>> from cadence.curricula import Arms, Uniform
        >>> ds = CurriculumDataset(["x", "y"], CurriculumSampler(Uniform(Arms(["a", "b"])), 2,
        ...                        replacement=False), with_ids=True)
        >>> sorted(ds)
        [(0, 'x'), (1, 'y')]
    """

    def __init__(self, dataset: Any, sampler: CurriculumSampler, *, with_ids: bool = False) -> None:
        if len(dataset) != sampler.policy.arms.num_items:
            raise CadenceError(f"dataset has {len(dataset)} items but the arms describe "
                               f"{sampler.policy.arms.num_items}")
        self.dataset, self.sampler, self.with_ids = dataset, sampler, with_ids

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        if info is not None and info.num_workers > 0:
            raise CadenceError("CurriculumDataset must be iterated in the main process (DataLoader num_workers=0): "
                               "worker copies of the policy would not see feedback")
        for i in self.sampler:
            yield (i, self.dataset[i]) if self.with_ids else self.dataset[i]

    def observe(self, item_ids: Any, **signals: Any) -> None:
        """Same as :meth:`CurriculumSampler.observe`."""
        self.sampler.observe(item_ids, **signals)

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sampler.load_state_dict(state)
