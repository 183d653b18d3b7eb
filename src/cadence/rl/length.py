"""A response-length budget on the clock: its schedule, the length-aware reward, and (optionally) the
budget stated in the prompt — "Train Long, Think Short: Curriculum Learning for Efficient Reasoning"
(Hammoud et al., arXiv 2508.08940).

The budget ``L = schedule(clock)`` (tokens) shrinks over training, e.g. the paper's step-wise
exponential decay ``step(peak=256, every=25%, gamma=0.7)``. The length reward is triangular:
``ℓ/L`` up to ``L``, falling linearly to 0 at ``2L`` (``R_max = 1``); with correctness the reward is
``λ_c·correct + λ_ℓ·R_len`` (the paper's correctness-heavy weights 0.6 / 0.3 by default; no format
term). The paper also states the budget in the prompt; :meth:`LengthBudget.prompt` does that with a
template.

In a trainer the budget travels as a knob: the adapter evaluates it on the run's clock and hands it
to reward functions as a per-row column (see ``cadence.integrations.trl.attach(length_budget=...)``),
so :meth:`LengthBudget.reward_function` stays a pure function of its arguments.

    >>> budget = LengthBudget("step(peak=16, every=50%, gamma=0.5)")
    >>> from cadence import Clock
    >>> clock = Clock(budget=10); budget(clock), (clock.advance(5), budget(clock))[1]
    (16.0, 8.0)
    >>> triangular(np.array([4.0, 8.0, 12.0]), 8.0).tolist()
    [0.5, 1.0, 0.5]
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cadence.clock import Clock
from cadence.curricula.base import as_signal
from cadence.errors import CadenceError
from cadence.schedules import Schedule, as_schedule


def triangular(length: Any, target: Any) -> np.ndarray:
    """The triangular length reward: ``ℓ/L`` for ``ℓ ≤ L``, ``1 − (ℓ − L)/L`` up to ``2L``, then 0."""
    ell = np.asarray(length, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if np.any(~(target >= 1)):
        raise CadenceError(f"a length budget must be at least 1 token, got {np.min(target)!r}")
    return np.where(ell <= target, ell / target, np.clip(1.0 - (ell - target) / target, 0.0, None))


class LengthBudget:
    """A token budget for responses as a schedule on the run's clock.

    Args:
        schedule: schedule or spec in tokens, e.g. ``"step(peak=256, every=25%, gamma=0.7)"``.
        name: the knob name under which adapters hand the budget to reward functions.
        template: how :meth:`prompt` states the budget, with ``{budget}`` (an integer).
        in_prompt: whether trainers state the budget in every prompt (the paper does).
        correct_weight, length_weight: ``λ_c`` and ``λ_ℓ`` of :meth:`reward`.
    """

    def __init__(self, schedule: Schedule | str | float, *, name: str = "length_budget",
                 template: str = "Use at most {budget} tokens.", in_prompt: bool = False,
                 correct_weight: float = 0.6, length_weight: float = 0.3) -> None:
        self.schedule = as_schedule(schedule)
        if "{budget}" not in template:
            raise CadenceError(f"the prompt template must contain '{{budget}}', got {template!r}")
        self.name, self.template, self.in_prompt = name, template, bool(in_prompt)
        self.correct_weight, self.length_weight = float(correct_weight), float(length_weight)

    def __call__(self, clock: Clock) -> float:
        """The budget in tokens at the clock's position (at least 1, or a :class:`CadenceError`)."""
        budget = float(self.schedule(clock))
        if not budget >= 1:
            raise CadenceError(f"the length budget {self.schedule} is {budget} tokens at step {clock.steps:g}; "
                               f"it must be >= 1")
        return budget

    def reward(self, correct: Any, lengths: Any, budget: Any) -> np.ndarray:
        """``λ_c·correct + λ_ℓ·triangular(ℓ, budget)`` per response."""
        return self.correct_weight * as_signal("correct", correct) + self.length_weight * triangular(lengths, budget)

    def prompt(self, prompt: Any, budget: float) -> Any:
        """The prompt with the budget statement appended: to a text, or to the last message's text of
        a chat (a list of ``{"role", "content"}`` messages, returned as a new list).

            >>> LengthBudget(64).prompt([{"role": "user", "content": "2+2?"}], 64.0)
            [{'role': 'user', 'content': '2+2? Use at most 64 tokens.'}]
        """
        statement = self.template.format(budget=int(round(budget)))
        if isinstance(prompt, str):
            return f"{prompt} {statement}"
        messages = list(prompt)
        if not messages or not isinstance(messages[-1], Mapping) or not isinstance(messages[-1].get("content"), str):
            raise CadenceError("a length budget is stated in a text prompt or after a chat's last message text; "
                               f"got a prompt of type {type(prompt).__name__} whose last message has no text content")
        return messages[:-1] + [{**messages[-1], "content": f"{messages[-1]['content']} {statement}"}]

    def reward_function(self, correct: Callable[..., Sequence[Any]] | None = None) -> Callable[..., list[float]]:
        """A reward function in TRL's calling convention (keyword arguments per completion): reads the
        completion lengths from ``completion_ids`` and the budget from the column named :attr:`name`.
        ``correct(completions=..., **columns)`` gives 0/1 per completion; without it the function
        returns the length reward alone (combine it with a correctness reward through the trainer's
        reward weights)."""

        def length_reward(completions: Sequence[Any], completion_ids: Sequence[Sequence[int]], **columns: Any) -> list[float]:
            if self.name not in columns:
                raise CadenceError(f"the reward function needs the {self.name!r} column; attach the LengthBudget to "
                                   f"the trainer (cadence.integrations.trl.attach(length_budget=...))")
            lengths = [len(ids) for ids in completion_ids]
            if correct is None:
                return triangular(lengths, columns[self.name]).tolist()
            right = correct(completions=completions, completion_ids=completion_ids, **columns)
            return self.reward(right, lengths, columns[self.name]).tolist()

        length_reward.__name__ = f"{self.name}_reward"
        return length_reward

    def __repr__(self) -> str:
        return f"LengthBudget({self.schedule})"
