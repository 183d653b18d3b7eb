"""Regimen files on the command line: ``cadence show|plot|check FILE`` and ``forecast --regimen FILE``.

``show`` and ``plot`` read a regimen file when their argument ends in ``.yaml``, ``.yml`` or
``.json`` (a schedule spec otherwise); ``check`` runs the doctor on it plus the stage checks.

    cadence show regimen.yaml --at 0 30% 100%
    cadence plot regimen.yaml -o regimen.png
    cadence check regimen.yaml
    cadence forecast --fit run.csv --regimen regimen.yaml
"""

from __future__ import annotations

import argparse
from typing import Any

from cadence.errors import CadenceError

SUFFIXES = (".yaml", ".yml", ".json")


def is_regimen_path(text: str) -> bool:
    """Whether a command argument names a regimen file rather than a schedule spec."""
    return text.lower().endswith(SUFFIXES)


def load(path: str) -> Any:
    """The validated regimen with its clock and stages (``None`` without stages)."""
    from cadence.regimen import Regimen

    regimen = Regimen.from_file(path)
    if regimen.budget is None:
        raise CadenceError(f"{path}: budget: showing or plotting a regimen needs its budget")
    clock = regimen.clock()
    return regimen, clock, regimen.stage_run(clock)


def curves(regimen: Any, stages: Any) -> dict[str, Any]:
    """Every schedule of the run by its name: optimizer fields, then knobs (stages joined)."""
    return {**regimen.lr_schedules(stages), **{f"knob {k}": s for k, s in regimen.knob_schedules(stages).items()}}


def show(args: argparse.Namespace) -> int:
    """A regimen's stages and every schedule's value at chosen points (stage boundaries included)."""
    from cadence.cli import console as cli_console
    from rich.table import Table

    from cadence.cli.schedules import parse_point

    regimen, clock, stages = load(args.spec)
    axis = clock.axis
    schedules = curves(regimen, stages)
    for name, s in schedules.items():
        s.check(axis)
    console = cli_console()
    name = regimen.data.get("name")
    console.print(f"{name + ': ' if name else ''}budget {regimen.budget}", highlight=False)
    bounds = stages.boundaries() if stages else []
    if stages:
        table = Table(title="stages")
        for col in ("stage", "objective", "from", "to", "ends early when"):
            table.add_column(col, justify="right" if col in ("from", "to") else "left")
        edges = [0.0, *bounds, axis.total]
        for i, s in enumerate(stages.stages):
            rules = "; ".join(_rule_text(r) for r in s.rules) or "-"
            table.add_row(s.name, s.objective or "-", f"{edges[i]:,.6g}", f"{edges[i + 1]:,.6g}", rules)
        console.print(table)
    if args.at:
        points = [axis.length(parse_point(p)) for p in args.at]
    else:
        if args.points < 2:
            raise CadenceError(f"--points must be at least 2 (the start and the end of the budget), got {args.points}")
        points = sorted({axis.total * i / (args.points - 1) for i in range(args.points)} | set(bounds))
    table = Table(title="values")
    table.add_column(axis.unit, justify="right")
    table.add_column("progress", justify="right")
    if stages:
        table.add_column("stage")
    for k in schedules:
        table.add_column(k, justify="right")
    for t in points:
        row = [f"{t:,.6g}", f"{t / axis.total:.1%}"]
        if stages:
            row.append(stages.stages[sum(t >= b for b in bounds)].name)
        table.add_row(*row, *(f"{s.value(t, axis):.6g}" for s in schedules.values()))
    console.print(table)
    return 0


def plot(args: argparse.Namespace) -> int:
    """All of a regimen's schedules over its budget, one panel each, stages shaded and named."""
    from cadence.cli import image_output

    output = image_output(args.output)
    if len(args.specs) != 1:
        raise CadenceError("plot one regimen file at a time (other arguments would be schedule specs)")
    regimen, clock, stages = load(args.specs[0])
    schedules = curves(regimen, stages)
    if not schedules:
        raise CadenceError(f"{args.specs[0]}: the regimen schedules nothing to plot (no lr, schedules or knobs)")
    for s in schedules.values():
        s.check(clock.axis)
    fig = plot_regimen(schedules, clock.axis, stages, title=regimen.data.get("name"), log=args.log)
    fig.savefig(output, dpi=120)
    print(f"wrote {output}")
    return 0


