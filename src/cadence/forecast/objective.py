"""The fitting loss shared by every law: a Huber loss on log-loss residuals (algorithms.md §2).

    >>> import numpy as np
    >>> value, grad = huber_log(np.array([1.0, 2.0]), np.log(np.array([1.0, 2.0])), delta=1e-3)
    >>> float(value), grad.tolist()
    (0.0, [0.0, 0.0])
"""

from __future__ import annotations

import numpy as np


def huber_log(pred: np.ndarray, log_target: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Mean Huber loss (threshold ``delta``) of ``log(pred) − log_target``, and its gradient with
    respect to ``pred``. ``pred`` must be positive."""
    r = np.log(pred) - log_target
    small = np.abs(r) <= delta
    huber = np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    grad = np.where(small, r, delta * np.sign(r)) / pred / len(r)
    return float(huber.mean()), grad
