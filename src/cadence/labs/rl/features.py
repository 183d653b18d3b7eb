"""Prompt features for PCL's value model in the lab ("Prompt Curriculum Learning for Efficient LLM
Post-Training", arXiv 2510.01135): computed from the prompt's tokens only, no rollouts.

Per prompt: the count of each character of the suite's alphabet and the prompt's length, both over
the prompt width (a bag of tokens; the task's operator characters and digit counts carry its family
and level).

    >>> from cadence.labs.rl.tasks import TaskSuite
    >>> suite = TaskSuite(families=("add",), levels=(1,), items_per_arm=4, eval_per_arm=2)
    >>> prompt_features(suite).shape == (4, len(suite.alphabet) + 1)
    True
"""

from __future__ import annotations

import numpy as np

from cadence.labs.rl.tasks import TaskSuite


def prompt_features(suite: TaskSuite) -> np.ndarray:
    """A (train prompts × (alphabet + 1)) array: character counts and length, over the prompt width."""
    index = {c: i for i, c in enumerate(suite.alphabet)}
    out = np.zeros((len(suite.prompts), len(index) + 1))
    for row, text in enumerate(suite.prompts):
        for c in str(text):
            out[row, index[c]] += 1
        out[row, -1] = len(str(text))
    return out / max(suite.prompt_len, 1)
