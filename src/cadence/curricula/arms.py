"""Arms: items grouped by a key (source, difficulty level, skill, or a tuple for 2-D curricula).

An item is identified by its index ``0..n-1`` in the dataset. :class:`Arms` stores, for every
item, the index of its arm (one ``int32`` array) and a grouping of item ids by arm (one more
``int32`` array plus offsets), so 10M items cost about 80 MB.

    >>> arms = Arms(["math", "code", "math", ("add", 3)])
    >>> arms.names
    ['code', 'math', ('add', 3)]
    >>> arms.items(1).tolist(), arms.arm_of([3, 0]).tolist()
    ([0, 2], [2, 1])
"""

from __future__ import annotations

import collections.abc
import warnings
import zlib
from typing import Any, Hashable, Sequence

import numpy as np

from cadence.errors import CadenceError


class UnknownItemError(CadenceError, IndexError):
    """An item id that is not in the arm set (named in the message)."""


class EmptyArmWarning(UserWarning):
    """An arm without items: it is excluded from sampling (its probability is 0)."""


def _sort_key(key: Hashable) -> tuple:
    """Orders mixed keys deterministically: strings, then numbers, then tuples, then anything else."""
    if isinstance(key, str):
        return (0, key)
    if isinstance(key, (int, float, np.integer, np.floating)) and not isinstance(key, bool):
        return (1, float(key))
    if isinstance(key, tuple):
        return (2, tuple(_sort_key(k) for k in key))
    return (3, type(key).__name__, repr(key))


