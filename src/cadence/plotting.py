"""Plots of schedules: several on one axis, the gallery of every shape, and loss panels over their LRs.

    >>> from cadence import parse
    >>> fig = plot_schedules([parse("cosine(peak=1)"), parse("wsd(peak=1, warmup=5%)")], total=1000)
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cadence.schedules.base import Schedule  # noqa: E402

GALLERY: tuple[tuple[str, str], ...] = (
    ("constant", "warmup(constant(1), 5%)"),
    ("linear", "warmup(linear(peak=1), 5%)"),
    ("cosine", "warmup(cosine(peak=1, floor=0.1), 5%)"),
    ("polynomial", "warmup(polynomial(peak=1, power=2), 5%)"),
    ("exponential", "exponential(peak=1, floor=0.01)"),
    ("inverse-sqrt", "warmup(inverse_sqrt(peak=1, timescale=5%), 5%)"),
    ("step", "step(peak=1, every=25%, gamma=0.5)"),
    ("multistep", "multistep(peak=1, at=[50%, 75%], gamma=0.3)"),
    ("cyclic", "cyclic(low=0.1, high=1, period=25%)"),
    ("warm restarts", "restarts(cosine(peak=1), period=10%, mult=2)"),
    ("REX", "rex(peak=1)"),
    ("UBA (φ=1, unconfirmed)", "uba(peak=1, phi=1)"),
    ("power (1M tokens/step)", "power(peak=0.02, a=4.6, b=-0.51, warmup=2%, batch=256)"),
    ("WSD linear", "wsd(peak=1, warmup=5%, decay=20%, shape=linear)"),
    ("WSD cosine", "wsd(peak=1, warmup=5%, decay=20%, shape=cosine)"),
    ("WSD 1-sqrt", "wsd(peak=1, warmup=5%, decay=20%, shape=1-sqrt)"),
    ("WSD exponential", "wsd(peak=1, warmup=5%, decay=20%, shape=exponential, floor=0.01)"),
    ("WSD + floor", "wsd(peak=1, warmup=5%, decay=20%, floor=0.1)"),
    ("MiniCPM", "minicpm(peak=1, warmup=5%, decay=10%, half_life=2%)"),
    ("re-warm, re-decay", "join(cosine(peak=1, floor=0.1), rewarm(peak=1, warmup=5%, floor=0.1), at=[50%])"),
    ("infinite", "infinite(peak=1, warmup=5%, cooldown=15%, constant=0.5, anneal=10%)"),
    ("join, continuous", "join(linear(peak=1, floor=0.5), cosine(peak=1), at=[50%], continuous=true)"),
    ("min / clip", "clip(min(cosine(peak=1), constant(0.7)), low=0.2)"),
    ("product", "product(cosine(peak=1), cyclic(low=0.5, high=1, period=20%))"),
)
"""(title, spec) of every shape shown in the gallery; it assumes 1M tokens and 256 samples per step."""


def plot_schedules(schedules: Sequence[Schedule], total: float, *, unit: str = "steps", labels: Sequence[str] | None = None,
                   rates: dict[str, float] | None = None, ax: plt.Axes | None = None, points: int = 1001) -> Figure:
    """Draw schedules on one axis over a span of ``total`` (in ``unit``); returns the figure."""
    fig = ax.figure if ax is not None else plt.figure(figsize=(8, 4.5))
    ax = ax if ax is not None else fig.add_subplot(1, 1, 1)
    for i, s in enumerate(schedules):
        ts, vs = s.curve(total, points, unit=unit, rates=rates)
        ax.plot(ts, vs, label=labels[i] if labels else str(s), lw=1.6)
    ax.set_xlabel(unit)
    ax.set_ylabel("value")
    ax.grid(alpha=0.3)
    if len(schedules) > 1 or labels:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def gallery(total: float = 10_000, path: str | Path | None = None) -> Figure:
    """One small panel per entry of :data:`GALLERY`, titled with its name and spec; saved to ``path`` when given."""
    from cadence.spec import parse

    cols = 4
    rows = -(-len(GALLERY) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.4 * rows), sharex=True)
    rates = {"tokens": 1e-6, "samples": 1 / 256}  # steps per token / per sample
    for ax, (title, spec) in zip(axes.flat, GALLERY):
        ts, vs = parse(spec).curve(total, 801, rates=rates)
        ax.plot(ts, vs, lw=1.6, color="C0")
        ax.set_title(f"{title}\n{textwrap.fill(spec, 52)}", fontsize=8, loc="left")
        ax.set_ylim(0, max(vs) * 1.1)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(GALLERY):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("steps")
    fig.suptitle(f"cadence schedules over a {total:,.0f}-step budget", fontsize=13)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def loss_panels_over_lrs(panels: int, *, width: float, panel_height: float) -> tuple[Figure, list[Any]]:
    """A figure of ``panels`` stacked loss axes over one short LR axis (the last), sharing the steps."""
    fig, axes = plt.subplots(panels + 1, 1, figsize=(width, panel_height * panels + 2), sharex=True,
                             gridspec_kw={"height_ratios": [3] * panels + [1]})
    return fig, list(axes)


def save_with_lrs(fig: Figure, lr_axis: Any, runs: Iterable[tuple[Any, Any]], path: str | Path, *, dpi: int) -> Path:
    """Draw each run's ``(steps, lr)`` on ``lr_axis`` in the loss panels' colours (C0, C1, ...), then
    save the figure to ``path`` and close it."""
    for i, (steps, lr) in enumerate(runs):
        lr_axis.plot(steps, lr, color=f"C{i % 10}", lw=1)
    lr_axis.set_ylabel("LR")
    lr_axis.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)
