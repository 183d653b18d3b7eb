"""The RL lab's task suite and tokenizer: seeded, verifiable, in format."""

import numpy as np
import pytest

from cadence.errors import CadenceError
from cadence.labs.rl.tasks import FAMILIES, MAX_ANSWER, PROMPT_WIDTH, TaskSuite
from cadence.labs.rl.tokenizer import CharTokenizer


def independent_answer(prompt: str) -> str:
    """Solve a prompt without the task makers (a second implementation to check them)."""
    body = prompt.rstrip("=")
    if body.startswith("s"):
        return "".join(sorted(body[1:]))
    if body.startswith("c"):
        return str(body[1:].count("a"))
    for op, fn in (("+", lambda a, b: a + b), ("*", lambda a, b: a * b), ("%", lambda a, b: a % b)):
        if op in body:
            a, b = body.split(op)
            return str(fn(int(a), int(b)))
    raise AssertionError(f"unrecognised prompt {prompt!r}")


def test_answers_are_correct_and_fit_the_format():
    suite = TaskSuite(items_per_arm=40, eval_per_arm=10, seed=3)
    for prompts, answers in ((suite.prompts, suite.answers), (suite.eval_prompts, suite.eval_answers)):
        for p, a in zip(prompts, answers):
            assert independent_answer(str(p)) == a
            assert len(p) <= PROMPT_WIDTH and len(a) <= MAX_ANSWER
    assert len(suite.arm_names) == len(FAMILIES) * 3
    assert np.bincount(suite.arm_of).tolist() == [40] * len(suite.arm_names)


def test_levels_get_harder_in_size():
    suite = TaskSuite(items_per_arm=30, eval_per_arm=1, seed=0)
    lengths = np.array([len(p) for p in suite.prompts]).reshape(len(FAMILIES), 3, 30).mean(axis=2)
    assert np.all(np.diff(lengths, axis=1) > 0)


def test_seeded_and_reproducible():
    a, b, c = TaskSuite(items_per_arm=5, seed=1), TaskSuite(items_per_arm=5, seed=1), TaskSuite(items_per_arm=5, seed=2)
    assert a.prompts.tolist() == b.prompts.tolist() and a.eval_prompts.tolist() == b.eval_prompts.tolist()
    assert a.prompts.tolist() != c.prompts.tolist()
    assert a.prompts.tolist() != a.eval_prompts.tolist()[: len(a.prompts)]
    # one arm's items do not depend on which other families are in the suite
    only_sort = TaskSuite(families=("sort",), items_per_arm=5, seed=1)
    assert only_sort.prompts.tolist() == a.prompts[a.arm_of == a.arm_names.index("sort/1")].tolist() + \
        a.prompts[a.arm_of == a.arm_names.index("sort/2")].tolist() + a.prompts[a.arm_of == a.arm_names.index("sort/3")].tolist()


def test_score_ignores_filler_only():
    got = TaskSuite.score(np.array(["..42", "42", "4.2", "43", ""]), np.array(["42"] * 5))
    assert got.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_bad_suites_are_rejected():
    with pytest.raises(CadenceError, match="unknown task families"):
        TaskSuite(families=("parity",))
    with pytest.raises(CadenceError, match="levels"):
        TaskSuite(levels=(4,))


def test_tokenizer_round_trip_padding_and_errors():
    tok = CharTokenizer()
    assert tok.decode(tok.encode("s312=")) == "s312="
    rows = tok.prompts(["1+1=", "s4321="], width=8)
    assert rows.shape == (2, 8) and rows[0, 0] == tok.pad_id and tok.decode(rows[1, 2:]) == "s4321="
    assert tok.response_text(tok.encode("12$$3")) == "12"
    with pytest.raises(CadenceError, match="'x'"):
        tok.encode("1x2")
    with pytest.raises(CadenceError, match="longer than the prompt width"):
        tok.prompts(["123456789"], width=4)
