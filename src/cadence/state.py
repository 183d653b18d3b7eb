"""Plain ``state_dict`` values: what ``torch.load(path, weights_only=True)`` reads back.

The safe loader accepts tensors, Python numbers, strings, ``None``, lists, tuples and dicts, but no
numpy objects. :func:`plain` turns numpy arrays into nested lists (exact: a float64 becomes the
same Python float, an integer the same ``int``; the loader casts back to the component's own
dtype) and numpy scalars into Python numbers, through dicts, lists and tuples. Components call it
in ``state_dict``; their ``load_state_dict`` accepts both these lists and numpy arrays (states
saved before).

    >>> import numpy as np
    >>> plain({"p": np.array([0.25, 0.75]), "n": np.int64(3), "rng": (np.float32(0.5), [np.bool_(True)])})
    {'p': [0.25, 0.75], 'n': 3, 'rng': (0.5, [True])}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cadence.errors import StateError


def plain(value: Any) -> Any:
    """``value`` with every numpy array and scalar replaced by Python lists and numbers (a new object)."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise StateError("an object array cannot be stored as plain state")
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value


__all__ = ["plain"]
