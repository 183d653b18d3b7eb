"""The RL post-training lab: GRPO on a tiny transformer over generated reasoning tasks, with
cadence curricula choosing the prompts. ``cadence demo`` and ``cadence bench rl`` run it.

Modules: :mod:`~cadence.labs.rl.tasks` (task families × levels), :mod:`~cadence.labs.rl.tokenizer`,
:mod:`~cadence.labs.rl.policy` (sampling, log-probs, eval), :mod:`~cadence.labs.rl.warmstart`,
:mod:`~cadence.labs.rl.groups` (advantages), :mod:`~cadence.labs.rl.sources` (curricula and
filtering through :class:`cadence.rl.PromptSelector`), :mod:`~cadence.labs.rl.grpo` (the loop, with
:mod:`cadence.rl`'s rollout allocation and length budget), :mod:`~cadence.labs.rl.experiment`,
:mod:`~cadence.labs.rl.demo`, :mod:`~cadence.labs.rl.bench`, :mod:`~cadence.labs.rl.report`.

    >>> from cadence.labs.rl import SIZES, compare
    >>> sorted(SIZES)
    ['default', 'tiny']
"""

from cadence.labs.rl.experiment import POLICIES, SIZES, Comparison, LabConfig, compare
from cadence.labs.rl.grpo import GRPOConfig, GRPOTrainer
from cadence.labs.rl.tasks import TaskFamily, TaskSuite, register_family
from cadence.labs.rl.warmstart import WarmStartConfig, warm_start

__all__ = ["POLICIES", "SIZES", "Comparison", "LabConfig", "compare", "GRPOConfig", "GRPOTrainer", "TaskFamily",
           "TaskSuite", "register_family", "WarmStartConfig", "warm_start"]
