"""Round-trip cadence ``state_dict`` values through JSON, so host frameworks that store JSON
(Hugging Face ``trainer_state.json``) can hold them.

``state_dict`` values are plain Python and numpy; JSON has no arrays, numpy scalars or tuples, so
arrays become ``{"__ndarray__": [...], "dtype": ..., "shape": [...]}`` and numpy scalars become
Python numbers. :func:`decode` reverses :func:`encode` exactly (dtypes and shapes included).

    >>> import json
    >>> import numpy as np
    >>> state = {"p": np.array([0.25, 0.75]), "n": np.int64(3)}
    >>> back = decode(json.loads(json.dumps(encode(state))))
    >>> back["p"].dtype, back["p"].tolist(), back["n"]
    (dtype('float64'), [0.25, 0.75], 3)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cadence.errors import StateError

_ARRAY = "__ndarray__"


def encode(value: Any) -> Any:
    """``value`` with numpy arrays and scalars replaced by JSON-safe equivalents."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise StateError("cannot store an object array in JSON state")
        return {_ARRAY: value.ravel().tolist(), "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise StateError(f"JSON state needs string keys, got {bad[0]!r}")
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise StateError(f"cannot store a {type(value).__name__} in JSON state")


def decode(value: Any) -> Any:
    """Reverse :func:`encode`."""
    if isinstance(value, dict):
        if _ARRAY in value:
            return np.asarray(value[_ARRAY], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


__all__ = ["encode", "decode"]
