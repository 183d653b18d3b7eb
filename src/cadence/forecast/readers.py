"""Read the logs training tools write into a :class:`~cadence.forecast.runlog.RunLog`.

Formats, told apart by content (not by file name):

* cadence's run log (CSV or JSON lines, :mod:`cadence.forecast.runlog`);
* a Hugging Face ``trainer_state.json`` (its ``log_history``: ``step``, ``loss``,
  ``learning_rate``, ``grad_norm``, ``eval_loss``), or a JSON list of such rows;
* a Lightning ``CSVLogger`` ``metrics.csv`` (``step``, ``train_loss``, ``lr-AdamW`` from
  ``LearningRateMonitor``; train and validation rows interleaved with blanks; steps count from 0);
* a W&B CSV export (``Step``, ``RUN - train/loss``, ``__MIN``/``__MAX`` columns dropped);
* TensorBoard event files, a file or a run directory (through the ``tensorboard`` package's own
  reader: ``pip install 'cadence[tensorboard]'``).

Rows are merged by step (the last value logged for a key at a step wins). Each run-log column
takes the first key of :data:`KEYS` the log has, or the key given; :attr:`RunLog.source` says
which. Steps counted from 0 (Lightning, ``_step``) are shifted to count from 1, so a row is
the step it reports on. LRs missing between logged steps come from a schedule spec when one is
given (``schedule``, on a ``budget``-step run), else by linear interpolation.

    >>> import tempfile, json, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "trainer_state.json"
    >>> _ = path.write_text(json.dumps({"max_steps": 4, "log_history": [
    ...     {"step": 2, "loss": 3.0, "learning_rate": 7.5e-4}, {"step": 4, "loss": 2.5, "learning_rate": 2.5e-4},
    ...     {"step": 4, "eval_loss": 2.6}]}))
    >>> log = read_log(path)
    >>> log.step.tolist(), log.lr.tolist(), log.val_loss.tolist()
    ([2, 4], [0.00075, 0.00025], [nan, 2.6])
    >>> log.source
    'Hugging Face trainer_state.json: step=step, lr=learning_rate, loss=loss, val_loss=eval_loss, LR logged at every row'

    >>> read_log(path, schedule="linear(peak=1e-3)").lr.tolist()  # every step, from the spec
    [0.001, 0.00075, 0.0005, 0.00025]
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from cadence.errors import CadenceError
from cadence.forecast.runlog import RunLog, RunLogError

KEYS: dict[str, tuple[str, ...]] = {
    "step": ("step", "Step", "global_step", "trainer/global_step", "train/global_step", "_step"),
    "lr": ("lr", "learning_rate", "train/learning_rate", "train/lr", "lr-*", "lr/*"),
    "loss": ("loss", "train/loss", "train_loss", "train_loss_step", "train/loss_step", "training_loss"),
    "val_loss": ("val_loss", "eval_loss", "eval/loss", "val/loss", "validation_loss", "valid_loss",
                 "val_loss_epoch"),
    "tokens": ("tokens", "num_input_tokens_seen", "train/num_input_tokens_seen"),
    "grad_norm": ("grad_norm", "train/grad_norm", "cadence/grad_norm", "grad_2.0_norm_total"),
    "grad_norm_l1": ("grad_norm_l1", "train/grad_norm_l1", "cadence/grad_norm_l1", "grad_1.0_norm_total"),
}
"""Run-log column → the keys tools log it under, in order of preference (``*`` matches any text)."""

MAX_STEPS = 10**8
"""Largest step a log may hold (far beyond any run; it keeps arrays over the steps finite)."""
MAX_FILL = 10**7
"""Longest run whose every step's LR is filled from a schedule."""


