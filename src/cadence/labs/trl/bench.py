"""``cadence bench trl``: the RL lab's prompt-selection policies inside TRL's ``GRPOTrainer``, over seeds.

Per policy, rollouts and steps to the target (TRL alone's best pass@1 on the same seed) relative to
TRL alone, as geometric means with 95% intervals (:func:`cadence.labs.rl.bench.ratio_rows`, the
lab's own summary, with TRL alone as the baseline); plus seconds per optimizer step (evaluation
excluded) and the part of it spent generating refill rounds. :func:`overhead` compares TRL + cadence
with uniform sampling to TRL alone, step for step on the same seeds.

    >>> from cadence.labs.rl.bench import interval
    >>> round(interval(np.array([1.02, 1.04]))[0], 3)
    1.03
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cadence.errors import CadenceError
from cadence.labs.rl.bench import RatioRow, interval, ratio_rows  # noqa: F401 - ratio_rows is re-exported
from cadence.labs.trl.experiment import BASELINE, TrlComparison, TrlLabConfig, compare


@dataclass(frozen=True)
class Timing:
    """A policy's mean seconds per optimizer step over seeds (evaluation excluded) and the mean
    seconds per step spent on refill rounds (generation after a step's first round)."""

    policy: str
    step_seconds: float
    refill_seconds: float


def bench_trl(lab: TrlLabConfig, seeds: int, on_step: Callable[[str], None] | None = None,
              on_seed: Callable[[list[TrlComparison]], None] | None = None,
              workers: int = 1, first_seed: int = 0) -> tuple[list[RatioRow], list[TrlComparison]]:
    """Run :func:`~cadence.labs.trl.experiment.compare` on ``seeds`` seeds from ``first_seed`` on; ratios
    vs TRL alone. ``on_seed`` gets the comparisons so far after each seed (to save partial results).
    A run on more seeds is this run's records merged with another's (:func:`read_records`)."""
    comparisons: list[TrlComparison] = []
    for seed in range(first_seed, first_seed + seeds):
        comparisons.append(compare(lab, seed, on_step=on_step, workers=workers))
        if on_seed is not None:
            on_seed(comparisons)
    return ratio_rows(comparisons, baseline=BASELINE), comparisons


def timings(comparisons: list[TrlComparison]) -> list[Timing]:
    """Mean seconds per step and refill seconds per step, per policy, over the comparisons."""
    return timings_of(records(comparisons))


def timings_of(recs: list[dict]) -> list[Timing]:
    """:func:`timings` from per-seed records (:func:`records`); empty if they hold no timings (the lab's)."""
    if any(r["step_seconds"] is None for r in recs):
        return []
    return [Timing(p, float(np.mean([np.mean(r["step_seconds"]) for r in recs if r["policy"] == p])),
                   float(np.mean([np.mean(r["refill_seconds"]) for r in recs if r["policy"] == p])))
            for p in _policies(recs)]


def overhead(comparisons: list[TrlComparison], policy: str = "uniform") -> tuple[float, float, float] | None:
    """Seconds per step of TRL + cadence under ``policy`` over TRL alone's, per seed (median step, so a
    step slowed by the shared machine does not decide it; refills excluded), as a geometric mean
    with its 95% interval; ``None`` if either policy did not run."""
    if policy not in comparisons[0].runs or BASELINE not in comparisons[0].runs:
        return None
    ratios = [np.median(np.subtract(c.runs[policy].step_seconds, c.runs[policy].refill_seconds))
              / np.median(c.runs[BASELINE].step_seconds) for c in comparisons]
    return interval(np.array(ratios))


def hook_share(run: Any) -> float:
    """The share of a run's optimizer-step time spent inside cadence's own code (its wrappers of TRL's
    methods minus the TRL methods they call, and its callback; see :class:`~cadence.labs.trl.experiment.HookClock`).

        >>> from cadence.labs.trl.experiment import Run
        >>> hook_share(Run(None, step_seconds=[0.5, 0.5], refill_seconds=[0, 0], cadence_seconds=[0.01, 0.01]))
        0.02
    """
    return float(np.sum(run.cadence_seconds) / np.sum(run.step_seconds))


def records(comparisons: list[TrlComparison]) -> list[dict]:
    """Per seed and policy: steps and rollouts to target (``None``: not reached), budget, final pass@1,
    informative groups, timings, the selector's run totals at the end (``source``: replay's groups
    replayed and rollouts saved, hints' plateaued groups and learnable share, ...; empty for TRL
    alone), and the eval curve (steps, rollouts, mean pass@1, mean greedy).
    Also reads the lab's own comparisons (:class:`cadence.labs.rl.experiment.Comparison`), whose
    records have no timings (``None``)."""
    out = []
    for c in comparisons:
        runs = getattr(c, "runs", {})
        for name, h in c.histories.items():
            run = runs.get(name)
            steps, rollouts = c.reach(name)
            out.append({"seed": c.seed, "policy": name, "target": c.target, "steps_to_target": steps,
                        "rollouts_to_target": rollouts, "steps": len(h.step_rollouts), "rollouts": h.rollouts,
                        "final_pass@1": float(c.final_accuracy(name).mean()),
                        "final_greedy": float(c.final_greedy(name).mean()),
                        "informative_groups": int(np.sum(h.step_informative)), "groups": int(np.sum(h.step_groups)),
                        "step_seconds": None if run is None else run.step_seconds,
                        "refill_seconds": None if run is None else run.refill_seconds,
                        "cadence_seconds": None if run is None else run.cadence_seconds,
                        "source": h.step_source[-1] if h.step_source else {},
                        "eval_steps": h.eval_steps, "eval_rollouts": h.eval_rollouts,
                        "eval_pass@1": [float(np.mean(a)) for a in h.eval_accuracy],
                        "eval_greedy": [float(np.mean(a)) for a in h.eval_greedy]})
    return out


def write_json(path: Path, lab: TrlLabConfig, rows: list[RatioRow], comparisons: list[TrlComparison]) -> Path:
    """The summary rows and the per-seed records as JSON."""
    payload = {"config": repr(lab), "rows": [asdict(r) for r in rows], "timings": [asdict(t) for t in timings(comparisons)],
               "overhead": overhead(comparisons), "records": records(comparisons)}
    path.write_text(json.dumps(payload, indent=1))
    return path


def extras_of(recs: list[dict]) -> dict[str, tuple[float, str]]:
    """Per policy, means over seeds: rollouts per step, and what its selector counted (the records'
    ``source``) in words — hints: plateaued all-wrong groups per run and the share a tier made
    learnable (not all right); replay: groups replayed and rollouts saved per run, and the share
    saved of the rollouts the run would have generated without it.

        >>> run = {"steps": 10, "rollouts": 900, "source": {"replay/replayed": 12.0, "replay/saved": 100.0}}
        >>> extras_of([dict(run, seed=0, policy="replay"), dict(run, seed=1, policy="replay")])
        {'replay': (90.0, '12 groups replayed, 100 rollouts saved (10%) per run')}
    """
    out = {}
    for p in _policies(recs):
        runs = [r for r in recs if r["policy"] == p]
        src = [r.get("source") or {} for r in runs]
        note = ""
        if all("hints/plateaued" in v for v in src):
            note = (f"{np.mean([v['hints/plateaued'] for v in src]):.0f} plateaued all-wrong groups per run, "
                    f"{np.mean([v['hints/learnable_share'] for v in src]):.0%} made learnable")
        elif all("replay/saved" in v for v in src):
            share = np.mean([v["replay/saved"] / (v["replay/saved"] + r["rollouts"]) for v, r in zip(src, runs)])
            note = (f"{np.mean([v['replay/replayed'] for v in src]):.0f} groups replayed, "
                    f"{np.mean([v['replay/saved'] for v in src]):.0f} rollouts saved ({share:.0%}) per run")
        out[p] = (float(np.mean([r["rollouts"] / max(r["steps"], 1) for r in runs])), note)
    return out


def _policies(recs: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["policy"] for r in recs))


