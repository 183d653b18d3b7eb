"""Arms: grouping by any key, per-item scores, id checks, compact index."""

from __future__ import annotations

import numpy as np
import pytest

from cadence.curricula import Arms, UnknownItemError
from cadence.errors import CadenceError


def test_grouping_by_tuple_keys_is_sorted_and_complete():
    keys = [("mul", 2), ("add", 3), ("add", 1), ("mul", 2), ("add", 3)]
    arms = Arms(keys, difficulty=[1, 2, 3, 4, 5])
    assert arms.names == [("add", 1), ("add", 3), ("mul", 2)]
    assert [arms.items(j).tolist() for j in range(3)] == [[2], [1, 4], [0, 3]]
    assert arms.arm_of([0, 1, 2]).tolist() == [2, 1, 0]
    assert arms.sizes.tolist() == [1, 2, 2] and arms.difficulty.tolist() == [1, 2, 3, 4, 5]


def test_numpy_keys_and_from_codes_agree():
    keys = np.array(["b", "a", "b", "c"])
    a, b = Arms(keys), Arms.from_codes(np.array([1, 0, 1, 2]), ["a", "b", "c"])
    assert a.names == b.names == ["a", "b", "c"] and a.item_arm.tolist() == b.item_arm.tolist()
    assert a.signature() == b.signature()


@pytest.mark.parametrize("bad", [[5], [-1], [0.5]])
def test_unknown_ids_are_named(bad):
    with pytest.raises(UnknownItemError, match=str(bad[0])):
        Arms(["a", "b"]).arm_of(bad)


def test_bad_scores_are_rejected():
    with pytest.raises(CadenceError, match="difficulty of item 1"):
        Arms(["a", "b"], difficulty=[0.0, float("nan")])
    with pytest.raises(CadenceError, match="one value per item"):
        Arms(["a", "b"], quality=[1.0])


def test_index_is_compact():
    arms = Arms.from_codes(np.arange(1_000_000) % 7, list("abcdefg"))
    assert arms.nbytes() <= 9 * 1_000_000                  # two int32 arrays plus small per-arm arrays
