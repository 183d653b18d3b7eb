"""Curriculum policies, one module per family; importing this package registers them all."""

from cadence.curricula.policies.bandits import DUMP, EXP3, SEC, LearningProgress
from cadence.curricula.policies.irt import PUDF, RaschFit, estimate_ability, fit_rasch
from cadence.curricula.policies.mixtures import FixedMixture, ScheduledMixture, Uniform
from cadence.curricula.policies.pacing import (BabySteps, Competence, CyclicalPacing, GeometricPacing,
                                               LinearPacing, Ordered, RootPacing)
from cadence.curricula.policies.passrate import Fill, PassBand, PassRateFilter, Selection
from cadence.curricula.policies.reweighting import DoReMi, LossReweighting, SkillIt, loss_weights

__all__ = [
    "Uniform", "FixedMixture", "ScheduledMixture", "Ordered", "DUMP", "SEC", "EXP3", "LearningProgress", "DoReMi",
    "SkillIt", "PUDF", "LossReweighting", "PassRateFilter", "PassBand", "Selection", "Fill", "RaschFit", "fit_rasch",
    "estimate_ability", "loss_weights", "LinearPacing", "RootPacing", "Competence", "GeometricPacing", "BabySteps",
    "CyclicalPacing",
]
