"""The example scripts run as written, and the integration pages show them verbatim."""

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
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


@pytest.mark.parametrize("script, page", PAGES)
def test_integration_page_embeds_its_example(script, page):
    code = (ROOT / "examples" / script).read_text().strip()
    blocks = re.findall(r"^```python[^\n]*\n(.*?)^```", (ROOT / "docs" / page).read_text(), re.S | re.M)
    assert any(block.strip() == code for block in blocks), f"docs/{page} does not show examples/{script} as it is"
