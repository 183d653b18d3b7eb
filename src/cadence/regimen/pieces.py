"""Registries of the pieces a regimen file names: curricula, RL pieces, plans, averaging.

Each section of a regimen file that builds objects (``curriculum``, ``rl``, ``plans``,
``averaging``) looks its entries up here by name. A :class:`Piece` knows its constructor, which of
its arguments the host provides (``needs``: the arms, the number of prompts, the model's layers, the
model, the clock) and so which arguments a file may give; a new piece joins the file with one
:func:`register` call:

    >>> from cadence.rl import DynamicSampling
    >>> piece = RL["dynamic"]
    >>> piece.build({"low": 0.0, "high": 1.0}, {}) .band.high
    1.0
    >>> sorted(piece.arguments())
    ['closed', 'high', 'low', 'max_extra_rounds']
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from cadence.errors import CadenceError

CURRICULA: dict[str, Piece] = {}
"""Curriculum policies (``curriculum.policy``): built with the arms."""
RL: dict[str, Piece] = {}
"""RL pieces (the keys of ``rl``): predictive filter, dynamic sampling, rollout allocation (fixed, Knapsack,
GVM-RAFT), length budget, selective replay, hints, D³S, HBPO and HPT's gate. PCL is not a file piece: its value
model takes a feature function, given in code."""
PLANS: dict[str, Piece] = {}
"""Progressive plans (``plans.<name>.plan``): built with the run's clock (and layers for layer plans)."""
AVERAGING: dict[str, Piece] = {}
"""Weight averagers (``averaging.kind``): built with the model and the clock."""
SECTIONS = {"curriculum": CURRICULA, "rl": RL, "plans": PLANS, "averaging": AVERAGING}


@dataclass(frozen=True)
class Piece:
    """A constructor a file section names.

    Args:
        name: the name files use.
        make: the constructor; called as ``make(**host_args, **file_args)``.
        needs: the constructor's arguments the host provides (``arms``, ``num_items``, ``arm_of``,
            ``layers``, ``model``, ``clock``), never the file.
        hosts: the hosts that can run it (``None``: every host).
    """

    name: str
    make: Callable[..., Any]
    needs: tuple[str, ...] = ()
    hosts: tuple[str, ...] | None = None

    def arguments(self) -> dict[str, inspect.Parameter]:
        """The arguments a file may give: the constructor's, less what the host provides."""
        params = inspect.signature(self.make).parameters
        return {k: p for k, p in params.items() if k not in self.needs and k != "self"
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    def check_names(self, args: Mapping[str, Any], path: str) -> None:
        """Raise one error naming ``path.<arg>`` for an argument the constructor does not take, or
        ``path`` for a required one missing."""
        known = self.arguments()
        for k in args:
            if k not in known:
                raise PathError(f"{path}.{k}", f"{self.name} takes no argument {k!r}; it takes {sorted(known)}")
        for k, p in known.items():
            if p.default is p.empty and k not in args:
                raise PathError(f"{path}.{k}", f"{self.name} needs {k!r}")

    def build(self, args: Mapping[str, Any], host: Mapping[str, Any], path: str = "") -> Any:
        """The piece built from the file's ``args`` and the host's ``needs``; errors name ``path``."""
        self.check_names(args, path)
        missing = [n for n in self.needs if n not in host]
        if missing:
            raise PathError(path, f"{self.name} needs {missing} from the host")
        try:
            return self.make(**{n: host[n] for n in self.needs}, **args)
        except (CadenceError, TypeError) as e:
            raise PathError(path, f"{self.name}: {e}") from None


class PathError(CadenceError):
    """A regimen field that cannot be read, named by its full path (``stages[1].lr``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


def register(section: str, piece: Piece) -> Piece:
    """Add ``piece`` to a section's registry (``curriculum``, ``rl``, ``plans``, ``averaging``)."""
    if section not in SECTIONS:
        raise CadenceError(f"no regimen section {section!r}; choose from {sorted(SECTIONS)}")
    SECTIONS[section][piece.name] = piece
    return piece


def _defaults() -> None:
    from cadence import averaging, progressive, rl
    from cadence.curricula import POLICIES
    import cadence.curricula.policies  # noqa: F401  (fills POLICIES)

    for name, cls in POLICIES.items():  # mixtures that follow schedules read the run's clock
        clocked = "clock" in inspect.signature(cls).parameters
        register("curriculum", Piece(name, cls, needs=("arms", "clock") if clocked else ("arms",)))
    register("rl", Piece("predictive", rl.PredictiveFilter, needs=("num_items",), hosts=("loop", "trl", "verl")))
    register("rl", Piece("dynamic", rl.DynamicSampling, hosts=("loop", "trl", "verl")))
    register("rl", Piece("knapsack", rl.KnapsackAllocation, needs=("arm_of",), hosts=("loop", "verl")))
    register("rl", Piece("fixed_allocation", rl.FixedAllocation, hosts=("loop", "verl")))
    register("rl", Piece("length_budget", rl.LengthBudget, hosts=("loop", "trl", "verl")))
    register("rl", Piece("gvm", rl.GVMAllocation, needs=("arm_of",), hosts=("loop",)))
    register("rl", Piece("replay", rl.ReplayBuffer, hosts=("loop", "trl", "verl")))
    register("rl", Piece("hints", rl.Hints, needs=("num_items",), hosts=("loop", "trl", "verl")))
    register("rl", Piece("d3s", rl.DualDownsampling, hosts=("loop", "trl")))
    register("rl", Piece("hbpo", rl.HierarchicalBudget, hosts=("loop",)))
    register("rl", Piece("hpt", rl.HybridGate, hosts=("loop",)))
    register("plans", Piece("layer_freezing", progressive.LayerFreezing, needs=("layers", "clock"),
                            hosts=("loop", "hf", "trl", "lightning")))
    register("plans", Piece("freeze_out", progressive.FreezeOut, needs=("layers", "clock"),
                            hosts=("loop", "hf", "trl", "lightning")))
    register("plans", Piece("sequence_length_warmup", progressive.SequenceLengthWarmup, needs=("clock",),
                            hosts=("loop", "hf", "lightning")))
    register("plans", Piece("batch_size", progressive.BatchSizeSchedule, needs=("clock",), hosts=("loop", "hf", "lightning")))
    register("averaging", Piece("ema", averaging.EMA, needs=("model", "clock"), hosts=("loop", "hf", "trl", "lightning")))
    register("averaging", Piece("tail", averaging.CheckpointAverage, needs=("model", "clock"),
                                hosts=("loop", "hf", "trl", "lightning")))


_defaults()
