"""``cadence bench rl``: the demo's comparison over several seeds, and the two budget experiments.

* :func:`bench_curricula` — per policy, the ratio of steps and of rollouts to reach the target
  vs uniform on the same seed; geometric mean over seeds with a 95% t-interval on the log ratio.
  A run that never reaches the target counts as its whole budget (a censored, optimistic value
  for that run; the "reached" column says how often it happened).
* :func:`bench_length` — a response-length budget tightened over training ("Train Long, Think
  Short", arXiv 2508.08940) vs the final budget held fixed: final accuracy and mean response length.
* :func:`bench_allocation` — rollouts spread by :class:`KnapsackAllocation` vs ``group`` per
  prompt under the same total: share of groups and of rollouts with non-zero advantage.
* :func:`bench_limr` — LIMR (arXiv 2502.11886): a pilot run over the whole pool in epochs, then the
  same number of steps on the prompts whose reward curve tracks the pilot's average.

    >>> interval(np.array([0.5, 0.5, 0.5]))
    (0.5, 0.5, 0.5)
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy import stats

from cadence.errors import CadenceError
from cadence.curricula import Uniform
from cadence.rl import FixedAllocation, HierarchicalBudget, KnapsackAllocation, LengthBudget, limr
from cadence.rl.hbpo import PAPER_BUDGETS, PAPER_MAX_LENGTH
from cadence.rl.limr import PAPER_THRESHOLD
from cadence.labs.rl.experiment import Comparison, LabConfig, best_accuracy, compare, make_source, train_policy
from cadence.labs.rl.grpo import GRPOTrainer, length_reward, suite_arms
from cadence.labs.rl.limr import PoolSource, run_log
from cadence.labs.rl.warmstart import warm_start


def interval(ratios: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Geometric mean of positive ``ratios`` and its t-interval (computed on the logs)."""
    logs = np.log(np.asarray(ratios, dtype=np.float64))
    mean = float(logs.mean())
    if len(logs) < 2 or float(logs.std(ddof=1)) == 0.0:
        return float(np.exp(mean)), float(np.exp(mean)), float(np.exp(mean))
    half = float(stats.t.ppf(0.5 + level / 2, len(logs) - 1) * logs.std(ddof=1) / np.sqrt(len(logs)))
    return float(np.exp(mean)), float(np.exp(mean - half)), float(np.exp(mean + half))


@dataclass(frozen=True)
class RatioRow:
    """One policy's result over seeds; ratios are (geometric mean, low, high) vs the baseline
    (uniform in the lab, TRL alone in the TRL lab)."""

    policy: str
    steps_ratio: tuple[float, float, float]
    rollouts_ratio: tuple[float, float, float]
    reached: int
    seeds: int
    final_accuracy: float
    informative_share: float


def reach_or_budget(c: Comparison, policy: str) -> tuple[int, int, bool]:
    """``(steps, rollouts, reached)``; an unreached target counts the whole run. ``c`` is any
    comparison with ``lab.grpo.steps``, ``histories`` and ``reach`` (the TRL lab's too)."""
    steps, rollouts = c.reach(policy)
    if steps is None:
        h = c.histories[policy]
        return c.lab.grpo.steps, h.rollouts, False
    return steps, rollouts, True


def ratio_rows(comparisons: list[Comparison], baseline: str = "uniform") -> list[RatioRow]:
    """Per policy: steps and rollouts to target relative to ``baseline`` on the same seed."""
    rows = []
    for policy in comparisons[0].histories:
        steps, rollouts, reached, final, share = [], [], 0, [], []
        for c in comparisons:
            s, r, ok = reach_or_budget(c, policy)
            su, ru, _ = reach_or_budget(c, baseline)
            steps.append(max(s, 1) / max(su, 1))
            rollouts.append(max(r, 1) / max(ru, 1))
            reached += ok
            final.append(float(c.final_accuracy(policy).mean()))
            h = c.histories[policy]
            share.append(float(np.sum(h.step_informative) / max(np.sum(h.step_groups), 1)))
        rows.append(RatioRow(policy, interval(np.array(steps)), interval(np.array(rollouts)), reached,
                             len(comparisons), float(np.mean(final)), float(np.mean(share))))
    return rows


def bench_curricula(lab: LabConfig, seeds: int, on_step: Callable[[str], None] | None = None,
                    on_seed: Callable[[int], None] | None = None,
                    workers: int = 1, equal_rollouts: bool = False,
                    first_seed: int = 0) -> tuple[list[RatioRow], list[Comparison]]:
    """Run :func:`compare` on seeds ``first_seed..first_seed+seeds-1`` and summarise the ratios vs
    uniform (``equal_rollouts`` as in :func:`compare`). A run on more seeds is this run's records
    merged with another's (:func:`read_records`)."""
    if "uniform" not in lab.policies:
        raise CadenceError("the bench compares against uniform; include it in the policies")
    comparisons = []
    for seed in range(first_seed, first_seed + seeds):
        comparisons.append(compare(lab, seed, on_step=on_step, workers=workers, equal_rollouts=equal_rollouts))
        if on_seed is not None:
            on_seed(seed)
    return ratio_rows(comparisons), comparisons


