"""One comparison inside TRL: the same warm start, seed and step budget, trained by TRL's own
``GRPOTrainer`` alone (``"trl"``: its own sampler, no cadence, the baseline a user has today) and with
:func:`cadence.integrations.trl.attach` under each of the RL lab's prompt-selection policies
(built by :func:`cadence.labs.rl.experiment.make_source`, so they are the lab's policies exactly).

Every run records, like the lab's :class:`~cadence.labs.rl.grpo.History`: rollouts per step (every
completion TRL scored: kept, dropped and refill rounds, counted in the reward function for every
policy alike), trained and informative groups per step, and an evaluation every ``eval_every`` steps
(:func:`~cadence.labs.trl.workload.evaluate_hf`). It also times every optimizer step (evaluation
excluded) and the generation rounds after a step's first (refills).

    >>> lab = SIZES["tiny"]
    >>> lab.policies[:2], lab.grpo.group
    (('trl', 'uniform'), 4)
"""

from __future__ import annotations

import functools
import math
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cadence.errors import CadenceError
from cadence.labs.rl.experiment import POLICIES, SIZES as LAB_SIZES, best_accuracy, first_reach, make_source, side_by_side
from cadence.labs.rl.demo import with_options
from cadence.labs.rl.grpo import GRPOConfig, History
from cadence.labs.rl.policy import Evaluation
from cadence.labs.rl.tasks import TaskSuite
from cadence.labs.rl.warmstart import WarmStartConfig
from cadence.labs.trl.warmstart import warm_start_hf
from cadence.rl import DualDownsampling
from cadence.labs.trl.workload import (answer_prefix_guidance, build_model, correctness_reward, evaluate_hf,
                                       suite_tokenizer, train_dataset)

BASELINE = "trl"
"""TRL's ``GRPOTrainer`` alone: the policy every other is measured against."""
LAB_ONLY = {"gvm": "GVM-RAFT allocates rollouts per prompt, and TRL's group advantages need num_generations each",
            "d3s": "in TRL only D³S's token level runs: use policy 'd3s_token' (attach(downsample=)); "
                   "its rollout level is lab-only"}
"""The lab's policies ``bench trl`` does not run, and why (see docs/rl.md)."""
TRL_ONLY = {"d3s_token": "d3s"}
"""Policies only ``bench trl`` runs, each with the lab policy whose prompt source it uses: ``d3s_token`` is
D³S's token level (:func:`d3s_token_level`) under the lab's ``d3s`` prompts (uniform)."""
TRL_POLICIES = (BASELINE,) + tuple(p for p in POLICIES if p not in LAB_ONLY) + tuple(TRL_ONLY)
DEFAULT_POLICIES = (BASELINE, "uniform", "dump", "sec", "pass_rate", "dynamic", "predictive_dump")


@dataclass(frozen=True)
class TrlLabConfig:
    """A TRL comparison: the lab's suite, model size (``warm``) and GRPO knobs (``grpo``: steps,
    prompts per step, group, clip, temperature, epochs, eval_every), the peak learning rates of the
    warm start and of GRPO (5% warmup, then constant, as the lab's default), the policies and the
    target (``None``: TRL alone's best pass@1 in the run)."""

    suite: TaskSuite = field(default_factory=TaskSuite)
    warm: WarmStartConfig = WarmStartConfig()
    grpo: GRPOConfig = GRPOConfig()
    policies: tuple[str, ...] = DEFAULT_POLICIES
    target: float | None = None
    warm_lr: float = 3e-3
    lr: float = 3e-4
    max_grad_norm: float = 1.0
    """TRL's (HF's) default gradient clipping, kept; the lab's loop does not clip (0 turns it off here)."""
    bf16: bool = True
    """TRL's default mixed precision, kept: its configs set ``bf16=True``, so even on CPU the trainer's
    forward passes (loss, generation, and the bench's evaluation through the same model) run under bfloat16
    autocast; the lab's loop runs in float32 (``False`` here)."""

    def __post_init__(self) -> None:
        lab_only = [p for p in self.policies if p in LAB_ONLY]
        if lab_only:
            raise CadenceError(f"policy {lab_only[0]!r} runs in the lab only: {LAB_ONLY[lab_only[0]]}")
        unknown = [p for p in self.policies if p not in TRL_POLICIES]
        if unknown or not self.policies or len(set(self.policies)) != len(self.policies):
            raise CadenceError(f"unknown or repeated policies {unknown or list(self.policies)}; choose from {TRL_POLICIES}")
        if self.target is None and BASELINE not in self.policies:
            raise CadenceError("the default target is TRL alone's best pass@1: include 'trl' in the policies "
                               "or give an absolute target")

    def with_seed(self, seed: int) -> TrlLabConfig:
        return replace(self, suite=replace(self.suite, seed=seed))


