"""Hints for prompts the policy cannot solve — Scaf-GRPO ("Scaf-GRPO: Scaffolded Group Relative
Policy Optimization for Enhancing LLM Reasoning", arXiv 2510.19807) and GHPO ("GHPO: Adaptive
Guidance for Stable and Efficient LLM Reinforcement Learning", arXiv 2507.10628).

A group whose rollouts are all wrong has zero advantage: the prompt teaches nothing however often it
is drawn. Once a prompt's plain groups have been all wrong for ``patience`` rounds in a row (a
plateau), its all-wrong group is generated again with guidance of increasing tiers ``1..levels``, and
the group of the **lowest tier that yields a correct answer** is trained on instead. A prompt solved
without guidance starts over (its streak resets), so guidance comes back only after a new plateau.

The guidance itself is the host's: GHPO's tiers are the first ``round(ω·len)`` characters of the
reference solution, ``ω = 0.25, 0.5, 0.75`` (the lab gives a prefix of the answer, see
:data:`GHPO_FRACTIONS`); Scaf-GRPO's are knowledge → planning → solution hints from the dataset (a
user callback or a dataset column in TRL). GHPO regenerates the whole group at each tier (done here);
Scaf-GRPO replaces one failed rollout with one hinted success. ``patience``: GHPO hints every
all-wrong group from step 0 (``patience = 1``, the default); Scaf-GRPO exempts the first 50 steps and
tracks no per-prompt streak — a per-prompt plateau of ``K`` rounds is the issue's rule (UNCONFIRMED
as either paper's). Neither paper corrects hinted samples for being off-policy; neither is done here.

With :class:`cadence.rl.PromptSelector` (``hints=``) the selector runs the tiers: ``select(n,
rollout, hinted=...)`` where ``hinted(ids, levels)`` generates with guidance of those tiers.

    >>> h = Hints(2, patience=2, levels=3)
    >>> h.observe([0, 1], [0.0, 0.5]).tolist()     # prompt 0: first all-wrong round, no plateau yet
    [False, False]
    >>> h.observe([0], [0.0]).tolist()             # second all-wrong round: hint it
    [True]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cadence.errors import CadenceError, StateError

GHPO_FRACTIONS = (0.25, 0.5, 0.75)
"""GHPO's tiers: the share of the reference solution given as the beginning of the answer."""

COUNTERS = ("all_wrong", "plateaued", "rescued", "learnable", "hint_rollouts")
"""Plain all-wrong groups; of them, those past the plateau (re-rolled with hints); of those, groups
a tier gave a correct answer, and those whose guided group is also not all right (non-zero
advantage: learnable); rollouts generated with guidance."""


def with_guidance(prompt: Any, text: str) -> Any:
    """``prompt`` with guidance ``text`` appended: to a string, or to the last message of a
    conversation (a list of ``{"role", "content"}`` dicts; the others are left as they are).

        >>> with_guidance("2+2=", " (add)")
        '2+2= (add)'
        >>> with_guidance([{"role": "user", "content": "2+2="}], " 4")
        [{'role': 'user', 'content': '2+2= 4'}]
    """
    if isinstance(prompt, str):
        return prompt + text
    try:
        *head, last = list(prompt)
        return [*head, {**last, "content": last["content"] + text}]
    except (TypeError, ValueError, KeyError):
        raise CadenceError(f"guidance goes at the end of a prompt: a string or a list of messages with 'content', "
                           f"got {type(prompt).__name__}") from None


