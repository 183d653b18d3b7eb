"""The example scripts run as written, and the integration pages show them verbatim."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
PAGES = [("hf_trainer.py", "integrations/hf.md"), ("trl_grpo.py", "integrations/trl.md"), ("trl_grpo.py", "rl.md"),
         ("lightning_callback.py", "integrations/lightning.md"), ("ddp.py", "integrations/distributed.md")]


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_as_written(script, tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "1"}      # the documented log was printed under PYTHONHASHSEED=2
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=280,
                          env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    if script.name == "trl_grpo.py":  # the same log in every process, as docs/rl.md shows it
        documented = re.search(r"^Its log .*?^```text\n(.*?)^```", (ROOT / "docs" / "rl.md").read_text(), re.S | re.M)
        printed = [line for line in done.stdout.splitlines() if line.startswith(("{'cadence", "prompt mixture"))]
        assert printed == documented.group(1).splitlines(), done.stdout
    if script.name == "ddp.py":  # each rank's line whole and in rank order, not interleaved
        lines = [line for line in done.stdout.splitlines() if "rank" in line]
        assert [line.split(":")[0] for line in lines] == ["rank 0", "rank 1"], done.stdout
        assert all(re.fullmatch(r"rank \d: lr=\S+ p\(hard\)=\S+ steps=\d+", line) for line in lines), done.stdout
    if script.name == "lightning_callback.py":  # DoReMi moves weight to the source with more to learn, without collapsing
        mixtures = [ast.literal_eval(line.split(":", 1)[1].split("#")[0].strip())
                    for line in done.stdout.splitlines() if "mixture:" in line]
        assert len(mixtures) == 2 and mixtures[0] == mixtures[1], done.stdout     # the resumed run ends the same
        assert 0.5 < mixtures[0]["broad"] < 0.95, mixtures


@pytest.mark.parametrize("script, page", PAGES)
def test_integration_page_embeds_its_example(script, page):
    code = (ROOT / "examples" / script).read_text().strip()
    blocks = re.findall(r"^```python[^\n]*\n(.*?)^```", (ROOT / "docs" / page).read_text(), re.S | re.M)
    assert any(block.strip() == code for block in blocks), f"docs/{page} does not show examples/{script} as it is"
