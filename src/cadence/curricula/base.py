"""The :class:`Policy` interface every curriculum implements, with its one feedback path.

A policy holds a distribution over arms (:meth:`Policy.probabilities`), draws item ids with its
own ``numpy`` generator (:meth:`Policy.sample`), and learns from per-item signals passed to
:meth:`Policy.observe`. The base class validates every signal before any state changes:

* a signal the policy needs but did not get raises :class:`MissingSignalError` naming it;
* an unknown item id raises :class:`~cadence.curricula.arms.UnknownItemError` naming the id;
* NaN/inf values are dropped (the whole row) and counted in ``policy.dropped``, never stored;
* empty arms get probability 0.

``state_dict()`` holds plain Python values (numpy arrays as lists), including the RNG, and
``load_state_dict`` rejects state from another policy kind or another arm set, changing nothing.

    >>> from cadence.curricula import Arms, FixedMixture
    >>> policy = FixedMixture(Arms(["a", "b", "b"]), {"a": 3, "b": 1}, seed=0)
    >>> policy.probabilities().tolist()
    [0.75, 0.25]
"""

from __future__ import annotations

import abc
import collections.abc
import copy
import math
from typing import Any, ClassVar, Hashable, Mapping

import numpy as np

from cadence.clock import Clock
from cadence.curricula.arms import Arms
from cadence.errors import CadenceError, StateError
from cadence.state import plain

SIGNALS = ("loss", "reward", "advantage", "correct", "length")
"""The per-item signals :meth:`Policy.observe` accepts (``length``: response tokens, from RL trainers)."""

POLICIES: dict[str, type[Policy]] = {}
"""Registry name → policy class (see :func:`make_policy`)."""


class MissingSignalError(CadenceError):
    """``observe`` was called without a signal the policy needs."""


MISSING = ("A missing value (None or NaN, e.g. a TRL reward function's None for a completion it does not "
           "score) and a non-finite one (±inf) are the same: the item's row is dropped from that observe() "
           "call, counted in the policy's dropped[signal], and never learned from.")
"""The one rule for missing signal values, everywhere signals enter a policy (docs/curricula.md)."""


def as_signal(name: str, values: Any, n: int | None = None) -> np.ndarray:
    """A per-item signal as a flat float64 array (of length ``n`` unless ``n`` is None): the one
    place where signals are converted. Accepts sequences, numpy arrays and torch tensors of any real
    dtype (bool, integer, float16, bfloat16, ...) on any device; anything else (strings, mappings,
    ragged lists, complex numbers, objects, integers beyond the float range) raises
    :class:`~cadence.errors.CadenceError` naming the signal. ``None`` is a missing value and reads as
    NaN (:data:`MISSING`: policies drop and count such rows).

        >>> import torch
        >>> as_signal("loss", torch.tensor([0.5, 2.0], dtype=torch.bfloat16), 2).tolist()
        [0.5, 2.0]
        >>> as_signal("reward", [1.0, None], 2).tolist()
        [1.0, nan]
        >>> as_signal("loss", ["a", "b"], 2)
        Traceback (most recent call last):
        ...
        cadence.errors.CadenceError: signal 'loss' must hold real numbers, got ['a', 'b'] (dtype <U1)
    """
    arr = _real_array(name, values)
    if n is None:
        return arr
    if arr.shape[0] != n:
        raise CadenceError(f"signal {name!r} has {arr.shape[0]} values for {n} item ids; pass one value per id")
    if name == "correct" and not ((arr == 0) | (arr == 1)).all():   # fast path: every value is 0 or 1
        finite = arr[np.isfinite(arr)]
        if not np.all((finite == 0) | (finite == 1)):
            bad = finite[(finite != 0) & (finite != 1)][0]
            raise CadenceError(f"signal 'correct' must be 0/1 or bool, got {bad!r}")
    return arr


