"""The RL lab's task suite and tokenizer: seeded, verifiable, in format."""

import numpy as np
import pytest

from cadence.errors import CadenceError
from cadence.labs.rl.tasks import BUILTIN, MAX_ANSWER, PROMPT_WIDTH, TaskSuite
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
    assert len(suite.arm_names) == len(BUILTIN) * 3
    assert np.bincount(suite.arm_of).tolist() == [40] * len(suite.arm_names)


def test_levels_get_harder_in_size():
    suite = TaskSuite(items_per_arm=30, eval_per_arm=1, seed=0)
    lengths = np.array([len(p) for p in suite.prompts]).reshape(len(BUILTIN), 3, 30).mean(axis=2)
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
    with pytest.raises(CadenceError, match="unknown task family 'parity'; registered: add, count"):
        TaskSuite(families=("parity",))
    with pytest.raises(CadenceError, match="task family 'add' has no level 4"):
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


# ---------------------------------------------------------------- bring your own task families

import json  # noqa: E402
import textwrap  # noqa: E402
import zlib  # noqa: E402

from cadence.cli import main  # noqa: E402
from cadence.labs.rl import tasks  # noqa: E402
from cadence.labs.rl.tasks import FAMILIES, TaskFamily, register_family  # noqa: E402


def make_rev(rng: np.random.Generator, level: int) -> tuple[str, str]:
    """Reverse 8 or 16 digits: prompts and answers longer than the built-in families'."""
    digits = "".join(map(str, rng.integers(0, 10, size=8 * level)))
    return f"r{digits}=", digits[::-1]


def constant(prompt, answer):
    return lambda rng, level: (prompt, answer)


@pytest.fixture
def registry():
    """Registrations made in a test are undone after it."""
    saved = dict(tasks._REGISTRY)
    yield tasks._REGISTRY
    tasks._REGISTRY.clear()
    tasks._REGISTRY.update(saved)


def arm_items(suite, arm):
    return suite.prompts[suite.arm_of == suite.arm_names.index(arm)].tolist()


def test_builtin_families_keep_their_seed_streams():
    suite = TaskSuite(items_per_arm=3, eval_per_arm=1, seed=5)
    for index, name in enumerate(("add", "mul", "sort", "count", "mod")):
        assert FAMILIES[name].key == index
        rng = np.random.default_rng(np.random.SeedSequence([5, 0, index, 2]))
        assert arm_items(suite, f"{name}/2") == [FAMILIES[name].maker(rng, 2)[0] for _ in range(3)]


def test_a_family_is_seeded_by_its_name_not_by_order_or_company(registry):
    register_family("fam-a", make_rev, levels=(1,), chars="r")
    register_family("fam-b", make_rev, levels=(1,), chars="r")
    alone = TaskSuite(families=("fam-a",), items_per_arm=6, eval_per_arm=2, seed=3)
    assert FAMILIES["fam-a"].key == zlib.crc32(b"fam-a")
    del registry["fam-a"], registry["fam-b"]
    register_family("fam-b", make_rev, levels=(1,), chars="r")   # the other registration order
    register_family("fam-a", make_rev, levels=(1,), chars="r")
    again = TaskSuite(families=("fam-a",), items_per_arm=6, eval_per_arm=2, seed=3)
    mixed = TaskSuite(families=("add", "fam-b", "fam-a"), items_per_arm=6, eval_per_arm=2, seed=3)
    unregistered = TaskSuite(families=(TaskFamily("fam-a", make_rev, levels=(1,), chars="r"),), items_per_arm=6,
                             eval_per_arm=2, seed=3)
    for suite in (again, mixed, unregistered):
        assert arm_items(suite, "fam-a/1") == alone.prompts.tolist()
    assert again.eval_prompts.tolist() == alone.eval_prompts.tolist()
    assert arm_items(mixed, "fam-b/1") != alone.prompts.tolist()     # same maker, other name: other data
    assert arm_items(mixed, "add/1") == arm_items(TaskSuite(items_per_arm=6, eval_per_arm=2, seed=3), "add/1")


def test_suite_fits_widths_and_alphabet_to_its_families():
    rev = TaskFamily("rev", make_rev, levels=(1, 2), chars="r")
    suite = TaskSuite(families=("count", rev), levels=(1, 2), items_per_arm=4, eval_per_arm=2)
    assert (suite.prompt_len, suite.answer_len) == (18, 16)
    assert suite.tokenizer.alphabet == suite.alphabet and suite.alphabet.endswith("r") and len(suite.alphabet) == 23
    default = TaskSuite(families=("count",), levels=(1,), items_per_arm=4, eval_per_arm=2)
    assert (default.prompt_len, default.answer_len, default.alphabet) == (PROMPT_WIDTH, MAX_ANSWER,
                                                                           CharTokenizer().alphabet)
    fixed = TaskSuite(families=("count",), levels=(1,), items_per_arm=4, eval_per_arm=2, prompt_width=20, max_answer=3)
    assert (fixed.prompt_len, fixed.answer_len) == (20, 3)


