"""Layer plans on the clock: which layers train at each step.

Three plans share one mechanism (:class:`LayerPlan`): ``update()`` computes a trainable mask over
the layers, ordered input → output, and applies it. A frozen layer's parameters get
``requires_grad=False`` and ``grad=None``, so

* autograd computes nothing for them, and since every plan freezes a *prefix* of the layers, the
  backward pass stops at the first trainable layer (the saving is real, as long as no parameter
  below the cutoff that lies outside the plan still trains, e.g. an embedding left out of ``layers``);
* optimizers skip them: ``torch.optim.Muon``, ``AdamW``, ``SGD`` … skip parameters whose grad is
  ``None``, so their momentum buffers, step counts and weight decay stay untouched.

Plans:

* :class:`LayerFreezing` — progressive freezing of the bottom layers (Composer ``LayerFreezing``,
  no paper), the frozen fraction being any cadence schedule.
* :class:`FreezeOut` — per-layer cosine LR reaching zero at each layer's freeze time, then freeze
  ("FreezeOut: Accelerate Training by Progressively Freezing Layers", arXiv 1706.04983); the LRs are
  cadence schedules for :class:`~cadence.optim.ScheduledLR`.
* :class:`RandomizedProgressive` — Drop-Muon's randomized progressive training: each step a random
  cutoff, only the layers from it upward train ("Drop-Muon: Update Less, Converge Faster",
  arXiv 2510.02239).

    >>> import torch
    >>> from cadence import Clock
    >>> layers = [torch.nn.Linear(4, 4) for _ in range(5)]
    >>> plan = LayerFreezing(layers, clock=Clock(budget=100), start="50%", level=1.0)
    >>> plan.clock.advance(75); plan.update(); plan.values()["frozen_layers"]
    2.0
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, Callable, ClassVar, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from cadence.clock import Clock, Duration
from cadence.errors import BudgetError, CadenceError, SpecError
from cadence.progressive.base import Plan
from cadence.schedules import Constant, Cosine, Join, Ramp, Schedule, as_schedule


def leaf_layers(model: nn.Module) -> list[nn.Module]:
    """The modules that own parameters directly, in definition (depth-first) order — Composer's
    notion of a layer. For models whose blocks should freeze as units, pass the blocks instead.

        >>> len(leaf_layers(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))))
        2
    """
    return [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]


class LayerPlan(Plan):
    """Shared mechanism: a trainable mask over ``layers`` applied through ``requires_grad``.

    Only parameters that were trainable when the plan was made are managed; ones the user froze
    stay frozen (so make the plan before anything else freezes the model, e.g. another plan).
    ``layers`` must be ordered input → output and must not share parameters. Subclasses implement
    :meth:`trainable_now`.
    """

    def __init__(self, layers: Iterable[nn.Module], *, clock: Clock) -> None:
        super().__init__(clock)
        self.layers = list(layers)
        if not self.layers:
            raise CadenceError("a layer plan needs at least one layer")
        seen: set[int] = set()
        self._params: list[list[torch.Tensor]] = []
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, nn.Module):
                raise CadenceError(f"layer {i} is not a torch.nn.Module: {type(layer).__name__}")
            params = [p for p in layer.parameters() if p.requires_grad]
            if not params:
                raise CadenceError(f"layer {i} ({type(layer).__name__}) has no trainable parameters")
            for p in params:
                if id(p) in seen:
                    raise CadenceError(
                        f"layer {i} shares a parameter with an earlier layer; give layers that own their parameters"
                    )
                seen.add(id(p))
            self._params.append(params)
        self.trainable = np.ones(len(self.layers), dtype=bool)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @abstractmethod
    def trainable_now(self) -> np.ndarray:
        """The boolean trainable mask for the clock's current position."""

    def update(self) -> None:
        """Freeze and unfreeze layers for this step (call before the forward pass)."""
        self._apply(self.trainable_now())

    def release(self) -> None:
        """Make every managed parameter trainable again (e.g. when the plan is removed)."""
        self._apply(np.ones(self.n_layers, dtype=bool))

    def _apply(self, mask: np.ndarray) -> None:
        for params, on in zip(self._params, mask.tolist()):
            for p in params:
                p.requires_grad_(on)
                if not on:
                    p.grad = None
        self.trainable = mask

    def values(self) -> dict[str, float]:
        """``trainable_layers``, ``frozen_layers`` and ``first_trainable`` (index of the lowest trainable layer)."""
        n_on = int(self.trainable.sum())
        first = int(np.argmax(self.trainable)) if n_on else self.n_layers
        return {"trainable_layers": float(n_on), "frozen_layers": float(self.n_layers - n_on),
                "first_trainable": float(first)}

    def _state(self) -> dict[str, Any]:
        return {"trainable": self.trainable.tolist()}

    def _load(self, state: dict[str, Any]) -> None:
        mask = np.asarray(state["trainable"], dtype=bool)
        if mask.shape != (self.n_layers,):
            raise ValueError(f"trainable mask has shape {mask.shape}, expected ({self.n_layers},)")
        self._apply(mask)


