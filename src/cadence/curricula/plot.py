"""Plot arm probabilities over training from a curriculum log (matplotlib, Agg backend).

    >>> # plot_curriculum("arms.jsonl", "arms.png")
"""

from __future__ import annotations

from pathlib import Path

from cadence.curricula.log import read_log


def plot_curriculum(log_path: str | Path, out: str | Path, *, title: str | None = None, stacked: bool = True) -> Path:
    """Draw arm probabilities against step (stacked areas, or lines) and save to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = read_log(log_path)
    steps, probs, arms = log["steps"], log["probabilities"], log["arms"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if stacked:
        ax.stackplot(steps, probs.T, labels=arms)
        ax.set_ylim(0, 1)
    else:
        for j, arm in enumerate(arms):
            ax.plot(steps, probs[:, j], label=arm)
    ax.set_xlabel("step")
    ax.set_ylabel("arm probability")
    ax.set_title(title or f"{log['policy'] or 'curriculum'}: arm probabilities")
    if len(arms) <= 20:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