@pytest.mark.parametrize("family, match", [
    (TaskFamily("odd", constant("q1=", "1")), r"task family 'odd' level 1: prompt 'q1=' uses 'q', which is not in "
                                              r"the tokenizer's alphabet"),
    (TaskFamily("odd", constant("1=", "1q")), r"task family 'odd' level 1: answer '1q' to prompt '1=' uses 'q'"),
    (TaskFamily("odd", constant("1$=", "1")), r"prompt '1\$=' uses '\$', which is reserved"),
    (TaskFamily("odd", constant("1=", "1.5")), r"answer '1.5' to prompt '1=' contains the filler"),
    (TaskFamily("odd", constant("1=", 1)), r"task family 'odd' level 1: the maker must return two non-empty strings"),
    (TaskFamily("odd", lambda rng, level: ("1=", str(rng.integers(0, 2)))), r"prompt '1=' has two answers"),
])
def test_bad_items_are_refused_at_registration_and_suite_build(registry, family, match):
    with pytest.raises(CadenceError, match=match):
        register_family(family)
    assert "odd" not in FAMILIES
    with pytest.raises(CadenceError, match=match):
        TaskSuite(families=(family,), items_per_arm=16, eval_per_arm=2)


def test_suites_check_widths_levels_and_answers_across_families():
    with pytest.raises(CadenceError, match=r"task family 'sort' level 3: prompt 's\d{7}=' \(prompt .*\) has 9 "
                                           r"characters, more than TaskSuite.prompt_width=8"):
        TaskSuite(families=("sort",), items_per_arm=4, eval_per_arm=1, prompt_width=8)
    with pytest.raises(CadenceError, match=r"task family 'sort' level 3: answer '\d{7}' .* more than "
                                           r"TaskSuite.max_answer=5"):
        TaskSuite(families=("sort",), items_per_arm=4, eval_per_arm=1, max_answer=5)
    one, two = TaskFamily("one", constant("z=", "1"), chars="z"), TaskFamily("two", constant("z=", "2"), chars="z")
    with pytest.raises(CadenceError, match=r"prompt 'z=' has two answers: '1' \(task family 'one' level 1\) and "
                                           r"'2' \(task family 'two' level 1\)"):
        TaskSuite(families=(one, two), items_per_arm=2, eval_per_arm=1)
    with pytest.raises(CadenceError, match="task family 'rev' has no level 3 \\(its levels: 1, 2\\)"):
        TaskSuite(families=("add", TaskFamily("rev", make_rev, levels=(1, 2), chars="r")), levels=(1, 2, 3))
    mixed = TaskSuite(families=("add", TaskFamily("rev", make_rev, levels=(1, 2), chars="r")), items_per_arm=2)
    assert mixed.arm_names == ["add/1", "add/2", "add/3", "rev/1", "rev/2"]   # levels=None: each family's own
    with pytest.raises(CadenceError, match="'add' appears twice"):
        TaskSuite(families=("add", "add"))
    with pytest.raises(CadenceError, match="'add' and 'copy' share the seed key 0"):
        TaskSuite(families=("add", TaskFamily("copy", tasks.make_add, seed_key=0)))
    with pytest.raises(CadenceError, match="non-empty sequence"):
        TaskSuite(families="add")
    with pytest.raises(CadenceError, match="cannot load task family 'no_such_module_xyz:rev'"):
        TaskSuite(families=("no_such_module_xyz:rev",))
    with pytest.raises(CadenceError, match="'tests.test_rl_tasks:make_rev' is a function, not a TaskFamily"):
        TaskSuite(families=("tests.test_rl_tasks:make_rev",))


def test_family_definitions_and_registration_are_checked(registry):
    for kwargs, match in (({"name": "a/b"}, "name"), ({"name": ""}, "name"), ({"levels": ()}, "levels"),
                          ({"levels": (0, 1)}, "levels"), ({"levels": (1, 1)}, "levels"), ({"chars": "x$"}, "chars"),
                          ({"seed_key": -1}, "seed_key"), ({"maker": 3}, "callable")):
        with pytest.raises(CadenceError, match=match):
            TaskFamily(**{"name": "ok", "maker": make_rev, **kwargs})
    with pytest.raises(CadenceError, match="a different task family named 'add' is already registered"):
        register_family("add", make_rev, chars="r")
    assert FAMILIES["add"].maker is tasks.make_add
    with pytest.raises(CadenceError, match="'other' has the seed key 0 of 'add'"):
        register_family("other", make_rev, chars="r", seed_key=0)
    rev = register_family("rev", make_rev, levels=(1, 2), chars="r")
    assert register_family(TaskFamily("rev", make_rev, levels=(1, 2), chars="r")) is rev   # the same: a no-op
    swapped = register_family("rev", make_rev, levels=(1,), chars="r", replace=True)
    assert FAMILIES["rev"] is swapped and swapped.levels == (1,)


