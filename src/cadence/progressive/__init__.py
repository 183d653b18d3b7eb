"""Progressive training on the clock: which layers train, how long the sequences, how big the batch.

Every plan is bound to the run's :class:`~cadence.Clock` and shares one interface
(:class:`~cadence.progressive.base.Plan`): ``update()`` once per step before the forward pass,
``values()`` for loggers, ``state_dict()`` / ``load_state_dict()`` for exact resume.

    >>> import torch
    >>> from cadence import Clock
    >>> from cadence.progressive import RandomizedProgressive
    >>> layers = [torch.nn.Linear(8, 8) for _ in range(4)]
    >>> plan = RandomizedProgressive(layers, clock=Clock(budget=100), seed=1)
    >>> plan.update(); sorted(plan.values())
    ['cutoff', 'first_trainable', 'frozen_layers', 'trainable_layers']
"""

from cadence.progressive.base import Plan
from cadence.progressive.layers import FreezeOut, LayerFreezing, LayerPlan, RandomizedProgressive, leaf_layers
from cadence.progressive.sizes import BatchLRScaling, BatchSizeSchedule, ScheduledBatchSampler, SequenceLengthWarmup

__all__ = [
    "Plan", "LayerPlan", "LayerFreezing", "FreezeOut", "RandomizedProgressive", "leaf_layers",
    "SequenceLengthWarmup", "BatchSizeSchedule", "BatchLRScaling", "ScheduledBatchSampler",
]
