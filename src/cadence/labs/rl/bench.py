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
from dataclasses import dataclass, replace
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
                    workers: int = 1, equal_rollouts: bool = False) -> tuple[list[RatioRow], list[Comparison]]:
    """Run :func:`compare` on seeds ``0..seeds-1`` and summarise the ratios vs uniform
    (``equal_rollouts`` as in :func:`compare`)."""
    if "uniform" not in lab.policies:
        raise CadenceError("the bench compares against uniform; include it in the policies")
    comparisons = []
    for seed in range(seeds):
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
