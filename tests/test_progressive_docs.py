"""The examples in docs/progressive.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "progressive.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_doc_has_an_example_for_every_plan() -> None:
    text = "\n".join(BLOCKS)
    for name in ("RandomizedProgressive", "LayerFreezing", "FreezeOut", "SequenceLengthWarmup", "BatchSizeSchedule"):
        assert name in text, name


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_example_runs(index: int) -> None:
    exec(compile(BLOCKS[index], f"{DOC.name}[block {index}]", "exec"), {})
