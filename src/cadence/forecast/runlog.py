"""The run-log format that labs write and the forecaster reads (CSV or JSON lines).

One row per logged optimizer step, columns:

============  ==========================================================================
``step``      optimizer steps done, counting from 1 (required; strictly increasing)
``tokens``    tokens trained on so far (optional)
``lr``        the learning rate the step used (required)
``loss``      training loss of the step (optional if ``val_loss`` is given)
``val_loss``  validation loss after the step; empty (CSV) or ``null``/absent (JSONL) when
              not evaluated at that step
``grad_norm`` the step's gradient ℓ2 norm before clipping (optional; for
              :func:`~cadence.forecast.refine.refine_schedule`)
``grad_norm_l1``  the same in the ℓ1 norm (optional; the refinement's form for Adam-type methods)
============  ==========================================================================

Other columns are ignored. A log need not have every step: the forecaster interpolates the LR
linearly between logged steps. :meth:`RunLog.read` also reads the logs other tools write
(Hugging Face ``trainer_state.json``, Lightning ``metrics.csv``, W&B CSV exports, TensorBoard
event files; see :mod:`cadence.forecast.readers`).

    >>> log = RunLog(step=[1, 2], lr=[1e-3, 1e-3], loss=[3.0, 2.9])
    >>> RunLog.parse_csv(log.to_csv()).loss.tolist()
    [3.0, 2.9]
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from cadence.errors import CadenceError

COLUMNS = ("step", "tokens", "lr", "loss", "val_loss", "grad_norm", "grad_norm_l1")
OPTIONAL = COLUMNS[3:]


class RunLogError(CadenceError):
    """A run log that cannot be read or is not usable."""


class RunLog:
    """Columns of a run log as numpy arrays; missing values are NaN.

    Args:
        step, lr: required, one value per row.
        tokens, loss, val_loss, grad_norm, grad_norm_l1: optional; NaN (or ``None``) where unknown.
        name: a label for plots and tables (the file name when read from disk).
        source: how the log was read (format and the keys taken for each column), for messages.
    """

    def __init__(self, step: Iterable[float], lr: Iterable[float], *, tokens: Iterable[float] | None = None,
                 loss: Iterable[float | None] | None = None, val_loss: Iterable[float | None] | None = None,
                 grad_norm: Iterable[float | None] | None = None, grad_norm_l1: Iterable[float | None] | None = None,
                 name: str = "run", source: str = "") -> None:
        self.step = np.asarray(step, dtype=np.int64)
        n = len(self.step)
        self.lr = _column(lr, n, "lr")
        self.tokens = _column(tokens, n, "tokens")
        self.loss = _column(loss, n, "loss")
        self.val_loss = _column(val_loss, n, "val_loss")
        self.grad_norm = _column(grad_norm, n, "grad_norm")
        self.grad_norm_l1 = _column(grad_norm_l1, n, "grad_norm_l1")
        self.name, self.source = name, source
        if n == 0:
            raise RunLogError(f"{name}: the run log has no rows")
        if np.any(np.diff(self.step) <= 0) or self.step[0] < 1:
            raise RunLogError(f"{name}: steps must start at 1 or later and strictly increase")
        if not np.all(np.isfinite(self.lr)) or np.any(self.lr < 0):
            raise RunLogError(f"{name}: every row needs a finite, non-negative lr")
        for col in ("loss", "val_loss"):
            v = getattr(self, col)
            if np.any(v[~np.isnan(v)] <= 0) or np.any(np.isinf(v)):
                raise RunLogError(f"{name}: {col} must be positive and finite where given")
        for col in ("grad_norm", "grad_norm_l1"):
            v = getattr(self, col)
            if np.any(v[~np.isnan(v)] < 0) or np.any(np.isinf(v)):
                raise RunLogError(f"{name}: {col} must be non-negative and finite where given")
        if np.all(np.isnan(self.loss)) and np.all(np.isnan(self.val_loss)):
            raise RunLogError(f"{name}: the run log has neither loss nor val_loss values")

    def __len__(self) -> int:
        return len(self.step)

    def rows(self) -> list[dict[str, Any]]:
        """Rows as dicts (``None`` for missing values)."""
        cols = {c: getattr(self, c) for c in COLUMNS}
        return [{c: _plain(c, cols[c][i]) for c in COLUMNS} for i in range(len(self))]

    # ------------------------------------------------------------------ writing
    def to_csv(self) -> str:
        """CSV with ``step``, ``lr`` and the optional columns that hold a value."""
        columns = [c for c in COLUMNS if c in ("step", "lr") or not np.all(np.isnan(getattr(self, c)))]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for row in self.rows():
            w.writerow(["" if row[c] is None else row[c] for c in columns])
        return buf.getvalue()

    def to_jsonl(self) -> str:
        return "".join(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n" for row in self.rows())

    def write(self, path: str | Path) -> Path:
        """Write as JSON lines if ``path`` ends in ``.jsonl``, else CSV."""
        path = Path(path)
        path.write_text(self.to_jsonl() if path.suffix == ".jsonl" else self.to_csv())
        return path

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], name: str = "run") -> RunLog:
        """From dicts; keys beyond :data:`COLUMNS` are ignored."""
        for need in ("step", "lr"):
            if rows and need not in rows[0]:
                raise RunLogError(f"{name}: the run log has no {need!r} column (columns: {', '.join(rows[0])})")
        try:
            get = lambda key: [_number(r.get(key)) for r in rows]  # noqa: E731
            return cls(get("step"), get("lr"), **{c: get(c) for c in OPTIONAL}, tokens=get("tokens"), name=name)
        except (TypeError, ValueError) as e:
            raise RunLogError(f"{name}: {e}") from e

    @classmethod
    def parse_csv(cls, text: str, name: str = "run") -> RunLog:
        return cls.from_rows(list(csv.DictReader(io.StringIO(text))), name)

    @classmethod
    def parse_jsonl(cls, text: str, name: str = "run") -> RunLog:
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise RunLogError(f"{name}: not JSON lines: {e}") from e
        return cls.from_rows(rows, name)

    @classmethod
    def read(cls, path: str | Path, *, step_key: str | None = None, lr_key: str | None = None,
             loss_key: str | None = None, schedule: Any = None, budget: int | None = None) -> RunLog:
        """Read a run log: cadence's CSV/JSONL, a Hugging Face ``trainer_state.json``, a Lightning
        ``metrics.csv``, a W&B CSV export or TensorBoard event files (format told by content).

        Column names are detected (the choice is in :attr:`source`) unless given by ``*_key``.
        LRs missing between logged steps come from ``schedule`` (a spec, on a ``budget``-step run:
        by default the ``max_steps`` the log records, else its last step), else by interpolation.
        See :func:`cadence.forecast.readers.read_log`.
        """
        from cadence.forecast.readers import read_log

        return read_log(path, step_key=step_key, lr_key=lr_key, loss_key=loss_key, schedule=schedule, budget=budget)


def _column(values: Iterable[float | None] | None, n: int, name: str) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    arr = np.array([np.nan if v is None else v for v in values], dtype=float)
    if arr.shape != (n,):
        raise RunLogError(f"column {name!r} has {arr.size} values for {n} rows")
    return arr


def _number(v: Any) -> float | None:
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return None
    x = float(v)
    return None if math.isnan(x) else x


def _plain(column: str, v: float) -> float | int | None:
    if np.isnan(v):
        return None
    return int(v) if column == "step" else float(v)
