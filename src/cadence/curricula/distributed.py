"""torch.distributed glue: every rank holds the same policy and draws the same global batch; each
rank trains on its shard; feedback is all-gathered in rank order so every rank's policy sees the
whole global batch, exactly as a single process would.

    >>> world()          # outside torch.distributed
    (1, 0)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cadence.curricula.base import SIGNALS, as_signal
from cadence.errors import CadenceError


def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world(group: Any = None) -> tuple[int, int]:
    """``(world size, rank)``, or ``(1, 0)`` when torch.distributed is not initialised."""
    dist = _dist()
    return (dist.get_world_size(group), dist.get_rank(group)) if dist else (1, 0)


def _as_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values).reshape(-1)


def gather_values(local: Any, group: Any = None, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """All ranks' arrays concatenated in rank order, and the length contributed by each rank."""
    import torch

    arr = _as_numpy(local).astype(dtype)
    dist = _dist()
    if dist is None:
        return arr, np.array([len(arr)])
    size = dist.get_world_size(group)
    lengths = [torch.zeros(1, dtype=torch.int64) for _ in range(size)]
    dist.all_gather(lengths, torch.tensor([len(arr)], dtype=torch.int64), group=group)
    counts = np.array([int(t.item()) for t in lengths])
    padded = torch.zeros(int(counts.max()), dtype=torch.from_numpy(np.zeros(0, dtype=dtype)).dtype)
    padded[:len(arr)] = torch.from_numpy(arr)
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded, group=group)
    return np.concatenate([p.numpy()[:c] for p, c in zip(parts, counts)]), counts


def gather_feedback(item_ids: Any, signals: dict[str, Any], group: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Item ids and signals of every rank, concatenated in rank order. Every rank must pass the
    same set of signals; NaNs travel as they are (the policy drops and counts them)."""
    dist = _dist()
    if dist is None:
        return _as_numpy(item_ids), signals
    names = sorted(k for k, v in signals.items() if v is not None)
    present = np.array([k in names for k in SIGNALS], dtype=np.int64)
    everyone, _ = gather_values(present, group, np.int64)
    if np.any(everyone.reshape(-1, len(SIGNALS)) != present):
        raise CadenceError(f"ranks passed different signals to observe(); this rank passed {names}")
    ids, _ = gather_values(item_ids, group, np.int64)
    return ids, {k: gather_values(as_signal(k, signals[k]), group)[0] for k in names}
