"""One comparison of prompt-selection policies: same warm start, same seed, same budget.

A :class:`LabConfig` fixes the suite, the warm start, the GRPO loop and the target; a size
preset (``"default"``, ``"tiny"``) is one of :data:`SIZES`. :func:`compare` warm-starts once,
then trains a copy of the same weights under each policy and records accuracy over steps and
rollouts. Accuracy is pass@1 at the sampling temperature (:func:`~cadence.labs.rl.policy.evaluate`),
the mean over arms. "Reaching the target" means that accuracy first being at least the target:
by default the best accuracy plain GRPO (uniform sampling) reaches within the budget, the
yardstick of the papers' claims ("beats plain GRPO's best within 60% of the training time").

    >>> lab = SIZES["tiny"]
    >>> [p for p in lab.policies]
    ['uniform', 'dump', 'sec', 'pass_rate', 'predictive', 'predictive_dump']
"""

from __future__ import annotations

import copy
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from queue import Empty
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cadence.curricula import DUMP, SEC, CurriculumSampler, PassRateFilter, Uniform
from cadence.rl import (PCL, DualDownsampling, DynamicSampling, GVMAllocation, Hints, PredictiveFilter, PromptSelector,
                        ReplayBuffer, ValueModel)
from cadence.errors import CadenceError
from cadence.labs.rl.features import prompt_features
from cadence.labs.rl.grpo import GRPOConfig, GRPOTrainer, History, Reward, correctness_reward, suite_arms
from cadence.labs.rl.policy import Evaluation, evaluate
from cadence.labs.rl.sources import PromptSource, SelectorSource
from cadence.labs.rl.tasks import TaskSuite
from cadence.labs.rl.warmstart import WarmStartConfig, warm_start
from cadence.labs.tinygpt import TinyGPT

POLICIES = ("uniform", "dump", "sec", "pass_rate", "predictive", "predictive_dump", "dynamic", "d3s", "pcl", "gvm",
            "replay", "hints")
"""The policies the lab knows: uniform sampling; DUMP (arXiv 2504.09710, paper defaults); SEC (arXiv 2505.14970, α = 0.5,
τ = 0.2 as in the released 2-D run scripts); balanced pass-rate filtering (arXiv 2504.03380, band [0.25, 0.75] inclusive (UNCONFIRMED
band), refilling for the missing prompts at most 3 extra rounds); the predictive pre-rollout filter
(GRESO defaults) over uniform sampling, and over DUMP, each with dynamic sampling (band (0, 1), at most
3 extra rounds) as in its paper; dynamic sampling alone (DAPO), the baseline GRESO improves on; and D³S
(arXiv 2509.22115, :class:`~cadence.rl.DualDownsampling` defaults) over uniform sampling: same rollouts, trained on
each group's max-variance subset and the top tokens by |A|·H.
Then, each over uniform draws: PCL (arXiv 2510.01135; pool k = 4, target 0.5, value model on the
prompt's character counts); GVM-RAFT's rollout allocation (arXiv 2505.02391; α = 1e-3, β = 2, the same
total rollouts); dynamic sampling with selective sample replay (arXiv 2504.08837; α = 1, the buffer
half a step's groups as in the authors' code); and GHPO's hints (arXiv 2507.10628; answer-prefix tiers
0.25/0.5/0.75 for every all-wrong group, patience 1)."""

DEFAULT_POLICIES = POLICIES[:6]
"""What ``cadence demo`` and ``cadence bench rl`` compare unless told otherwise (``dynamic`` on request)."""

MAX_EXTRA_ROUNDS = 3


@dataclass(frozen=True)
class LabConfig:
    """Everything one comparison needs besides the seed."""

    suite: TaskSuite = field(default_factory=TaskSuite)
    warm: WarmStartConfig = WarmStartConfig()
    grpo: GRPOConfig = GRPOConfig()
    policies: tuple[str, ...] = DEFAULT_POLICIES
    target: float | None = None
    """An absolute target accuracy; ``None``: uniform's best accuracy in the run."""
    replacement: bool = True
    """Draw prompts with replacement (the lab's default), or without, in epochs (``False``: every prompt once
    before any repeats, the rule of TRL's ``RepeatSampler``)."""

    def __post_init__(self) -> None:
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown or not self.policies:
            raise CadenceError(f"unknown policies {unknown}; choose from {POLICIES}")
        if self.target is None and "uniform" not in self.policies:
            raise CadenceError("the default target is uniform's best accuracy: include 'uniform' in the policies "
                               "or give an absolute target")

    def with_seed(self, seed: int) -> LabConfig:
        """The same lab with the suite drawn from ``seed``."""
        return replace(self, suite=replace(self.suite, seed=seed))