LENGTH_SCHEDULES = {
    "tightened": "step(peak=16, every=25%, gamma=0.72)",
    "fixed": "constant(6)",
}
"""Length budgets compared: 16 tokens, cut by 0.72 three times (16 → 11.5 → 8.3 → 6.0, the
paper's step-wise exponential with n = 3), vs the final 6 tokens from the start."""


def hbpo_budgets(max_length: int) -> HierarchicalBudget:
    """HBPO at the paper's budget fractions of the longest response (512, 1024, 2048, 2560 of 4096)."""
    return HierarchicalBudget([max_length * b / PAPER_MAX_LENGTH for b in PAPER_BUDGETS], max_length)


def response_tokens(history) -> float:
    """Response tokens sampled in training (mean length × rollouts, per step)."""
    return float(sum(length * n for length, n in zip(history.step_length, history.step_rollouts) if length))


def bench_length(lab: LabConfig, seeds: int, on_step: Callable[[], None] | None = None, *,
                 first_seed: int = 0) -> dict[str, dict]:
    """Final greedy accuracy, mean greedy response length (eval) and response tokens sampled in
    training under each length budget, and under HBPO (:func:`hbpo_budgets` of one token less than
    the longest response: HBPO's budget index takes that position after the prompt). Seeds
    ``first_seed .. first_seed + seeds − 1`` (one seed per process spreads a bench over processes).

    The warm start puts 0..8 filler characters before each answer, so responses start long (and
    pass@1, which counts only filler-free answers, would understate accuracy: greedy is used)."""
    torch.set_num_threads(1)
    lab = replace(lab, warm=replace(lab.warm, filler_max=8))
    out: dict[str, dict] = {name: {"accuracy": [], "length": [], "start_length": [], "train_tokens": []}
                            for name in (*LENGTH_SCHEDULES, "hbpo")}
    for seed in range(first_seed, first_seed + seeds):
        seeded = lab.with_seed(seed)
        weights = warm_start(seeded.suite, seeded.warm, seed=seed)
        runs = {name: train_policy("uniform", weights, seeded, seed, on_step, reward=length_reward(LengthBudget(spec)))
                for name, spec in LENGTH_SCHEDULES.items()}
        longest = seeded.warm.max_new_tokens(seeded.suite) - 1
        hbpo = GRPOTrainer(copy.deepcopy(weights), seeded.suite, make_source("uniform", seeded.suite, seeded.grpo, seed),
                           seeded.grpo, max_new_tokens=longest, seed=seed, budgets=hbpo_budgets(longest))
        runs["hbpo"] = hbpo.run(on_step=on_step)
        for name, h in runs.items():
            out[name]["accuracy"].append(float(np.mean(h.eval_greedy[-1])))
            out[name]["length"].append(h.eval_length[-1])
            out[name]["start_length"].append(h.eval_length[0])
            out[name]["train_tokens"].append(response_tokens(h))
    return out


def bench_allocation(lab: LabConfig, seeds: int, on_step: Callable[[], None] | None = None) -> dict[str, dict]:
    """Share of informative groups and of rollouts in them, fixed vs knapsack allocation."""
    torch.set_num_threads(1)
    out: dict[str, dict] = {name: {"informative_groups": [], "useful_rollouts": [], "pass@1": []}
                            for name in ("uniform allocation", "knapsack allocation")}
    for seed in range(seeds):
        seeded = lab.with_seed(seed)
        weights = warm_start(seeded.suite, seeded.warm, seed=seed)
        allocators = {
            "uniform allocation": FixedAllocation(lab.grpo.group),
            "knapsack allocation": KnapsackAllocation(seeded.suite.arm_of, lab.grpo.group),
        }
        for name, allocator in allocators.items():
            h = train_policy("uniform", weights, seeded, seed, on_step, allocator=allocator)
            out[name]["informative_groups"].append(float(np.sum(h.step_informative) / np.sum(h.step_groups)))
            out[name]["useful_rollouts"].append(float(np.sum(h.step_useful_rollouts) / np.sum(h.step_rollouts)))
            out[name]["pass@1"].append(float(np.mean(h.eval_accuracy[-1])))
    return out