def read_log(path: str | Path, *, step_key: str | None = None, lr_key: str | None = None,
             loss_key: str | None = None, schedule: Any = None, budget: int | None = None) -> RunLog:
    """Read any supported log at ``path`` (a file, or a TensorBoard/Lightning/HF output directory).

    Args:
        step_key, lr_key, loss_key: the key of the step, LR and training loss (default: detected).
        schedule: the run's LR schedule (a spec): fills the LR of every step the log leaves out.
        budget: the run's length in steps for ``schedule`` (default: the log's ``max_steps``, else its
            last step).

    Raises:
        RunLogError: a missing, empty, binary or unknown file; a log without a loss or an LR (the
            message names the keys found); a key given that the log does not have.
    """
    path = Path(path)
    if not path.exists():
        raise RunLogError(f"run log {path} not found")
    try:
        fmt, rows, recorded_budget = _load(path)
    except OSError as e:
        raise RunLogError(f"cannot read {path}: {e.strerror or e}") from None
    rows = [r for r in rows if r]
    if not rows:
        raise RunLogError(f"{path}: the {fmt} has no rows")
    found = list(dict.fromkeys(k for r in rows for k in r))
    given = {"step": step_key, "lr": lr_key, "loss": loss_key}
    picked = {col: _pick(col, found, given.get(col), path) for col in KEYS}
    if picked["step"] is None:
        raise RunLogError(f"{path}: no step column (looked for {', '.join(KEYS['step'])}; found {_list(found)}); "
                          f"name it with --step-key")
    if picked["loss"] is None and picked["val_loss"] is None:
        raise RunLogError(f"{path}: no loss (looked for {', '.join(KEYS['loss'] + KEYS['val_loss'])}; "
                          f"found {_list(found)}); name it with --loss-key")
    steps, cols = _merge(rows, picked, path)
    notes = [f"{col}={key}" for col, key in picked.items() if key is not None]
    if steps[0] == 0:
        steps = steps + 1
        notes.append("steps counted from 0, shifted by 1")
    lr, steps, cols, lr_note = _learning_rates(steps, cols, picked["lr"], schedule, budget or recorded_budget,
                                               path, found)
    notes.append(lr_note)
    try:
        return RunLog(steps, lr, **{c: v for c, v in cols.items() if c not in ("step", "lr")},
                      name=_name(path), source=f"{fmt}: " + ", ".join(notes))
    except RunLogError as e:
        raise RunLogError(f"{path} ({fmt}): {e}") from None


def _name(path: Path) -> str:
    """The run's label: the file name, with its directory when the tool gives every run the same name."""
    generic = path.name in ("trainer_state.json", "metrics.csv") or path.name.startswith("events.out.tfevents.")
    return f"{path.parent.name}/{path.name}" if generic and path.parent.name else path.name


# ---------------------------------------------------------------------- formats
def _load(path: Path) -> tuple[str, list[dict[str, Any]], int | None]:
    """``(format label, rows, recorded budget)`` of the file or directory at ``path``."""
    if path.is_dir():
        found = _in_directory(path)
        if found.is_dir():
            return "TensorBoard event files", _tensorboard_rows(found), None
        return _load(found)
    with path.open("rb") as f:
        head = f.read(256)
    if not head:
        raise RunLogError(f"{path} is empty")
    if b"brain.Event" in head:
        return "TensorBoard event file", _tensorboard_rows(path), None
    binary = RunLogError(f"{path} is not a text log (binary data); cadence reads CSV, JSON lines, "
                         f"trainer_state.json and TensorBoard event files")
    if b"\x00" in head:  # before reading a large binary file whole
        raise binary
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise binary from None
    if "\x00" in text:
        raise binary
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # JSON lines
        if isinstance(data, dict):
            if not isinstance(data.get("log_history"), list):
                raise RunLogError(f"{path}: a JSON object without a 'log_history' list (keys: {_list(list(data))}); "
                                  f"expected a Hugging Face trainer_state.json")
            budget = data.get("max_steps")
            rows = [r for r in data["log_history"] if isinstance(r, dict) and "train_runtime" not in r]
            return "Hugging Face trainer_state.json", rows, int(budget) if isinstance(budget, int) and budget > 0 else None
        if isinstance(data, list):
            return "JSON rows", _dicts(data, path), None
        return "JSON lines", _json_lines(text, path), None
    return _csv(text, path)