SIZES: dict[str, TrlLabConfig] = {
    "default": TrlLabConfig(grpo=replace(LAB_SIZES["default"].grpo, steps=100, prompts_per_step=16)),
    "tiny": TrlLabConfig(suite=LAB_SIZES["tiny"].suite, warm=LAB_SIZES["tiny"].warm,
                         grpo=replace(LAB_SIZES["tiny"].grpo, steps=4, eval_every=2)),
}
"""``default``: the lab's suite, model and group, fewer steps and prompts per step (see docs/rl.md);
``tiny``: the lab's tiny preset (CI, seconds)."""


def lab_for(size: str, steps: int | None = None, target: float | None = None, policies: str | None = None,
            families: Sequence[str] | None = None, levels: Sequence[int] | None = None) -> TrlLabConfig:
    """The size preset with the command line's changes (as :func:`cadence.labs.rl.demo.lab_for`)."""
    if size not in SIZES:
        raise CadenceError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    return with_options(SIZES[size], steps, target, policies, families, levels)


@dataclass
class Run:
    """One policy's run: its :class:`History` and timings (seconds per optimizer step with evaluation
    excluded, the seconds of each step spent generating refill rounds, and the seconds spent inside
    cadence's own code: :func:`~cadence.integrations.trl.attach`'s wrappers minus the TRL methods they
    call, and its callback; all zero for TRL alone)."""

    history: History
    step_seconds: list[float]
    refill_seconds: list[float]
    cadence_seconds: list[float] = field(default_factory=list)


class HookClock:
    """Seconds spent inside cadence's code in a TRL run: wrap each TRL method before ``attach`` with
    ``inner`` and each of cadence's wrappers (and callback hooks) after it with ``outer``; ``spent`` is
    the outer time minus the inner time, so only cadence's own work counts.

        >>> clock = HookClock()
        >>> clock.outer(lambda: clock.inner(lambda: 1)())()
        1
        >>> clock.spent >= 0
        True
    """

    def __init__(self) -> None:
        self.spent = 0.0

    def _timed(self, fn: Callable, sign: float) -> Callable:
        @functools.wraps(fn)                           # the same signature: attach checks TRL's methods' parameters
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent += sign * (time.perf_counter() - start)
        return timed

    def inner(self, fn: Callable) -> Callable:
        return self._timed(fn, -1.0)

    def outer(self, fn: Callable) -> Callable:
        return self._timed(fn, 1.0)


def d3s_token_level() -> DualDownsampling:
    """The lab's D³S (:class:`~cadence.rl.DualDownsampling` defaults: both shares ramp 0.5 → 1 over the
    run) with its rollout level off, as ``attach(downsample=)`` runs it in TRL.

        >>> d3s_token_level().sample_ratio.bounds()
        (1.0, 1.0)
    """
    return DualDownsampling(sample_ratio=1.0)


