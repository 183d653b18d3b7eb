"""Framework versions at attach: a version outside the tested range warns once, naming the range; a wrapped
private method that is missing or takes other parameters is a clear error naming the method and the
tested versions, before anything is wrapped; the extras' bounds match the tested ranges."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from cadence.errors import CadenceError
from cadence.integrations import versions
from cadence.integrations.versions import TESTED, UntestedVersionWarning, check_methods, check_version, in_range

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(versions, "_warned", set())


def test_a_version_outside_the_range_warns_once_naming_the_range():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert check_version("trl", "1.17.0") is False
        assert check_version("trl", "1.17.0") is False          # a second attach: no second warning
        assert check_version("trl", "1.16.3") is True            # a patch release of the newest series is tested
    assert [w.category for w in caught] == [UntestedVersionWarning]
    assert "trl 1.17.0" in str(caught[0].message) and "trl 1.3.0 to 1.16.x" in str(caught[0].message)


def test_older_than_the_oldest_tested_warns_and_unknown_frameworks_are_refused():
    with pytest.warns(UntestedVersionWarning, match=r"lightning 2\.3\.3 is outside .*\(lightning 2\.4\.0 to 2\.6\.x"):
        check_version("lightning", "2.3.3")
    with pytest.raises(CadenceError, match="no tested range for 'keras'"):
        check_version("keras", "3.0")


@pytest.mark.parametrize("version, inside", [("5.17.0", True), ("5.16.1", False), ("5.25.0.dev0", True),
                                             ("5.26.0", False), ("6.0", False)])
def test_range_bounds(version, inside):
    assert in_range(version, TESTED["transformers"]) is inside


def test_extras_bounds_match_the_tested_ranges():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    wanted = {name: f">={oldest},<{newest.split('.')[0]}.{int(newest.split('.')[1]) + 1}"
              for name, (oldest, newest) in TESTED.items()}
    found = {}
    for requirements in extras.values():
        for requirement in requirements:
            m = re.fullmatch(r"([a-z]+)(\[[a-z]+\])?(.*)", requirement)
            if m and m.group(1) in TESTED:
                found.setdefault(m.group(1), set()).add(m.group(3))
    assert found == {name: {bounds} for name, bounds in wanted.items()}


def test_ci_installs_the_oldest_tested_versions():
    ci = (ROOT / ".ci" / "run").read_text()
    for name, (oldest, _) in TESTED.items():
        if name != "verl":  # one release: the verl venv installs the extra, whose only 0.9 release is the oldest
            assert re.search(rf'"{name}(\[[a-z]+\])?=={re.escape(oldest)}"', ci), name


class Trainer:
    """Stands in for a GRPOTrainer of another TRL version."""

    def _generate_and_score_completions(self, inputs): ...

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list): ...

    def _get_train_sampler(self, dataset=None): ...

    def _save_checkpoint(self, model, trial): ...

    def _load_optimizer_and_scheduler(self, checkpoint): ...


class Missing(Trainer):
    _calculate_rewards = None


class Changed(Trainer):
    def _save_checkpoint(self, model, trial, metrics): ...


def test_trl_attach_refuses_a_missing_wrapped_method_naming_it_and_the_versions():
    trl_adapter = pytest.importorskip("cadence.integrations.trl")
    trainer = Missing()
    with pytest.raises(CadenceError, match=r"Missing has no method _calculate_rewards.* trl 1\.3\.0 to 1\.16\.x"):
        trl_adapter.attach(trainer)
    assert "_cadence_attached" not in vars(trainer) and not vars(trainer)  # nothing wrapped


def test_trl_attach_refuses_a_wrapped_method_with_other_parameters():
    trl_adapter = pytest.importorskip("cadence.integrations.trl")
    with pytest.raises(CadenceError, match=r"Changed\._save_checkpoint takes \(model, trial, metrics\), .* wraps it "
                                           r"as \(model, trial\); the adapter supports trl 1\.3\.0 to 1\.16\.x"):
        trl_adapter.attach(Changed())


def test_hf_attach_refuses_a_trainer_whose_get_batch_samples_changed():
    hf_adapter = pytest.importorskip("cadence.integrations.hf")

    class Other:
        def _get_train_sampler(self): ...

        def get_batch_samples(self, epoch_iterator, num_batches): ...

    with pytest.raises(CadenceError, match=r"Other\.get_batch_samples takes \(epoch_iterator, num_batches\)"):
        hf_adapter.attach(Other())


def test_check_methods_accepts_a_replaced_method_with_any_parameters():
    check_methods(Trainer(), "trl", {"_get_train_sampler": None, "_generate_and_score_completions": ("inputs",)})
