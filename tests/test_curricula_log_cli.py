"""Curriculum logs (JSONL/CSV) and `cadence plot-curriculum`."""

from __future__ import annotations

import numpy as np
import pytest

from cadence.cli import main
from cadence.curricula import SEC, Arms, CurriculumLog, read_log
from cadence.errors import CadenceError


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_log_round_trip_and_plot(tmp_path, suffix):
    policy = SEC(Arms(["a", "b", "c"] * 3), alpha=0.5)
    path = tmp_path / f"arms{suffix}"
    recorded = []
    with CurriculumLog(path) as log:
        for step in range(5):
            policy.observe([step % 3], advantage=[1.0 + step])
            recorded.append(policy.probabilities().tolist())
            log.write(step, policy)
    back = read_log(path)
    assert back["arms"] == ["a", "b", "c"] and back["steps"].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(back["probabilities"], recorded, rtol=1e-12)
    out = tmp_path / "arms.png"
    assert main(["plot-curriculum", str(path), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_logs_are_named(tmp_path, capsys):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"step": 0}\n')
    with pytest.raises(CadenceError, match="x.jsonl:1"):
        read_log(bad)
    assert main(["plot-curriculum", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.png")]) == 2
    assert "no curriculum log" in capsys.readouterr().err
    with pytest.raises(CadenceError, match=".jsonl or .csv"):
        CurriculumLog(tmp_path / "log.txt")
