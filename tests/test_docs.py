"""Every ```python block in README.md and docs/ runs as written (blocks of one file share a namespace).

A block whose fence reads ```python no-run is shown but not run (say why next to it).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_documented_python_runs(page, tmp_path, monkeypatch):
    blocks = [code for info, code in BLOCK.findall(page.read_text()) if "no-run" not in info]
    if not blocks:
        pytest.skip("no python blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__docs__"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as e:  # name the block so the failing example is easy to find
            raise AssertionError(f"{page.relative_to(ROOT)} block {i} failed: {e!r}\n{code}") from e


def test_docs_and_sources_cite_papers_not_files_outside_the_project():
    root = Path(__file__).resolve().parents[1]
    files = [*root.glob("docs/**/*.md"), root / "README.md", *root.glob("src/**/*.py"), *root.glob("examples/*.py"),
             *root.glob("benchmarks/*.py")]
    offenders = [f"{p.relative_to(root)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "algorithms.md" in line or "§" in line]
    assert offenders == []