RECORD_KEYS = ("seed", "policy", "target", "steps_to_target", "rollouts_to_target", "steps", "rollouts",
               "final_pass@1", "informative_groups", "groups", "step_seconds", "refill_seconds",
               "eval_rollouts", "eval_pass@1")
"""The fields of a per-seed record that :func:`rows_of` and :func:`plot_records` read."""


def read_records(*paths: str | Path) -> list[dict]:
    """The per-seed records of JSON files :func:`write_json` wrote (``cadence bench trl -o``), one
    run's or several runs' of the same configuration on other seeds (merged), checked: every record
    has the fields the summary and the plot read, every seed ran the same policies once, every run
    the same steps and evaluations, and TRL alone is among the policies. Anything else is a
    :class:`~cadence.errors.CadenceError` naming the problem.

        >>> read_records("no/such/records.json")
        Traceback (most recent call last):
        ...
        cadence.errors.CadenceError: cannot read bench trl records from 'no/such/records.json': no such file
    """
    recs: list[dict] = []
    for path in paths:
        where = f"bench trl records from {str(path)!r}"
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise CadenceError(f"cannot read {where}: no such file") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise CadenceError(f"cannot read {where}: {e.__class__.__name__}: {e}") from None
        part = data.get("records") if isinstance(data, dict) else None
        if not isinstance(part, list) or not part or not all(isinstance(r, dict) for r in part):
            raise CadenceError(f"cannot read {where}: no 'records' list (write it with cadence bench trl -o)")
        missing = sorted({k for r in part for k in RECORD_KEYS if k not in r})
        if missing:
            raise CadenceError(f"cannot read {where}: records lack {missing}")
        recs += part
    where = f"bench trl records from {', '.join(repr(str(p)) for p in paths)}"
    if not recs:
        raise CadenceError("no bench trl records given")
    policies = _policies(recs)
    if BASELINE not in policies:
        raise CadenceError(f"cannot read {where}: no {BASELINE!r} (TRL alone) records to compare against")
    for seed in dict.fromkeys(r["seed"] for r in recs):
        if sorted(r["policy"] for r in recs if r["seed"] == seed) != sorted(policies):
            raise CadenceError(f"cannot read {where}: seed {seed} does not hold one record per policy {policies}")
    if len({r["steps"] for r in recs}) != 1:
        raise CadenceError(f"cannot read {where}: the runs hold different numbers of steps")
    if len({len(r["eval_rollouts"]) for r in recs} | {len(r["eval_pass@1"]) for r in recs}) != 1:
        raise CadenceError(f"cannot read {where}: the runs hold different numbers of evaluations")
    return recs


