"""The regimen layer: the framework-free runtime bundle every host shares.

* :mod:`cadence.regimen.link` — :class:`RegimenLink`: one clock, its schedules, knobs, a curriculum,
  plans and one state, which the adapters in ``cadence.integrations`` translate into their host's hooks.

    >>> from cadence.regimen import RegimenLink
    >>> RegimenLink(knobs={"kl": "constant(0.1)"}).knob("kl")
    0.1
"""

from cadence.regimen.link import RegimenLink

__all__ = ["RegimenLink"]
