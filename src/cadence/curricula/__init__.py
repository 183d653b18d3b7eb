"""Curricula: policies over arms of items that decide what to train on next from training signals.

    >>> from cadence.curricula import Arms, DUMP, CurriculumSampler
    >>> arms = Arms(["easy"] * 4 + ["hard"] * 4)
    >>> policy = DUMP(arms, seed=0)
    >>> sampler = CurriculumSampler(policy, batch_size=4, seed=0)
    >>> batch = sampler.next_batch()
    >>> policy.observe(batch, advantage=[0.1, -0.2, 0.0, 0.3])
    >>> round(float(policy.probabilities().sum()), 6)
    1.0

Policies: :class:`Uniform`, :class:`FixedMixture`, :class:`ScheduledMixture`, :class:`Ordered`
(with pacing functions), :class:`DUMP`, :class:`SEC`, :class:`EXP3`, :class:`LearningProgress`,
:class:`DoReMi`, :class:`SkillIt`, :class:`PUDF`, :class:`LossReweighting`, :class:`PassRateFilter`.
Continual pre-training: :class:`Replay` (a fixed share of every batch from the old data).
See docs/curricula.md.
"""

from cadence.curricula.arms import Arms, EmptyArmWarning, UnknownItemError
from cadence.curricula.base import POLICIES, SIGNALS, MissingSignalError, Policy, make_policy
from cadence.curricula.log import CurriculumLog, read_log
from cadence.curricula.policies import *  # noqa: F403
from cadence.curricula.policies import __all__ as _policies
from cadence.curricula.replay import Replay, ReplayMixture
from cadence.curricula.sampler import CurriculumDataset, CurriculumSampler, SamplerExhausted

__all__ = ["Arms", "EmptyArmWarning", "UnknownItemError", "Policy", "MissingSignalError", "POLICIES", "SIGNALS",
           "make_policy", "Replay", "ReplayMixture", "CurriculumSampler", "CurriculumDataset", "SamplerExhausted", "CurriculumLog",
           "read_log",
           *_policies]
