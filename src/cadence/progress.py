"""Progress of long commands: a rich bar on a terminal, a plain line every few seconds elsewhere.

Off a terminal (output piped, ``tee``, ``nohup``, CI logs) a live bar shows nothing until the end, so
each task prints ``what · done/total unit · elapsed · eta`` when it starts, at most every ``every`` seconds
while it runs, and once more when it finishes. Every long command of cadence (the demo, the benches, the pre-training lab) reports
through this module.

    >>> import io
    >>> from rich.console import Console
    >>> out = io.StringIO()
    >>> with Progress(console=Console(file=out), every=0) as progress:
    ...     task = progress.task("train", total=3)
    ...     for _ in range(3):
    ...         task.advance()
    >>> [line.split(" · ")[1] for line in out.getvalue().splitlines()]
    ['0/3', '1/3', '2/3', '3/3']
"""

from __future__ import annotations

import time
from typing import Any, Callable

from rich.console import Console

__all__ = ["Progress", "Task", "format_seconds"]


def format_seconds(seconds: float) -> str:
    """``75.0`` → ``'1:15'``; ``3725`` → ``'1:02:05'``."""
    s = int(round(max(seconds, 0.0)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Task:
    """One counted piece of work inside a :class:`Progress`; made by :meth:`Progress.task`."""

    def __init__(self, owner: Progress, what: str, total: float, unit: str = "") -> None:
        self._owner, self.what, self.total, self.unit = owner, what, float(total), unit
        self.done = 0.0
        self.start = time.monotonic()
        self._first: tuple[float, float] | None = None  # (time, done) when the first unit finished
        self._printed_at = self.start
        self._printed_done: float | None = None
        self._rich_id: Any = None

    def advance(self, n: float = 1) -> None:
        """Count ``n`` more units of work done."""
        self.done += n
        if self._first is None:
            self._first = (time.monotonic(), self.done)
        self._owner._changed(self)

    def describe(self, what: str) -> None:
        """Change the task's description (e.g. which run is going on)."""
        self.what = what
        self._owner._changed(self)

    def finish(self) -> None:
        """Mark the task complete (its last line is printed off a terminal)."""
        self.done = max(self.done, self.total)
        self._owner._changed(self, final=True)

    def line(self) -> str:
        """``what · done/total unit · elapsed · eta`` (the line printed off a terminal).

        The ETA is the pace since the first unit finished (the time before it, starting processes or
        warming up, says nothing about the pace), so it shows ``eta ?`` until a second unit is done."""
        now = time.monotonic()
        left = self.total - self.done
        if left <= 0:
            eta = "done"
        elif self._first is not None and self.done > self._first[1]:
            eta = f"eta {format_seconds((now - self._first[0]) / (self.done - self._first[1]) * left)}"
        else:
            eta = "eta ?"
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.what} · {self.done:,.0f}/{self.total:,.0f}{unit} · {format_seconds(now - self.start)} · {eta}"


class Progress:
    """A context manager holding the progress of one command's tasks.

    ``console``: where to report (default: stdout). On a terminal the tasks are rich progress bars;
    otherwise each task prints :meth:`Task.line` at most every ``every`` seconds and when it finishes.
    ``enabled=False`` reports nothing. ``transient``: remove the bars when done (terminal only).
    """

    def __init__(self, *, console: Console | None = None, every: float = 5.0, enabled: bool = True,
                 transient: bool = False) -> None:
        self.console = console or Console()
        self.every = every
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self._tasks: list[Task] = []
        self._bar: Any = None
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
                                     transient=transient)

    def task(self, what: str, total: float, unit: str = "") -> Task:
        """Start a new task of ``total`` units (``unit``: what they are, e.g. ``"steps"``, shown after the count)."""
        task = Task(self, what, total, unit)
        self._tasks.append(task)
        if self._bar is not None:
            task._rich_id = self._bar.add_task(what + (f" ({unit})" if unit else ""), total=total)
        elif self.enabled:
            self._print(task)
        return task

    def counter(self, what: str, total: float, unit: str = "") -> Callable[..., None]:
        """A callback advancing a new task by one per call (or by its first argument when it is an int)."""
        task = self.task(what, total, unit)

        def tick(n: Any = 1, *_: Any) -> None:
            task.advance(n if isinstance(n, int) and not isinstance(n, bool) else 1)
        return tick

    def _changed(self, task: Task, final: bool = False) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(task._rich_id, completed=task.done,
                             description=task.what + (f" ({task.unit})" if task.unit else ""))
            return
        now = time.monotonic()
        final = final or task.done >= task.total
        if final and task._printed_done == task.done:
            return
        if final or now - task._printed_at >= self.every:
            self._print(task)

    def _print(self, task: Task) -> None:
        task._printed_at, task._printed_done = time.monotonic(), task.done
        self.console.print(task.line(), highlight=False, markup=False, soft_wrap=True)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.enabled and exc_type is None:
            for task in self._tasks:  # the last state of tasks that stopped short of their total
                if task._printed_done != task.done:
                    self._print(task)
