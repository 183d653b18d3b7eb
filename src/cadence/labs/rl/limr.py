"""LIMR in the RL lab: a pilot run's per-sample reward log, and training on a fixed subset of prompts.

:func:`run_log` turns a run's :class:`~cadence.labs.rl.grpo.History` into the JSON-lines records
:func:`cadence.rl.limr.limr` reads (one per prompt group and step: ``step``, ``id``, ``reward`` =
the group's mean reward); :func:`write_run_log` writes them for ``cadence rl limr``.
:class:`PoolSource` goes through a list of prompt ids in epochs, each a fresh shuffle, as the
paper's PPO pilot goes through its data set (so every prompt is seen once per epoch).

    >>> from cadence.curricula import Arms, Uniform
    >>> source = PoolSource([3, 1, 2], Uniform(Arms(["a"] * 4)), seed=0)
    >>> sorted(source.draw(3).tolist()), source.epoch
    ([1, 2, 3], 1)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cadence.curricula.base import Policy
from cadence.errors import CadenceError, StateError
from cadence.labs.rl.grpo import History
from cadence.labs.rl.sources import HintedFn, LogprobsFn, RolloutFn
from cadence.labs.rl.groups import Groups


def run_log(history: History) -> list[dict]:
    """One record per prompt group and step: ``{"step", "id", "reward"}`` (the group's mean reward)."""
    return [{"step": step, "id": int(item), "reward": float(reward)}
            for step, samples in enumerate(history.step_samples) for item, reward in samples]


def write_run_log(history: History, path: str | Path) -> Path:
    """Write :func:`run_log` as JSON lines to ``path``."""
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in run_log(history)), encoding="utf-8")
    return path


class PoolSource:
    """Prompts from a fixed pool of ids, each epoch a new shuffle (the last batch of an epoch runs on
    into the next). ``policy`` only observes (its probabilities are logged), it chooses nothing."""

    kind = "cadence.rl.PoolSource"

    def __init__(self, ids: Any, policy: Policy, seed: int = 0) -> None:
        self.ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if not len(self.ids) or len(np.unique(self.ids)) != len(self.ids):
            raise CadenceError(f"a prompt pool needs distinct ids, got {len(self.ids)} with "
                               f"{len(self.ids) - len(np.unique(self.ids))} repeated")
        policy.arms.check_ids(self.ids)
        self.policy = policy
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(self.ids)
        self.position, self.epoch = 0, 0

    def draw(self, n: int) -> np.ndarray:
        """The next ``n`` ids (distinct when ``n`` is at most the pool)."""
        out: list[int] = []
        while len(out) < n:
            if self.position == len(self.order):
                self.order, self.position, self.epoch = self.rng.permutation(self.ids), 0, self.epoch + 1
            take = self.order[self.position:self.position + n - len(out)]
            out += take.tolist()
            self.position += len(take)
        if self.position == len(self.order):
            self.order, self.position, self.epoch = self.rng.permutation(self.ids), 0, self.epoch + 1
        return np.asarray(out, dtype=np.int64)

    def next_batch(self, rollout: RolloutFn, n_prompts: int, hinted: HintedFn | None = None,
                   logprobs: LogprobsFn | None = None) -> tuple[Groups, int]:
        """The next ``n_prompts`` of the pool, rolled out (no hints, no replay: a pool run trains what it draws)."""
        groups = rollout(self.draw(n_prompts))
        self.policy.observe(groups.row_items, reward=groups.rewards, advantage=groups.advantages,
                            correct=groups.correct, length=groups.lengths)
        return groups, int(groups.sizes.sum())

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "ids": self.ids.tolist(), "rng": self.rng.bit_generator.state,
                "order": self.order.tolist(), "position": self.position, "epoch": self.epoch,
                "policy": self.policy.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict")
        if list(state["ids"]) != self.ids.tolist():
            raise StateError("the state was saved for another prompt pool")
        backup = self.policy.state_dict()
        try:
            self.policy.load_state_dict(state["policy"])
            self.rng.bit_generator.state = state["rng"]
        except Exception:
            self.policy.load_state_dict(backup)
            raise
        self.order = np.asarray(state["order"], dtype=np.int64)
        self.position, self.epoch = int(state["position"]), int(state["epoch"])
