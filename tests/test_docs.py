"""Every ```python block in README.md and docs/ runs as written (blocks of one file share a namespace).

A block whose fence reads ```python no-run is shown but not run (say why next to it); one importing an
extra that is not installed is skipped (see ``tests/docs_blocks.py``).
"""

from pathlib import Path

import pytest

from docs_blocks import PAGES, ROOT, blocks, run_page


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_documented_python_runs(page, tmp_path, monkeypatch):
    if not blocks(page):
        pytest.skip("no python blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    skipped = run_page(page)
    if skipped:
        pytest.skip("; ".join(skipped))


def test_blocks_needing_an_extra_are_recognised():
    from docs_blocks import missing_modules

    assert missing_modules("import cadence\nfrom cadence.clock import Clock") == []
    assert missing_modules("import no_such_extra_xyz\nfrom no_such_pkg_xyz.sub import a") == [
        "no_such_extra_xyz", "no_such_pkg_xyz.sub"]


def test_docs_and_sources_cite_papers_not_files_outside_the_project():
    root = Path(__file__).resolve().parents[1]
    files = [*root.glob("docs/**/*.md"), root / "README.md", *root.glob("src/**/*.py"), *root.glob("examples/*.py"),
             *root.glob("benchmarks/*.py")]
    offenders = [f"{p.relative_to(root)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "algorithms.md" in line or "§" in line]
    assert offenders == []
