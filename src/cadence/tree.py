"""The WSD tree: one constant-LR trunk, short cooldown branches that finish models at many budgets.

Warmup–stable–decay makes the stable phase independent of the budget ("Scaling Laws and
Compute-Optimal Training Beyond Fixed Training Durations", Hägele et al., arXiv 2405.18392), so a
single trunk at the peak LR can be checkpointed and a cooldown branched from checkpoint ``c_k``
finishes a model for budget ``B_k`` (``c_k = B_k − d·B_k`` for decay fraction ``d``). Total compute
is ``(1 − d)·B_max + d·ΣB_k`` steps instead of ``ΣB_k`` for dedicated runs.

WSD-S ("Understanding Warmup-Stable-Decay Learning Rates: A River Valley Loss Landscape
Perspective", Wen et al., arXiv 2410.05192) instead decays the live run at each budget, saves the
decayed model and continues from the decayed weights with the LR jumping straight back to the peak; total compute is
``B_max``. Its default cooldown shape, ``inverse-linear`` (``1/η`` interpolated linearly), and its
per-segment decay fraction are attributed to Wen et al. 2024 by third-party code only:
UNCONFIRMED. The shape's formula lives in :mod:`cadence.schedules.shapes`.

Every model is described by a schedule spec over its own whole budget, so the lineage says exactly
how it was made: the branch spec ``wsd(peak, warmup, decay=D steps)`` over ``B_k`` equals the trunk
schedule on ``[0, c_k]`` step for step.

A branch may carry its own data ("OctoThinker: Mid-training Incentivizes Reinforcement Learning
Scaling", arXiv 2506.20512, decays one stable trunk on several data mixtures, each branch its own
model): ``data`` is a plain-data mixture or curriculum spec (a JSON-ready mapping, e.g.
``{"kind": "fixed", "weights": {"clean": 1}}``) that the tree does not read; it passes it to the
trainer as ``data=`` and records it in the lineage. Without ``data`` a branch trains on the
trainer's own data (the trunk's), and the trainer is called without the keyword.

The tree does not know any training code. It drives a *trainer*: any callable
``trainer(schedule, *, steps, start_from, checkpoint_at)`` that trains with ``schedule`` evaluated at
the absolute step on a clock whose budget is ``steps``, resuming from ``start_from`` (a checkpoint it
returned earlier, or ``None`` for a fresh model), and returns an object with ``checkpoints``
(``{step: checkpoint}`` for every step in ``checkpoint_at``) and ``final_val_loss``.

    >>> plan = plan_tree([1000, 2000, 4000, 8000], decay=0.2, peak=3e-3, warmup=100)
    >>> plan.total_compute, plan.compute_bound
    (9400, 9400.0)
    >>> plan.models[0].schedule
    'wsd(peak=0.003, warmup=100 steps, decay=200 steps)'
    >>> plan_tree([1000], data={1000: {"kind": "fixed", "weights": {"clean": 1}}}).models[0].data
    {'kind': 'fixed', 'weights': {'clean': 1}}
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Protocol, Sequence

from cadence.clock import Duration
from cadence.errors import BudgetError, CadenceError, SpecError, StateError
from cadence.schedules.base import Schedule, as_schedule
from cadence.schedules.shapes import DECAY_SHAPES, needs_positive_floor

TreeMode = Literal["branch", "wsd-s"]

WSDS_SHAPE = "inverse-linear"
"""WSD-S cooldown shape attributed to Wen et al. 2024 (arXiv 2410.05192) by third-party code: UNCONFIRMED."""
WSDS_FLOOR = 0.1
"""WSD-S final LR factor: the inverse-linear shape needs ``floor > 0``; the paper's value is UNCONFIRMED."""


class TrainResult(Protocol):
    """What a trainer returns: checkpoints by absolute step, and the final validation loss."""

    checkpoints: Mapping[int, Any]
    final_val_loss: float