def _in_directory(path: Path) -> Path:
    """The one log in a run directory: TensorBoard events (their directory), trainer_state.json or
    metrics.csv, directly inside or, failing that, anywhere below."""
    for found in (_logs_in(path.glob), _logs_in(path.rglob)):
        if len(found) == 1:
            return found[0]
        if found:
            raise RunLogError(f"{path} holds several logs ({', '.join(str(f) for f in found[:5])}"
                              f"{', …' if len(found) > 5 else ''}); name one")
    raise RunLogError(f"{path} is a directory without TensorBoard event files, trainer_state.json or metrics.csv")


def _logs_in(glob: Any) -> list[Path]:
    events = sorted({f.parent for f in glob("events.out.tfevents.*") if f.is_file()})
    return events + sorted(f for name in ("trainer_state.json", "metrics.csv") for f in glob(name) if f.is_file())


def _csv(text: str, path: Path) -> tuple[str, list[dict[str, Any]], int | None]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
        body = list(reader)
    except (StopIteration, csv.Error) as e:
        raise RunLogError(f"{path}: not a CSV log ({e or 'no header'})") from None
    header = [h.strip() for h in header]
    if len(header) < 2:
        raise RunLogError(f"{path}: not a run log: one column ({_list(header)}); expected CSV with a header row, "
                          f"JSON lines, trainer_state.json or TensorBoard event files")
    names = [_wandb_name(h) for h in header]
    wandb = any(h.endswith(("__MIN", "__MAX")) or " - " in h for h in header) or header[0] in ("Step", "_step")
    keep = [i for i, h in enumerate(header) if not h.endswith(("__MIN", "__MAX"))]
    kept = [names[i] for i in keep]
    twice = sorted({n for n in kept if kept.count(n) > 1})
    if twice:
        raise RunLogError(f"{path}: columns {_list(twice)} appear more than once (an export of several runs?); "
                          f"export one run per file")
    rows = [{names[i]: row[i] for i in keep if i < len(row) and row[i].strip() != ""} for row in body]
    if wandb:
        label = "W&B CSV export"
    elif any(h.startswith("lr-") for h in header) or {"epoch", "step"} <= set(header):
        label = "Lightning metrics.csv"
    else:
        label = "CSV log"
    return label, rows, None


def _wandb_name(header: str) -> str:
    """``"my-run - train/loss"`` → ``"train/loss"`` (W&B panel exports prefix the run name)."""
    return header.split(" - ", 1)[1].strip() if " - " in header else header


def _json_lines(text: str, path: Path) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise RunLogError(f"{path}: line {i} is not JSON: {e}") from None
    return _dicts(rows, path)


def _dicts(rows: list[Any], path: Path) -> list[dict[str, Any]]:
    if not all(isinstance(r, dict) for r in rows):
        raise RunLogError(f"{path}: every row must be a JSON object")
    return rows


def _tensorboard_rows(path: Path) -> list[dict[str, Any]]:
    """One row per (tag, step) of every scalar in the event file or run directory."""
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError:
        raise RunLogError(f"{path}: reading TensorBoard event files needs the tensorboard package: "
                          f"pip install 'cadence[tensorboard]'") from None
    acc = event_accumulator.EventAccumulator(str(path), size_guidance={event_accumulator.SCALARS: 0})
    try:
        acc.Reload()
    except Exception as e:  # noqa: BLE001 - a corrupt file surfaces as any of the reader's errors
        raise RunLogError(f"{path}: unreadable TensorBoard events ({type(e).__name__}: {e})") from None
    rows = []
    for tag in acc.Tags().get("scalars", []):
        rows.extend({"step": ev.step, tag: ev.value} for ev in acc.Scalars(tag))
    return sorted(rows, key=lambda r: r["step"])


# ---------------------------------------------------------------------- columns
def _pick(col: str, found: list[str], given: str | None, path: Path) -> str | None:
    if given is not None:
        if given not in found:
            raise RunLogError(f"{path}: no key {given!r} (found {_list(found)})")
        return given
    # not LRs: cadence's HF adapter's next-step LR, LearningRateMonitor's momentum and weight decay
    taken = {"lr": ("cadence/lr/*", "*-momentum", "*-weight_decay")}.get(col, ())
    for pattern in KEYS[col]:
        for key in found:
            if fnmatch.fnmatchcase(key, pattern) and not any(fnmatch.fnmatchcase(key, t) for t in taken):
                return key
    return None


