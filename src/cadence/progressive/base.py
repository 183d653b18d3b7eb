"""The interface every progressive plan shares, so loops and trainer adapters drive them alike.

A plan is bound to the run's :class:`~cadence.Clock` when it is made and is driven by one call per
optimizer step:

* ``plan.update()`` — once per step, **before the forward pass**: read the clock and put this
  step's configuration in place (which layers train, the sequence length, the batch size).
  Calling it again in the same clock step changes nothing (so per-micro-batch hooks are safe).
* ``plan.values()`` — this step's configuration as ``{name: float}``, for loggers.
* ``plan.state_dict()`` / ``plan.load_state_dict(state)`` — plain-typed state for exact resume.
  A state saved by another kind of plan, or by one configured differently, is rejected with a
  :class:`~cadence.StateError` and nothing changes.

* ``plan.apply(batch)`` — the batch this step trains on. Plans that reshape batches (sequence-length
  warmup) override it; the others return it unchanged. Loops and adapters call it on each batch as
  it is taken for training, after ``update()``.

The batch-size plan adds a batch sampler; see :mod:`cadence.progressive.sizes`.

    >>> from cadence import Clock
    >>> from cadence.progressive import SequenceLengthWarmup
    >>> plan = SequenceLengthWarmup(clock=Clock(budget=100), length="ramp(start=8, end=64, over=50%)")
    >>> plan.update(); plan.values()
    {'seq_len': 8.0}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from cadence.clock import Clock
from cadence.errors import CadenceError, StateError


class Plan(ABC):
    """Base class of progressive plans: the uniform ``update / values / state_dict`` interface.

    Subclasses set ``kind``, implement :meth:`update`, :meth:`values` and :meth:`config` (a plain
    description of how the plan was built, used to reject a foreign state), and move their mutable
    state through :meth:`_state` / :meth:`_load`.
    """

    kind: ClassVar[str] = ""

    def __init__(self, clock: Clock) -> None:
        if not isinstance(clock, Clock):
            raise CadenceError(f"{type(self).__name__} needs the run's cadence Clock, got {clock!r}")
        self.clock = clock

    @abstractmethod
    def update(self) -> None:
        """Read the clock and put this step's configuration in place (call before the forward pass)."""

    @abstractmethod
    def values(self) -> dict[str, float]:
        """This step's configuration as floats, for loggers."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """How the plan was built (plain types); a state saved under another config is rejected."""

    def apply(self, batch: Any) -> Any:
        """The batch this step trains on (unchanged unless the plan reshapes batches)."""
        return batch

    def _state(self) -> dict[str, Any]:
        return {}

    def _load(self, state: dict[str, Any]) -> None:
        """Apply a validated state (called only after :meth:`load_state_dict` checked it)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (plain Python types). The clock is saved by its owner."""
        return {"kind": self.kind, "config": self.config(), **self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; rejects foreign or mismatched state before changing anything."""
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            found = state.get("kind") if isinstance(state, dict) else type(state).__name__
            raise StateError(f"not a {self.kind} state_dict (found kind={found!r})")
        if state.get("config") != self.config():
            raise StateError(
                f"this {self.kind} state was saved for config {state.get('config')}, "
                f"but this plan has {self.config()}"
            )
        try:
            self._load(state)
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed {self.kind} state_dict: {e!r}") from e

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"