class Trainer(Protocol):
    """Trains with ``schedule`` at absolute steps on a clock of budget ``steps``, from ``start_from``."""

    def __call__(self, schedule: Schedule, *, steps: int, start_from: Any | None,
                 checkpoint_at: Sequence[int]) -> TrainResult: ...


class TreeError(CadenceError):
    """A tree plan or operation that cannot be carried out (missing checkpoint, bad budget, ...)."""


# ---------------------------------------------------------------------- planning
@dataclass(frozen=True)
class PlannedModel:
    """One finished model of a plan: trained from ``source_step`` to ``budget`` with ``schedule``.

    ``schedule`` is the spec of the model's whole run (evaluated on a clock of budget ``budget``);
    ``parent`` is the budget of the model it continues (WSD-S) or ``None`` (the trunk, or a fresh
    model when ``source_step`` is 0). ``data``: the branch's own mixture or curriculum spec (plain
    data), or ``None`` for the trainer's own data.
    """

    budget: int
    source_step: int
    decay_steps: int
    schedule: str
    parent: int | None = None
    data: dict[str, Any] | None = None

    @property
    def compute(self) -> int:
        """Steps trained beyond the checkpoint it starts from."""
        return self.budget - self.source_step


@dataclass(frozen=True)
class TreePlan:
    """The layout of a tree: the trunk (length, schedule, checkpoints) and its finished models.

    Build one with :func:`plan_tree`. ``compute_bound`` is ``(1 − d)·B_max + d·ΣB_k``.
    """

    mode: TreeMode
    budgets: tuple[int, ...]
    decay: float
    peak: float
    warmup: int
    shape: str
    floor: float
    trunk_schedule: str
    trunk_end: int
    models: tuple[PlannedModel, ...]

    @property
    def trunk_checkpoints(self) -> tuple[int, ...]:
        """Trunk steps a branch starts from (sorted, without step 0)."""
        if self.mode != "branch":
            return ()
        return tuple(sorted({m.source_step for m in self.models if m.source_step > 0}))

    @property
    def total_compute(self) -> int:
        """Trunk steps plus every model's own steps."""
        return self.trunk_end + sum(m.compute for m in self.models)

    @property
    def dedicated_compute(self) -> int:
        """Steps that one dedicated run per budget would take: ``ΣB_k``."""
        return sum(self.budgets)

    @property
    def compute_bound(self) -> float:
        """The goal ``(1 − d)·B_max + d·ΣB_k``."""
        return (1.0 - self.decay) * max(self.budgets) + self.decay * sum(self.budgets)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-ready)."""
        out = dataclasses.asdict(self)
        out["budgets"] = list(self.budgets)
        out["models"] = [dataclasses.asdict(m) for m in self.models]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TreePlan:
        """Inverse of :meth:`to_dict`."""
        try:
            models = tuple(PlannedModel(**m) for m in d["models"])
            return cls(**{**d, "budgets": tuple(d["budgets"]), "models": models})
        except (KeyError, TypeError) as e:
            raise StateError(f"malformed tree plan: {e!r}") from e

    def table(self) -> str:
        """A text table of the models: budget, source step, decay steps, compute, schedule."""
        rows = [f"{'budget':>8} {'from':>8} {'decay':>7} {'compute':>8}  schedule"]
        rows += [f"{m.budget:>8} {m.source_step:>8} {m.decay_steps:>7} {m.compute:>8}  {m.schedule}" for m in self.models]
        if self.mode == "branch":
            rows.append(f"trunk: {self.trunk_end} steps of {self.trunk_schedule}")
        rows.append(f"total {self.total_compute} steps (bound {self.compute_bound:g}, dedicated runs {self.dedicated_compute})")
        return "\n".join(rows)


def _steps(value: int | str, what: str) -> int:
    """A whole number of steps from ``1000`` or ``"1000 steps"``."""
    if isinstance(value, bool):
        raise BudgetError(f"{what} must be a number of steps, got {value!r}")
    if isinstance(value, str):
        d = Duration.parse(value)
        if d.unit != "steps":
            raise BudgetError(f"{what} must be given in steps, got {value!r}")
        value = d.amount
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or value != int(value):
        raise BudgetError(f"{what} must be a whole non-negative number of steps, got {value!r}")
    return int(value)


def _fraction(decay: float | str) -> float:
    d = Duration.parse(decay)
    if not d.is_fraction or not 0.0 < d.fraction < 1.0:
        raise BudgetError(f"the decay must be a fraction of each budget strictly between 0 and 1, got {decay!r}")
    return d.fraction


def _wsd_dict(peak: float, warmup: int, decay_steps: int, shape: str, floor: float) -> dict[str, Any]:
    d: dict[str, Any] = {"type": "wsd", "peak": peak, "decay": f"{decay_steps} steps", "shape": shape, "floor": floor}
    return d | {"warmup": f"{warmup} steps"} if warmup else d


def _wsd_spec(peak: float, warmup: int, decay_steps: int, shape: str, floor: float) -> str:
    return str(as_schedule(_wsd_dict(peak, warmup, decay_steps, shape, floor)))


def trunk_schedule(peak: float, warmup: int = 0, floor: float = 0.0) -> str:
    """The trunk: warm up from ``floor·peak`` (as :class:`~cadence.schedules.pretraining.WSD` does),
    then hold ``peak`` for ever.

        >>> trunk_schedule(3e-3, 100)
        'warmup(constant(level=0.003), duration=100 steps)'
    """
    if warmup == 0:
        return str(as_schedule(peak))
    return str(as_schedule({"type": "warmup", "inner": {"type": "constant", "level": peak},
                            "duration": f"{warmup} steps", "start": floor}))


def branch_data(data: Any, what: str = "branch data") -> dict[str, Any] | None:
    """``data`` checked as a plain-data spec (a mapping that JSON round-trips unchanged), as a new dict.

        >>> branch_data({"kind": "fixed", "weights": {"clean": 0.7, "noisy": 0.3}})["weights"]
        {'clean': 0.7, 'noisy': 0.3}
    """
    if data is None:
        return None
    try:
        copy = json.loads(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise SpecError(f"{what} must be plain data (strings, numbers, lists, mappings), got {data!r}: {e}") from None
    if not isinstance(data, Mapping) or copy != data:
        raise SpecError(f"{what} must be a mapping of plain data with string keys, such as "
                        f"{{'kind': 'fixed', 'weights': {{'clean': 1}}}}; got {data!r}")
    return copy


def plan_tree(budgets: Sequence[int | str], *, decay: float | str = 0.2, peak: float = 1.0,
              warmup: int | str = 0, mode: TreeMode = "branch", shape: str | None = None,
              floor: float | None = None, data: Mapping[int, Mapping[str, Any]] | None = None) -> TreePlan:
    """Lay out a trunk and its branches (``mode="branch"``) or a WSD-S chain (``mode="wsd-s"``).

    Args:
        budgets: the steps each finished model gets (distinct; any order).
        decay: cooldown as a fraction of each budget (branch) or of each WSD-S segment.
        peak: the trunk's LR; warmup: steps of linear warmup at the start of the trunk.
        shape, floor: cooldown shape and final LR factor. Defaults: ``1-sqrt`` to 0 for branches
            (Hägele et al.), ``inverse-linear`` to 0.1 for WSD-S (UNCONFIRMED, see module doc).
        data: ``{budget: mixture or curriculum spec}`` for branches that train on their own data
            (branch mode only; see :func:`branch_data`).

    Branch mode: model ``k`` branches from trunk step ``c_k = B_k − ⌊d·B_k⌋``; with the decay
    rounded down the total never exceeds ``(1 − d)·B_max + d·ΣB_k``.

        >>> plan_tree([100, 200], decay=0.5, mode="wsd-s").total_compute
        200
    """
    if mode not in ("branch", "wsd-s"):
        raise TreeError(f"mode must be 'branch' or 'wsd-s', got {mode!r}")
    if not budgets:
        raise TreeError("plan_tree needs at least one budget")
    bs = sorted(_steps(b, "a budget") for b in budgets)
    if len(set(bs)) != len(bs) or bs[0] == 0:
        raise TreeError(f"budgets must be distinct and positive, got {list(budgets)}")
    d = _fraction(decay)
    w = _steps(warmup, "warmup")
    shape = shape or ("1-sqrt" if mode == "branch" else WSDS_SHAPE)
    floor = (0.0 if mode == "branch" else WSDS_FLOOR) if floor is None else float(floor)
    if shape not in DECAY_SHAPES:
        raise SpecError(f"unknown decay shape {shape!r}; use one of {', '.join(DECAY_SHAPES)}")
    if not 0.0 <= floor <= 1.0 or (needs_positive_floor(shape) and floor == 0.0):
        raise SpecError(f"floor {floor!r} does not suit the {shape} decay (needs 0 < floor <= 1)"
                        if needs_positive_floor(shape) else f"floor must lie in [0, 1], got {floor!r}")
    if not math.isfinite(peak) or peak <= 0:
        raise SpecError(f"peak must be a positive number, got {peak!r}")
    models = _branches(bs, d, peak, w, shape, floor) if mode == "branch" else _wsds_chain(bs, d, peak, w, shape, floor)
    if data:
        if mode != "branch":
            raise TreeError("only branches carry their own data; a WSD-S chain trains on the trainer's data")
        specs = {_steps(b, "a data budget"): branch_data(v, f"data for budget {b}") for b, v in data.items()}
        unknown = sorted(set(specs) - set(bs))
        if unknown:
            raise TreeError(f"data given for budget(s) {unknown} that the plan does not have ({bs})")
        models = tuple(dataclasses.replace(m, data=specs.get(m.budget)) for m in models)
    if mode == "branch":
        trunk, trunk_end = trunk_schedule(peak, w, floor), max(m.source_step for m in models)
    else:
        trunk, trunk_end = "", 0  # WSD-S has no separate trunk: each segment continues the last model
    return TreePlan(mode, tuple(bs), d, float(peak), w, shape, floor, trunk, trunk_end, models)


def _branches(bs: list[int], d: float, peak: float, w: int, shape: str, floor: float) -> tuple[PlannedModel, ...]:
    out = []
    for b in bs:
        decay_steps = math.floor(d * b)
        if decay_steps == 0:
            raise TreeError(f"budget {b} is too small for a {d:g} decay: the cooldown rounds to 0 steps")
        start = b - decay_steps
        if w > start:
            raise TreeError(f"budget {b}: warmup ({w} steps) runs into the cooldown, which starts at step {start}")
        out.append(PlannedModel(b, start, decay_steps, _wsd_spec(peak, w, decay_steps, shape, floor)))
    return tuple(out)


def _wsds_chain(bs: list[int], d: float, peak: float, w: int, shape: str, floor: float) -> tuple[PlannedModel, ...]:
    out: list[PlannedModel] = []
    pieces: list[dict[str, Any]] = []
    prev = 0
    for b in bs:
        seg = b - prev
        decay_steps = math.floor(d * seg)
        seg_warmup = w if prev == 0 else 0  # warmup happens only in the first segment
        if decay_steps == 0 or seg_warmup + decay_steps > seg:
            raise TreeError(f"WSD-S segment {prev}–{b} ({seg} steps) cannot hold warmup {seg_warmup} and a {d:g} decay")
        pieces.append(_wsd_dict(peak, seg_warmup, decay_steps, shape, floor))
        at = [f"{x} steps" for x in bs[: len(pieces) - 1]]
        spec = pieces[0] if len(pieces) == 1 else {"type": "join", "pieces": list(pieces), "at": at}
        out.append(PlannedModel(b, prev, decay_steps, str(as_schedule(spec)), out[-1].budget if out else None))
        prev = b
    return tuple(out)


# ---------------------------------------------------------------------- lineage
@dataclass(frozen=True)
class LineageNode:
    """One trained segment: the trunk (or a piece of it), a branch, or a WSD-S segment.

    ``parent`` is the id of the node whose checkpoint at ``start`` it continues (``None``: fresh
    model). ``schedule`` is evaluated at absolute steps over a clock of budget ``budget``.
    """

    id: str
    kind: Literal["trunk", "branch", "wsd-s"]
    parent: str | None
    start: int
    end: int
    schedule: str
    budget: int
    checkpoints: tuple[int, ...] = ()
    final_val_loss: float | None = None
    data: dict[str, Any] | None = None
    """The mixture or curriculum spec the segment trained on; ``None``: the trainer's own data."""

    @property
    def compute(self) -> int:
        return self.end - self.start


