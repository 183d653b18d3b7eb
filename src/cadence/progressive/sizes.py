"""Size plans on the clock: how long the sequences, how big the batch.

* :class:`SequenceLengthWarmup` — train on short sequences first ("The Stability-Efficiency
  Dilemma: Investigating Sequence Length Warmup for Training GPT Models", Li et al., arXiv 2108.06084;
  Composer ``SeqLengthWarmup``). The length is any cadence schedule, rounded down to a multiple of
  ``multiple_of``; :meth:`~SequenceLengthWarmup.apply` truncates a batch to it, or reshapes it into more, shorter rows. It reports the tokens trained on to the clock.
* :class:`BatchSizeSchedule` — a batch size that follows a schedule, with the LR coupled by linear
  or square-root scaling (:class:`BatchLRScaling`, a schedule, so the coupling is as pure and
  resumable as the LR itself). Its :meth:`~BatchSizeSchedule.batch_sampler` draws each batch with
  the size of the step it will train in (however far ahead a loader prefetches); it reports the
  samples of each step to the clock.

    >>> from cadence import Clock
    >>> clock = Clock(budget=100)
    >>> bs = BatchSizeSchedule(clock=clock, batch_size="ramp(start=32, end=128)", rule="linear")
    >>> clock.advance(50); bs.update(); bs.values()
    {'batch_size': 80.0, 'lr_scale': 2.5}
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterator, Mapping, Sized

import numpy as np
import torch
from torch.utils.data import Sampler

from cadence.clock import Clock
from cadence.errors import CadenceError, SpecError
from cadence.progressive.base import Plan
from cadence.schedules import BatchLRScaling, Product, Schedule, as_schedule
from cadence.schedules.scaling import lr_scale, quantize

class BatchSizeSchedule(Plan):
    """A batch size on the clock, with the LR coupled by a chosen rule.

    Args:
        clock: the run's clock.
        batch_size: a schedule of the batch size (object, spec, dict or number), e.g.
            ``"ramp(start=32, end=256, over=20%)"``; rounded down to a multiple of ``multiple_of``.
            It is the size of *one* batch (one micro-batch of one process).
        base_batch_size: the batch size the base LR was tuned for (default: the size at the start).
        rule: ``"linear"`` (LR ∝ B) or ``"sqrt"`` (LR ∝ √B) for :meth:`coupled_lr`.
        multiple_of: batch sizes are multiples of this.
        batches_per_step: batches of this size per optimizer step over the whole run (gradient
            accumulation steps × processes that share one stream); 1 in a plain single-process loop.
        report: if true, :meth:`update` reports this step's samples (``batch_size × batches_per_step``)
            to the clock (``clock.report``).

    Drive the LR with ``ScheduledLR(opt, lr=plan.coupled_lr("cosine(peak=1e-3)"), clock=clock)``
    and draw data with ``DataLoader(ds, batch_sampler=plan.batch_sampler(len(ds)))``.
    """

    kind: ClassVar[str] = "cadence.BatchSizeSchedule"

    def __init__(self, *, clock: Clock, batch_size: Schedule | str | float | dict, base_batch_size: int | None = None,
                 rule: str = "sqrt", multiple_of: int = 1, batches_per_step: int = 1, report: bool = True) -> None:
        super().__init__(clock)
        for name, value in (("multiple_of", multiple_of), ("batches_per_step", batches_per_step)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"BatchSizeSchedule: {name} must be a positive integer, got {value!r}")
        schedule = as_schedule(batch_size)
        clock.check([schedule])
        if base_batch_size is None:
            base_batch_size = quantize(schedule.value(0.0, clock.axis), multiple_of)
        if isinstance(base_batch_size, bool) or not isinstance(base_batch_size, int) or base_batch_size < 1:
            raise SpecError(f"BatchSizeSchedule: base_batch_size must be a positive integer, got {base_batch_size!r}")
        self.scaling = BatchLRScaling(batch=schedule, base=float(base_batch_size), rule=rule,
                                      multiple_of=float(multiple_of))
        self.batches_per_step, self.report = batches_per_step, bool(report)
        clock.watch([self.scaling])
        self.batch_size = self.current()
        self._reported_at: float | None = None

    @property
    def schedule(self) -> Schedule:
        return self.scaling.batch

    def current(self) -> int:
        """The batch size at the clock's position now (what the next batch should hold)."""
        return self.scaling.batch_size(self.clock.position, self.clock.axis)

    def size_at_step(self, step: int) -> int:
        """The batch size of optimizer step ``step``, which may lie ahead of (or behind) the clock:
        a loader that prefetches draws a batch before the step it trains in has begun.

        Raises:
            CadenceError: for a step other than the clock's own on a clock that does not count its
                budget in steps (how many samples or tokens lie before that step is not known).
        """
        if step == self.clock.steps:
            return self.current()
        return self.scaling.batch_size(position_at_step(self.clock, step), self.clock.axis)

    def update(self) -> None:
        """Fix this step's batch size and, with ``report``, report its samples to the clock (once
        per clock step, however often it is called in that step)."""
        self.batch_size = self.current()
        if self.report and self._reported_at != self.clock.steps:
            self.clock.report(samples=self.batch_size * self.batches_per_step)
            self._reported_at = self.clock.steps

    def coupled_lr(self, lr: Schedule | str | float | dict) -> Schedule:
        """``lr`` multiplied by the batch-size coupling: a schedule for ``ScheduledLR``."""
        return Product((as_schedule(lr), self.scaling))

    def batch_sampler(self, data: int | Sized, *, shuffle: bool = True, seed: int = 0, rank: int = 0,
                      world: int = 1, start: int | None = None) -> ScheduledBatchSampler:
        """An endless batch sampler over ``data`` (a dataset or its length) whose batch for step
        ``t`` holds :meth:`size_at_step` ``(t)`` rows; see :class:`ScheduledBatchSampler`."""
        return ScheduledBatchSampler(self, data, shuffle=shuffle, seed=seed, rank=rank, world=world, start=start)

    def values(self) -> dict[str, float]:
        ratio = self.batch_size / self.scaling.base
        return {"batch_size": float(self.batch_size), "lr_scale": lr_scale(self.scaling.rule, ratio)}

    def config(self) -> dict[str, Any]:
        return {"scaling": str(self.scaling), "batches_per_step": self.batches_per_step, "report": self.report}

    def _state(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "reported_at": self._reported_at}

    def _load(self, state: dict[str, Any]) -> None:
        batch_size = int(state["batch_size"])
        reported_at = None if state["reported_at"] is None else float(state["reported_at"])
        self.batch_size, self._reported_at = batch_size, reported_at


