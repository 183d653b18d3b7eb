"""Drive an optimizer's param groups from schedules, as a torch ``LRScheduler``.

:class:`ScheduledLR` is a ``torch.optim.lr_scheduler.LRScheduler``, so Hugging Face Trainer and
Lightning accept it as is. Each ``step()`` advances the clock by one optimizer step and writes
every scheduled field (``lr``, ``weight_decay``, ``momentum``, ``betas``, anything in the param
groups) from the schedules' values at the clock's new position. Values are pure functions of the
clock, so a resumed run sees bit-identical values.

    >>> import torch
    >>> from cadence import Clock
    >>> model = torch.nn.Linear(4, 1)
    >>> opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    >>> sched = ScheduledLR(opt, lr="wsd(peak=3e-4, warmup=10%, decay=20%)", clock=Clock(budget=100),
    ...                     weight_decay="cosine(peak=0.1)")
    >>> for _ in range(10):
    ...     opt.step(); sched.step()
    >>> sched.get_last_lr()
    [0.0003]
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from cadence.clock import Clock
from cadence.errors import CadenceError, StateError
from cadence.schedules.base import Schedule, as_schedule

ScheduleLike = Schedule | str | float | dict


class ScheduledLR(LRScheduler):
    """An ``LRScheduler`` whose param-group fields follow cadence schedules on a :class:`Clock`.

    Args:
        optimizer: the optimizer whose ``param_groups`` are driven.
        lr: a schedule (object, spec text, dict or number) for every group, or a list with one per
            group (``None`` leaves a group's lr alone).
        clock: the run's clock; by default a new open-ended step clock.
        relative: if true, values multiply each group's initial value (like ``LambdaLR``) instead
            of being the value itself.
        advance_clock: if true (default) each ``step()`` advances the clock by one step, committing
            samples/tokens queued with ``clock.report``. Set false when something else moves it.
        **fields: schedules for other param-group fields, e.g. ``weight_decay="cosine(peak=0.1)"``,
            ``momentum=...``; a tuple schedules a tuple field element-wise, e.g.
            ``betas=("ramp(start=0.85, end=0.95)", None)``.

    Raises:
        CadenceError: for a field a group lacks, a wrong number of per-group schedules, or a
            schedule that does not fit the clock's budget; the optimizer is untouched then.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lr: ScheduleLike | Sequence[ScheduleLike | None] | None = None,
        *,
        clock: Clock | None = None,
        relative: bool = False,
        advance_clock: bool = True,
        **fields: Any,
    ) -> None:
        if lr is not None:
            fields = {"lr": lr, **fields}
        if not fields:
            raise CadenceError("ScheduledLR needs at least one schedule (lr=... or a param-group field)")
        self.clock = clock if clock is not None else Clock()
        self.relative = relative
        self.advance_clock = advance_clock
        self.schedules = _per_group(optimizer, fields)
        self._other_fields = any(name != "lr" for name in self.schedules)
        self.clock.check(s for s in _flat(self.schedules))
        self.clock.watch(_flat(self.schedules))
        for name, per_group in self.schedules.items():
            if name != "lr":  # torch keeps initial_lr itself
                for group, s in zip(optimizer.param_groups, per_group):
                    if s is not None:
                        group.setdefault(f"initial_{name}", group[name])
        super().__init__(optimizer)

    # ------------------------------------------------------------------ stepping
    def get_lr(self) -> list[float]:
        t, axis = self.clock.position, self.clock.axis
        lrs = self.schedules.get("lr")
        if lrs is None:
            return [group["lr"] for group in self.optimizer.param_groups]
        out = []
        for group, s in zip(self.optimizer.param_groups, lrs):
            if s is None:
                out.append(group["lr"])
            elif self.relative:
                out.append(group["initial_lr"] * s.value(t, axis))
            else:
                out.append(s.value(t, axis))
        return out

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        """Advance the clock one optimizer step and apply every schedule.

        Keeps ``LRScheduler``'s contract (``last_epoch``, ``get_last_lr()``, tensor learning rates)
        without its generic machinery: values come straight from the pure schedules.
        """
        if epoch is not None:
            raise CadenceError("ScheduledLR is driven by its clock; call step() without an epoch")
        if self.advance_clock and not self._is_initial:
            self.clock.advance()
        self._step_count += 1
        self.last_epoch += 1
        self._write_lr(self.get_lr())
        if self._other_fields:
            self._apply_other_fields()

    def _write_lr(self, values: list[float]) -> None:
        groups = self.optimizer.param_groups
        for group, lr in zip(groups, values):
            if isinstance(group["lr"], Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = [g["lr"].clone() if isinstance(g["lr"], Tensor) else g["lr"] for g in groups]

    def _apply_other_fields(self) -> None:
        t, axis = self.clock.position, self.clock.axis
        for name, per_group in self.schedules.items():
            if name == "lr":
                continue
            for group, s in zip(self.optimizer.param_groups, per_group):
                if s is None:
                    continue
                if isinstance(s, tuple):
                    base = group[f"initial_{name}"]
                    group[name] = tuple(
                        b if e is None else (b * e.value(t, axis) if self.relative else e.value(t, axis))
                        for b, e in zip(base, s)
                    )
                else:
                    v = s.value(t, axis)
                    group[name] = group[f"initial_{name}"] * v if self.relative else v

    def values(self) -> dict[str, float]:
        """Current values of every scheduled field, keyed ``field/group`` (for loggers)."""
        out = {}
        for name, per_group in self.schedules.items():
            for i, (group, s) in enumerate(zip(self.optimizer.param_groups, per_group)):
                if s is None:
                    continue
                v = group[name]
                if isinstance(v, tuple):
                    out.update({f"{name}{j}/{i}": float(x) for j, x in enumerate(v) if s[j] is not None})
                else:
                    out[f"{name}/{i}"] = float(v)
        return out

    # ------------------------------------------------------------------ state
    def _specs(self) -> dict[str, list[Any]]:
        return {name: [_spec_of(s) for s in per_group] for name, per_group in self.schedules.items()}

    def state_dict(self) -> dict[str, Any]:
        """Plain-typed state: the schedule specs (to reject a mismatched resume), counters, clock."""
        return {
            "kind": "cadence.ScheduledLR",
            "specs": self._specs(),
            "relative": self.relative,
            "last_epoch": self.last_epoch,
            "step_count": self._step_count,
            "clock": self.clock.state_dict() if self.advance_clock else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` and re-apply the schedules at the restored clock.

        Raises :class:`StateError`, changing nothing, if the state was saved for other schedules.
        """
        if not isinstance(state_dict, dict) or state_dict.get("kind") != "cadence.ScheduledLR":
            raise StateError("not a cadence ScheduledLR state_dict (missing kind='cadence.ScheduledLR')")
        if state_dict.get("specs") != self._specs() or state_dict.get("relative") != self.relative:
            raise StateError(
                f"this state_dict was saved for schedules {state_dict.get('specs')} "
                f"(relative={state_dict.get('relative')}), but this ScheduledLR drives {self._specs()} "
                f"(relative={self.relative})"
            )
        if state_dict.get("clock") is not None:
            self.clock.load_state_dict(state_dict["clock"])
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict["step_count"])
        self._write_lr(self.get_lr())
        self._apply_other_fields()


def _spec_of(s: Any) -> Any:
    if s is None:
        return None
    if isinstance(s, tuple):
        return [_spec_of(e) for e in s]
    return str(s)


def _flat(schedules: Mapping[str, list[Any]]) -> list[Schedule]:
    out: list[Schedule] = []
    for per_group in schedules.values():
        for s in per_group:
            if isinstance(s, tuple):
                out.extend(e for e in s if e is not None)
            elif s is not None:
                out.append(s)
    return out


def _per_group(optimizer: Optimizer, fields: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Normalise ``{field: schedule | [per-group ...]}`` and check every group has the field."""
    groups = optimizer.param_groups
    out: dict[str, list[Any]] = {}
    for name, given in fields.items():
        per_group = list(given) if isinstance(given, list) else [given] * len(groups)
        if len(per_group) != len(groups):
            raise CadenceError(f"{name}: got {len(per_group)} schedules for {len(groups)} param groups")
        normalised = []
        for i, (group, s) in enumerate(zip(groups, per_group)):
            if s is not None and name not in group:
                have = ", ".join(k for k in group if k != "params")
                raise CadenceError(f"param group {i} has no field {name!r} to schedule; it has {have}")
            if isinstance(s, tuple):
                current = group[name]
                if not isinstance(current, (tuple, list)) or len(current) != len(s):
                    raise CadenceError(f"{name}: a tuple of {len(s)} schedules needs a tuple field, group {i} has {current!r}")
                normalised.append(tuple(None if e is None else as_schedule(e) for e in s))
            else:
                if s is not None and isinstance(group[name], (tuple, list)):
                    raise CadenceError(f"{name} is a tuple in group {i}; give a tuple of schedules, e.g. (s, None)")
                normalised.append(None if s is None else as_schedule(s))
        out[name] = normalised
    return out