def _decimal(x: float) -> float:
    """``x`` rounded to 15 significant digits: a freeze time or peak derived from decimal inputs
    (``0.8³``, ``0.05 / 0.512``) loses the last-bit error of its arithmetic, so its spec prints the
    intended decimal (``0.512``, not ``0.5120000000000001``); the value moves by a few units in
    the last place at most.

        >>> 0.8 ** 3, _decimal(0.8 ** 3)
        (0.5120000000000001, 0.512)
    """
    return float(f"{x:.15g}")


class LayerFreezing(LayerPlan):
    """Progressive freezing of the bottom layers (Composer ``LayerFreezing``; no paper).

    The frozen fraction ``frac`` is a schedule; the first ``⌊frac · (n_layers − 1)⌋`` layers are
    frozen, so the last layer always trains. By default ``frac`` is Composer's: 0 until ``start``,
    then rising linearly to ``level`` at the end of the budget. Composer applies it once per epoch;
    here it is applied every step. Freezing follows the schedule, so it is permanent whenever the
    schedule never decreases (the default).

    Args:
        layers: modules ordered input → output (e.g. ``leaf_layers(model)`` or ``model.blocks``).
        clock: the run's clock.
        start: when freezing begins — a fraction of the budget (``0.5``, ``"50%"``) or an amount
            (``"2000 steps"``). Ignored when ``fraction`` is given.
        level: the frozen fraction reached at the end of the budget, in [0, 1].
        fraction: any schedule (object, spec or number) of the frozen fraction, values in [0, 1].

        >>> layers = [torch.nn.Linear(2, 2) for _ in range(3)]
        >>> LayerFreezing(layers, clock=Clock(budget=10), fraction="ramp(start=0, end=1)").fraction
        Ramp(start=0.0, end=1.0, over=None, shape='linear')
    """

    kind: ClassVar[str] = "cadence.LayerFreezing"

    def __init__(self, layers: Iterable[nn.Module], *, clock: Clock, start: Duration | str | float = 0.5,
                 level: float = 1.0, fraction: Schedule | str | float | dict | None = None) -> None:
        if fraction is None:
            if not 0.0 <= level <= 1.0:
                raise SpecError(f"LayerFreezing: level must lie in [0, 1], got {level!r}")
            fraction = Join((Constant(0.0), Ramp(start=0.0, end=float(level))), at=(Duration.parse(start),))
        schedule = as_schedule(fraction)
        lo, hi = schedule.bounds()
        if lo < 0.0 or hi > 1.0:
            raise SpecError(
                f"LayerFreezing: the frozen fraction must stay in [0, 1], but {schedule} spans [{lo}, {hi}]"
            )
        clock.check([schedule])
        super().__init__(layers, clock=clock)
        self.fraction = schedule
        clock.watch([schedule])

    def trainable_now(self) -> np.ndarray:
        depth = math.floor(self.fraction(self.clock) * (self.n_layers - 1))
        return np.arange(self.n_layers) >= depth

    def config(self) -> dict[str, Any]:
        return {"n_layers": self.n_layers, "fraction": str(self.fraction)}