SIZES: dict[str, LabConfig] = {
    "default": LabConfig(),
    "tiny": LabConfig(
        suite=TaskSuite(families=("add", "sort", "count"), levels=(1, 2), items_per_arm=32, eval_per_arm=8),
        warm=WarmStartConfig(steps=60, batch=32, n_layer=1, n_head=2, d_model=32),
        grpo=GRPOConfig(steps=6, prompts_per_step=4, group=4, eval_every=3),
    ),
}
"""Size presets: ``default`` (the demo, a few minutes on 2 cores) and ``tiny`` (CI, seconds)."""


def make_source(name: str, suite: TaskSuite, grpo: GRPOConfig, seed: int, replacement: bool = True) -> PromptSource:
    """The prompt source for one of :data:`POLICIES`; ``replacement=False`` draws its policy's prompts
    without replacement, in epochs (see :attr:`LabConfig.replacement`)."""
    arms = suite_arms(suite)
    dynamic = DynamicSampling(max_extra_rounds=MAX_EXTRA_ROUNDS)
    predictive = PredictiveFilter(arms.num_items, seed=seed)
    choices = {
        "uniform": lambda: PromptSelector(Uniform(arms, seed=seed), seed=seed),
        "dump": lambda: PromptSelector(DUMP(arms, seed=seed), seed=seed),
        "sec": lambda: PromptSelector(SEC(arms, alpha=0.5, temperature=0.2, seed=seed), seed=seed),
        "pass_rate": lambda: PromptSelector(
            PassRateFilter(arms, 0.25, 0.75, closed="both", seed=seed), seed=seed,
            dynamic=DynamicSampling(0.25, 0.75, closed="both", max_extra_rounds=MAX_EXTRA_ROUNDS)),
        "predictive": lambda: PromptSelector(Uniform(arms, seed=seed), predictive=predictive, dynamic=dynamic,
                                             seed=seed),
        "predictive_dump": lambda: PromptSelector(DUMP(arms, seed=seed), predictive=predictive, dynamic=dynamic,
                                                  seed=seed),
        "dynamic": lambda: PromptSelector(Uniform(arms, seed=seed), dynamic=dynamic, seed=seed),
        "d3s": lambda: PromptSelector(Uniform(arms, seed=seed), seed=seed),
        "pcl": lambda: PromptSelector(Uniform(arms, seed=seed), pcl=PCL(ValueModel(prompt_features(suite))), seed=seed),
        "gvm": lambda: PromptSelector(Uniform(arms, seed=seed), seed=seed),   # its allocator: see train_policy
        "replay": lambda: PromptSelector(Uniform(arms, seed=seed), dynamic=dynamic, seed=seed,
                                         replay=ReplayBuffer(max(grpo.prompts_per_step // 2, 1), seed=seed)),
        "hints": lambda: PromptSelector(Uniform(arms, seed=seed), hints=Hints(arms.num_items), seed=seed),
    }
    if name not in choices:
        raise CadenceError(f"unknown policy {name!r}; choose from {POLICIES}")
    selector = choices[name]()
    if not replacement:
        selector.sampler = CurriculumSampler(selector.policy, batch_size=1, num_replicas=1, seed=seed, replacement=False)
    return SelectorSource(selector)


def first_reach(history: History, target: float) -> tuple[int | None, int | None]:
    """``(steps, rollouts)`` at the first evaluation whose mean accuracy is >= ``target``, or
    ``(None, None)`` if the run never got there."""
    for step, rollouts, acc in zip(history.eval_steps, history.eval_rollouts, history.eval_accuracy):
        if np.mean(acc) >= target:
            return step, rollouts
    return None, None


def best_accuracy(history: History) -> float:
    """The highest mean eval accuracy a run reached."""
    return float(max(np.mean(a) for a in history.eval_accuracy))


@dataclass
class Comparison:
    """The outcome of :func:`compare`: one :class:`History` per policy plus the shared facts."""

    lab: LabConfig
    seed: int
    arm_names: list[str]
    warm: Evaluation
    target: float
    histories: dict[str, History]
    seconds: dict[str, float]

    @property
    def warm_accuracy(self) -> np.ndarray:
        return self.warm.pass_at_1

    def final_accuracy(self, policy: str) -> np.ndarray:
        return np.asarray(self.histories[policy].eval_accuracy[-1])

    def final_greedy(self, policy: str) -> np.ndarray:
        return np.asarray(self.histories[policy].eval_greedy[-1])

    def reach(self, policy: str) -> tuple[int | None, int | None]:
        return first_reach(self.histories[policy], self.target)


def train_policy(name: str, weights: TinyGPT, lab: LabConfig, seed: int,
                 on_step: Callable[[], None] | None = None, *, reward: Reward = correctness_reward,
                 allocator: Any = None, max_rollouts: int | None = None) -> History:
    """GRPO from a copy of ``weights`` with prompts chosen by policy ``name`` (reward and rollout
    allocator as in :class:`GRPOTrainer`; ``max_rollouts`` as in :meth:`GRPOTrainer.run`)."""
    source = make_source(name, lab.suite, lab.grpo, seed, lab.replacement)
    if allocator is None and name == "gvm":
        allocator = GVMAllocation(lab.suite.arm_of, lab.grpo.group)
    trainer = GRPOTrainer(copy.deepcopy(weights), lab.suite, source, lab.grpo,
                          max_new_tokens=lab.warm.max_new_tokens(lab.suite), reward=reward, allocator=allocator, seed=seed,
                          downsample=DualDownsampling() if name == "d3s" else None)
    return trainer.run(on_step=on_step, max_rollouts=max_rollouts)


def _train_in_worker(name: str, state: dict, lab: LabConfig, seed: int, max_rollouts: int | None,
                     queue) -> tuple[History, float]:
    """Worker-process entry: rebuild the warm-started model and train one policy."""
    torch.set_num_threads(1)
    model = TinyGPT(lab.warm.model_config(lab.suite))
    model.load_state_dict(state)
    start = time.perf_counter()
    history = train_policy(name, model, lab, seed, lambda: queue.put(name), max_rollouts=max_rollouts)
    return history, time.perf_counter() - start


def side_by_side(worker: Callable[..., Any], names: Sequence[str], args: tuple, workers: int,
                 on_step: Callable[[str], None] | None) -> dict[str, Any]:
    """``{name: worker(name, *args, queue)}`` for every name, in ``workers`` spawned processes; each
    name the worker puts on the queue calls ``on_step(name)`` here (progress across processes)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        queue = manager.Queue()
        futures = {name: pool.submit(worker, name, *args, queue) for name in names}
        while True:
            try:
                name = queue.get(timeout=0.2)
            except Empty:
                if all(f.done() for f in futures.values()):
                    break
                continue
            if on_step is not None:
                on_step(name)
        return {name: f.result() for name, f in futures.items()}


def _train_parallel(weights: TinyGPT, lab: LabConfig, seed: int, workers: int, on_step: Callable[[str], None] | None,
                    names: Sequence[str], max_rollouts: int | None = None
                    ) -> tuple[dict[str, History], dict[str, float]]:
    results = side_by_side(_train_in_worker, names, (weights.state_dict(), lab, seed, max_rollouts), workers, on_step)
    return {n: r[0] for n, r in results.items()}, {n: r[1] for n, r in results.items()}


def compare(lab: LabConfig, seed: int = 0, on_step: Callable[[str], None] | None = None,
            on_warm: Callable[[], None] | None = None, workers: int = 1, equal_rollouts: bool = False) -> Comparison:
    """Warm-start once, then train every policy of ``lab`` from those weights on ``seed``.

    ``workers > 1`` trains policies in that many processes (one thread each); results are the
    same as with one worker. ``equal_rollouts``: train uniform first and stop every other policy
    once it has generated uniform's rollouts (each run is the same prefix as its full run; its
    last evaluation is its pass@1 at uniform's rollouts), which saves the compute of policies
    that generate more per step."""
    if equal_rollouts and "uniform" not in lab.policies:
        raise CadenceError("equal_rollouts stops every policy at uniform's rollouts: include 'uniform' in the policies")
    torch.set_num_threads(1)
    lab = lab.with_seed(seed)
    weights = warm_start(lab.suite, lab.warm, seed=seed)
    if on_warm is not None:
        on_warm()
    warm = evaluate(weights, lab.suite, lab.suite.tokenizer, lab.warm.max_new_tokens(lab.suite), lab.grpo.temperature)
    stages = [(["uniform"], False), ([p for p in lab.policies if p != "uniform"], True)] if equal_rollouts \
        else [(list(lab.policies), False)]
    histories, seconds = {}, {}
    for names, capped in stages:
        cap = histories["uniform"].rollouts if capped else None
        if workers > 1 and len(names) > 1:
            h, sec = _train_parallel(weights, lab, seed, workers, on_step, names, cap)
            histories.update(h)
            seconds.update(sec)
            continue
        for name in names:
            start = time.perf_counter()
            histories[name] = train_policy(name, weights, lab, seed,
                                           None if on_step is None else (lambda n=name: on_step(n)), max_rollouts=cap)
            seconds[name] = time.perf_counter() - start
    histories = {name: histories[name] for name in lab.policies}
    target = lab.target if lab.target is not None else best_accuracy(histories["uniform"])
    return Comparison(lab, seed, lab.suite.arm_names, warm, target, histories, seconds)
