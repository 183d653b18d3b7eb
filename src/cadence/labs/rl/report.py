"""The demo's report: a Markdown page with PNG plots and a JSON dump of every curve.

    >>> import tempfile, pathlib
    >>> from cadence.labs.rl.experiment import SIZES, compare
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> path = write_report(compare(SIZES["tiny"]), out)   # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cadence.labs.rl.experiment import Comparison  # noqa: E402

LABELS = {"uniform": "uniform", "dump": "DUMP", "sec": "SEC", "pass_rate": "pass-rate filter",
          "predictive": "predictive filter", "predictive_dump": "predictive filter + DUMP",
          "dynamic": "dynamic sampling", "d3s": "D³S", "d3s_token": "D³S token level", "pcl": "PCL", "gvm": "GVM-RAFT allocation",
          "replay": "dynamic sampling + replay", "hints": "hints (GHPO)"}


def label(policy: str) -> str:
    return LABELS.get(policy, policy)


def summary_rows(c: Comparison) -> list[dict]:
    """One row per policy: final mean pass@1 and greedy accuracy, steps/rollouts to target, share of
    informative groups."""
    rows = []
    for name, h in c.histories.items():
        steps, rollouts = c.reach(name)
        groups = np.asarray(h.step_groups, dtype=np.float64)
        rows.append({
            "policy": name, "final_accuracy": float(c.final_accuracy(name).mean()),
            "final_greedy": float(c.final_greedy(name).mean()),
            "steps_to_target": steps, "rollouts_to_target": rollouts, "rollouts": h.rollouts,
            "informative_share": float(np.sum(h.step_informative) / max(groups.sum(), 1.0)),
            "seconds": c.seconds[name],
        })
    return rows


def _fmt(x: int | None) -> str:
    return "not reached" if x is None else str(x)


def _target_text(c: Comparison) -> str:
    if c.lab.target is not None:
        return f"Target: mean pass@1 ≥ {c.target:.3f} (given)."
    steps, _ = c.reach("uniform")
    return (f"Target: mean pass@1 ≥ {c.target:.3f}, the best uniform sampling reached (at step {steps}, "
            f"{c.target - c.warm_accuracy.mean():+.3f} over the warm start).")


def plot_accuracy(c: Comparison, path: Path) -> None:
    """Mean eval pass@1 against steps and against rollouts, one line per policy."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, h in c.histories.items():
        mean = [np.mean(a) for a in h.eval_accuracy]
        axes[0].plot(h.eval_steps, mean, marker="o", ms=3, label=label(name))
        axes[1].plot(h.eval_rollouts, mean, marker="o", ms=3, label=label(name))
    for ax, xlabel in zip(axes, ("GRPO steps", "rollouts (sampled answers)")):
        ax.axhline(c.target, color="grey", ls="--", lw=1, label="target")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("eval pass@1 (mean over arms)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()  # below the panels: it covers no curve
    fig.suptitle(f"Accuracy (pass@1 at temperature {c.lab.grpo.temperature:g}) over training (seed {c.seed})")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def arm_colors(arms: list[str]) -> list:
    """One hue per task family (the part of ``family/level`` before the slash), lighter shades for
    easier levels, so arms of a family read as one band."""
    families = list(dict.fromkeys(a.split("/")[0] for a in arms))
    maps = ["Blues", "Oranges", "Greens", "Reds", "Purples", "Greys", "YlOrBr", "PuRd"]
    out = []
    for a in arms:
        fam = a.split("/")[0]
        members = [b for b in arms if b.split("/")[0] == fam]
        shade = 0.4 + 0.5 * members.index(a) / max(len(members) - 1, 1)
        out.append(plt.get_cmap(maps[families.index(fam) % len(maps)])(shade))
    return out


FILTERS = ("pass_rate", "predictive", "dynamic")
"""Policies that draw uniformly and then filter: their panel shows what they kept, not what they drew."""


def kept_share(groups_per_arm: list[list[int]], window: int = 10) -> np.ndarray:
    """Share of each arm among the groups trained on, over the last ``window`` steps (steps × arms)."""
    counts = np.cumsum(np.asarray(groups_per_arm, dtype=np.float64), axis=0)
    lagged = np.vstack([np.zeros((window, counts.shape[1])), counts])[:len(counts)]
    recent = counts - lagged
    return recent / np.maximum(recent.sum(axis=1, keepdims=True), 1.0)


def plot_probabilities(c: Comparison, path: Path) -> None:
    """Arm probabilities over steps, stacked, one panel per policy; for a filter, the share of each arm
    among the groups it kept (a filter draws uniformly, so its draw probabilities say nothing)."""
    names = list(c.histories)
    cols = min(3, len(names))  # a grid, readable at page width (a row of six panels was a 2772×440 strip)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 1.6, 3.4 * rows), sharey=True, squeeze=False)
    colors = arm_colors(c.arm_names)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        h = c.histories[name]
        kept = name in FILTERS and h.step_arm_groups
        probs = kept_share(h.step_arm_groups) if kept else np.asarray(h.step_probabilities)
        steps = np.arange(1, len(probs) + 1)
        ax.stackplot(steps, probs.T, colors=colors, labels=c.arm_names)
        ax.set_title(f"{label(name)}: share of kept groups\n(last 10 steps)" if kept else label(name), fontsize=9)
        ax.set_xlabel("GRPO step")
        ax.set_xlim(1, max(len(probs), 2))
        ax.set_ylim(0, 1)
    for row in axes:
        row[0].set_ylabel("P(draw arm)\n(filter: share kept)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1 - 1.4 / fig.get_figwidth(), 1))
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def target_is_meaningful(c: Comparison) -> bool:
    """Whether reaching the target says anything: it must lie above the warm start's accuracy."""
    return c.target > float(c.warm_accuracy.mean()) + 1e-9


SMOKE_NOTE = ("SMOKE TEST (--quick / --size tiny): the model and budget are too small to compare policies; "
              "this run only checks that the demo works end to end.")
COLUMNS_NOTE = ("Columns: *informative groups* is the share of prompt groups whose sampled answers did not all get "
                "the same reward (a group with equal rewards has zero advantage and teaches GRPO nothing); "
                "*process seconds* is each policy's own training time in its worker process: policies train "
                "side by side in parallel workers, so these add up to more than the wall time.")


def conclusion(c: Comparison) -> str:
    """The result in words: each policy's rollouts to the target as a ratio to uniform's (one seed)."""
    if not target_is_meaningful(c):
        return ""
    _, base = c.reach("uniform")
    if base is None:
        return ""
    parts = []
    for name in c.histories:
        if name == "uniform":
            continue
        _, rollouts = c.reach(name)
        parts.append(f"{label(name)} did not reach it" if rollouts is None else
                     f"{label(name)} {rollouts / base:.2f}× ({rollouts:,} rollouts)")
    return (f"**Rollouts to the target relative to uniform ({base:,} rollouts), this seed:** " + "; ".join(parts)
            + ". Below 1 is fewer rollouts than uniform sampling (better).")


def markdown(c: Comparison, wall_seconds: float | None = None, *, smoke: bool = False) -> str:
    """The report text (references the PNGs written next to it). ``smoke``: a ``--quick`` run, said so."""
    lab = c.lab
    meaningful = target_is_meaningful(c)
    reach = _fmt if meaningful else (lambda _: "n/a")
    lines = [
        "# cadence demo: curricula for GRPO on a tiny model", "",
        *([f"**{SMOKE_NOTE}**", ""] if smoke else []),
        f"Seed {c.seed}. {len(c.arm_names)} arms (task family × difficulty), "
        f"{lab.suite.items_per_arm} training prompts and {lab.suite.eval_per_arm} eval prompts per arm. "
        f"Every policy starts from the same warm-started weights and gets {lab.grpo.steps} GRPO steps of "
        f"{lab.grpo.prompts_per_step} prompts × {lab.grpo.group} answers (the filters and dynamic sampling spend "
        f"more rollouts per step refilling their batch: compare them by rollouts, the compute a user pays). Accuracy is pass@1: the probability that one answer "
        f"sampled at temperature {lab.grpo.temperature:g} is right, averaged over the eval prompts and arms "
        f"(warm start {c.warm_accuracy.mean():.3f}; greedy accuracy is reported next to it). "
        + _target_text(c)
        + ("" if meaningful else " The target does not exceed the warm start, so every policy 'reaches' it at "
           "once: the to-target columns are not meaningful (n/a)."), "",
        "| policy | rollouts to target | steps to target | final pass@1 | final greedy | rollouts | "
        "informative groups | process seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary_rows(c):
        lines.append(f"| {label(r['policy'])} | {reach(r['rollouts_to_target'])} | {reach(r['steps_to_target'])} | "
                     f"{r['final_accuracy']:.3f} | {r['final_greedy']:.3f} | {r['rollouts']} | "
                     f"{r['informative_share']:.0%} | {r['seconds']:.0f} |")
    ending = conclusion(c)
    lines += ["", *([ending, ""] if ending else []),
              f"Steps and rollouts to target are read at the evaluations, every {lab.grpo.eval_every} steps: a "
              f"policy that reaches the target between two evaluations is counted at the next one, so they "
              f"resolve {lab.grpo.eval_every} steps.", "",
              COLUMNS_NOTE, "", "![accuracy](accuracy.png)", "", "![arm probabilities](arm_probabilities.png)", "",
              "## Final pass@1 per arm", "",
              "| arm | warm start | " + " | ".join(label(n) for n in c.histories) + " |",
              "|---|---|" + "---|" * len(c.histories)]
    for i, arm in enumerate(c.arm_names):
        cells = " | ".join(f"{c.final_accuracy(n)[i]:.2f}" for n in c.histories)
        lines.append(f"| {arm} | {c.warm_accuracy[i]:.2f} | {cells} |")
    if wall_seconds is not None:
        lines += ["", f"Wall time: {wall_seconds:.0f} s."]
    lines += ["", "Curves: `results.json`. One seed is an anecdote; `cadence bench rl --seeds N` gives ratios "
              "with confidence intervals."]
    return "\n".join(lines) + "\n"


def write_report(c: Comparison, out: Path, wall_seconds: float | None = None, *, smoke: bool = False) -> Path:
    """Write ``report.md``, ``accuracy.png``, ``arm_probabilities.png`` and ``results.json`` to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_accuracy(c, out / "accuracy.png")
    plot_probabilities(c, out / "arm_probabilities.png")
    data = {"seed": c.seed, "smoke_test": smoke, "target_meaningful": target_is_meaningful(c),
            "arms": c.arm_names, "target": c.target, "warm_accuracy": c.warm_accuracy.tolist(),
            "summary": summary_rows(c), "histories": {n: asdict(h) for n, h in c.histories.items()}}
    (out / "results.json").write_text(json.dumps(data, indent=1))
    path = out / "report.md"
    path.write_text(markdown(c, wall_seconds, smoke=smoke))
    return path