def rows_of(recs: list[dict], baseline: str = BASELINE) -> list[RatioRow]:
    """:func:`~cadence.labs.rl.bench.ratio_rows` from per-seed records (:func:`records`): the same
    rows the bench printed (an unreached target counts the whole run)."""
    by = {(r["seed"], r["policy"]): r for r in recs}
    seeds = list(dict.fromkeys(r["seed"] for r in recs))

    def reach(r: dict) -> tuple[int, int]:
        if r["steps_to_target"] is None:
            return r["steps"], r["rollouts"]
        return r["steps_to_target"], r["rollouts_to_target"]

    rows = []
    for p in _policies(recs):
        mine, base = [reach(by[s, p]) for s in seeds], [reach(by[s, baseline]) for s in seeds]
        rows.append(RatioRow(p, interval(np.array([max(m[0], 1) / max(b[0], 1) for m, b in zip(mine, base)])),
                             interval(np.array([max(m[1], 1) / max(b[1], 1) for m, b in zip(mine, base)])),
                             sum(by[s, p]["steps_to_target"] is not None for s in seeds), len(seeds),
                             float(np.mean([by[s, p]["final_pass@1"] for s in seeds])),
                             float(np.mean([by[s, p]["informative_groups"] / max(by[s, p]["groups"], 1)
                                            for s in seeds]))))
    return rows


