"""Weight averaging on the run's clock: an EMA of the parameters, and a weighted average of the last
checkpoints (tail averaging).

Both read the same :class:`~cadence.clock.Clock` as the LR schedule, so their durations are written
the same way: ``half_life="200 steps"``, ``every="2%"``, ``start="80%"``, ``window="1M tokens"``.
Call :meth:`update` once after every optimizer step (after the clock has moved); read the average
with :meth:`averaged` or load it into a model with :meth:`copy_to`. State (the averages, snapshots
and where the clock was) round-trips through ``state_dict``, so a resumed run averages bit-for-bit
like an uninterrupted one.

Averaging the last checkpoints instead of decaying the LR is the remedy Luo et al. 2025 give for
quality curricula (Luo et al., arXiv 2511.18903); their weights and checkpoint count are UNCONFIRMED, so
``weights`` is a choice here (uniform, linearly increasing, or explicit). Hägele et al. found
SWA-style windows help a constant LR but do not reach an explicit cooldown (Hägele et al., arXiv 2405.18392).

    >>> import torch
    >>> from cadence import Clock
    >>> model, clock = torch.nn.Linear(2, 1), Clock(budget="100 steps")
    >>> ema = EMA(model, clock, half_life="10 steps")
    >>> with torch.no_grad():
    ...     _ = model.weight.add_(1.0)
    >>> clock.advance(); ema.update()
    >>> bool((ema.averaged()["weight"] < model.weight).all())
    True
"""

from __future__ import annotations

import abc
import math
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cadence.clock import Clock, Duration
from cadence.errors import BudgetError, CadenceError, StateError
from cadence.schedules.base import Schedule, as_schedule