def grpo_args(lab: TrlLabConfig, seed: int, output_dir: str) -> Any:
    """TRL's ``GRPOConfig`` for the lab's knobs; everything else is TRL's default."""
    from trl import GRPOConfig as TRLConfig

    g = lab.grpo
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' renamed-argument notices
        return TRLConfig(output_dir=output_dir, per_device_train_batch_size=g.prompts_per_step * g.group,
                         num_generations=g.group, steps_per_generation=1, num_iterations=g.epochs,
                         max_completion_length=lab.warm.max_new_tokens(lab.suite), max_steps=g.steps,
                         learning_rate=lab.lr, lr_scheduler_type="constant_with_warmup",
                         warmup_steps=math.ceil(0.05 * g.steps), beta=0.0, epsilon=g.clip, temperature=g.temperature,
                         seed=seed, data_seed=seed, use_cpu=True, report_to=[], save_strategy="no",
                         logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
                         max_grad_norm=lab.max_grad_norm, bf16=lab.bf16)


def train_policy(name: str, state: dict, lab: TrlLabConfig, seed: int,
                 on_step: Callable[[], None] | None = None) -> Run:
    """GRPO with TRL's trainer from the warm-start ``state`` under policy ``name`` (``"trl"``: no cadence)."""
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOTrainer

    from cadence.curricula import CurriculumSampler
    from cadence.integrations.trl import attach

    suite, g = lab.suite, lab.grpo
    model = build_model(suite, lab.warm, seed)
    model.load_state_dict(state)
    counter: list[int] = []
    history = History()
    step_seconds: list[float] = []
    refill_seconds: list[float] = []
    cadence_seconds: list[float] = []
    max_new = lab.warm.max_new_tokens(suite)

    def record_eval(model: Any, step: int) -> None:
        result: Evaluation = evaluate_hf(model, suite, max_new, g.temperature)
        history.eval_steps.append(step)
        history.eval_rollouts.append(int(sum(counter)))
        history.eval_accuracy.append(result.pass_at_1.tolist())
        history.eval_greedy.append(result.greedy.tolist())
        history.eval_length.append(result.length)

    with tempfile.TemporaryDirectory() as out:
        trainer = GRPOTrainer(model=model, reward_funcs=[correctness_reward(suite, counter)],
                              args=grpo_args(lab, seed, out), processing_class=suite_tokenizer(suite),
                              train_dataset=train_dataset(suite))
        rounds: list[float] = []                     # seconds of each generation round in the current step
        generate = trainer._generate_and_score_completions

        def timed(inputs):
            start = time.perf_counter()
            result = generate(inputs)
            rounds.append(time.perf_counter() - start)
            return result

        trainer._generate_and_score_completions = timed
        hooks = HookClock()
        selector = None
        if name != BASELINE:
            selector = make_source(TRL_ONLY.get(name, name), suite, g, seed).selector
            for method in ("_generate_and_score_completions", "_calculate_rewards"):
                setattr(trainer, method, hooks.inner(getattr(trainer, method)))
            callback = attach(trainer, sampler=CurriculumSampler(selector.policy, batch_size=g.prompts_per_step,
                                                                 seed=seed, num_replicas=1),
                              correct="correctness", dynamic=selector.dynamic, predictive=selector.predictive,
                              pcl=selector.pcl, hints=selector.hints, replay=selector.replay,
                              downsample=d3s_token_level() if name == "d3s_token" else None,
                              guidance=None if selector.hints is None else answer_prefix_guidance(suite))
            for method in ("_generate_and_score_completions", "_calculate_rewards"):
                setattr(trainer, method, hooks.outer(getattr(trainer, method)))
            for event in [e for e in dir(callback) if e.startswith("on_")]:
                setattr(callback, event, hooks.outer(getattr(callback, event)))
        trained = trainer._generate_and_score_completions

        def groups_of(inputs):
            result = trained(inputs)
            adv = result["advantages"].detach().view(-1, g.group)
            informative = adv.abs().sum(dim=1) > 0
            history.step_groups.append(len(adv))
            history.step_informative.append(int(informative.sum()))
            history.step_useful_rollouts.append(int(informative.sum()) * g.group)
            return result

        trainer._generate_and_score_completions = groups_of

        class Recorder(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                record_eval(model, 0)
                self.hooks = hooks.spent

            def on_step_begin(self, args, state, control, **kwargs):
                rounds.clear()
                self.start, self.spent = time.perf_counter(), int(sum(counter))

            def on_step_end(self, args, state, control, model=None, **kwargs):
                step_seconds.append(time.perf_counter() - self.start)
                refill_seconds.append(float(sum(rounds[1:])))
                cadence_seconds.append(hooks.spent - self.hooks)      # since the last step ended: its hooks too
                self.hooks = hooks.spent
                history.step_rollouts.append(int(sum(counter)) - self.spent)
                if selector is not None:                # run totals: replay's rollouts saved, hints' shares, ...
                    history.step_source.append(dict(selector.values()))
                step = state.global_step
                if step % g.eval_every == 0 or step >= g.steps:
                    record_eval(model, step)
                if on_step is not None:
                    on_step()

        trainer.add_callback(Recorder())
        trainer.remove_callback(PrinterCallback)        # TRL's per-log prints; the bench shows progress
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' renamed-argument notices
            trainer.train()
    return Run(history, step_seconds, refill_seconds, cadence_seconds)


def _train_in_worker(name: str, state: dict, lab: TrlLabConfig, seed: int, queue: Any) -> Run:
    torch.set_num_threads(1)
    return train_policy(name, state, lab, seed, lambda: queue.put(name))


def run_policies(state: dict, lab: TrlLabConfig, seed: int, workers: int,
                 on_step: Callable[[str], None] | None = None) -> dict[str, Run]:
    """Every policy of ``lab`` from ``state``: in this process (``workers == 1``) or in that many
    spawned processes of one thread each, in the order of ``lab.policies`` (TRL alone and uniform
    first, so they run side by side)."""
    if workers <= 1:
        return {name: train_policy(name, state, lab, seed, None if on_step is None else (lambda n=name: on_step(n)))
                for name in lab.policies}
    return side_by_side(_train_in_worker, lab.policies, (state, lab, seed), workers, on_step)


@dataclass
class TrlComparison:
    """The outcome of :func:`compare` (the shape :func:`cadence.labs.rl.bench.ratio_rows` reads)."""

    lab: TrlLabConfig
    seed: int
    arm_names: list[str]
    warm: Evaluation
    target: float
    runs: dict[str, Run]

    @property
    def histories(self) -> dict[str, History]:
        return {name: run.history for name, run in self.runs.items()}

    def final_accuracy(self, policy: str) -> np.ndarray:
        return np.asarray(self.runs[policy].history.eval_accuracy[-1])

    def final_greedy(self, policy: str) -> np.ndarray:
        return np.asarray(self.runs[policy].history.eval_greedy[-1])

    def reach(self, policy: str) -> tuple[int | None, int | None]:
        return first_reach(self.runs[policy].history, self.target)


def compare(lab: TrlLabConfig, seed: int = 0, on_step: Callable[[str], None] | None = None,
            workers: int = 1) -> TrlComparison:
    """Warm-start once (cached), then train every policy of ``lab`` from those weights on ``seed``."""
    torch.set_num_threads(1)
    lab = lab.with_seed(seed)
    state = warm_start_hf(lab.suite, lab.warm, lab.warm_lr, seed=seed)
    model = build_model(lab.suite, lab.warm, seed)
    model.load_state_dict(state)
    warm = evaluate_hf(model, lab.suite, lab.warm.max_new_tokens(lab.suite), lab.grpo.temperature)
    runs = run_policies(state, lab, seed, workers, on_step)
    target = lab.target if lab.target is not None else best_accuracy(runs[BASELINE].history)
    return TrlComparison(lab, seed, lab.suite.arm_names, warm, target, runs)
