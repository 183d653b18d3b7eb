"""The errors cadence raises. All derive from :class:`CadenceError`, itself a ``ValueError``."""

from __future__ import annotations


class CadenceError(ValueError):
    """Base class: bad input to cadence, named in the message."""


class SpecError(CadenceError):
    """A schedule spec that cannot be parsed or built.

    ``position`` is the character offset of the offending text (or ``None`` when the
    problem is not tied to one place, e.g. a dict spec); ``param`` names the parameter at fault.
    """

    def __init__(self, message: str, text: str | None = None, position: int | None = None,
                 param: str | None = None):
        self.text = text
        self.position = position
        self.param = param  # the schedule parameter at fault, when known
        if text is not None and position is not None:
            message = f"{message} at position {position}:\n  {text}\n  {' ' * position}^"
        super().__init__(message)


class BudgetError(CadenceError):
    """A duration or budget that cannot be resolved or does not fit the run."""


class StateError(CadenceError):
    """A ``state_dict`` that does not belong to the object it is loaded into."""