class Hints:
    """Per-prompt plateau tracking and tier counters for guided re-rolls (module docs).

    Args:
        num_items: number of prompts.
        patience: all-wrong plain rounds in a row before a prompt gets guidance.
        levels: number of guidance tiers (tried 1, 2, … until one yields a correct answer).
    """

    kind = "cadence.Hints"

    def __init__(self, num_items: int, *, patience: int = 1, levels: int = len(GHPO_FRACTIONS)) -> None:
        for name, value in (("num_items", num_items), ("patience", patience), ("levels", levels)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise CadenceError(f"Hints needs a positive integer {name}, got {value!r}")
        self.num_items, self.patience, self.levels = int(num_items), int(patience), int(levels)
        self.streak = np.zeros(self.num_items, dtype=np.int64)
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.tier_counts = np.zeros(self.levels, dtype=np.int64)   # rescues per tier
        self.stuck = np.zeros(self.num_items, dtype=bool)     # prompts that ever plateaued
        self.freed = np.zeros(self.num_items, dtype=bool)     # of them, solved later without guidance

    def _ids(self, item_ids: Any) -> np.ndarray:
        ids = np.asarray(item_ids).reshape(-1)
        if ids.dtype.kind not in "iu" or (len(ids) and (ids.min() < 0 or ids.max() >= self.num_items)):
            raise CadenceError(f"prompt ids must be integers in [0, {self.num_items}), got {ids[:5].tolist()}…")
        return ids.astype(np.int64)

    def observe(self, item_ids: Any, pass_rates: Any) -> np.ndarray:
        """Record plain (unguided) groups; returns which of them to re-roll with guidance: all wrong
        and at least ``patience`` all-wrong rounds in a row. A group with a correct answer resets its
        prompt's streak; a NaN pass rate (nothing scored) leaves it unchanged."""
        ids = self._ids(item_ids)
        rate = np.asarray(pass_rates, dtype=np.float64).reshape(-1)
        if rate.shape != ids.shape or np.any(rate[np.isfinite(rate)] < 0) or np.any(rate[np.isfinite(rate)] > 1):
            raise CadenceError(f"need one pass rate in [0, 1] (or NaN) per prompt; got {len(rate)} for {len(ids)}")
        wrong, solved = rate == 0.0, rate > 0.0
        streak = self.streak.copy()
        for i, w, s in zip(ids, wrong, solved):      # in order: a prompt twice in a round counts twice
            streak[i] = streak[i] + 1 if w else (0 if s else streak[i])
        self.streak = streak
        hint = wrong & (streak[ids] >= self.patience)
        self.freed[ids[solved & self.stuck[ids]]] = True
        self.stuck[ids[hint]] = True
        self.counts["all_wrong"] += int(wrong.sum())
        self.counts["plateaued"] += int(hint.sum())
        return hint

    def record(self, level: int, rescued: int, rollouts: int, learnable: int | None = None) -> None:
        """Count one guided round at tier ``level``: groups it gave a correct answer, rollouts it
        cost, and of those groups the ones not all right (``None``: all of them)."""
        if not 1 <= level <= self.levels:
            raise CadenceError(f"hint level must lie in 1..{self.levels}, got {level}")
        learnable = rescued if learnable is None else learnable
        if not 0 <= learnable <= rescued:
            raise CadenceError(f"learnable groups must lie in 0..{rescued} (the rescued ones), got {learnable}")
        self.counts["rescued"] += int(rescued)
        self.counts["learnable"] += int(learnable)
        self.counts["hint_rollouts"] += int(rollouts)
        self.tier_counts[level - 1] += int(rescued)

    def values(self) -> dict[str, float]:
        """Logged: shares of plateaued all-wrong groups that guidance gave a correct answer
        (``rescued_share``) and a non-zero advantage (``learnable_share``), guided rollouts; prompts
        that ever plateaued and the share of them later solved without guidance (``freed_share``)."""
        c = self.counts
        stuck = int(self.stuck.sum())
        return {"rescued_share": c["rescued"] / c["plateaued"] if c["plateaued"] else 0.0,
                "learnable_share": c["learnable"] / c["plateaued"] if c["plateaued"] else 0.0,
                "plateaued": float(c["plateaued"]), "hint_rollouts": float(c["hint_rollouts"]),
                "stuck_prompts": float(stuck), "freed_share": float(self.freed.sum()) / stuck if stuck else 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "num_items": self.num_items, "patience": self.patience, "levels": self.levels,
                "streak": self.streak.tolist(), "counts": dict(self.counts), "tier_counts": self.tier_counts.tolist(),
                "stuck": self.stuck.tolist(), "freed": self.freed.tolist()}

    def load_state_dict(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict")
        if (state.get("num_items"), state.get("patience"), state.get("levels")) != (
                self.num_items, self.patience, self.levels):
            raise StateError(f"state is for Hints({state.get('num_items')}, patience={state.get('patience')}, "
                             f"levels={state.get('levels')}), this is Hints({self.num_items}, "
                             f"patience={self.patience}, levels={self.levels})")
        try:
            streak = np.asarray(state["streak"], dtype=np.int64)
            counts = {k: int(state["counts"][k]) for k in COUNTERS}
            tiers = np.asarray(state["tier_counts"], dtype=np.int64)
            stuck, freed = np.asarray(state["stuck"], dtype=bool), np.asarray(state["freed"], dtype=bool)
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed {self.kind} state_dict: {e!r}") from None
        if (streak.shape != (self.num_items,) or tiers.shape != (self.levels,) or stuck.shape != (self.num_items,)
                or freed.shape != (self.num_items,)):
            raise StateError(f"{self.kind} state arrays do not match {self.num_items} prompts, {self.levels} levels")
        self.streak, self.counts, self.tier_counts, self.stuck, self.freed = streak, counts, tiers, stuck, freed