def position_at_step(clock: Clock, step: float) -> float:
    """Where the clock's schedules will be (or were) evaluated at optimizer step ``step``, on a clock
    that counts its budget in steps: positions move linearly with steps between budget changes
    (slope 1, or what remains of the schedules over what remains of the budget after a rescale).

        >>> clock = Clock(budget=100); clock.advance(10)
        >>> position_at_step(clock, 12)
        12.0
    """
    if clock.unit != "steps":
        raise CadenceError(
            f"the position at step {step:g} is unknown while the clock is at step {clock.steps:g}: the budget counts "
            f"{clock.unit}, not steps. Give the clock a step budget, or draw each batch when its step begins"
        )
    slope = 1.0
    if clock.budget is not None and clock.schedule_total is not None and clock.budget.amount > clock.steps:
        slope = (clock.schedule_total - clock.position) / (clock.budget.amount - clock.steps)
    return clock.position + (step - clock.steps) * slope


class ScheduledBatchSampler(Sampler[list[int]]):
    """Batches whose size follows a :class:`BatchSizeSchedule`, sized for the step they train in.

    The sampler numbers the batches it yields: an iteration begun at optimizer step ``s`` (the
    clock's step when ``iter()`` is called, or ``start``) yields ``plan.batches_per_step`` batches
    for step ``s``, then as many for ``s + 1``, and so on, each holding ``plan.size_at_step(step)``
    rows. A batch is therefore as large as the step it trains in requires, however far ahead of
    the training loop a DataLoader, Accelerate or Lightning's fetcher draws it (looking ahead
    needs a clock that counts steps). Rows come from an endless stream of passes over the data,
    each pass a permutation seeded by ``(seed, pass)`` (or in order without ``shuffle``); step
    ``s``'s rows start where steps ``0 … s−1`` left off, so an iteration begun after a resume
    continues the stream of the uninterrupted run. (The sizes of past steps are recomputed on the
    clock's current budget: after a mid-run budget change the resumed rows shift; sizes stay right.)
    Processes that share the stream each take their own batches: the step's ``k``-th batch goes to
    rank ``k mod world``.

        >>> plan = BatchSizeSchedule(clock=Clock(budget=10), batch_size="ramp(start=2, end=6, over=2 steps)")
        >>> batches = iter(plan.batch_sampler(8, shuffle=False))
        >>> [next(batches) for _ in range(3)]      # steps 0, 1, 2, drawn before the clock moved
        [[0, 1], [2, 3, 4, 5], [6, 7, 0, 1, 2, 3]]
    """

    def __init__(self, plan: BatchSizeSchedule, data: int | Sized, *, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world: int = 1, start: int | None = None) -> None:
        n = data if isinstance(data, int) else len(data)
        if isinstance(n, bool) or n < 1:
            raise CadenceError(f"ScheduledBatchSampler: need at least one row of data, got {data!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise CadenceError(f"ScheduledBatchSampler: seed must be a non-negative integer, got {seed!r}")
        if world < 1 or not 0 <= rank < world or plan.batches_per_step % world:
            raise CadenceError(
                f"ScheduledBatchSampler: rank {rank} of {world} processes cannot share the plan's "
                f"{plan.batches_per_step} batches per step (give batches_per_step = accumulation steps × processes)"
            )
        self.plan, self.n, self.shuffle, self.seed = plan, int(n), bool(shuffle), int(seed)
        self.rank, self.world, self.start = rank, world, start
        self._pass: tuple[int, np.ndarray] = (-1, np.zeros(0, dtype=np.int64))  # the latest pass drawn

    def __len__(self) -> int:
        raise TypeError("a ScheduledBatchSampler is endless: stop the loop by the clock or max_steps")

    def rows(self, offset: int, size: int) -> np.ndarray:
        """Rows ``offset … offset + size − 1`` of the stream."""
        positions = np.arange(offset, offset + size)
        passes = positions // self.n
        out = np.empty(size, dtype=np.int64)
        for p in np.unique(passes).tolist():
            if self._pass[0] != p:
                order = np.random.default_rng((self.seed, p)).permutation(self.n) if self.shuffle else np.arange(self.n)
                self._pass = (p, order)
            mask = passes == p
            out[mask] = self._pass[1][positions[mask] % self.n]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        plan, per_step = self.plan, self.plan.batches_per_step
        step = int(plan.clock.steps) if self.start is None else int(self.start)
        offset = per_step * sum(plan.size_at_step(s) for s in range(step))
        while True:
            size = plan.size_at_step(step)
            for k in range(per_step):
                if k % self.world == self.rank:
                    yield self.rows(offset, size).tolist()
                offset += size
            step += 1


class SequenceLengthWarmup(Plan):
    """Sequence-length warmup: the length follows a schedule; batches are cut (or reshaped) to it.

    Composer's ``SeqLengthWarmup(duration=d, min_seq_length=a, max_seq_length=b, step_size=Δ)`` is
    ``length=f"ramp(start={a}, end={b}, over={d})", multiple_of=Δ`` (equal to Composer's formula
    when the warmup steps divide evenly into the ``(b − a)/Δ`` increases; otherwise increases
    land within a step of Composer's).

    Args:
        clock: the run's clock.
        length: a schedule of the sequence length; rounded down to a multiple of ``multiple_of``.
        multiple_of: lengths are multiples of this (8 suits tensor cores).
        truncate: if true, :meth:`apply` cuts every sequence to the length; if false, it reshapes
            each row into ``⌊T/L⌋`` rows of length ``L`` (dropping the ``T mod L`` tail tokens).
        report: if true, :meth:`apply` reports the tokens in the batch it returns to the clock.

    Sequences lie along dim 1 (``batch × seq × …``). A batch is a tensor, a mapping of tensors
    (e.g. ``input_ids``, ``attention_mask``, ``labels``) or a tuple/list of them; every tensor whose
    first two dims match the first tensor's is cut, others pass unchanged (reshape mode refuses them).
    """

    kind: ClassVar[str] = "cadence.SequenceLengthWarmup"

    def __init__(self, *, clock: Clock, length: Schedule | str | float | dict, multiple_of: int = 8,
                 truncate: bool = True, report: bool = True) -> None:
        super().__init__(clock)
        if isinstance(multiple_of, bool) or not isinstance(multiple_of, int) or multiple_of < 1:
            raise SpecError(f"SequenceLengthWarmup: multiple_of must be a positive integer, got {multiple_of!r}")
        self.length = as_schedule(length)
        if self.length.bounds()[0] <= 0:
            low = self.length.bounds()[0]
            raise SpecError(f"SequenceLengthWarmup: the length must stay positive, but {self.length} reaches {low}")
        clock.check([self.length])
        clock.watch([self.length])
        self.multiple_of, self.truncate, self.report = multiple_of, bool(truncate), bool(report)
        self.seq_len = self.current()

    def current(self) -> int:
        """The sequence length at the clock's position now."""
        return quantize(self.length(self.clock), self.multiple_of)

    def update(self) -> None:
        """Fix this step's sequence length."""
        self.seq_len = self.current()

    def apply(self, batch: Any) -> Any:
        """``batch`` with its sequences cut (or reshaped) to this step's length; reports its tokens."""
        leaves = _tensors(batch)
        if not leaves:
            raise CadenceError("SequenceLengthWarmup.apply: the batch holds no tensors")
        ref = leaves[0]
        if ref.ndim < 2:
            raise CadenceError(
                f"SequenceLengthWarmup.apply: expected batch × seq tensors, the first has shape {tuple(ref.shape)}"
            )
        rows, full = ref.shape[0], ref.shape[1]
        length = min(self.seq_len, full)
        per_row = 1 if self.truncate else full // length

        def cut(t: torch.Tensor) -> torch.Tensor:
            if t.ndim >= 2 and t.shape[0] == rows and t.shape[1] == full:
                t = t[:, : per_row * length]
                return t if self.truncate else t.reshape(rows * per_row, length, *t.shape[2:])
            if not self.truncate:
                raise CadenceError(
                    f"SequenceLengthWarmup.apply: cannot reshape a tensor of shape {tuple(t.shape)} into rows of "
                    f"length {length}; it is not batch × seq like {tuple(ref.shape)}. Use truncate=True"
                )
            return t

        out = _map_tensors(batch, cut)
        if self.report:
            self.clock.report(tokens=rows * per_row * length)
        return out

    def values(self) -> dict[str, float]:
        return {"seq_len": float(self.seq_len)}

    def config(self) -> dict[str, Any]:
        return {"length": str(self.length), "multiple_of": self.multiple_of, "truncate": self.truncate,
                "report": self.report}

    def _state(self) -> dict[str, Any]:
        return {"seq_len": self.seq_len}

    def _load(self, state: dict[str, Any]) -> None:
        self.seq_len = int(state["seq_len"])


def _tensors(batch: Any) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, Mapping):
        return [t for v in batch.values() for t in _tensors(v)]
    if isinstance(batch, (tuple, list)):
        return [t for v in batch for t in _tensors(v)]
    return []


def _map_tensors(batch: Any, fn: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return {k: _map_tensors(v, fn) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_map_tensors(v, fn) for v in batch)
    return batch