def plot(comparisons: list[TrlComparison], path: Path) -> Path:
    """Mean pass@1 against mean rollouts (over seeds, per evaluation), one line per policy."""
    return plot_records(records(comparisons), path)


def plot_records(recs: list[dict], path: Path) -> Path:
    """:func:`plot` from per-seed records (:func:`records`, or :func:`read_records` of a saved run):
    no training. The title names the run's shape (steps × prompts per step, from TRL alone's records)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cadence.labs.rl.report import label

    seeds = len({r["seed"] for r in recs})
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in _policies(recs):
        runs = [r for r in recs if r["policy"] == name]
        ax.plot(np.mean([r["eval_rollouts"] for r in runs], axis=0),
                np.mean([r["eval_pass@1"] for r in runs], axis=0), marker="o", ms=3,
                label="TRL alone" if name == BASELINE else f"TRL + {label(name)}")
    targets = {r["seed"]: r["target"] for r in recs}
    ax.axhline(float(np.mean(list(targets.values()))), color="grey", lw=0.8, ls="--", label="target (mean)")
    ax.set_xlabel("rollouts (sampled completions, refills included)")
    ax.set_ylabel("eval pass@1 (mean over arms and seeds)")
    base = [r for r in recs if r["policy"] == BASELINE]
    shape = f"{base[0]['steps']} steps × {base[0]['groups'] // max(base[0]['steps'], 1)} prompts · " if base else ""
    ax.set_title(f"TRL GRPOTrainer · {shape}{seeds} seeds")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def measure_overhead(lab: TrlLabConfig, seed: int = 0, repeats: int = 3,
                     on_step: Callable[[str], None] | None = None) -> dict:
    """TRL alone vs TRL + cadence with uniform sampling, side by side in one process: ``repeats`` pairs
    of runs from the same warm start, the order alternating (AB, BA, ...) so drifting machine load
    hits both alike. Per pair, the ratio of median seconds per optimizer step (evaluation excluded;
    uniform sampling generates no refills); returns the medians, the per-pair ratios and their
    geometric mean with a 95% interval; and, per uniform run, the seconds per step spent inside
    cadence's own code and their share of the step (:func:`hook_share`), which machine load moves
    far less than it moves the ratio of two runs."""
    from dataclasses import replace

    import torch

    from cadence.labs.trl.experiment import train_policy
    from cadence.labs.trl.warmstart import warm_start_hf

    torch.set_num_threads(1)
    lab = replace(lab.with_seed(seed), policies=(BASELINE, "uniform"))
    state = warm_start_hf(lab.suite, lab.warm, lab.warm_lr, seed=seed)
    medians: dict[str, list[float]] = {BASELINE: [], "uniform": []}
    hook_seconds, shares = [], []
    for r in range(repeats):
        for name in ((BASELINE, "uniform") if r % 2 == 0 else ("uniform", BASELINE)):
            run = train_policy(name, state, lab, seed, None if on_step is None else (lambda n=name: on_step(n)))
            medians[name].append(float(np.median(run.step_seconds)))
            if name == "uniform":
                hook_seconds.append(float(np.mean(run.cadence_seconds)))
                shares.append(hook_share(run))
    ratios = np.array(medians["uniform"]) / np.array(medians[BASELINE])
    return {"median_step_seconds": medians, "ratios": ratios.tolist(), "overhead": interval(ratios),
            "hook_seconds_per_step": hook_seconds, "hook_share": shares}
