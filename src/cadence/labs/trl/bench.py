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

from cadence.labs.rl import bench as lab_bench
from cadence.labs.rl.bench import RECORD_KEYS, RatioRow, interval, ratio_rows, records  # noqa: F401 - re-exported
from cadence.labs.rl.bench import policies_of as _policies
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


def read_records(*paths: str | Path) -> list[dict]:
    """The per-seed records of JSON files :func:`write_json` wrote (``cadence bench trl -o``), checked
    and merged as :func:`cadence.labs.rl.bench.read_records` does, against TRL alone.

        >>> read_records("no/such/records.json")
        Traceback (most recent call last):
        ...
        cadence.errors.CadenceError: cannot read bench trl records from 'no/such/records.json': no such file
    """
    return lab_bench.read_records(*paths, baseline=BASELINE, bench="trl")


def rows_of(recs: list[dict], baseline: str = BASELINE) -> list[RatioRow]:
    """:func:`cadence.labs.rl.bench.rows_of` against TRL alone."""
    return lab_bench.rows_of(recs, baseline)


def plot(comparisons: list[TrlComparison], path: Path) -> Path:
    """Mean pass@1 against mean rollouts (over seeds, per evaluation), one line per policy."""
    return plot_records(records(comparisons), path)


def plot_records(recs: list[dict], path: Path) -> Path:
    """:func:`plot` from per-seed records (:func:`records`, or :func:`read_records` of a saved run):
    no training (:func:`cadence.labs.rl.bench.plot_records` with TRL alone as the baseline)."""
    from cadence.labs.rl.report import label

    names = {p: ("TRL alone" if p == BASELINE else f"TRL + {label(p)}") for p in _policies(recs)}
    return lab_bench.plot_records(recs, path, baseline=BASELINE, names=names, title="TRL GRPOTrainer")


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