def _merge(rows: list[dict[str, Any]], picked: dict[str, str | None],
           path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Steps in order and, per column, the last value logged at each step (NaN where none)."""
    step_key = picked["step"]
    merged: dict[int, dict[str, float]] = {}
    last = -1
    for row in rows:
        raw = row.get(step_key)
        if raw is None:
            continue
        step = _number(raw, step_key, path)
        if step is None or step != int(step) or not 0 <= step <= MAX_STEPS:
            raise RunLogError(f"{path}: step {raw!r} is not a whole number in 0..{MAX_STEPS:,}")
        if step < last:
            raise RunLogError(f"{path}: steps must strictly increase (rows of one step are merged), but step "
                              f"{int(step)} follows step {last}; is it two runs in one log?")
        last = int(step)
        into = merged.setdefault(int(step), {})
        for col, key in picked.items():
            if key is not None and col != "step" and key in row:
                value = _number(row[key], key, path)
                if value is not None:
                    into[col] = value
    steps = np.array(sorted(merged), dtype=np.int64)
    if len(steps) == 0:
        raise RunLogError(f"{path}: no row has a {step_key!r} value")
    cols = {col: np.array([merged[s].get(col, math.nan) for s in steps]) for col in picked if col != "step"}
    keep = np.zeros(len(steps), bool)
    for col in ("loss", "val_loss", "lr", "grad_norm", "grad_norm_l1"):
        keep |= ~np.isnan(cols[col])
    if not keep.any():
        raise RunLogError(f"{path}: no row has a loss, an LR or a gradient norm")
    return steps[keep], {c: v[keep] for c, v in cols.items()}


def _learning_rates(steps: np.ndarray, cols: dict[str, np.ndarray], lr_key: str | None, schedule: Any,
                    budget: int | None, path: Path,
                    found: list[str]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], str]:
    """The LR of every row (dense over ``1..last step`` when a schedule fills the gaps), the rows, a note."""
    logged = cols["lr"]
    if schedule is not None:
        from cadence.forecast.law import lr_per_step

        last = int(steps[-1])
        total = int(budget) if budget is not None else last
        if total < last:
            raise RunLogError(f"{path}: the log reaches step {last}, past the schedule's budget of {total} steps")
        if total > MAX_FILL:
            raise RunLogError(f"{path}: a schedule fills every step's LR of runs up to {MAX_FILL:,} steps, "
                              f"not {total:,}; leave the schedule out to interpolate the logged LRs")
        try:
            spec_lr = lr_per_step(schedule, total)[:last]
        except CadenceError as e:
            raise RunLogError(f"{path}: schedule: {e}") from None
        dense = np.arange(1, last + 1)
        out = {c: np.full(last, np.nan) for c in cols}
        for c, v in cols.items():
            out[c][steps - 1] = v
        have = ~np.isnan(out["lr"])
        note = f"LR of unlogged steps from {schedule} over {total} steps"
        if have.any():
            gap = np.max(np.abs(out["lr"][have] - spec_lr[have]) / np.maximum(np.abs(spec_lr[have]), 1e-12))
            if gap > 0.01:
                note += f" (it differs from the logged LR by up to {gap:.0%})"
        lr = np.where(have, out["lr"], spec_lr)
        return lr, dense, out, note
    have = ~np.isnan(logged)
    if not have.any():
        raise RunLogError(f"{path}: no learning rate (looked for {', '.join(map(repr, KEYS['lr']))}; found {_list(found)}); "
                          f"name it with --lr-key, or give the schedule with --schedule-of")
    note = "LR interpolated between logged steps" if not have.all() else "LR logged at every row"
    return np.interp(steps, steps[have], logged[have]), steps, cols, note


def _number(v: Any, key: str, path: Path) -> float | None:
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return None
    if isinstance(v, bool):
        raise RunLogError(f"{path}: {key} holds {v!r}, not a number")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise RunLogError(f"{path}: {key} holds {v!r}, not a number") from None
    return None if math.isnan(x) else x


def _list(keys: list[str], most: int = 12) -> str:
    shown = ", ".join(keys[:most]) or "none"
    return shown + (f", … ({len(keys)} in all)" if len(keys) > most else "")