LIMR_EPOCHS = 8
"""Epochs of the LIMR pilot: the pool is cut to about ``steps × prompts_per_step / LIMR_EPOCHS`` prompts."""


def bench_limr(lab: LabConfig, seeds: int, on_step: Callable[[], None] | None = None,
               threshold: float = PAPER_THRESHOLD, *, first_seed: int = 0) -> dict[str, dict]:
    """LIMR vs the whole pool at the same steps and rollouts: the pilot (uniform GRPO through a pool
    of about :data:`LIMR_EPOCHS` epochs' prompts, one shuffle per epoch) is the whole-pool run; the
    LIMR run trains from the same warm start on the prompts it selects (θ = ``threshold``). Seeds as
    in :func:`bench_length`."""
    torch.set_num_threads(1)
    out: dict[str, dict] = {name: {"final_pass@1": [], "best_pass@1": [], "prompts": []}
                            for name in ("whole pool", "LIMR subset")}
    for seed in range(first_seed, first_seed + seeds):
        seeded = lab.with_seed(seed)
        arms = len(seeded.suite.arm_names)
        per_arm = max(2, seeded.grpo.steps * seeded.grpo.prompts_per_step // (LIMR_EPOCHS * arms))
        seeded = replace(seeded, suite=replace(seeded.suite, items_per_arm=min(per_arm, seeded.suite.items_per_arm)))
        weights = warm_start(seeded.suite, seeded.warm, seed=seed)
        pool = np.arange(len(seeded.suite.prompts))
        pilot = train_on_pool(weights, seeded, pool, seed, on_step)
        kept, _ = limr(run_log(pilot), steps_per_epoch=-(-len(pool) // seeded.grpo.prompts_per_step),
                       threshold=threshold)
        runs = {"whole pool": (pilot, len(pool)),
                "LIMR subset": (train_on_pool(weights, seeded, np.asarray(kept), seed, on_step) if kept else None,
                                len(kept))}
        for name, (h, n) in runs.items():  # nothing kept: no run, NaN accuracy
            out[name]["final_pass@1"].append(float(np.mean(h.eval_accuracy[-1])) if h else float("nan"))
            out[name]["best_pass@1"].append(best_accuracy(h) if h else float("nan"))
            out[name]["prompts"].append(float(n))
    return out


def train_on_pool(weights, lab: LabConfig, ids: np.ndarray, seed: int, on_step: Callable[[], None] | None = None):
    """Uniform GRPO through the prompts ``ids`` in shuffled epochs, from a copy of ``weights``."""
    source = PoolSource(ids, Uniform(suite_arms(lab.suite), seed=seed), seed=seed)
    trainer = GRPOTrainer(copy.deepcopy(weights), lab.suite, source, lab.grpo,
                          max_new_tokens=lab.warm.max_new_tokens(lab.suite), seed=seed)
    return trainer.run(on_step=on_step)


def records(comparisons: list) -> list[dict]:
    """Per seed and policy: steps and rollouts to target (``None``: not reached), budget, final pass@1,
    informative groups, timings (``None`` for the lab's own comparisons, which hold none), the
    selector's run totals at the end (``source``: replay's groups replayed and rollouts saved, hints'
    plateaued groups and learnable share, ...), and the eval curve (steps, rollouts, mean pass@1,
    mean greedy). Reads the lab's :class:`~cadence.labs.rl.experiment.Comparison` and the TRL lab's."""
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


def policies_of(recs: list[dict]) -> list[str]:
    """The policies of per-seed records, in order of first appearance."""
    return list(dict.fromkeys(r["policy"] for r in recs))


RECORD_KEYS = ("seed", "policy", "target", "steps_to_target", "rollouts_to_target", "steps", "rollouts",
               "final_pass@1", "informative_groups", "groups", "step_seconds", "refill_seconds",
               "eval_rollouts", "eval_pass@1")
"""The fields of a per-seed record that :func:`rows_of` and :func:`plot_records` read."""


def write_json(path: Path, lab: LabConfig, rows: list[RatioRow], comparisons: list[Comparison]) -> Path:
    """``cadence bench rl -o``'s JSON: the config, the summary rows and the per-seed records."""
    payload = {"config": repr(lab), "rows": [asdict(r) for r in rows], "records": records(comparisons)}
    path.write_text(json.dumps(payload, indent=1))
    return path


def read_records(*paths: str | Path, baseline: str = "uniform", bench: str = "rl") -> list[dict]:
    """The per-seed records of JSON files ``cadence bench rl -o`` (or ``bench trl -o``, with
    ``bench="trl"``, ``baseline="trl"``) wrote, one run's or several runs' of the same configuration
    on other seeds (merged), checked: every record has the fields the summary and the plot read,
    every seed ran the same policies once, every run the same steps and evaluations, and
    ``baseline`` is among the policies. Anything else is a :class:`~cadence.errors.CadenceError`
    naming the problem.

        >>> read_records("no/such/records.json")
        Traceback (most recent call last):
        ...
        cadence.errors.CadenceError: cannot read bench rl records from 'no/such/records.json': no such file
    """
    recs: list[dict] = []
    for path in paths:
        where = f"bench {bench} records from {str(path)!r}"
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise CadenceError(f"cannot read {where}: no such file") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise CadenceError(f"cannot read {where}: {e.__class__.__name__}: {e}") from None
        part = data.get("records") if isinstance(data, dict) else None
        if not isinstance(part, list) or not part or not all(isinstance(r, dict) for r in part):
            raise CadenceError(f"cannot read {where}: no 'records' list (write it with cadence bench {bench} -o)")
        missing = sorted({k for r in part for k in RECORD_KEYS if k not in r})
        if missing:
            raise CadenceError(f"cannot read {where}: records lack {missing}")
        recs += part
    where = f"bench {bench} records from {', '.join(repr(str(p)) for p in paths)}"
    if not recs:
        raise CadenceError(f"no bench {bench} records given")
    policies = policies_of(recs)
    if baseline not in policies:
        raise CadenceError(f"cannot read {where}: no {baseline!r} records to compare against")
    for seed in dict.fromkeys(r["seed"] for r in recs):
        if sorted(r["policy"] for r in recs if r["seed"] == seed) != sorted(policies):
            raise CadenceError(f"cannot read {where}: seed {seed} does not hold one record per policy {policies}")
    if len({r["steps"] for r in recs}) != 1:
        raise CadenceError(f"cannot read {where}: the runs hold different numbers of steps")
    if len({len(r["eval_rollouts"]) for r in recs} | {len(r["eval_pass@1"]) for r in recs}) != 1:
        raise CadenceError(f"cannot read {where}: the runs hold different numbers of evaluations")
    return recs


def rows_of(recs: list[dict], baseline: str = "uniform") -> list[RatioRow]:
    """:func:`ratio_rows` from per-seed records (:func:`records`): the same rows the bench printed
    (an unreached target counts the whole run)."""
    by = {(r["seed"], r["policy"]): r for r in recs}
    seeds = list(dict.fromkeys(r["seed"] for r in recs))

    def reach(r: dict) -> tuple[int, int]:
        if r["steps_to_target"] is None:
            return r["steps"], r["rollouts"]
        return r["steps_to_target"], r["rollouts_to_target"]

    rows = []
    for p in policies_of(recs):
        mine, base = [reach(by[s, p]) for s in seeds], [reach(by[s, baseline]) for s in seeds]
        rows.append(RatioRow(p, interval(np.array([max(m[0], 1) / max(b[0], 1) for m, b in zip(mine, base)])),
                             interval(np.array([max(m[1], 1) / max(b[1], 1) for m, b in zip(mine, base)])),
                             sum(by[s, p]["steps_to_target"] is not None for s in seeds), len(seeds),
                             float(np.mean([by[s, p]["final_pass@1"] for s in seeds])),
                             float(np.mean([by[s, p]["informative_groups"] / max(by[s, p]["groups"], 1)
                                            for s in seeds]))))
    return rows


def plot_records(recs: list[dict], path: Path, baseline: str = "uniform", names: dict[str, str] | None = None,
                 title: str = "the lab's GRPO") -> Path:
    """Mean pass@1 against mean rollouts (over seeds, per evaluation), one line per policy (``names``:
    its legend label), from per-seed records (:func:`records`, or :func:`read_records` of a saved
    run): no training. The title names the run's shape (steps × prompts per step, from ``baseline``'s
    records)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cadence.labs.rl.report import label

    seeds = len({r["seed"] for r in recs})
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in policies_of(recs):
        runs = [r for r in recs if r["policy"] == name]
        ax.plot(np.mean([r["eval_rollouts"] for r in runs], axis=0),
                np.mean([r["eval_pass@1"] for r in runs], axis=0), marker="o", ms=3,
                label=(names or {}).get(name, label(name)))
    targets = {r["seed"]: r["target"] for r in recs}
    ax.axhline(float(np.mean(list(targets.values()))), color="grey", lw=0.8, ls="--", label="target (mean)")
    ax.set_xlabel("rollouts (sampled completions, refills included)")
    ax.set_ylabel("eval pass@1 (mean over arms and seeds)")
    base = [r for r in recs if r["policy"] == baseline]
    shape = f"{base[0]['steps']} steps × {base[0]['groups'] // max(base[0]['steps'], 1)} prompts · " if base else ""
    ax.set_title(f"{title} · {shape}{seeds} seeds")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
