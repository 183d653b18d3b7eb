"""What fitting shares across laws: a Huber loss on log-loss residuals (as in fits of arXiv 2408.11029) and the
grid of starting points for the power term.

    >>> import numpy as np
    >>> value, grad = huber_log(np.array([1.0, 2.0]), np.log(np.array([1.0, 2.0])), delta=1e-3)
    >>> float(value), grad.tolist()
    (0.0, [0.0, 0.0])
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


def huber_log(pred: np.ndarray, log_target: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Mean Huber loss (threshold ``delta``) of ``log(pred) − log_target``, and its gradient with
    respect to ``pred``. ``pred`` must be positive."""
    r = np.log(pred) - log_target
    small = np.abs(r) <= delta
    huber = np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    grad = np.where(small, r, delta * np.sign(r)) / pred / len(r)
    return float(huber.mean()), grad


def power_starts(s1: np.ndarray, loss: np.ndarray, lowest: float) -> Iterator[tuple[float, float, float]]:
    """Starting ``(L0, α, A)`` for ``L0 + A·S1^(−α)``: ``L0`` and ``α`` on a grid, ``A`` matched to
    the data (the median of ``(loss − L0)·S1^α``, at least 1e-6).

        >>> [round(a, 3) for _, _, a in power_starts(np.array([1.0]), np.array([2.0]), 1.0)][:3]
        [1.7, 1.7, 1.7]
    """
    for frac in (0.3, 0.7, 0.9):
        L0 = frac * lowest
        for alpha in (0.1, 0.4, 1.0):
            yield L0, alpha, max(float(np.median((loss - L0) * np.power(s1, alpha))), 1e-6)
