"""Prompt sources: how a GRPO step of the lab picks its prompts and feeds the outcome back.

:class:`SelectorSource` runs a library :class:`cadence.rl.PromptSelector` — a curriculum policy
(uniform, DUMP, SEC, a pass-rate filter, …), optionally a predictive pre-rollout filter and dynamic
sampling — with the lab's rollout function, and assembles the chosen groups of every round into the
step's batch. Every answer's reward, advantage (signed, GRPO-normalised), correctness and length go
back to the curriculum, kept or not; every rollout generated is counted.

With a replay buffer, a stored group keeps the token log-probs of the policy that generated it
(``replay_logprobs="stored"``, the default): a replayed group is off-policy, and the lab's clipped
loss weighs it by the ratio to that behaviour policy, as VL-Rethinker's released code does with its
stored log-probs ("VL-Rethinker: Incentivizing Self-Reflection of Vision-Language Models with
Reinforcement Learning", arXiv 2504.08837; the paper's text does not state the loss of replayed
samples: UNCONFIRMED). ``"current"`` stores none: the ratio is taken to the current policy (1 at
the first epoch), a replayed group trains as if on-policy (what verl does, and TRL unless its rounds
carry old log-probs).

    >>> from cadence.curricula import Arms, Uniform
    >>> from cadence.rl import PromptSelector
    >>> SelectorSource(PromptSelector(Uniform(Arms(["a", "b"])))).policy.name
    'uniform'
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import numpy as np
import torch

from cadence.errors import CadenceError, StateError
from cadence.labs.rl.groups import Groups
from cadence.labs.rl.policy import Rollouts
from cadence.rl import PromptSelector

RolloutFn = Callable[[np.ndarray], Groups]
"""Sample, score and reward answers for prompt ids."""

HintedFn = Callable[[np.ndarray, np.ndarray], Groups]
"""Sample, score and reward answers for prompt ids with guidance of the given tiers."""

LogprobsFn = Callable[[Rollouts], torch.Tensor]
"""Token log-probs of the responses under the current policy (rows × response length)."""

REPLAY_LOGPROBS = ("stored", "current")


class PromptSource(Protocol):
    """Chooses the prompts of one step and learns from their groups."""

    policy: Any

    def next_batch(self, rollout: RolloutFn, n_prompts: int, hinted: HintedFn | None = None,
                   logprobs: LogprobsFn | None = None) -> tuple[Groups, int]:
        """``(groups to train on, rollouts spent)``; ``hinted`` re-rolls with guidance (for hints);
        ``logprobs`` scores responses under the policy that generates them (for replay)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SelectorSource:
    """The prompts a :class:`~cadence.rl.PromptSelector` chooses, as the lab's GRPO groups.

    Args:
        selector: the selector.
        replay_logprobs: with a replay buffer, ``"stored"`` keeps each stored group's behaviour
            log-probs for the loss's ratio, ``"current"`` recomputes them (module docs).
    """

    kind = "cadence.rl.SelectorSource"

    def __init__(self, selector: PromptSelector, *, replay_logprobs: str = "stored") -> None:
        if replay_logprobs not in REPLAY_LOGPROBS:
            raise CadenceError(f"replay_logprobs must be one of {REPLAY_LOGPROBS}, got {replay_logprobs!r}")
        self.selector = selector
        self.policy = selector.policy
        self.replay_logprobs = replay_logprobs

    def next_batch(self, rollout: RolloutFn, n_prompts: int, hinted: HintedFn | None = None,
                   logprobs: LogprobsFn | None = None) -> tuple[Groups, int]:
        rounds: list[Groups] = []
        replay = self.selector.replay is not None
        if replay and self.replay_logprobs == "stored" and logprobs is None:
            raise CadenceError("replay with stored log-probs needs next_batch(..., logprobs=) to score the groups it "
                               "stores (or SelectorSource(..., replay_logprobs='current'))")

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
                stored = groups
                storable = groups.informative   # only groups with non-zero advantage are ever stored
                if self.replay_logprobs == "stored" and storable.any():
                    behaviour = torch.full(groups.rollouts.responses.shape, torch.nan)
                    with torch.no_grad():   # the policy that generated the groups: nothing trained yet this step
                        behaviour[torch.from_numpy(np.repeat(storable, groups.sizes))] = \
                            logprobs(groups.select(storable).rollouts).float()
                    stored = dataclasses.replace(groups, behaviour_logp=behaviour)
                for j, i in enumerate(where):
                    payloads[i] = to_payload(stored.select(np.arange(len(groups.items)) == j))
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
    out = {"items": groups.items, "sizes": groups.sizes, "tokens": r.tokens, "mask": r.mask,
           "prompt_width": int(r.prompt_width), "correct": groups.correct, "rewards": groups.rewards,
           "advantages": groups.advantages, "lengths": groups.lengths}
    if groups.behaviour_logp is not None and not torch.isnan(groups.behaviour_logp).all():
        out["behaviour_logp"] = groups.behaviour_logp
    return out


def from_payload(p: dict[str, Any]) -> Groups:
    """The group a replayed payload holds (from live objects or from a restored checkpoint's lists)."""
    arrays = {k: np.asarray(p[k], dtype=np.int64 if k in ("items", "sizes") else np.float64)
              for k in ("items", "sizes", "correct", "rewards", "advantages", "lengths")}
    rollouts = Rollouts(torch.as_tensor(p["tokens"], dtype=torch.int64), torch.as_tensor(p["mask"], dtype=torch.float32),
                        int(p["prompt_width"]))
    behaviour = p.get("behaviour_logp")
    behaviour = None if behaviour is None else torch.as_tensor(behaviour, dtype=torch.float32)
    return Groups(rollouts=rollouts, behaviour_logp=behaviour, **arrays)