@dataclass
class Lineage:
    """Which model came from which checkpoint, with which schedule; JSON round-trips.

        >>> lin = Lineage()
        >>> _ = lin.add(LineageNode("trunk@0-800", "trunk", None, 0, 800, "constant(0.003)", 800, (800,)))
        >>> Lineage.from_json(lin.to_json()) == lin
        True
    """

    nodes: list[LineageNode] = field(default_factory=list)

    def add(self, node: LineageNode) -> LineageNode:
        if any(n.id == node.id for n in self.nodes):
            raise TreeError(f"lineage already has a node {node.id!r}")
        if node.parent is not None:
            parent = self[node.parent]
            if node.start not in parent.checkpoints:
                raise TreeError(f"{node.id!r} starts at step {node.start}, which is not a checkpoint of {parent.id!r}")
        self.nodes.append(node)
        return node

    def __getitem__(self, node_id: str) -> LineageNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise TreeError(f"no lineage node {node_id!r}; known: {', '.join(n.id for n in self.nodes) or 'none'}")

    def ancestry(self, node_id: str) -> list[LineageNode]:
        """The chain from the first trunk segment down to ``node_id``."""
        chain = [self[node_id]]
        while chain[-1].parent is not None:
            chain.append(self[chain[-1].parent])
        return chain[::-1]

    @property
    def total_compute(self) -> int:
        """Steps trained over all nodes."""
        return sum(n.compute for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "cadence.Lineage", "nodes": [dataclasses.asdict(n) | {"checkpoints": list(n.checkpoints)}
                                                      for n in self.nodes]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Lineage:
        if not isinstance(d, Mapping) or d.get("kind") != "cadence.Lineage":
            raise StateError("not a cadence lineage (missing kind='cadence.Lineage')")
        try:
            return cls([LineageNode(**{**n, "checkpoints": tuple(n["checkpoints"])}) for n in d["nodes"]])
        except (KeyError, TypeError) as e:
            raise StateError(f"malformed lineage: {e!r}") from e

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Lineage:
        return cls.from_dict(json.loads(text))


# ---------------------------------------------------------------------- running
@dataclass(frozen=True)
class FinishedModel:
    """A model the tree produced: its budget, loss, checkpoint and lineage node id."""

    budget: int
    final_val_loss: float
    checkpoint: Any
    node: str


class WSDTree:
    """Runs a :class:`TreePlan` with a trainer and records the lineage.

        >>> tree = WSDTree(trainer, plan_tree([1000, 2000], decay=0.2, peak=3e-3))   # doctest: +SKIP
        >>> models = tree.run()                                                      # doctest: +SKIP
        >>> tree.branch(1500, from_step=800)   # one more budget from a saved trunk step  # doctest: +SKIP

    The trunk can be grown later (:meth:`grow_trunk`) and branched from any of its checkpoints
    (:meth:`branch`); in WSD-S mode :meth:`run` trains the chain of decayed segments.
    """

    def __init__(self, trainer: Trainer, plan: TreePlan) -> None:
        self.trainer = trainer
        self.plan = plan
        self.lineage = Lineage()
        self.trunk: dict[int, Any] = {}  # trunk checkpoints by step
        self.models: dict[int | str, FinishedModel] = {}  # by budget, or by branch name

    # -- trunk
    @property
    def trunk_end(self) -> int:
        """The last step the trunk has been trained to (0 before it starts)."""
        ends = [n.end for n in self.lineage.nodes if n.kind == "trunk"]
        return max(ends, default=0)

    def grow_trunk(self, to_step: int | None = None, checkpoint_at: Sequence[int] = ()) -> LineageNode:
        """Train the trunk from where it stands to ``to_step`` (default: the plan's trunk end),
        saving the plan's branch points in that range, ``checkpoint_at`` and the end."""
        if self.plan.mode != "branch":
            raise TreeError("a WSD-S plan has no trunk to grow; call run()")
        to_step = self.plan.trunk_end if to_step is None else _steps(to_step, "to_step")
        start = self.trunk_end
        if to_step <= start:
            raise TreeError(f"the trunk already reaches step {start}; grow it beyond that, not to {to_step}")
        wanted = {s for s in (*self.plan.trunk_checkpoints, *(_steps(c, "a checkpoint") for c in checkpoint_at))
                  if start < s <= to_step} | {to_step}
        parent = next((n.id for n in self.lineage.nodes if n.kind == "trunk" and n.end == start), None)
        result = self._train(self.plan.trunk_schedule, to_step, self.trunk.get(start), sorted(wanted))
        self.trunk.update({s: result.checkpoints[s] for s in wanted})
        return self.lineage.add(LineageNode(f"trunk@{start}-{to_step}", "trunk", parent, start, to_step,
                                            self.plan.trunk_schedule, to_step, tuple(sorted(wanted)),
                                            float(result.final_val_loss)))

    def branch(self, budget: int | str, *, from_step: int | None = None, data: Mapping[str, Any] | None = None,
               name: str | None = None) -> FinishedModel:
        """Finish a model for ``budget`` by a cooldown from trunk checkpoint ``from_step``
        (default ``budget − ⌊d·budget⌋``); the cooldown spans ``budget − from_step`` steps.

        ``data``: the branch's own mixture or curriculum spec (plain data, passed to the trainer as
        ``data=``). ``name`` keys the model in :attr:`models` instead of its budget, so several
        branches may finish the same budget on different data."""
        if self.plan.mode != "branch":
            raise TreeError("a WSD-S plan does not branch; its models come from run()")
        budget = _steps(budget, "budget")
        data = branch_data(data)
        if name is not None and (not isinstance(name, str) or not name or name.isdigit()):
            raise TreeError(f"a branch name must be a non-empty string that is not a number, got {name!r}")
        if from_step is None:
            from_step = budget - math.floor(self.plan.decay * budget)
        from_step = _steps(from_step, "from_step")
        if from_step not in self.trunk and from_step != 0:
            have = ", ".join(map(str, sorted(self.trunk))) or "none yet"
            raise TreeError(f"no trunk checkpoint at step {from_step} to branch the {budget}-step model from; have: {have}")
        if budget <= from_step or from_step < self.plan.warmup:
            raise TreeError(f"a branch from step {from_step} cannot finish a {budget}-step model after a "
                            f"{self.plan.warmup}-step warmup")
        p = self.plan
        spec = _wsd_spec(p.peak, p.warmup, budget - from_step, p.shape, p.floor)
        parent = next((n.id for n in self.lineage.nodes if n.kind == "trunk" and from_step in n.checkpoints), None)
        return self._finish(budget, spec, from_step, self.trunk.get(from_step), parent, "branch", data, name)

    def run(self) -> list[FinishedModel]:
        """Train the whole plan: the trunk and every branch, or the WSD-S chain."""
        if self.plan.mode == "branch":
            if self.trunk_end < self.plan.trunk_end:
                self.grow_trunk()
            return [self.models.get(m.budget) or self.branch(m.budget, from_step=m.source_step, data=m.data)
                    for m in self.plan.models]
        for m in self.plan.models:
            if m.budget not in self.models:
                prev = self.models.get(m.parent) if m.parent is not None else None
                self._finish(m.budget, m.schedule, m.source_step, prev.checkpoint if prev else None,
                             prev.node if prev else None, "wsd-s")
        return [self.models[m.budget] for m in self.plan.models]

    # -- state
    def state_dict(self) -> dict[str, Any]:
        """Plan, lineage, trunk checkpoints and finished models (checkpoints are the trainer's
        objects, kept as they are: save with ``torch.save``)."""
        return {"kind": "cadence.WSDTree", "plan": self.plan.to_dict(), "lineage": self.lineage.to_dict(),
                "trunk": dict(self.trunk),
                "models": {b: {"budget": m.budget, "final_val_loss": m.final_val_loss, "checkpoint": m.checkpoint,
                               "node": m.node} for b, m in self.models.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume a tree saved by :meth:`state_dict`; refuses another kind or another plan."""
        if not isinstance(state, Mapping) or state.get("kind") != "cadence.WSDTree":
            raise StateError("not a WSDTree state_dict (missing kind='cadence.WSDTree')")
        if TreePlan.from_dict(state["plan"]) != self.plan:
            raise StateError("the saved tree was made for another plan (budgets, decay, peak or shape differ)")
        lineage = Lineage.from_dict(state["lineage"])
        try:
            trunk = {int(s): c for s, c in state["trunk"].items()}
            models = {_model_key(b): FinishedModel(int(m.get("budget", b)), float(m["final_val_loss"]), m["checkpoint"],
                                                   str(m["node"])) for b, m in state["models"].items()}
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed WSDTree state_dict: {e!r}") from e
        self.lineage, self.trunk, self.models = lineage, trunk, models

    # -- internals
    def _train(self, spec: str, steps: int, start_from: Any, checkpoint_at: list[int],
               data: dict[str, Any] | None = None) -> TrainResult:
        extra = {} if data is None else {"data": data}
        result = self.trainer(as_schedule(spec), steps=steps, start_from=start_from, checkpoint_at=tuple(checkpoint_at),
                              **extra)
        missing = [s for s in checkpoint_at if s not in result.checkpoints]
        if missing:
            raise TreeError(f"the trainer returned no checkpoint at step(s) {missing} of a run to {steps} steps")
        loss = float(result.final_val_loss)
        if not math.isfinite(loss):
            raise TreeError(f"the run to {steps} steps with {spec} ended with a non-finite validation loss ({loss})")
        return result

    def _finish(self, budget: int, spec: str, start: int, start_from: Any, parent: str | None,
                kind: Literal["branch", "wsd-s"], data: dict[str, Any] | None = None,
                name: str | None = None) -> FinishedModel:
        key = budget if name is None else name
        if key in self.models:
            raise TreeError(f"a model {'for budget' if name is None else 'named'} {key!r} exists already "
                            f"({self.models[key].node})")
        result = self._train(spec, budget, start_from, [budget], data)
        node_id = f"{kind}@{start}-{budget}" + ("" if name is None else f":{name}")
        node = self.lineage.add(LineageNode(node_id, kind, parent, start, budget, spec, budget,
                                            (budget,), float(result.final_val_loss), data))
        model = FinishedModel(budget, float(result.final_val_loss), result.checkpoints[budget], node.id)
        self.models[key] = model
        return model


def _model_key(key: Any) -> int | str:
    """A :attr:`WSDTree.models` key from saved state: a budget, or a branch name."""
    return key if isinstance(key, str) and not key.isdigit() else int(key)
