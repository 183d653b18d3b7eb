"""The loss laws cadence can fit, by name, and reading a saved one back.

    >>> sorted(LAWS)
    ['annealing', 'multi-power']
    >>> law = MultiPowerLaw(L0=1.0, A=0.5, alpha=0.5, B=0.3, C=20.0, beta=0.5, gamma=0.5, lr_ref=1e-3, steps_ref=100)
    >>> law_from_dict(law.to_dict()) == law
    True
"""

from __future__ import annotations

from typing import Any, Union

from cadence.errors import StateError
from cadence.forecast.law import AnnealingLaw
from cadence.forecast.multipower import MultiPowerLaw, WarmupRiseMultiPowerLaw

Law = Union[AnnealingLaw, MultiPowerLaw]
"""Any fitted law: each has ``predict``, ``predict_schedule``, ``final_loss``, ``final_losses``,
``to_dict`` and ``lr_ref``."""
LAWS: dict[str, type] = {"annealing": AnnealingLaw, "multi-power": MultiPowerLaw}
DEFAULT_LAW = "annealing"
_BY_KIND: dict[str, type] = {cls.KIND: cls for cls in (*LAWS.values(), WarmupRiseMultiPowerLaw)}
"""Every law a saved dict may hold: the fittable ones and the paper's released form (for its constants)."""


def law_from_dict(d: dict[str, Any]) -> Law:
    """The law a ``to_dict()`` came from, chosen by its ``kind``."""
    cls = _BY_KIND.get(d.get("kind")) if isinstance(d, dict) else None
    if cls is None:
        raise StateError(f"not a saved loss law: kind must be one of {sorted(_BY_KIND)}")
    return cls.from_dict(d)
