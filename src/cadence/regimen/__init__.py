"""The regimen layer: a whole run's plan, written once and attached to any host.

* :mod:`cadence.regimen.file` — :class:`Regimen`: the regimen file (YAML/JSON/dict), validated on
  load, round-tripped exactly, attached with :meth:`Regimen.attach`;
* :mod:`cadence.regimen.stages` — :class:`Stage`, :class:`Rule`, :class:`StageRun`: stages on one clock;
* :mod:`cadence.regimen.pieces` — the registries the file's ``curriculum``/``rl``/``plans``/``averaging``
  sections name (:func:`register` adds a piece);
* :mod:`cadence.regimen.staged` — :class:`StageSampler`, :class:`StageRL`, :class:`StageSelector`,
  :class:`StagePlans` (on a :class:`StageClock`), :class:`StageAveraging`: a stage's own curriculum, RL
  pieces, plans and averaging, switched at the transition within one host;
* :mod:`cadence.regimen.link` — :class:`RegimenLink`: the framework-free runtime bundle that the
  adapters in ``cadence.integrations`` translate into their host's hooks.

    >>> from cadence.regimen import RegimenLink
    >>> RegimenLink(knobs={"kl": "constant(0.1)"}).knob("kl")
    0.1
"""

from cadence.regimen.file import Regimen
from cadence.regimen.link import RegimenLink
from cadence.regimen.pieces import PathError, Piece, register
from cadence.regimen.staged import StageAveraging, StageClock, StagePlans, StageRL, StageSampler, StageSelector
from cadence.regimen.stages import Rule, Stage, StageEvent, StageRun

__all__ = ["Regimen", "RegimenLink", "Stage", "Rule", "StageRun", "StageEvent", "StageSampler", "StageRL",
           "StageAveraging", "StageSelector", "StageClock", "StagePlans", "PathError", "Piece", "register"]