def test_too_long_answers_and_short_responses_fail_with_a_clear_error():
    from cadence.labs.rl.grpo import GRPOConfig, GRPOTrainer, suite_arms
    from cadence.labs.rl.policy import answer_batch
    from cadence.labs.rl.sources import SelectorSource
    from cadence.curricula import Uniform
    from cadence.rl import PromptSelector
    from cadence.labs.tinygpt import GPTConfig, TinyGPT

    tok = CharTokenizer()
    with pytest.raises(CadenceError, match=r"answer '1234' to prompt 's4321=' with 1 filler characters needs 6 "
                                           r"response tokens, more than the 4 available"):
        answer_batch(np.array(["s4321="]), np.array(["1234"]), tok, np.array([1]), 4, width=8)
    suite = TaskSuite(families=("sort",), levels=(1,), items_per_arm=4, eval_per_arm=1)
    model = TinyGPT(GPTConfig(vocab_size=tok.vocab_size, context=24, n_layer=1, n_head=1, d_model=8))
    with pytest.raises(CadenceError, match=r"max_new_tokens must be an integer above the suite's longest answer \(7\)"):
        GRPOTrainer(model, suite, SelectorSource(PromptSelector(Uniform(suite_arms(suite)))), GRPOConfig(),
                    max_new_tokens=5)


def test_a_registered_family_runs_the_tiny_lab_end_to_end(registry):
    from cadence.labs.rl.experiment import LabConfig, compare
    from cadence.labs.rl.grpo import GRPOConfig
    from cadence.labs.rl.warmstart import WarmStartConfig, warm_start

    register_family("rev", make_rev, levels=(1, 2), chars="r")
    suite = TaskSuite(families=("rev", "add"), levels=(1, 2), items_per_arm=16, eval_per_arm=4)
    warm = WarmStartConfig(steps=10, batch=8, n_layer=1, n_head=2, d_model=16)
    grpo = GRPOConfig(steps=3, prompts_per_step=4, group=4, eval_every=1)
    c = compare(LabConfig(suite=suite, warm=warm, grpo=grpo, policies=("uniform", "dump")), seed=0)
    assert c.arm_names == ["rev/1", "rev/2", "add/1", "add/2"]
    for h in c.histories.values():
        assert h.eval_steps == [0, 1, 2, 3] and all(len(a) == 4 for a in h.eval_accuracy)
        assert h.rollouts == 3 * 4 * 4
    model = warm_start(suite, warm, seed=0)
    assert model.cfg.vocab_size == 23 and model.cfg.context == 18 + 16 + 1


def test_cli_families_and_levels(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    (tmp_path / "my_byo_tasks.py").write_text(textwrap.dedent('''
        from cadence.labs.rl.tasks import TaskFamily

        def make_rev(rng, level):
            digits = "".join(map(str, rng.integers(0, 10, size=level + 1)))
            return f"r{digits}=", digits[::-1]

        rev = TaskFamily("rev", make_rev, levels=(1, 2), chars="r")
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    assert main(["demo", "--quick", "--steps", "1", "--families", "count, my_byo_tasks:rev", "--levels", "1",
                 "-o", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["arms"] == ["count/1", "rev/1"]
    assert main(["bench", "rl", "--quick", "--seeds", "1", "--steps", "1", "--target", "0.01",
                 "--families", "sort", "--levels", "2,1"]) == 0
    assert "1 seeds" in capsys.readouterr().out
    for args, match in ((["--families", "add,,sort"], "--families needs comma-separated family names"),
                        (["--families", "add,parity"], "unknown task family 'parity'"),
                        (["--levels", "1,x"], "--levels needs comma-separated positive integers, got '1,x'"),
                        (["--levels", "0"], "--levels needs"),
                        (["--levels", "4"], "task family 'add' has no level 4"),
                        (["--levels", "1,1"], "suite levels must be distinct"),
                        (["--families", "add,add"], "'add' appears twice")):
        for command in (["demo", "--quick", "-o", str(tmp_path / "never")], ["bench", "rl", "--quick"]):
            assert main(command + args) == 2
            err = capsys.readouterr().err
            assert match in err and err.startswith("cadence: error:") and err.count("\n") == 1
    assert not (tmp_path / "never").exists()
