"""Log a policy's state over training (JSONL or CSV) and read it back for plots.

    >>> import tempfile, os
    >>> from cadence.curricula import Arms, Uniform
    >>> path = os.path.join(tempfile.mkdtemp(), "arms.jsonl")
    >>> with CurriculumLog(path) as log:
    ...     log.write(0, Uniform(Arms(["a", "b"])))
    >>> read_log(path)["probabilities"].tolist()
    [[0.5, 0.5]]
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from cadence.curricula.base import Policy
from cadence.errors import CadenceError


class CurriculumLog:
    """Append one record per call of :meth:`write`: ``step`` plus ``policy.stats()``.

    The format follows the suffix: ``.jsonl`` (one JSON object per line) or ``.csv`` (long
    format: one row per step and arm with ``probability``, ``drawn``, ``observed`` and every
    score). An existing file is appended to.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.suffix not in (".jsonl", ".csv"):
            raise CadenceError(f"curriculum log must end in .jsonl or .csv, got {self.path.name!r}")
        self._file = self.path.open("a", newline="")
        self._csv_header: list[str] | None = None

    def write(self, step: float, policy: Policy) -> None:
        """Record the policy's state at ``step``."""
        stats = policy.stats()
        if self.path.suffix == ".jsonl":
            self._file.write(json.dumps({"step": step, **stats}) + "\n")
        else:
            scores = stats["scores"]
            header = ["step", "policy", "arm", "probability", "drawn", "observed", *sorted(scores)]
            writer = csv.writer(self._file)
            if self._csv_header is None:
                if self.path.stat().st_size == 0:
                    writer.writerow(header)
                self._csv_header = header
            elif header != self._csv_header:
                raise CadenceError("a CSV curriculum log holds one policy's columns; use .jsonl for several")
            for j, arm in enumerate(stats["arms"]):
                writer.writerow([step, stats["policy"], arm, stats["probabilities"][j], stats["drawn"][j],
                                 stats["observed"][j], *(scores[k][j] for k in sorted(scores))])
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CurriculumLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_log(path: str | Path) -> dict[str, Any]:
    """``{"steps": (T,), "arms": [names], "probabilities": (T, K), "policy": name}`` from a log."""
    path = Path(path)
    if not path.exists():
        raise CadenceError(f"no curriculum log at {str(path)!r}")
    steps: list[float] = []
    probs: list[list[float]] = []
    arms: list[str] | None = None
    policy = ""
    if path.suffix == ".jsonl":
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                step, names, p, policy = rec["step"], rec["arms"], rec["probabilities"], rec.get("policy", "")
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CadenceError(f"{path}:{n}: not a curriculum log record ({e})") from None
            if arms is None:
                arms = names
            elif names != arms:
                raise CadenceError(f"{path}:{n}: arms changed within the log")
            steps.append(float(step))
            probs.append([float(x) for x in p])
    elif path.suffix == ".csv":
        rows: dict[float, dict[str, float]] = {}
        with path.open(newline="") as f:
            for n, row in enumerate(csv.DictReader(f), 2):
                try:
                    rows.setdefault(float(row["step"]), {})[row["arm"]] = float(row["probability"])
                    policy = row.get("policy", policy)
                except (KeyError, TypeError, ValueError) as e:
                    raise CadenceError(f"{path}:{n}: not a curriculum log row ({e})") from None
                if arms is None or row["arm"] not in arms:
                    arms = (arms or []) + [row["arm"]]
        for step in rows:
            steps.append(step)
            probs.append([rows[step].get(a, 0.0) for a in arms or []])
    else:
        raise CadenceError(f"curriculum log must end in .jsonl or .csv, got {path.name!r}")
    if not steps:
        raise CadenceError(f"curriculum log {str(path)!r} is empty")
    return {"steps": np.array(steps), "arms": arms, "probabilities": np.array(probs), "policy": policy}
