"""The ```python blocks of README.md and docs/: extraction, and which need a module that is not installed.

Shared by ``tests/test_docs.py`` (pytest) and the core-install CI check, which has no pytest and runs
``python tests/docs_blocks.py``: every block whose imports are available runs; a block importing an
extra that is not installed (``transformers``, ``lightning``, ``cadence.integrations.hf``, …) is skipped
with its reason. Blocks of one page share a namespace.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)
IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.M)


def blocks(page: Path) -> list[str]:
    """The runnable blocks of a page (a fence reading ```python no-run is shown, not run)."""
    return [code for info, code in BLOCK.findall(page.read_text()) if "no-run" not in info]


def missing_modules(code: str) -> list[str]:
    """Modules a block imports that cannot be imported here (an extra not installed)."""
    out = []
    for a, b in IMPORT.findall(code):
        name = a or b
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            out.append(name)
    return out


def run_page(page: Path) -> list[str]:
    """Run a page's blocks in one namespace; returns the skipped blocks' reasons. Raises on a failure."""
    namespace: dict = {"__name__": "__docs__"}
    skipped = []
    for i, code in enumerate(blocks(page)):
        missing = missing_modules(code)
        if missing:
            skipped.append(f"{page.relative_to(ROOT)} block {i}: needs {', '.join(missing)}")
            continue
        try:
            exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as e:  # name the block so the failing example is easy to find
            raise AssertionError(f"{page.relative_to(ROOT)} block {i} failed: {e!r}\n{code}") from e
    return skipped


if __name__ == "__main__":  # the core-install check: run from a scratch folder
    import os
    import tempfile

    os.environ.setdefault("MPLBACKEND", "Agg")
    for page in PAGES:
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)
            for reason in run_page(page):
                print(f"skipped {reason}")
        print(f"ran {page.relative_to(ROOT)}")
    sys.exit(0)
