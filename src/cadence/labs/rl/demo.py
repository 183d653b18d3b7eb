"""``cadence demo``: uniform sampling vs DUMP vs SEC vs pass-rate filtering on GRPO, with a report.

Warm-starts a tiny transformer once, trains a copy under each policy on the same seed and budget,
prints the comparison and writes ``report.md`` with PNG plots to the output folder.

    >>> from pathlib import Path
    >>> import tempfile
    >>> report = run_demo("tiny", Path(tempfile.mkdtemp()), quiet=True)   # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

from cadence.errors import CadenceError
from cadence.labs.rl.experiment import SIZES, Comparison, LabConfig, compare
from cadence.labs.rl.report import SMOKE_NOTE, label, summary_rows, target_is_meaningful, write_report
from cadence.progress import Progress


def lab_for(size: str, steps: int | None = None, target: float | None = None,
            policies: str | None = None, families: Sequence[str] | None = None,
            levels: Sequence[int] | None = None) -> LabConfig:
    """The size preset, optionally with another step budget, an absolute target pass@1, other
    policies (comma-separated names), other task families (names or ``module:attr``) or levels
    (each family must have them)."""
    if size not in SIZES:
        raise CadenceError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    return with_options(SIZES[size], steps, target, policies, families, levels)


def with_options(lab: Any, steps: int | None = None, target: float | None = None, policies: str | None = None,
                 families: Sequence[str] | None = None, levels: Sequence[int] | None = None) -> Any:
    """A lab preset (any dataclass with ``policies``, ``suite``, ``grpo`` and ``target``) with the command
    line's changes; :func:`lab_for` and the TRL lab's use it."""
    if policies is not None:
        lab = replace(lab, policies=tuple(p.strip() for p in policies.split(",") if p.strip()))
    if families is not None or levels is not None:
        suite = lab.suite
        lab = replace(lab, suite=replace(suite, families=suite.families if families is None else tuple(families),
                                         levels=suite.levels if levels is None else tuple(levels)))
    if steps is not None:
        lab = replace(lab, grpo=replace(lab.grpo, steps=steps))
    if target is not None:
        if not 0 < target <= 1:
            raise CadenceError(f"the target accuracy must lie in (0, 1], got {target}")
        lab = replace(lab, target=target)
    return lab


def run_with_progress(lab: LabConfig, seed: int, console: Console, quiet: bool = False,
                      workers: int = 1) -> Comparison:
    """:func:`compare` behind a progress bar (warm start, then one bar over all GRPO steps)."""
    with Progress(console=console, enabled=not quiet) as progress:
        warm = progress.task("warm start", total=1)
        train: list = []

        def on_warm() -> None:
            warm.finish()
            train.append(progress.task(f"GRPO ({len(lab.policies)} policies × {lab.grpo.steps})",
                                       total=lab.grpo.steps * len(lab.policies), unit="steps"))

        def on_step(policy: str) -> None:
            train[0].what = f"GRPO ({len(lab.policies)} policies × {lab.grpo.steps}) · {label(policy)}"
            train[0].advance()

        return compare(lab, seed, on_step=on_step, on_warm=on_warm, workers=workers)


def summary_table(c: Comparison) -> Table:
    meaningful = target_is_meaningful(c)
    reach = (lambda x: "—" if x is None else str(x)) if meaningful else (lambda _: "n/a")
    table = Table(title=f"GRPO with curricula · seed {c.seed} · target pass@1 {c.target:.3f}"
                        + ("" if meaningful else " (not above the warm start: to-target columns n/a)"))
    for col in ("policy", "rollouts to target", "steps to target", "final pass@1", "final greedy",
                "informative groups"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for r in summary_rows(c):
        table.add_row(label(r["policy"]), reach(r["rollouts_to_target"]), reach(r["steps_to_target"]),
                      f"{r['final_accuracy']:.3f}", f"{r['final_greedy']:.3f}", f"{r['informative_share']:.0%}")
    return table


def arm_table(c: Comparison) -> Table:
    table = Table(title="final pass@1 per arm")
    table.add_column("arm")
    table.add_column("warm start", justify="right")
    for name in c.histories:
        table.add_column(label(name), justify="right")
    for i, arm in enumerate(c.arm_names):
        table.add_row(arm, f"{c.warm_accuracy[i]:.2f}", *(f"{c.final_accuracy(n)[i]:.2f}" for n in c.histories))
    return table


def run_demo(size: str, out: Path, *, seed: int = 0, steps: int | None = None, target: float | None = None,
             workers: int | None = None, quiet: bool = False, console: Console | None = None,
             policies: str | None = None, families: Sequence[str] | None = None,
             levels: Sequence[int] | None = None) -> Path:
    """Run the comparison, print its tables and write the report; returns the report's path.

    ``workers``: processes training policies side by side (default: 2 for the default size, 1 for
    tiny, where starting processes costs more than it saves)."""
    console = console or Console()
    lab = lab_for(size, steps, target, policies, families, levels)
    if workers is None:
        workers = 1 if size == "tiny" else min(2, os.cpu_count() or 1)
    if workers < 1:
        raise CadenceError(f"workers must be at least 1, got {workers}")
    start = time.perf_counter()
    if size == "tiny" and not quiet:
        console.print(f"[bold yellow]{SMOKE_NOTE}[/]")
    result = run_with_progress(lab, seed, console, quiet, workers)
    wall = time.perf_counter() - start
    smoke = size == "tiny"
    path = write_report(result, out, wall, smoke=smoke)
    if not quiet:
        console.print(arm_table(result))
        console.print(summary_table(result))
        if smoke:
            console.print(f"[bold yellow]{SMOKE_NOTE}[/]")
        console.print(f"report: {path}  ({wall:.0f} s)")
    return path
