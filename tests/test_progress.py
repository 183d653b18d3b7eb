"""cadence.progress: plain lines off a terminal (throttled), a rich bar on one; no tqdm anywhere."""

import io
import pathlib

from rich.console import Console

import cadence.progress as progress_module
from cadence.progress import Progress, format_seconds


def test_off_a_terminal_lines_are_throttled_and_the_last_is_always_printed(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    with Progress(console=Console(file=out, width=200), every=5) as progress:
        task = progress.task("GRPO", total=10)
        for _ in range(10):
            now[0] += 1.0
            task.advance()
    lines = out.getvalue().splitlines()
    # start, then one line per 5 s of work, then the end
    assert [line.split(" · ")[1] for line in lines] == ["0/10", "5/10", "10/10"]
    assert lines[1] == "GRPO · 5/10 · 0:05 · eta 0:05"
    assert lines[-1].endswith("· done")


def test_a_task_stopping_short_prints_its_last_state_on_exit():
    out = io.StringIO()
    with Progress(console=Console(file=out, width=200), every=1e9) as progress:
        task = progress.task("runs", total=10)
        task.advance(3)
    assert out.getvalue().splitlines()[-1].startswith("runs · 3/10 ·")


def test_on_a_terminal_it_is_a_rich_bar_and_disabled_prints_nothing():
    out = io.StringIO()
    with Progress(console=Console(file=out, force_terminal=True, width=100)) as progress:
        assert progress.live
        progress.task("steps", total=2).advance(2)
    assert "2/2" in out.getvalue()
    quiet = io.StringIO()
    with Progress(console=Console(file=quiet), enabled=False) as progress:
        progress.task("steps", total=2).advance(2)
    assert quiet.getvalue() == ""


def test_format_seconds():
    assert (format_seconds(75), format_seconds(3725), format_seconds(-1)) == ("1:15", "1:02:05", "0:00")


def test_no_module_imports_tqdm():
    root = pathlib.Path(__file__).resolve().parents[1]
    offenders = [str(p) for d in ("src", "benchmarks") for p in (root / d).rglob("*.py")
                 if "import tqdm" in p.read_text() or "from tqdm" in p.read_text()]
    assert offenders == []


def test_the_eta_ignores_a_slow_start_and_the_count_names_its_unit(monkeypatch):
    """A 7-minute run whose first step waits for worker processes must not announce hours."""
    now = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    with Progress(console=Console(file=out, width=200), every=0) as progress:
        task = progress.task("GRPO", total=900, unit="steps")
        now[0] += 120.0  # start-up: processes spawn, the model warms up
        task.advance()
        assert task.line().endswith("eta ?")  # one unit says nothing about the pace
        for _ in range(9):
            now[0] += 0.3
            task.advance()
    line = out.getvalue().splitlines()[10]
    assert line.startswith("GRPO · 10/900 steps · 2:03 · eta ")
    assert line.endswith("eta 4:27")  # 890 steps left at 0.3 s each