Weights = Literal["uniform", "linear"] | Sequence[float]


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]],
                        weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """``Σ w_k θ_k / Σ w_k`` over state dicts with the same keys (non-float entries come from the last).

        >>> a, b = {"w": torch.tensor([0.0])}, {"w": torch.tensor([3.0])}
        >>> average_state_dicts([a, b], [1, 2])["w"]
        tensor([2.])
    """
    if not states:
        raise CadenceError("average_state_dicts needs at least one state dict")
    w = np.ones(len(states)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(states),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise CadenceError(f"weights must be {len(states)} finite non-negative numbers with a positive sum, got {weights!r}")
    keys = list(states[0])
    for i, s in enumerate(states[1:], 1):
        if list(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise CadenceError(f"state dict {i} does not match the first one (keys or shapes differ)")
    w = w / w.sum()
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        last = states[-1][k]
        if not torch.is_floating_point(last):
            out[k] = last.clone()
            continue
        acc = torch.zeros_like(last, dtype=torch.float64)
        for wk, s in zip(w, states):
            acc.add_(s[k].to(torch.float64), alpha=float(wk))
        out[k] = acc.to(last.dtype)
    return out


def tail_weights(kind: Weights, n: int) -> np.ndarray:
    """Weights for ``n`` checkpoints, oldest first: ``uniform``, ``linear`` (1, 2, …, n) or explicit.

        >>> tail_weights("linear", 3).tolist()
        [1.0, 2.0, 3.0]
    """
    if isinstance(kind, str):
        if kind == "uniform":
            return np.ones(n)
        if kind == "linear":
            return np.arange(1, n + 1, dtype=np.float64)
        raise CadenceError(f"weights must be 'uniform', 'linear' or a list of numbers, got {kind!r}")
    w = np.asarray(kind, dtype=np.float64)
    if w.ndim != 1 or len(w) < n or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise CadenceError(f"explicit weights must be at least {n} finite non-negative numbers, got {kind!r}")
    return w[len(w) - n:]


def _tensor(saved: Any, like: torch.Tensor) -> torch.Tensor:
    """A saved parameter (a tensor, or a numpy array in states saved before) as a fresh tensor on
    ``like``'s device."""
    t = saved.detach() if isinstance(saved, torch.Tensor) else torch.from_numpy(np.array(saved))
    return t.to(like.device, copy=True)


class _Averager(abc.ABC):
    """Shared parts: which tensors are averaged, reading and loading them, state checks."""

    kind = ""

    def __init__(self, model: nn.Module, clock: Clock, start: Duration | str | float) -> None:
        self.model = model
        self.clock = clock
        self.start = Duration.parse(start)
        self.names = [n for n, p in model.named_parameters() if torch.is_floating_point(p)]
        if not self.names:
            raise CadenceError("the model has no floating-point parameters to average")
        self.clock.axis.length(self.start)  # fails now, not mid-run, if it cannot resolve

    def _params(self) -> dict[str, torch.Tensor]:
        params = dict(self.model.named_parameters())
        return {n: params[n].detach() for n in self.names}

    def _started(self) -> bool:
        return self.clock.position >= self.clock.axis.length(self.start)

    @abc.abstractmethod
    def averaged(self) -> dict[str, torch.Tensor]:
        """The averaged parameters by name (fresh tensors)."""

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged parameters into ``model`` (same architecture), leaving buffers alone."""
        avg = self.averaged()
        params = dict(model.named_parameters())
        if set(avg) - set(params):
            raise CadenceError(f"the model lacks averaged parameters: {sorted(set(avg) - set(params))[:3]}")
        with torch.no_grad():
            for n, t in avg.items():
                params[n].copy_(t)

    def _shapes(self) -> dict[str, list[int]]:
        return {n: list(t.shape) for n, t in self._params().items()}

    def _check_state(self, state: Any) -> None:
        if not isinstance(state, Mapping) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict (missing kind={self.kind!r})")
        if state.get("shapes") != self._shapes():
            raise StateError(f"{self.kind} state_dict was saved for different parameters (names or shapes differ)")


class EMA(_Averager):
    """Exponential moving average of a model's parameters.

    Give either ``half_life`` (a duration on the clock: after it the old average weighs 1/2,
    whatever the unit; fractions resolve against the budget) or ``decay`` (a schedule or number:
    the weight of the old average at each :meth:`update`, e.g. ``"ramp(start=0.9, end=0.999)"``).
    Before ``start`` the average follows the parameters exactly.

        >>> from cadence import Clock
        >>> ema = EMA(torch.nn.Linear(2, 1), Clock(budget=1000), half_life="5%", start="50%")
        >>> ema.decay_now(1.0)   # before start: no memory
        0.0
    """

    kind = "cadence.EMA"

    def __init__(self, model: nn.Module, clock: Clock, *, half_life: Duration | str | float | None = None,
                 decay: Schedule | str | float | None = None, start: Duration | str | float = 0.0) -> None:
        if (half_life is None) == (decay is None):
            raise CadenceError("EMA needs exactly one of half_life (a duration) or decay (a schedule)")
        super().__init__(model, clock, start)
        self.half_life = None if half_life is None else Duration.parse(half_life)
        self.decay = None if decay is None else as_schedule(decay)
        if self.half_life is not None and self.clock.axis.length(self.half_life) <= 0:
            raise BudgetError(f"half_life '{self.half_life}' must be positive")
        if self.decay is not None:
            lo, hi = self.decay.bounds()
            if lo < 0 or hi > 1:
                raise CadenceError(f"an EMA decay must stay within [0, 1]; {self.decay} spans [{lo:g}, {hi:g}]")
        self._avg = {n: t.clone() for n, t in self._params().items()}
        self._last = self.clock.position

    def decay_now(self, moved: float) -> float:
        """Weight of the old average for an update after the clock moved ``moved`` axis units."""
        if not self._started():
            return 0.0
        if self.half_life is not None:
            return 0.5 ** (moved / self.clock.axis.length(self.half_life))
        beta = self.decay(self.clock)
        if not 0.0 <= beta <= 1.0:  # also catches NaN
            raise CadenceError(f"EMA decay {self.decay} gave {beta!r} at position {self.clock.position:g}")
        return beta

    def update(self) -> None:
        """Fold the current parameters into the average (call after each optimizer step)."""
        pos = self.clock.position
        beta = self.decay_now(pos - self._last)
        self._last = pos
        with torch.no_grad():
            for n, p in self._params().items():
                self._avg[n].lerp_(p, 1.0 - beta)

    def averaged(self) -> dict[str, torch.Tensor]:
        return {n: t.clone() for n, t in self._avg.items()}

    def state_dict(self) -> dict[str, Any]:
        """The average (tensors) and the clock position of the last update."""
        return {"kind": self.kind, "shapes": self._shapes(), "last_position": self._last,
                "average": {n: t.clone() for n, t in self._avg.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state(state)
        params = self._params()
        avg = {n: _tensor(state["average"][n], params[n]) for n in self.names}
        self._avg, self._last = avg, float(state["last_position"])


class CheckpointAverage(_Averager):
    """A weighted average of the last snapshots of the parameters, taken every ``every``.

    Snapshots are taken at each multiple of ``every`` from ``start`` on; the last ``keep`` are kept
    (or those within ``window`` of the clock's position). :meth:`averaged` is
    ``Σ w_k θ_k / Σ w_k`` with ``weights`` ``uniform``, ``linear`` (newer weighs more) or explicit
    (oldest first). Before the first snapshot it returns the current parameters.

        >>> from cadence import Clock
        >>> avg = CheckpointAverage(torch.nn.Linear(2, 1), Clock(budget=1000), every="10%", keep=3,
        ...                         start="70%", weights="linear")
        >>> avg.snapshot_positions()
        []
    """

    kind = "cadence.CheckpointAverage"

    def __init__(self, model: nn.Module, clock: Clock, *, every: Duration | str | float,
                 keep: int | None = None, window: Duration | str | float | None = None,
                 weights: Weights = "uniform", start: Duration | str | float = 0.0) -> None:
        if (keep is None) == (window is None):
            raise CadenceError("CheckpointAverage needs exactly one of keep (a count) or window (a duration)")
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise CadenceError(f"keep must be a positive whole number, got {keep!r}")
        super().__init__(model, clock, start)
        self.every = Duration.parse(every)
        self.keep = keep
        self.window = None if window is None else Duration.parse(window)
        if self.clock.axis.length(self.every) <= 0:
            raise BudgetError(f"every '{self.every}' must be positive")
        if self.window is not None:
            self.clock.axis.length(self.window)
        tail_weights(weights, keep or 1)
        self.weights = weights
        self._snaps: list[tuple[float, dict[str, torch.Tensor]]] = []
        self._index = math.floor(self.clock.position / self.clock.axis.length(self.every))

    def snapshot_positions(self) -> list[float]:
        """Clock positions of the snapshots now held, oldest first."""
        return [p for p, _ in self._snaps]

    def update(self) -> None:
        """Take a snapshot if the clock passed a multiple of ``every`` (call after each step)."""
        axis = self.clock.axis
        pos = self.clock.position
        index = math.floor(pos / axis.length(self.every))
        if index > self._index and self._started():
            self._snaps.append((pos, {n: t.clone() for n, t in self._params().items()}))
        self._index = index
        if self.keep is not None:
            del self._snaps[: max(0, len(self._snaps) - self.keep)]
        else:
            horizon = pos - axis.length(self.window)
            self._snaps = [(p, s) for p, s in self._snaps if p > horizon]

    def averaged(self) -> dict[str, torch.Tensor]:
        if not self._snaps:
            return {n: t.clone() for n, t in self._params().items()}
        states = [s for _, s in self._snaps]
        return average_state_dicts(states, tail_weights(self.weights, len(states)))

    def state_dict(self) -> dict[str, Any]:
        """The snapshots (tensors) with their positions, and the last multiple of ``every`` seen."""
        return {"kind": self.kind, "shapes": self._shapes(), "index": self._index,
                "positions": [p for p, _ in self._snaps],
                "snapshots": [{n: t.clone() for n, t in s.items()} for _, s in self._snaps]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state(state)
        try:
            params = self._params()
            snaps = [(float(p), {n: _tensor(s[n], params[n]) for n in self.names})
                     for p, s in zip(state["positions"], state["snapshots"], strict=True)]
            index = int(state["index"])
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed {self.kind} state_dict: {e!r}") from e
        self._snaps, self._index = snaps, index