def plot_regimen(schedules: dict[str, Any], axis: Any, stages: Any, *, title: str | None = None,
                 log: bool = False) -> Any:
    """One panel per schedule over the budget; stages shaded and named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(schedules), 1, figsize=(8, 1.2 + 2.0 * len(schedules)), sharex=True, squeeze=False)
    edges = [0.0, *(stages.boundaries() if stages else []), axis.total]
    for ax, (name, s) in zip(axes[:, 0], schedules.items()):
        ts, vs = s.curve(axis.total, 1001, unit=axis.unit, rates=axis.rates)
        ax.plot(ts, vs, lw=1.6, color="C0")
        ax.set_ylabel(name, fontsize=8)
        ax.grid(alpha=0.3)
        if log:
            ax.set_yscale("log")
        for i in range(len(edges) - 1 if stages else 0):
            ax.axvspan(edges[i], edges[i + 1], color=f"C{i + 1}", alpha=0.12, lw=0)
            if ax is axes[0, 0]:
                st = stages.stages[i]
                ax.text((edges[i] + edges[i + 1]) / 2, 1.02, st.name + (f" ({st.objective})" if st.objective else ""),
                        transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
    axes[-1, 0].set_xlabel(axis.unit)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def check(path: str) -> list[Any]:
    """The doctor's findings for a regimen file (its format is a subset), plus the stage checks."""
    from cadence.doctor import Finding
    from cadence.doctor import Regimen as DoctorRegimen
    from cadence.doctor import diagnose
    from cadence.errors import BudgetError
    from cadence.regimen import Regimen

    regimen = Regimen.from_file(path)
    d = regimen.to_dict()
    view = {k: d[k] for k in DoctorRegimen._KEYS if k in d and k not in ("stages",)}
    clock = regimen.clock() if regimen.budget is not None else None
    stages = regimen.stage_run(clock) if clock is not None else None
    findings: list[Any] = []
    if stages is not None:
        if "lr" in stages.names():
            view["lr"] = str(stages.schedule("lr"))
        edges = [0.0, *stages.boundaries(), clock.axis.total]
        for i, s in enumerate(stages.stages):
            span = clock.axis.span(edges[i + 1] - edges[i])
            for name in stages.names():
                piece = stages._piece(s, name)
                try:
                    piece.check(span)
                except BudgetError as e:
                    findings.append(Finding(
                        "stage-schedule-does-not-fit", "warning",
                        f"stages[{i}] ({s.name}): {name} does not fit the stage's {edges[i + 1] - edges[i]:g} "
                        f"{clock.unit}: {e}",
                        "a stage's schedules run on the stage's own span, so their amounts must fit in it",
                        "give the schedule fractions of the stage, or give the stage a larger budget"))
            if s.rules and i == len(stages.stages) - 1:
                findings.append(Finding(
                    "last-stage-rule-ends-the-run", "note",
                    f"stages[{i}] ({s.name}): its rule ends the whole run when it holds",
                    "the last stage has no stage after it; the host is told to stop",
                    "leave it so, or add a stage after it"))
    return diagnose(DoctorRegimen.from_dict(view)) + findings


def _rule_text(rule: Any) -> str:
    if rule.kind == "plateau":
        return f"{rule.metric} improves by ≤ {rule.delta:g} over {rule.window} evals ({rule.mode})"
    return f"{rule.metric} {'>' if rule.kind == 'above' else '<'} {rule.threshold:g} for {rule.times} evals"


def forecast_schedule(path: str) -> tuple[str, Any, int]:
    """The regimen's LR (stages joined) and its budget in steps, for ``forecast --regimen``."""
    regimen, clock, stages = load(path)
    if regimen.budget.unit != "steps":
        raise CadenceError(f"{path}: budget: forecasts count optimizer steps; give the regimen a budget in steps")
    lr = regimen.lr_schedules(stages).get("lr")
    if lr is None:
        raise CadenceError(f"{path}: lr: the regimen has no LR schedule to forecast")
    return f"{regimen.data.get('name') or path} (regimen)", lr, int(regimen.budget.amount)
