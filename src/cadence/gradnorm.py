"""Gradient norms of a step as run logs record them (``grad_norm``, ``grad_norm_l1``), the input of
schedule refinement (:mod:`cadence.forecast.refine`). Read them after ``backward()`` and before
gradient clipping.

    >>> import torch
    >>> w = torch.nn.Parameter(torch.zeros(2))
    >>> w.grad = torch.tensor([3.0, -4.0])
    >>> grad_norms([w])
    (5.0, 7.0)
"""

from __future__ import annotations

from typing import Iterable

import torch


def grad_norms(parameters: Iterable[torch.Tensor]) -> tuple[float, float]:
    """``(ℓ2, ℓ1)`` norms of all gradients of ``parameters`` taken together (0 when none has one)."""
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return 0.0, 0.0
    l2 = torch.stack([torch.linalg.vector_norm(g.float(), 2) for g in grads])
    l1 = torch.stack([g.float().abs().sum() for g in grads])
    return float(torch.linalg.vector_norm(l2, 2)), float(l1.sum())