def _real_array(name: str, values: Any) -> np.ndarray:
    """``values`` as a flat float64 numpy array, or CadenceError naming signal ``name``."""
    if not isinstance(values, np.ndarray):
        if hasattr(values, "detach") and hasattr(values, "is_complex"):        # a torch tensor
            t = values.detach()
            if t.is_complex():
                raise CadenceError(f"signal {name!r} must hold real numbers, got a complex tensor ({t.dtype})")
            if t.is_floating_point() and t.dtype != _torch_float64():
                t = t.double()                  # float16/bfloat16 have no numpy dtype; widening is exact
            values = t.cpu().numpy()
        elif isinstance(values, (str, bytes, collections.abc.Mapping)):
            raise CadenceError(f"signal {name!r} must be an array of numbers, one per item id, got "
                               f"{type(values).__name__} {_short(values)}")
    try:
        arr = np.asarray(values)
        if arr.dtype.kind == "O":               # Python objects: numbers may still be real ones
            flat = arr.reshape(-1)
            if not all(v is None or isinstance(v, (int, float, np.integer, np.floating)) for v in flat):
                raise TypeError("not all real numbers")
            # None is a missing value, as NaN (see MISSING); OverflowError for an int beyond the float range
            arr = np.array([np.nan if v is None else v for v in flat], dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as e:
        raise CadenceError(f"signal {name!r} must be a flat array of real numbers, one per item id, got "
                           f"{_short(values)} ({e})") from None
    if arr.dtype.kind not in "biuf":
        raise CadenceError(f"signal {name!r} must hold real numbers, got {_short(values)} (dtype {arr.dtype})")
    return arr.astype(np.float64, copy=False).reshape(-1)


def _torch_float64() -> Any:
    import torch

    return torch.float64


def _short(values: Any) -> str:
    try:
        text = repr(values)
    except Exception:                           # e.g. an int too long to print
        return type(values).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def all_finite(values: np.ndarray) -> bool:
    """Whether every value of a float array is finite (huge finite values included: no sum is
    taken, so nothing overflows).

        >>> all_finite(np.array([1.0, 2.0])), all_finite(np.array([1.0, np.nan])), all_finite(np.array([1e308] * 2))
        (True, False, True)
    """
    return bool(np.isfinite(values).all())


def arm_means(arm_idx: np.ndarray, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-arm mean of ``values`` (0 where the arm's count is 0); ``counts`` is
    ``np.bincount(arm_idx, minlength=num_arms)``, which :meth:`Policy.observe` passes to ``_update``.

        >>> arm = np.array([0, 0, 2])
        >>> arm_means(arm, np.array([1.0, 2.0, 5.0]), np.bincount(arm, minlength=3)).tolist()
        [1.5, 0.0, 5.0]
    """
    sums = np.bincount(arm_idx, weights=values, minlength=len(counts))
    if not all_finite(sums):                          # finite values whose sum overflows: average them scaled
        scale = float(np.abs(values).max())
        sums = np.bincount(arm_idx, weights=values / scale, minlength=len(counts))
        return saturate(sums / np.maximum(counts, 1) * scale)
    return sums / np.maximum(counts, 1)               # an empty arm has sum 0, so its mean is 0/1 = 0


FLOAT_MAX = float(np.finfo(np.float64).max)
"""The largest float64: where overflowing arithmetic on huge signals saturates (see :func:`saturate`)."""


def saturate(x: Any) -> np.ndarray:
    """``x`` with overflowed values (±inf) put back to ±:data:`FLOAT_MAX` (NaN stays NaN).

    Policies learn from any finite signal, however large; where their arithmetic on one would
    overflow float64 (a sum of values near 1e308, an exponent ``η·λ``), the result saturates at
    the largest float instead of becoming inf and then NaN. Within the float range nothing changes.

        >>> saturate(np.array([1.0, np.inf, -np.inf])).tolist() == [1.0, FLOAT_MAX, -FLOAT_MAX]
        True
    """
    return np.clip(x, -FLOAT_MAX, FLOAT_MAX)


def softmax(x: np.ndarray, temperature: float, mask: np.ndarray | None = None, *,
            normalize: bool = True) -> np.ndarray:
    """``exp(x/τ)`` normalised (the max is subtracted first); entries outside ``mask`` get 0.
    ``normalize=False`` leaves the division by the sum to the caller (``_arm_weights`` may return
    unnormalised weights: :meth:`Policy.probabilities` normalises once).

        >>> softmax(np.array([0.0, 0.0]), 1.0).tolist(), softmax(np.array([0.0, 0.0]), 1.0, normalize=False).tolist()
        ([0.5, 0.5], [1.0, 1.0])
    """
    z = np.asarray(x, dtype=np.float64)
    if temperature != 1.0:                     # x / 1.0 is x exactly
        with np.errstate(over="ignore"):       # huge scores: handled below
            z = z / temperature
    if mask is not None:
        z = np.where(mask, z, -np.inf)
    top = z.max()
    if top == np.inf:                          # huge scores overflowed: take the gaps first, then divide
        z = saturate(np.asarray(x, dtype=np.float64))
        if mask is not None:
            z = np.where(mask, z, -np.inf)
        with np.errstate(over="ignore"):
            z = (z - z.max()) / temperature    # ≤ 0 (−inf where a gap overflows: exp gives 0, its limit)
        top = 0.0
    z = np.exp(z - top)
    if normalize:
        z /= z.sum()                           # z is a new array (or a numpy scalar)
    return z


def active_mask(arms: Arms) -> np.ndarray | None:
    """``arms.active``, or ``None`` when every arm has items (then there is nothing to mask).

        >>> active_mask(Arms(["a", "b"])) is None
        True
    """
    return None if getattr(arms, "_all_active", False) else arms.active


def per_arm(arms: Arms, values: Mapping[Hashable, Any] | Any, what: str) -> list:
    """A per-arm list from a mapping ``{arm name: value}`` (all arms must be named) or a sequence."""
    if isinstance(values, Mapping):
        unknown = [k for k in values if k not in set(arms.names)]
        if unknown:
            raise CadenceError(f"{what}: unknown arm {unknown[0]!r}; arms are {arms.names!r}")
        missing = [k for k in arms.names if k not in values]
        if missing:
            raise CadenceError(f"{what}: no value for arm {missing[0]!r}")
        return [values[k] for k in arms.names]
    out = list(values)
    if len(out) != arms.num_arms:
        raise CadenceError(f"{what}: expected {arms.num_arms} values (one per arm), got {len(out)}")
    return out


class Policy(abc.ABC):
    """Base class of curricula. Subclasses implement :meth:`_arm_weights` and, if adaptive,
    :meth:`_update`; they list their state attributes in ``_state``.

    Args:
        arms: the :class:`~cadence.curricula.arms.Arms` to choose from.
        seed: seed of the policy's private ``numpy.random.Generator``.
        clock: a :class:`~cadence.Clock` for time-dependent policies (its state is the caller's
            to checkpoint; the policy only reads it).
    """

    name: ClassVar[str] = ""
    requires: frozenset[str] = frozenset()
    _state: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            POLICIES[cls.name] = cls

    def __init__(self, arms: Arms, *, seed: int = 0, clock: Clock | None = None) -> None:
        if not isinstance(arms, Arms):
            raise CadenceError(f"{type(self).__name__} needs an Arms object first, got {type(arms).__name__}")
        self.arms = arms
        self.clock = clock
        self.rng = np.random.default_rng(seed)
        self.dropped = dict.fromkeys(SIGNALS, 0)
        self.drawn = np.zeros(arms.num_arms, dtype=np.int64)
        self.observed = np.zeros(arms.num_arms, dtype=np.int64)

    # ------------------------------------------------------------------ distribution
    @abc.abstractmethod
    def _arm_weights(self) -> np.ndarray:
        """Non-negative weights over arms (normalised by :meth:`probabilities`)."""

    def probabilities(self) -> np.ndarray:
        """The current distribution over arms (empty arms get 0); sums to 1."""
        w = np.asarray(self._arm_weights(), dtype=np.float64)
        if not (active_mask(self.arms) is None and w.shape == self.arms.active.shape and w.flags.c_contiguous):
            w = np.where(self.arms.active, w, 0.0)
        total = w.sum()
        if not (math.isfinite(total) and w.min() >= 0):   # a finite sum means every weight is finite
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise CadenceError(f"{type(self).__name__} produced invalid arm weights {w!r}")
            w = w / w.max()                               # finite weights whose sum overflows
            total = w.sum()
        if total <= 0:
            raise CadenceError(f"{type(self).__name__}: every arm with items has weight 0; nothing can be sampled")
        return w / total

    def candidates(self, arm: int) -> np.ndarray:
        """Item ids of ``arm`` that the policy may draw now (all of them unless it admits a subset)."""
        return self.arms.items(arm)

    # ------------------------------------------------------------------ drawing
    def sample(self, n: int) -> np.ndarray:
        """``n`` item ids drawn with replacement with the policy's own RNG."""
        ids = self.draw(n, self.rng)
        self.record_drawn(ids)
        return ids

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` item ids drawn with replacement using ``rng`` (samplers pass their own)."""
        if n < 0:
            raise CadenceError(f"cannot draw a negative number of items ({n})")
        return self._items_in(self.draw_arms(n, rng, self.probabilities()), rng)

    def record_drawn(self, item_ids: np.ndarray) -> None:
        """Count items handed out for training (``sample`` and samplers call this)."""
        self.drawn += np.bincount(self.arms.item_arm[item_ids], minlength=self.arms.num_arms)

    @staticmethod
    def draw_arms(n: int, rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
        """``n`` arm indices from the distribution ``p`` (inverse CDF, vectorised)."""
        cdf = np.cumsum(p)
        arm = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
        return np.minimum(arm, len(p) - 1)

    def _items_in(self, arm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniformly drawn candidate item per entry of ``arm``."""
        a = self.arms
        pick = (rng.random(len(arm)) * a.sizes[arm]).astype(np.int64)
        return a.by_arm[a.offsets[arm] + pick].astype(np.int64)

    # ------------------------------------------------------------------ feedback
    def observe(self, item_ids: Any, *, loss: Any = None, reward: Any = None, advantage: Any = None,
                correct: Any = None, length: Any = None) -> None:
        """Feed back per-item signals (arrays aligned with ``item_ids``; any subset of :data:`SIGNALS`).

        Rows where a needed signal is NaN/inf are dropped and counted in ``self.dropped``. A
        policy with no needs only counts observations.
        """
        checked = self.validate(item_ids, loss=loss, reward=reward, advantage=advantage, correct=correct,
                                length=length)
        if checked is not None:
            ids, arm, columns = checked
            counts = np.bincount(arm, minlength=self.arms.num_arms)
            self._update(ids, arm, columns, counts)
            self.observed += counts

    def validate(self, item_ids: Any, **signals: Any) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]] | None:
        """Check ids and needed signals; drop and count non-finite rows. Returns
        ``(ids, arm index per id, {signal: values})`` or ``None`` if no row is left."""
        needed = sorted(self.requires)
        missing = [k for k in needed if signals.get(k) is None]
        if missing:
            given = sorted(k for k, v in signals.items() if v is not None)
            raise MissingSignalError(
                f"{type(self).__name__} needs signal {', '.join(repr(m) for m in missing)} in observe(); "
                f"got {', '.join(given) or 'no signals'}")
        ids = self.arms.check_ids(item_ids)
        columns = {k: as_signal(k, signals[k], len(ids)) for k in needed}
        keep: np.ndarray | None = None
        for k, col in columns.items():
            if all_finite(col):
                continue
            finite = np.isfinite(col)
            if not finite.all():
                self.dropped[k] += int(len(col) - finite.sum())
                keep = finite if keep is None else keep & finite
        if keep is not None:
            ids, columns = ids[keep], {k: col[keep] for k, col in columns.items()}
        if len(ids) == 0:
            return None
        return ids, self.arms.item_arm[ids].astype(np.int64), columns

    def _update(self, ids: np.ndarray, arm: np.ndarray, signals: dict[str, np.ndarray], counts: np.ndarray) -> None:
        """Learn from validated, finite signals (default: nothing to learn); ``arm`` is each id's
        arm index and ``counts`` the number of rows per arm."""

    # ------------------------------------------------------------------ introspection
    def scores(self) -> dict[str, np.ndarray]:
        """Per-arm internal scores for logs and plots (e.g. UCB values)."""
        return {}

    def stats(self) -> dict[str, Any]:
        """Plain-Python snapshot: arm names, probabilities, counts, scores, dropped signals."""
        out: dict[str, Any] = {
            "policy": self.name, "arms": [str(k) for k in self.arms.names],
            "probabilities": self.probabilities().tolist(),
            "drawn": self.drawn.tolist(), "observed": self.observed.tolist(), "dropped": dict(self.dropped),
        }
        out["scores"] = {k: np.asarray(v, dtype=np.float64).tolist() for k, v in self.scores().items()}
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly, RNG included, as plain Python values (arrays as
        lists: ``torch.load(..., weights_only=True)`` reads it)."""
        sd: dict[str, Any] = {"kind": type(self).__name__, "arms": self.arms.signature(),
                              "rng": self.rng.bit_generator.state,
                              "dropped": self.dropped, "drawn": self.drawn, "observed": self.observed}
        for key in self._state:
            sd[key] = getattr(self, key)
        return plain(sd)                 # new lists and dicts throughout: nothing shared with the policy

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; rejects another kind or arm set, changing nothing."""
        kind = type(self).__name__
        if not isinstance(state, Mapping) or state.get("kind") != kind:
            got = state.get("kind") if isinstance(state, Mapping) else type(state).__name__
            raise StateError(f"state is for {got!r}, not {kind!r}")
        keys = ("arms", "rng", "dropped", "drawn", "observed") + self._state
        absent = [k for k in keys if k not in state]
        if absent:
            raise StateError(f"{kind} state lacks {absent!r}")
        if state["arms"] != self.arms.signature():
            theirs = state["arms"] if isinstance(state["arms"], Mapping) else {}
            raise StateError(
                f"state was saved for another arm set ({len(theirs.get('names', []))} arms "
                f"{theirs.get('names', [])[:5]}…, sizes {theirs.get('sizes', [])[:5]}…); this {kind} has "
                f"{self.arms.num_arms} arms {[repr(k) for k in self.arms.names][:5]}…")
        staged: dict[str, Any] = {}
        for key in ("drawn", "observed") + self._state:
            mine, theirs = getattr(self, key), state[key]
            if isinstance(mine, np.ndarray):
                theirs = np.asarray(theirs)
                if theirs.shape != mine.shape:
                    raise StateError(f"{kind} state field {key!r} has shape {theirs.shape}, expected {mine.shape}")
                theirs = theirs.astype(mine.dtype, copy=True)
            else:
                theirs = copy.deepcopy(theirs)
            staged[key] = theirs
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = copy.deepcopy(state["rng"])
        except (TypeError, ValueError, KeyError) as e:
            raise StateError(f"{kind} state has an unusable RNG state: {e}") from None
        if not set(SIGNALS) - {"length"} <= set(state["dropped"]) <= set(SIGNALS):   # states before 'length' load
            raise StateError(f"{kind} state field 'dropped' must count {SIGNALS}")
        self._check_state(staged)
        for key, value in staged.items():
            setattr(self, key, value)
        self.dropped = {k: int(state["dropped"].get(k, 0)) for k in SIGNALS}
        self.rng = rng
        self._after_load()

    def _after_load(self) -> None:
        """Drop caches derived from state (called after a successful load)."""

    def _check_state(self, staged: dict[str, Any]) -> None:
        """Extra validation of staged state before it is applied (subclasses may raise StateError)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.arms!r})"


def make_policy(name: str, arms: Arms, **kwargs: Any) -> Policy:
    """Build a policy by its registry name, e.g. ``make_policy("dump", arms, temperature=0.1)``.

        >>> from cadence.curricula import Arms
        >>> make_policy("uniform", Arms(["a", "b"])).probabilities().tolist()
        [0.5, 0.5]
    """
    import cadence.curricula.policies  # noqa: F401  (fills the registry)

    try:
        cls = POLICIES[name.lower().replace("-", "_")]
    except KeyError:
        raise CadenceError(f"unknown curriculum policy {name!r}; choose from {sorted(POLICIES)}") from None
    return cls(arms, **kwargs)
