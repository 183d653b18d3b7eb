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
import torch

from cadence.errors import StateError
from cadence.labs.rl.groups import Groups
from cadence.labs.rl.policy import Rollouts
from cadence.rl import PromptSelector

RolloutFn = Callable[[np.ndarray], Groups]
"""Sample, score and reward answers for prompt ids."""

HintedFn = Callable[[np.ndarray, np.ndarray], Groups]
"""Sample, score and reward answers for prompt ids with guidance of the given tiers."""


class PromptSource(Protocol):
    """Chooses the prompts of one step and learns from their groups."""

    policy: Any

    def next_batch(self, rollout: RolloutFn, n_prompts: int, hinted: HintedFn | None = None) -> tuple[Groups, int]:
        """``(groups to train on, rollouts spent)``; ``hinted`` re-rolls with guidance (for hints)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SelectorSource:
    """The prompts a :class:`~cadence.rl.PromptSelector` chooses, as the lab's GRPO groups."""

    kind = "cadence.rl.SelectorSource"

    def __init__(self, selector: PromptSelector) -> None:
        self.selector = selector
        self.policy = selector.policy

    def next_batch(self, rollout: RolloutFn, n_prompts: int, hinted: HintedFn | None = None) -> tuple[Groups, int]:
        rounds: list[Groups] = []
        replay = self.selector.replay is not None

        def signals(groups: Groups, ids: np.ndarray) -> dict[str, Any]:
            rounds.append(groups)   # a prompt the allocator gave no answers is left out of its groups
            sizes = np.zeros(len(ids), dtype=np.int64)
            order = np.argsort(ids)
            where = order[np.searchsorted(ids, groups.items, sorter=order)]
            sizes[where] = groups.sizes
            out = {"sizes": sizes, "reward": groups.rewards, "advantage": groups.advantages,
                   "correct": groups.correct, "length": groups.lengths}
            if replay:
                payloads: list[Any] = [None] * len(ids)
                for j, i in enumerate(where):
                    payloads[i] = to_payload(groups.select(np.arange(len(groups.items)) == j))
                out["replay"] = payloads
            return out

        guided = None if hinted is None else (lambda ids, levels: signals(hinted(ids, levels), ids))
        picks = self.selector.select(n_prompts, lambda ids: signals(rollout(ids), ids), hinted=guided)
        parts = [groups.select(np.isin(groups.items, [picks.rounds[r][i] for rr, i in picks.chosen if rr == r]))
                 for r, groups in enumerate(rounds)]
        parts += [from_payload(p) for p in picks.replayed or ()]
        return Groups.concat(parts), picks.rollouts

    def values(self) -> dict[str, float]:
        """The selector's logged values (replay's rollouts saved, hints' rescued share, …)."""
        return self.selector.values()

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "selector": self.selector.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict")
        self.selector.load_state_dict(state["selector"])


def to_payload(groups: Groups) -> dict[str, Any]:
    """One group as the replay buffer's payload (tensors and arrays; plain data once checkpointed)."""
    r = groups.rollouts
    return {"items": groups.items, "sizes": groups.sizes, "tokens": r.tokens, "mask": r.mask,
            "prompt_width": int(r.prompt_width), "correct": groups.correct, "rewards": groups.rewards,
            "advantages": groups.advantages, "lengths": groups.lengths}


def from_payload(p: dict[str, Any]) -> Groups:
    """The group a replayed payload holds (from live objects or from a restored checkpoint's lists)."""
    arrays = {k: np.asarray(p[k], dtype=np.int64 if k in ("items", "sizes") else np.float64)
              for k in ("items", "sizes", "correct", "rewards", "advantages", "lengths")}
    rollouts = Rollouts(torch.as_tensor(p["tokens"], dtype=torch.int64), torch.as_tensor(p["mask"], dtype=torch.float32),
                        int(p["prompt_width"]))
    return Groups(rollouts=rollouts, **arrays)