FREEZE_SHAPES: dict[str, Callable[[float], float]] = {"linear": lambda x: x, "squared": lambda x: x * x,
                                                     "cubic": lambda x: x ** 3}


class FreezeOut(LayerPlan):
    """FreezeOut (Brock et al., arXiv 1706.04983): layer ``i`` anneals its LR to zero by its
    freeze time ``t_i`` (a fraction of the budget), then stops training.

    ``t_i = f(t0 + (1 − t0)·i/L)`` with ``f`` linear, squared or cubic and ``L`` the last layer's
    index, so the last layer trains to the end. Layer ``i``'s LR is ``(α_i/2)(1 + cos(π·u/t_i))`` at
    progress ``u ≤ t_i`` and 0 after, with ``α_i = lr / t_i`` when ``scale_lr`` (same LR area per
    layer) else ``lr``. The LRs are cadence schedules: build one param group per layer with
    :meth:`param_groups` and drive them with ``ScheduledLR(opt, lr=plan.lr_schedules(opt))``.
    Needs a budget (freeze times are fractions of it).

        >>> plan = FreezeOut([torch.nn.Linear(2, 2) for _ in range(3)], clock=Clock(budget=100), t0=0.5, shape="linear")
        >>> plan.freeze_times.tolist()
        [0.5, 0.75, 1.0]
    """

    kind: ClassVar[str] = "cadence.FreezeOut"
    GROUP_KEY: ClassVar[str] = "freezeout_layer"

    def __init__(self, layers: Iterable[nn.Module], *, clock: Clock, t0: float = 0.8, shape: str = "cubic",
                 scale_lr: bool = True) -> None:
        if shape not in FREEZE_SHAPES:
            raise SpecError(f"FreezeOut: shape must be one of {', '.join(FREEZE_SHAPES)}, got {shape!r}")
        if not 0.0 < t0 <= 1.0:
            raise SpecError(f"FreezeOut: t0 must lie in (0, 1], got {t0!r}")
        if clock.budget is None:
            raise BudgetError("FreezeOut needs a budget: freeze times are fractions of it, but this run is open-ended")
        super().__init__(layers, clock=clock)
        self.t0, self.shape, self.scale_lr = float(t0), shape, bool(scale_lr)
        last = max(self.n_layers - 1, 1)
        f = FREEZE_SHAPES[shape]
        self.freeze_times = np.array([_decimal(f(self.t0 + (1.0 - self.t0) * i / last)) for i in range(self.n_layers)])
        if self.n_layers == 1:
            self.freeze_times[0] = 1.0

    def trainable_now(self) -> np.ndarray:
        progress = self.clock.progress
        if progress is None:
            raise BudgetError("FreezeOut needs a budget: the clock's budget was removed")
        return progress < self.freeze_times

    def lr_schedule(self, layer: int, lr: float) -> Schedule:
        """Layer ``layer``'s LR: cosine from ``α_i`` to 0 over ``[0, t_i]`` of the budget, then 0."""
        if not 0 <= layer < self.n_layers:
            raise CadenceError(f"FreezeOut has layers 0..{self.n_layers - 1}, got {layer}")
        t = float(self.freeze_times[layer])
        peak = _decimal(lr / t) if self.scale_lr else lr
        return Join((Cosine(peak=peak), Constant(0.0)), at=(Duration(t, "fraction"),))

    def param_groups(self, select: Callable[[torch.Tensor], bool] | None = None,
                     **group_options: Any) -> list[dict[str, Any]]:
        """One param group per layer (tagged ``freezeout_layer``) holding its parameters that pass
        ``select`` (e.g. ``lambda p: p.ndim == 2`` for Muon); layers with none are left out."""
        groups = []
        for i, params in enumerate(self._params):
            chosen = [p for p in params if select is None or select(p)]
            if chosen:
                groups.append({"params": chosen, self.GROUP_KEY: i, **group_options})
        return groups

    def lr_schedules(self, optimizer: torch.optim.Optimizer, lr: float) -> list[Schedule | None]:
        """Per-group LR schedules for ``ScheduledLR(optimizer, lr=...)``; ``None`` for groups not
        made by :meth:`param_groups` (their LR is left alone)."""
        return [None if g.get(self.GROUP_KEY) is None else self.lr_schedule(g[self.GROUP_KEY], lr)
                for g in optimizer.param_groups]

    def values(self) -> dict[str, float]:
        return {**super().values(), "next_freeze": float(self.freeze_times[self.trainable].min(initial=1.0))}

    def config(self) -> dict[str, Any]:
        return {"n_layers": self.n_layers, "t0": self.t0, "shape": self.shape, "scale_lr": self.scale_lr}


