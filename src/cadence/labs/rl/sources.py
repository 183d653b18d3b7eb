"""Prompt sources: how a GRPO step picks its prompts and feeds the outcome back to a curriculum.

* :class:`CurriculumSource` — any :mod:`cadence.curricula` policy (Uniform, DUMP, SEC, …) draws
  the prompt ids; every answer's reward, advantage (signed, GRPO-normalised) and correctness go
  back through ``policy.observe`` with its prompt id, one entry per answer.
* :class:`FilteredSource` — a :class:`cadence.curricula.PassRateFilter` draws prompts, rolls
  them out and keeps only groups whose pass rate lies in its band, refilling (within its bound
  on extra rollouts) until the batch is full; every rollout spent is counted.

    >>> from cadence.curricula import Arms, make_policy
    >>> CurriculumSource(make_policy("uniform", Arms(["a", "b"]), seed=0)).policy.name
    'uniform'
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np

from cadence.curricula import PassRateFilter
from cadence.errors import CadenceError, StateError
from cadence.labs.rl.groups import Groups

RolloutFn = Callable[[np.ndarray], Groups]
"""Sample, score and reward answers for prompt ids."""


class PromptSource(Protocol):
    """Chooses the prompts of one step and learns from their groups."""

    policy: Any

    def next_batch(self, rollout: RolloutFn, n_prompts: int) -> tuple[Groups, int]:
        """``(groups to train on, rollouts spent)``."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class CurriculumSource:
    """Prompts drawn by a curriculum policy, which sees every answer's signals."""

    kind = "cadence.rl.CurriculumSource"

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def next_batch(self, rollout: RolloutFn, n_prompts: int) -> tuple[Groups, int]:
        groups = rollout(self.policy.sample(n_prompts))
        self.policy.observe(groups.row_items, reward=groups.rewards, advantage=groups.advantages,
                            correct=groups.correct)
        return groups, int(groups.sizes.sum())

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "policy": self.policy.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict")
        self.policy.load_state_dict(state["policy"])


class FilteredSource(CurriculumSource):
    """Pass-rate band filtering with batch refill (balanced filtering, arXiv 2504.03380; DAPO, arXiv 2503.14476).

    The filter decides; this class only turns its rollout callback into GRPO groups and returns
    the kept ones. Groups must all have the same size (fixed allocation).
    """

    kind = "cadence.rl.FilteredSource"

    def __init__(self, policy: PassRateFilter) -> None:
        if not isinstance(policy, PassRateFilter):
            raise CadenceError(f"FilteredSource needs a PassRateFilter, got {type(policy).__name__}")
        super().__init__(policy)

    def next_batch(self, rollout: RolloutFn, n_prompts: int) -> tuple[Groups, int]:
        rounds: list[Groups] = []

        def correctness(prompt_ids: np.ndarray) -> np.ndarray:
            groups = rollout(prompt_ids)
            if len(np.unique(groups.sizes)) > 1:
                raise CadenceError("pass-rate filtering needs the same number of answers per prompt")
            rounds.append(groups)
            return groups.correct.reshape(len(groups.items), -1)

        fill = self.policy.fill(n_prompts, correctness)
        kept = [g.select(self.policy.in_band(g.correct.reshape(len(g.items), -1).mean(1))) for g in rounds]
        batch = Groups.concat(kept)
        batch = batch.select(np.arange(len(batch.items)) < len(fill.kept))
        if not np.array_equal(batch.items, fill.kept):
            raise CadenceError("internal: kept groups disagree with the pass-rate filter's choice")
        return batch, int(fill.rollouts)
