"""Prompt sources: how a GRPO step of the lab picks its prompts and feeds the outcome back.

:class:`SelectorSource` runs a library :class:`cadence.rl.PromptSelector` — a curriculum policy
(uniform, DUMP, SEC, a pass-rate filter, …), optionally a predictive pre-rollout filter and dynamic
sampling — with the lab's rollout function, and assembles the chosen groups of every round into the
step's batch. Every answer's reward, advantage (signed, GRPO-normalised), correctness and length go
back to the curriculum, kept or not; every rollout generated is counted.

    >>> from cadence.curricula import Arms, Uniform
    >>> from cadence.rl import PromptSelector
    >>> SelectorSource(PromptSelector(Uniform(Arms(["a", "b"])))).policy.name
    'uniform'
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np

from cadence.errors import StateError
from cadence.labs.rl.groups import Groups
from cadence.rl import PromptSelector

RolloutFn = Callable[[np.ndarray], Groups]
"""Sample, score and reward answers for prompt ids."""


class PromptSource(Protocol):
    """Chooses the prompts of one step and learns from their groups."""

    policy: Any

    def next_batch(self, rollout: RolloutFn, n_prompts: int) -> tuple[Groups, int]:
        """``(groups to train on, rollouts spent)``."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SelectorSource:
    """The prompts a :class:`~cadence.rl.PromptSelector` chooses, as the lab's GRPO groups."""

    kind = "cadence.rl.SelectorSource"

    def __init__(self, selector: PromptSelector) -> None:
        self.selector = selector
        self.policy = selector.policy

    def next_batch(self, rollout: RolloutFn, n_prompts: int) -> tuple[Groups, int]:
        rounds: list[Groups] = []

        def signals(ids: np.ndarray) -> dict[str, np.ndarray]:
            groups = rollout(ids)   # a prompt the allocator gave no answers is left out of its groups
            rounds.append(groups)
            sizes = np.zeros(len(ids), dtype=np.int64)
            order = np.argsort(ids)
            sizes[order[np.searchsorted(ids, groups.items, sorter=order)]] = groups.sizes
            return {"sizes": sizes, "reward": groups.rewards, "advantage": groups.advantages,
                    "correct": groups.correct, "length": groups.lengths}

        picks = self.selector.select(n_prompts, signals)
        parts = [groups.select(np.isin(groups.items, [picks.rounds[r][i] for rr, i in picks.chosen if rr == r]))
                 for r, groups in enumerate(rounds)]
        return Groups.concat(parts), picks.rollouts

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "selector": self.selector.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict")
        self.selector.load_state_dict(state["selector"])