class RandomizedProgressive(LayerPlan):
    """Randomized progressive training, the layer sampling of Drop-Muon (Gruntkowska et al., 2025;
    arXiv 2510.02239): each step draws a cutoff ``s`` from a distribution over ``0..n_layers−1``
    and trains only layers ``s, …, n_layers−1``; the layers below keep their parameters and
    optimizer state untouched, and backpropagation stops at layer ``s``.

    UNCONFIRMED: the distribution used in the paper's experiments and any
    per-layer LR scaling. Implemented: ``probabilities=None`` is uniform over cutoffs (as the
    reviewers assume), which trains about half the layers per step; any other distribution can be
    given. Per-layer LRs are left to the optimizer.

    Each step's cutoff is drawn from a private generator seeded with ``(seed, clock step)``, so a
    step's draw does not depend on how often ``update`` was called or on a resume: the state is the
    seed and the last draw.

    Args:
        layers: modules ordered input → output.
        clock: the run's clock (its step count keys the draws).
        probabilities: cutoff distribution, one non-negative weight per layer (normalised), or ``None``.
        seed: the plan's own seed.

        >>> layers = [torch.nn.Linear(2, 2) for _ in range(4)]
        >>> plan = RandomizedProgressive(layers, clock=Clock(), probabilities=[0, 0, 1, 0])
        >>> plan.update(); plan.trainable.tolist()
        [False, False, True, True]
    """

    kind: ClassVar[str] = "cadence.RandomizedProgressive"

    def __init__(self, layers: Iterable[nn.Module], *, clock: Clock,
                 probabilities: Sequence[float] | np.ndarray | None = None, seed: int = 0) -> None:
        super().__init__(layers, clock=clock)
        if probabilities is None:
            p = np.full(self.n_layers, 1.0 / self.n_layers)
        else:
            p = np.asarray(probabilities, dtype=float)
            if p.shape != (self.n_layers,):
                raise SpecError(f"RandomizedProgressive: {p.size} probabilities for {self.n_layers} layers")
            if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
                raise SpecError(
                    f"RandomizedProgressive: probabilities must be finite, non-negative and not all 0, got {p.tolist()}"
                )
            p = p / p.sum()
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise SpecError(f"RandomizedProgressive: seed must be a non-negative integer, got {seed!r}")
        self.probabilities, self.seed = p, int(seed)
        self.cutoff = 0
        self._drawn_at: int | None = None

    def draw(self, step: int) -> int:
        """The cutoff for optimizer step ``step`` (a pure function of seed and step)."""
        rng = np.random.default_rng((self.seed, step))
        return int(rng.choice(self.n_layers, p=self.probabilities))

    def trainable_now(self) -> np.ndarray:
        step = int(self.clock.steps)
        if step != self._drawn_at:
            self.cutoff, self._drawn_at = self.draw(step), step
        return np.arange(self.n_layers) >= self.cutoff

    def values(self) -> dict[str, float]:
        return {**super().values(), "cutoff": float(self.cutoff)}

    def config(self) -> dict[str, Any]:
        return {"n_layers": self.n_layers, "probabilities": self.probabilities.tolist(), "seed": self.seed}

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "cutoff": self.cutoff, "drawn_at": self._drawn_at}

    def _load(self, state: dict[str, Any]) -> None:
        cutoff = int(state["cutoff"])
        drawn_at = None if state["drawn_at"] is None else int(state["drawn_at"])
        if not 0 <= cutoff < self.n_layers:
            raise ValueError(f"cutoff {cutoff} outside 0..{self.n_layers - 1}")
        super()._load(state)
        self.cutoff, self._drawn_at = cutoff, drawn_at