def _as_scores(name: str, values: Any, n: int) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise CadenceError(f"{name} must have one value per item ({n}), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise CadenceError(f"{name} of item {bad} is {arr[bad]!r}; scores must be finite")
    return arr


class Arms:
    """Items grouped into arms by a key, with optional per-item ``difficulty`` and ``quality``.

    Args:
        keys: one hashable key per item (item id = position). A numpy array of strings or
            integers is grouped with ``np.unique`` (fast for millions of items).
        difficulty, quality: optional per-item scores (finite floats).
        names: optional full list of arm keys, to declare arms that have no items yet. Such
            arms are excluded from sampling with an :class:`EmptyArmWarning`.

    ``names`` are sorted (strings, then numbers, then tuples), so arm indices do not depend on
    the order items appear in.
    """

    def __init__(self, keys: Sequence[Hashable] | np.ndarray, *, difficulty: Any = None, quality: Any = None,
                 names: Sequence[Hashable] | None = None) -> None:
        if isinstance(keys, np.ndarray) and keys.dtype != object:
            uniq, codes = np.unique(keys, return_inverse=True)
            found = [k.item() for k in uniq]
        else:
            found_set: dict[Hashable, None] = {}
            for k in keys:
                found_set.setdefault(k, None)
            found = sorted(found_set, key=_sort_key)
            index = {k: i for i, k in enumerate(found)}
            codes = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
        if names is not None:
            declared = sorted(dict.fromkeys(names), key=_sort_key)
            declared_set = set(declared)
            missing = [k for k in found if k not in declared_set]
            if missing:
                raise CadenceError(f"item key {missing[0]!r} is not among the declared arm names")
            remap = np.array([declared.index(k) for k in found], dtype=np.int64)
            codes = remap[codes] if len(codes) else codes
            found = declared
        self._init(found, np.asarray(codes, dtype=np.int64), difficulty, quality)

    @classmethod
    def from_codes(cls, arm_index: np.ndarray, names: Sequence[Hashable], *, difficulty: Any = None,
                   quality: Any = None) -> Arms:
        """Build from an integer array ``arm_index`` (arm of each item) and the arm ``names`` in
        that order, without sorting. The fast path for very large datasets.

            >>> Arms.from_codes(np.array([1, 0, 1]), ["easy", "hard"]).items(1).tolist()
            [0, 2]
        """
        codes = np.asarray(arm_index)
        if codes.ndim != 1 or not np.issubdtype(codes.dtype, np.integer):
            raise CadenceError("arm_index must be a 1-D integer array")
        if len(codes) and (codes.min() < 0 or codes.max() >= len(names)):
            raise CadenceError(f"arm_index values must lie in [0, {len(names)}), got {codes.min()}..{codes.max()}")
        self = cls.__new__(cls)
        self._init(list(names), codes, difficulty, quality)
        return self

    def _init(self, names: list, codes: np.ndarray, difficulty: Any, quality: Any) -> None:
        n, k = len(codes), len(names)
        if k == 0:
            raise CadenceError("an arm set needs at least one item")
        if len(set(names)) != k:
            raise CadenceError("arm names must be distinct")
        small = np.int32 if max(n, k) < 2**31 - 1 else np.int64
        self.names: list[Hashable] = list(names)
        self.item_arm: np.ndarray = codes.astype(small, copy=False)
        self.sizes: np.ndarray = np.bincount(codes, minlength=k).astype(np.int64)
        self.offsets: np.ndarray = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.by_arm: np.ndarray = np.argsort(codes, kind="stable").astype(small)
        self.difficulty = _as_scores("difficulty", difficulty, n)
        self.quality = _as_scores("quality", quality, n)
        self.active: np.ndarray = self.sizes > 0
        self._all_active = bool(self.active.all())     # lets policies skip masking (see base.active_mask)
        if not self.active.any():
            raise CadenceError("every arm is empty; an arm set needs at least one item")
        for i in np.flatnonzero(~self.active):
            warnings.warn(f"arm {self.names[i]!r} has no items; it is excluded from sampling", EmptyArmWarning,
                          stacklevel=3)

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.item_arm)

    @property
    def num_items(self) -> int:
        return len(self.item_arm)

    @property
    def num_arms(self) -> int:
        return len(self.names)

    def index(self, name: Hashable) -> int:
        """The arm index of arm ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise CadenceError(f"unknown arm {name!r}; arms are {self.names!r}") from None

    def check_ids(self, item_ids: Any) -> np.ndarray:
        """``item_ids`` (a sequence, numpy array or torch tensor) as an int64 array, or
        :class:`UnknownItemError` naming the first bad id."""
        if isinstance(item_ids, np.ndarray):
            pass
        elif hasattr(item_ids, "detach") and hasattr(item_ids, "is_floating_point"):    # a torch tensor
            t = item_ids.detach()
            item_ids = (t.double() if t.is_floating_point() else t).cpu().numpy()    # bfloat16 has no numpy dtype
        elif isinstance(item_ids, (str, bytes, collections.abc.Mapping)):
            raise UnknownItemError(f"item ids must be an array of integers, got {type(item_ids).__name__}")
        try:
            ids = np.asarray(item_ids)
        except (ValueError, TypeError) as e:                                    # ragged or unreadable
            raise UnknownItemError(f"item ids must be a flat array of integers: {e}") from None
        if ids.ndim != 1:
            ids = ids.reshape(-1)
        if ids.size and ids.dtype.kind not in "ium":                    # kinds np.issubdtype counts as integer
            if ids.dtype.kind == "f" and np.all(np.isfinite(ids)) and np.all(ids == np.round(ids)):
                ids = ids.astype(np.int64)
            else:
                raise UnknownItemError(f"item ids must be integers, got {ids.dtype} value {ids.flat[0]!r}")
        ids = ids.astype(np.int64, copy=False)
        # one reduction: read as unsigned, a negative id is larger than any valid one
        if ids.size and ids.view(np.uint64).max() >= len(self.item_arm):
            bad = (ids < 0) | (ids >= len(self.item_arm))
            raise UnknownItemError(f"unknown item id {int(ids[bad][0])}: ids must lie in [0, {len(self.item_arm)})")
        return ids

    def arm_of(self, item_ids: Any) -> np.ndarray:
        """Arm index of each item id (raises :class:`UnknownItemError` naming an unknown id)."""
        return self.item_arm[self.check_ids(item_ids)].astype(np.int64)

    def items(self, arm: int) -> np.ndarray:
        """Item ids in arm ``arm`` (an index), in ascending order."""
        if not 0 <= arm < len(self.names):
            raise CadenceError(f"arm index {arm} out of range [0, {len(self.names)})")
        return self.by_arm[self.offsets[arm]:self.offsets[arm + 1]]

    def signature(self) -> dict[str, Any]:
        """A plain-Python fingerprint of the arm set, stored in every policy's ``state_dict``."""
        return {"names": [repr(k) for k in self.names], "sizes": self.sizes.tolist(),
                "crc": zlib.crc32(np.ascontiguousarray(self.item_arm).data)}

    def nbytes(self) -> int:
        """Bytes held by this arm set's arrays."""
        arrays = [self.item_arm, self.sizes, self.offsets, self.by_arm, self.active]
        arrays += [a for a in (self.difficulty, self.quality) if a is not None]
        return int(sum(a.nbytes for a in arrays))

    def __repr__(self) -> str:
        return f"Arms({len(self.names)} arms, {len(self)} items)"
