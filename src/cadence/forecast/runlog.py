"""The run-log format that labs write and the forecaster reads (CSV or JSON lines).

One row per logged optimizer step, columns:

============  ==========================================================================
``step``      optimizer steps done, counting from 1 (required; strictly increasing)
``tokens``    tokens trained on so far (optional)
``lr``        the learning rate the step used (required)
``loss``      training loss of the step (optional if ``val_loss`` is given)
``val_loss``  validation loss after the step; empty (CSV) or ``null``/absent (JSONL) when
              not evaluated at that step
============  ==========================================================================

Other columns are ignored, so logs from other tools work once they name these five. A log
need not have every step: the forecaster interpolates the LR linearly between logged steps.

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

COLUMNS = ("step", "tokens", "lr", "loss", "val_loss")


class RunLogError(CadenceError):
    """A run log that cannot be read or is not usable."""


class RunLog:
    """Columns of a run log as numpy arrays; missing values are NaN.

    Args:
        step, lr: required, one value per row.
        tokens, loss, val_loss: optional; NaN (or ``None``) where unknown.
        name: a label for plots and tables (the file name when read from disk).
    """

    def __init__(self, step: Iterable[float], lr: Iterable[float], *, tokens: Iterable[float] | None = None,
                 loss: Iterable[float | None] | None = None, val_loss: Iterable[float | None] | None = None,
                 name: str = "run") -> None:
        self.step = np.asarray(step, dtype=np.int64)
        n = len(self.step)
        self.lr = _column(lr, n, "lr")
        self.tokens = _column(tokens, n, "tokens")
        self.loss = _column(loss, n, "loss")
        self.val_loss = _column(val_loss, n, "val_loss")
        self.name = name
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
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for row in self.rows():
            w.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
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
            return cls(get("step"), get("lr"), tokens=get("tokens"), loss=get("loss"), val_loss=get("val_loss"),
                       name=name)
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
    def read(cls, path: str | Path) -> RunLog:
        """Read a ``.csv`` or ``.jsonl`` run log."""
        path = Path(path)
        if not path.exists():
            raise RunLogError(f"run log {path} not found")
        text = path.read_text()
        parse = cls.parse_jsonl if path.suffix == ".jsonl" else cls.parse_csv
        return parse(text, path.name)


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
