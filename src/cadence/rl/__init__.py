"""RL post-training regimen pieces, framework-free: which prompts a step generates for and trains on,
how many rollouts each gets, and how long responses may be.

* :class:`PromptSelector` — a curriculum draws prompts, a :class:`PredictiveFilter` (GRESO) skips
  those predicted to give zero-variance groups, :class:`DynamicSampling` keeps in-band groups and
  refills; one loop for the RL lab, TRL and verl.
* :class:`FixedAllocation`, :class:`KnapsackAllocation`, :class:`GVMAllocation` — rollouts per prompt
  (Knapsack RL; GVM-RAFT's gradient-variance rule).
* :class:`PCL` with a :class:`ValueModel` — choose prompts predicted nearest a 0.5 pass rate (PCL).
* :class:`ReplayBuffer` — replay non-zero-advantage groups in place of dropped ones (VL-Rethinker SSR).
* :class:`Hints` — guidance tiers for plateaued all-wrong prompts (Scaf-GRPO, GHPO).
* :class:`LengthBudget` — a response-length budget on the clock, its triangular reward, and the
  budget stated in the prompt ("Train Long, Think Short").
* :class:`HybridGate` — HPT's per-prompt switch between the RL loss and SFT on the prompt's
  demonstration, from its group's pass rate.
* :class:`DualDownsampling` — D³S: the max-variance subset of each group and the top tokens by
  ``|A|·H``, both relaxed on the clock.
* :class:`HierarchicalBudget` — HBPO: budget subgroups, budget-aware reward, hierarchical advantage.
* :func:`limr` — LIMR: the samples of a pilot run whose reward curve tracks the run's average.

See docs/rl.md.

    >>> from cadence.rl import PredictiveFilter
    >>> PredictiveFilter(4).keep_probability([0, 1]).tolist()
    [1.0, 1.0]
"""

from cadence.rl.allocation import (Allocation, FixedAllocation, GVMAllocation, KnapsackAllocation, gvm_sizes,
                                   gvm_weights, knapsack_value, nonzero_gradient_chance, sizes_for_rates)
from cadence.rl.d3s import DualDownsampling, max_variance_subset
from cadence.rl.hints import Hints
from cadence.rl.pcl import PCL, ValueModel
from cadence.rl.replay import ReplayBuffer
from cadence.rl.dynamic import DynamicSampling
from cadence.rl.hbpo import HierarchicalBudget
from cadence.rl.hpt import HybridGate
from cadence.rl.length import LengthBudget, triangular
from cadence.rl.limr import learning_impact, limr
from cadence.rl.predictive import PredictiveFilter, group_pass_rates
from cadence.rl.selector import Picks, PromptSelector

__all__ = ["PromptSelector", "Picks", "PredictiveFilter", "group_pass_rates", "DynamicSampling", "FixedAllocation",
           "KnapsackAllocation", "knapsack_value", "nonzero_gradient_chance", "sizes_for_rates", "LengthBudget",
           "triangular", "HybridGate", "DualDownsampling", "max_variance_subset", "HierarchicalBudget", "learning_impact",
           "limr", "Allocation", "GVMAllocation", "gvm_sizes", "gvm_weights", "PCL", "ValueModel", "ReplayBuffer", "Hints"]
