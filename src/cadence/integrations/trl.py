"""cadence in TRL's ``GRPOTrainer``: a curriculum chooses each generation round's prompts and learns from
every completion's signals, dynamic sampling and a predictive pre-rollout filter decide which prompt
groups a batch trains on, and schedules (a response-length budget, say) reach reward functions.

:func:`attach` adds to a built ``GRPOTrainer``:

* ``sampler=CurriculumSampler(policy, batch_size=P, num_replicas=1)`` with ``P`` prompts per
  generation round (``generation_batch_size // num_generations``). The prompts are drawn **when the
  round is generated**, after the previous round's feedback arrived (the DataLoader only hands TRL
  placeholder rows), so there is no feedback lag whatever ``steps_per_generation``,
  ``num_iterations`` and gradient accumulation are. Every process draws the same prompts (one
  policy, one RNG) and generates for its share, laid out as TRL's ``RepeatSampler`` does (each prompt
  ``num_generations`` times in a row).
* after every generation round the policy observes, per completion: the weighted total ``reward``,
  the ``advantage`` TRL computed, ``correct`` (from ``correct=``: a reward function's name with
  ``correct_threshold``, or a function) and ``length`` (completion tokens), gathered over processes.
* ``dynamic=DynamicSampling()``: each round keeps only prompt groups whose pass rate lies in the band
  and generates again for the missing prompts, up to ``max_extra_rounds``; then the best groups fill
  the batch. ``predictive=PredictiveFilter(n)`` skips prompts before generation (GRESO). Both run in
  the library's :class:`cadence.rl.PromptSelector`.
* ``pcl=PCL(ValueModel(features))``: each round scores ``pool ×`` the prompts wanted with the value
  model and generates for those predicted nearest a 0.5 pass rate (PCL); ``features`` is any function
  of row ids, e.g. :func:`prompt_embedding_features` (the policy's own prompt embeddings).
* ``replay=ReplayBuffer()`` (with ``dynamic``): the places of groups dynamic sampling drops are filled
  with stored groups of non-zero advantage, drawn ∝ ``|A|`` (VL-Rethinker's selective sample replay),
  before anything is generated again. A replayed group re-enters the batch with the tensors TRL's
  generation returned for it (ids, masks, advantages, log-probs), so TRL's loss trains on it
  unchanged; the rollouts so saved are logged (``cadence/rl/replay/saved``).
* ``hints=Hints(n)`` with ``guidance=``: a prompt whose groups stayed all wrong is generated again
  with guidance of tiers 1, 2, … (Scaf-GRPO / GHPO); the rewrite happens where cadence draws the
  prompts. ``guidance`` names a dataset column holding each row's tier texts (appended to the prompt)
  or is a function ``(row, level) -> prompt``.
* every completion generated (kept or dropped) is counted on the clock as a sample, its tokens as
  tokens; logged per round under ``cadence/rl/...`` (kept fraction, extra rounds, rollouts, groups
  filled out of band, the filter's probabilities and skipped share).
* ``knobs={"max_response_length": "ramp(start=64, end=512)"}`` and ``length_budget=LengthBudget(...)``:
  each knob's value at the current clock is added to every row, so reward functions receive it as a
  keyword argument; a length budget can also be stated in the prompt.
* ``downsample=DualDownsampling()`` (D³S, token level): the loss keeps the top completion tokens by
  ``|A|·H``, a share on the clock, through TRL's entropy-mask hook.
* ``lr=...`` schedules, logging and checkpointing work as in :func:`cadence.integrations.hf.attach`;
  layer plans run (size plans are refused: generation fixes a step's rows).

Five TRL methods are wrapped on the instance (``_generate_and_score_completions``,
``_calculate_rewards``, ``_get_train_sampler``, ``_save_checkpoint``, ``_load_optimizer_and_scheduler``;
with ``downsample`` also ``_compute_loss`` and ``get_high_entropy_mask``); their presence and parameters
are checked when attaching (an error names the method and the tested TRL versions,
:data:`cadence.integrations.versions.TESTED`), and the tests pin their behaviour at both ends of that
range. Checkpoints hold the regimen
state, and, when a checkpoint falls inside a generation round, the round's buffered completions, so
``resume_from_checkpoint`` continues exactly as the uninterrupted run.

Example (complete script: ``docs/rl.md``)::

    trainer = GRPOTrainer(model=model, reward_funcs=[accuracy], args=config, train_dataset=prompts)
    attach(trainer, sampler=CurriculumSampler(DUMP(Arms(sources)), batch_size=2, num_replicas=1),
           correct="accuracy", dynamic=DynamicSampling())
    trainer.train()
"""

from __future__ import annotations

import glob
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import Sampler

from cadence.curricula.sampler import CurriculumSampler
from cadence.errors import CadenceError, StateError
from cadence.integrations.hf import CadenceCallback
from cadence.integrations.hf import attach as attach_hf
from cadence.integrations.versions import check_methods, check_version
from cadence.progressive.sizes import BatchSizeSchedule, SequenceLengthWarmup
from cadence.rl import (PCL, DualDownsampling, DynamicSampling, Hints, LengthBudget, PredictiveFilter, PromptSelector,
                        ReplayBuffer)
from cadence.rl.hints import with_guidance
from cadence.rl.replay import ZERO as REPLAY_ZERO

ID_COLUMN = "cadence_id"
"""The key through which each row carries its item id to reward functions."""

BUFFER_FILE = "cadence_trl_buffer_rank{rank}.pt"
"""A checkpoint's file for the generation round TRL has buffered (one per process)."""

REPLAY_FILE = "cadence_trl_replay_rank{rank}.pt"
"""A checkpoint's file for the tensors of the groups the replay buffer holds (one per process)."""

WRAPPED = {"_generate_and_score_completions": ("inputs",),
           "_calculate_rewards": ("inputs", "prompts", "completions", "completion_ids_list"),
           "_get_train_sampler": None, "_save_checkpoint": ("model", "trial"),
           "_load_optimizer_and_scheduler": ("checkpoint",)}
"""The ``GRPOTrainer`` methods :func:`attach` wraps, with the parameters it calls them with (``None``: replaced)."""

DOWNSAMPLE_WRAPPED = {"_compute_loss": ("model", "inputs"), "get_high_entropy_mask": ("entropies", "mask", "threshold")}
"""What ``downsample`` (D³S's token mask) wraps as well."""

LOSS_REFUSAL = ("GRPO's per-completion objective is not a language-model loss (its sign follows the advantage), "
                "so loss-driven policies (DoReMi, Skill-It, loss reweighting) would learn from noise; choose one "
                "driven by reward, advantage or correctness (DUMP, SEC, EXP3, learning progress, PUDF, pass-rate "
                "filter), or build EXP3/LearningProgress with signal='reward'")

# row tensors TRL's generation returns, with the side their padding goes
LEFT_PADDED = {"prompt_ids", "prompt_mask"}
RIGHT_PADDED = {"completion_ids", "completion_mask", "old_per_token_logps", "ref_per_token_logps",
                "sampling_per_token_logps", "importance_sampling_ratio", "tool_mask"}


class PlaceholderSampler(Sampler[int]):
    """Row 0, ``num_samples`` times: TRL's DataLoader fetches a generation batch per micro-step, and the
    prompts are chosen when a round is generated, so what it fetches is never used."""

    def __init__(self, num_samples: int) -> None:
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        return iter([0] * self.num_samples)


def attach(trainer: Any, *, sampler: CurriculumSampler | None = None, knobs: Mapping[str, Any] | None = None,
           lr: Any = None, correct: str | Callable[..., Any] | None = None, correct_threshold: float = 1.0,
           dynamic: DynamicSampling | None = None, predictive: PredictiveFilter | None = None,
           length_budget: LengthBudget | None = None, downsample: DualDownsampling | None = None,
           pcl: PCL | None = None, hints: Hints | None = None, replay: ReplayBuffer | None = None,
           guidance: str | Callable[[dict, int], Any] | None = None, stage_rl: Any = None,
           **kwargs: Any) -> CadenceCallback:
    """Add cadence to a built ``trl.GRPOTrainer``; returns the callback (``callback.link`` holds the regimen).

    Args:
        trainer: a ``GRPOTrainer`` whose ``train_dataset`` is a map-style dataset of prompts.
        sampler: a curriculum sampler over the dataset's rows with ``batch_size`` = prompts per
            generation round and ``num_replicas=1``.
        correct: how a completion counts as correct: the name of one of the trainer's reward
            functions (correct when its reward ≥ ``correct_threshold``) or a function called like a
            TRL reward function, returning 0/1 (or bools) per completion. Needed by policies that learn
            from correctness (pass-rate filter, PUDF), by ``dynamic`` and by ``predictive``.
        dynamic: keep only in-band prompt groups, refilling (needs ``sampler`` and ``correct``).
        predictive: skip prompts predicted to give zero-variance groups (needs ``sampler`` and ``correct``).
        pcl: choose each round's prompts by a value model's predicted pass rate (needs ``sampler``, ``correct``).
        hints: re-roll plateaued all-wrong groups with ``guidance`` (needs ``sampler``, ``correct``).
        replay: fill dropped groups' places from a :class:`~cadence.rl.ReplayBuffer` of earlier groups
            with non-zero advantage (needs ``dynamic``). A replayed group keeps its stored advantages
            and log-probs: TRL weighs it against the policy that generated it (the clipped ratio) only
            when its rounds carry ``old_per_token_logps`` (a round spanning several optimizer steps,
            or vLLM's importance sampling); otherwise TRL trains on it as on-policy (ratio 1).
        guidance: a dataset column of per-row tier texts (a list; tier ``l`` appends item ``l − 1`` to
            the prompt) or a function ``(row, level) -> new prompt``.
        length_budget: a :class:`~cadence.rl.LengthBudget`: a knob under its name (for its
            ``reward_function``), stated in the prompt when built with ``in_prompt=True``.
        knobs: named schedules passed to reward functions as per-row keyword arguments.
        downsample: D³S's token level (:class:`~cadence.rl.DualDownsampling`): each loss micro-batch
            trains on the share ``token_ratio(clock)`` of its completion tokens with the largest
            ``|A|·H``, through TRL's entropy-mask hook (``get_high_entropy_mask``; TRL's own
            ``top_entropy_quantile`` must stay 1). Its rollout level is lab-only (a group's rows may
            be split over micro-batches and processes).
        stage_rl: the RL pieces per stage, a :class:`~cadence.regimen.StageRL` on ``stages=``: its current
            stage's ``predictive``, ``dynamic``, ``replay``, ``hints`` and ``length_budget`` act in each
            generation round (a :class:`~cadence.regimen.staged.StageSelector`), switching at the round of
            a stage's first step, as a plain loop's ``link.rl.current()``; instead of those keywords.
        lr, **kwargs: as for :func:`cadence.integrations.hf.attach` (``budget``, ``clock``, ``plans``
            (layer plans only), ``averaging``, ``stages``, fields).

    Raises:
        CadenceError: for a ``GRPOTrainer`` missing a wrapped method or whose method takes other parameters
            (another TRL version: the error names the tested ones), a second ``attach``, a sampler whose batch is not one round's prompts, a
            policy needing a signal GRPO cannot give (per-completion LM loss), ``dynamic``/``predictive``/a
            correctness policy without ``correct``, an unknown reward function name, a dataset that is
            not map-style or whose length differs from the arms' items, or a size plan.
    """
    check_methods(trainer, "trl", WRAPPED if downsample is None else {**WRAPPED, **DOWNSAMPLE_WRAPPED})
    check_version("trl")
    args = trainer.args
    if getattr(trainer, "_cadence_attached", False):
        raise CadenceError("cadence is already attached to this trainer; attach once, with every part")
    _refuse_size_plans(kwargs.get("plans"))
    knobs = dict(knobs or {})
    if length_budget is not None:
        if length_budget.name in knobs:
            raise CadenceError(f"the knob {length_budget.name!r} is given twice (knobs and length_budget)")
        knobs[length_budget.name] = length_budget.schedule
    correct_of = _correctness(trainer, correct, correct_threshold)
    selector = None
    per_stage = None
    if stage_rl is not None:
        if any(p is not None for p in (dynamic, predictive, pcl, hints, replay, length_budget)):
            raise CadenceError("give the RL pieces per stage (stage_rl=) or once (dynamic=, ...), not both")
        if stage_rl.stages is None or stage_rl.stages is not kwargs.get("stages"):
            raise CadenceError("stage_rl switches with the run's stages: build it on the StageRun given as stages=")
        per_stage = stage_rl.parts
        hints = next((p["hints"] for p in per_stage if p.get("hints") is not None), None)
        replay = next((p["replay"] for p in per_stage if p.get("replay") is not None), None)
    if sampler is None and any(p is not None for p in (dynamic, predictive, pcl, hints, replay)):
        raise CadenceError("dynamic sampling, the predictive filter, PCL, replay and hints choose among a curriculum's "
                           "prompts: pass sampler=CurriculumSampler(Uniform(arms), batch_size=..., num_replicas=1) too")
    if (hints is None) != (guidance is None):
        raise CadenceError("hints need guidance= (a column of tier texts or a function (row, level) -> prompt), and "
                           "guidance needs hints=Hints(...)")
    if isinstance(guidance, str) and guidance not in getattr(trainer.train_dataset, "column_names", [guidance]):
        raise CadenceError(f"guidance={guidance!r} names no column of the train_dataset")
    if guidance is not None and not isinstance(guidance, str) and not callable(guidance):
        raise CadenceError(f"guidance must be a column name or a function, got {type(guidance).__name__}")
    if per_stage is not None:
        from cadence.rl.selector import PARTS

        if sampler is None and any(p.get(k) is not None for p in per_stage for k in PARTS):
            raise CadenceError(f"{', '.join(PARTS)} choose among a curriculum's prompts: pass sampler= too")
        if sampler is not None:
            from cadence.regimen.staged import StageSelector

            selectors = [_selector(trainer, sampler, p.get("dynamic"), p.get("predictive"), correct_of is not None,
                                   None, p.get("hints"), p.get("replay")) for p in per_stage]
            selector = StageSelector(selectors[0], stage_rl)
    elif sampler is not None:
        selector = _selector(trainer, sampler, dynamic, predictive, correct_of is not None, pcl, hints, replay)
    callback = attach_hf(trainer, lr=lr, knobs=knobs, **kwargs)
    link = callback.link
    if selector is not None:
        link.policy, link.sampler = selector.policy, selector
        total = args.max_steps * args.gradient_accumulation_steps * args.generation_batch_size
        placeholders = PlaceholderSampler(total)
        trainer._get_train_sampler = lambda *_, **__: placeholders
    if downsample is not None:
        if args.top_entropy_quantile < 1.0:
            raise CadenceError("D3S sets the token mask itself: leave GRPOConfig.top_entropy_quantile at 1.0")
        _wrap_token_mask(trainer, link, downsample)
    if replay is not None:
        trainer._cadence_replay = ReplayGroups()
    if stage_rl is None:
        def lengths() -> tuple[LengthBudget | None, Any]:
            return length_budget, link.clock
    else:  # a stage's own length budget runs on the stage's progress
        def lengths() -> tuple[LengthBudget | None, Any]:
            return stage_rl.current().get("length_budget"), stage_rl.clock()
    _wrap_generation(trainer, link, selector, correct_of, lengths, guidance)
    _wrap_checkpoints(trainer)
    trainer._cadence_attached = True
    return callback


def _wrap_token_mask(trainer: Any, link: Any, downsample: DualDownsampling) -> None:
    """D³S's token mask in TRL's loss: ``_compute_loss`` keeps the micro-batch's advantages at hand and
    switches TRL's entropy mask on (share below 1); the mask hook returns the top tokens by ``|A|·H``."""
    compute_loss, current = trainer._compute_loss, {}

    def masked_compute_loss(model, inputs):
        current["advantages"] = inputs["advantages"]
        trainer.top_entropy_quantile = downsample.ratios(link.clock)[1]
        try:
            return compute_loss(model, inputs)
        finally:
            current.clear()

    def top_score_mask(entropies, mask, threshold):
        return downsample.keep_tokens(current["advantages"], entropies.detach(), mask, link.clock)

    trainer._compute_loss = masked_compute_loss
    trainer.get_high_entropy_mask = top_score_mask
def attach_regimen(regimen: Any, trainer: Any, *, after: Any = None, stop_on_transition: bool = False) -> CadenceCallback:
    """:func:`attach` with everything a regimen file holds (``Regimen.attach(trainer)`` calls it): its
    clock, stages, optimizer fields, knobs, the curriculum over ``trainer.train_dataset`` (one
    round's prompts per draw), the ``rl`` section (``predictive``, ``dynamic``, ``replay``, ``hints`` with
    ``guidance``, ``length_budget``, ``d3s``, ``correct``, ``correct_threshold``) and layer plans (by
    attribute path on ``trainer.model``); ``after`` and ``stop_on_transition`` as for
    :func:`cadence.integrations.hf.attach_regimen`."""
    from cadence.integrations.hf import finish, part_index, regimen_clock
    from cadence.regimen.pieces import PathError

    regimen = regimen.for_part(part_index(after, stop_on_transition))
    regimen.refuse("trl")
    clock = regimen_clock(regimen, trainer, after, stop_on_transition)
    stages = regimen.stage_run(clock)
    fields = regimen.lr_schedules(stages)
    args = trainer.args
    switched = [f"stages[{i}].{k}" for i, own in enumerate(regimen.stage_pieces) for k in ("curriculum", "rl")
                if k in own]
    if switched and (args.steps_per_generation != args.gradient_accumulation_steps or args.num_iterations != 1):
        raise PathError(switched[0],
                        f"a stage's own {switched[0].split('.')[-1]} switches at the generation round of the stage's "
                        f"first step; "
                        f"with steps_per_generation={args.steps_per_generation} (gradient_accumulation_steps="
                        f"{args.gradient_accumulation_steps}) and num_iterations={args.num_iterations} a round spans "
                        f"several steps: set them equal and num_iterations=1, or run the stage in a trainer of its own")
    # one generation round per optimizer step: the stage current at the draw is the stage the round trains in
    sampler = regimen.build_data(trainer.train_dataset, clock, stages, host="trl", num_replicas=1)
    rl = _host_fields(regimen)
    hinted = [p for p, names in [("rl", regimen.rl)] + [(f"stages[{i}].rl", own["rl"][0]) for i, own in
                                                        enumerate(regimen.stage_pieces) if "rl" in own]
              if "hints" in names]
    if hinted and "guidance" not in rl:
        raise PathError(f"{hinted[0]}.guidance", "TRL re-rolls hinted prompts with each row's guidance texts: name "
                                                 "their dataset column")
    staged = stages is not None and any("rl" in own for own in regimen.stage_pieces)
    pieces: dict[str, Any] = {}
    if staged:  # the selector's pieces and the length budget switch with the stage; D3S hooks TRL's loss once
        for i, own in enumerate(regimen.stage_pieces):
            if "d3s" in own.get("rl", ({},))[0]:
                raise PathError(f"stages[{i}].rl.d3s", "D3S masks TRL's loss through one hook set when attaching; "
                                                       "give it at the top level")
        if sampler is None:
            from cadence.rl.selector import PARTS

            chosen = [f"stages[{i}].rl.{k}" for i, own in enumerate(regimen.stage_pieces)
                      for k in own.get("rl", ({},))[0] if k in PARTS] + [f"rl.{k}" for k in regimen.rl if k in PARTS]
            if chosen:
                raise PathError(chosen[0], "chooses among a curriculum's prompts: give the regimen a curriculum")
        pieces["stage_rl"] = regimen.stage_rl(stages, exclude=("d3s",), num_items=len(trainer.train_dataset))
        _check_stage_lengths(regimen, pieces["stage_rl"])
        if "d3s" in regimen.rl:
            pieces["downsample"] = regimen_piece("d3s", regimen.rl["d3s"].args, len(trainer.train_dataset))
    else:
        built = {k: regimen_piece(k, regimen.rl[k].args, len(trainer.train_dataset)) for k in regimen.rl}
        pieces = dict(dynamic=built.get("dynamic"), predictive=built.get("predictive"),
                      length_budget=built.get("length_budget"), downsample=built.get("d3s"),
                      replay=built.get("replay"), hints=built.get("hints"))
    plans = regimen.build_plans(clock, trainer.model, stages) if regimen.has_plans() else None
    callback = attach(trainer, sampler=sampler, knobs=regimen.knob_schedules(stages), lr=fields.pop("lr", None),
                      correct=rl.get("correct"), correct_threshold=rl.get("correct_threshold", 1.0),
                      guidance=rl.get("guidance") if hinted else None, clock=clock, plans=plans, stages=stages,
                      averaging=regimen.build_averaging(trainer.model, clock, stages), **pieces, **fields)
    finish(callback, after, stop_on_transition)
    return callback


def _host_fields(regimen: Any) -> dict[str, Any]:
    """``rl.correct``, ``correct_threshold`` and ``guidance``, from the top level and every stage's ``rl``: TRL
    tells correct completions (and finds guidance) one way for the whole run, so they must agree."""
    from cadence.regimen.file import RL_HOST
    from cadence.regimen.pieces import PathError

    found: dict[str, Any] = {}
    sections = [("rl", regimen.data.get("rl", {}))] + [(f"stages[{i}].rl", own["rl"][1]) for i, own in
                                                       enumerate(regimen.stage_pieces) if "rl" in own]
    for path, section in sections:
        for k in RL_HOST:
            if k in section:
                if k in found and found[k] != section[k]:
                    raise PathError(f"{path}.{k}", f"is {section[k]!r}, but another rl section gives {found[k]!r}; "
                                                   f"one TRL trainer reads it one way for the whole run")
                found[k] = section[k]
    return found


def _check_stage_lengths(regimen: Any, stage_rl: Any) -> None:
    """Every stage has a length budget under one name, or none has: the reward functions read its column
    in every round."""
    from cadence.regimen.pieces import PathError

    budgets = [stage_rl.parts[j].get("length_budget") for j in stage_rl.part_of]
    if all(b is None for b in budgets):
        return
    names = {b.name for b in budgets if b is not None}
    for i, b in enumerate(budgets):
        if b is None or len(names) > 1:
            raise PathError(f"stages[{i}].rl", f"another stage has a length budget ({sorted(names)}); the reward "
                                               f"functions read its column in every round: give every stage one, "
                                               f"under one name (or one at the top level)")


def regimen_piece(name: str, args: Mapping[str, Any], num_items: int) -> Any:
    """The ``rl.<name>`` piece of a regimen file, built for a dataset of ``num_items`` prompts."""
    from cadence.regimen.pieces import RL

    return RL[name].build(args, {"num_items": num_items}, f"rl.{name}")


def _refuse_size_plans(plans: Any) -> None:
    sized = [type(p).__name__ for p in ((plans.values() if isinstance(plans, Mapping) else plans) or ())
             if isinstance(p, (SequenceLengthWarmup, BatchSizeSchedule))]
    if sized:
        raise CadenceError(f"{', '.join(sized)} cannot shape GRPO's batches: they are prompt rows whose sequences are "
                           f"generated, and each step's rows are fixed by the generation round's groups. Budget "
                           f"completion lengths with a knob the reward function reads; layer plans are supported")


@dataclass(frozen=True)
class Correctness:
    """Which completions are correct: one reward function's output at or above a threshold (``column``),
    or the user's function of TRL's reward-function arguments (``fn``, called on each process's rows)."""

    column: int | None = None
    threshold: float = 1.0
    fn: Callable[..., Any] | None = None

    def local(self, prompts: list, completions: list, completion_ids: list, inputs: list[dict]) -> list[float] | None:
        """The user's function on this process's rows (None for a reward threshold)."""
        if self.fn is None:
            return None
        columns = {k: [row[k] for row in inputs] for k in inputs[0] if k not in ("prompt", "completion",
                                                                                 "completion_ids")}
        got = self.fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
        if len(got) != len(completions):
            raise CadenceError(f"the correct= function returned {len(got)} values for {len(completions)} completions")
        return [float("nan") if c is None else float(c) for c in got]

    def of(self, per_func: torch.Tensor) -> torch.Tensor:
        """From the global rewards: 1 where the named reward reaches the threshold (NaN stays NaN)."""
        reward = per_func[:, self.column]
        return (reward >= self.threshold).float().masked_fill(torch.isnan(reward), float("nan"))


def _correctness(trainer: Any, correct: Any, threshold: float) -> Correctness | None:
    if correct is None:
        return None
    if isinstance(correct, str):
        names = list(trainer.reward_func_names)
        if correct not in names:
            raise CadenceError(f"correct={correct!r} names no reward function of this trainer; its reward functions "
                               f"are {names}")
        return Correctness(column=names.index(correct), threshold=float(threshold))
    if callable(correct):
        return Correctness(fn=correct)
    raise CadenceError(f"correct must be a reward function's name or a function, got {type(correct).__name__}")


def _selector(trainer: Any, sampler: Any, dynamic: Any, predictive: Any, has_correct: bool, pcl: Any = None,
              hints: Any = None, replay: Any = None) -> PromptSelector:
    """The prompt selector for ``sampler``, after checking it fits the trainer and its dataset."""
    args = trainer.args
    policy = getattr(sampler, "policy", None)
    if policy is None:
        raise CadenceError(f"{type(sampler).__name__} has no .policy; pass a cadence CurriculumSampler")
    for each in [part.policy for part in getattr(sampler, "parts", [sampler])]:  # every stage's (a StageSampler)
        if "loss" in each.requires:
            raise CadenceError(f"{type(each).__name__} needs per-item 'loss': {LOSS_REFUSAL}")
        if "correct" in each.requires:
            policy = each
    parts = {"dynamic sampling": dynamic, "the predictive filter": predictive, "PCL": pcl, "hints": hints}
    if not has_correct and ("correct" in policy.requires or any(p is not None for p in parts.values())):
        needs = type(policy).__name__ if "correct" in policy.requires else next(
            name for name, part in parts.items() if part is not None)
        raise CadenceError(f"{needs} needs to know which completions are correct: pass correct='<reward function "
                           f"name>' (with correct_threshold=) or correct=<function returning 0/1 per completion>")
    per_round = args.generation_batch_size // trainer.num_generations
    if sampler.batch_size != per_round:
        raise CadenceError(f"the curriculum sampler's batch_size must be the prompts per generation round, "
                           f"generation_batch_size // num_generations = {per_round}; got {sampler.batch_size}")
    if args.max_steps <= 0:
        raise CadenceError("a curriculum chooses prompts for a number of steps: set GRPOConfig(max_steps=...)")
    dataset = trainer.train_dataset
    if isinstance(dataset, torch.utils.data.IterableDataset) or not (hasattr(dataset, "__getitem__")
                                                                      and hasattr(dataset, "__len__")):
        raise CadenceError(f"a curriculum picks prompts by id: the train_dataset must be map-style (a datasets.Dataset "
                           f"or a torch Dataset with __len__ and __getitem__), not a streaming "
                           f"{type(dataset).__name__}")
    if len(dataset) != policy.arms.num_items:
        raise CadenceError(f"the curriculum's arms hold {policy.arms.num_items} items but the train_dataset has "
                           f"{len(dataset)} rows; build Arms with one key per dataset row")
    if not getattr(trainer, "shuffle_dataset", True):
        warnings.warn("shuffle_dataset=False has no effect with a cadence curriculum: the curriculum orders the "
                      "prompts (use cadence.curricula.Ordered for a fixed order)", stacklevel=3)
    world, group = args.world_size, trainer.num_generations
    return PromptSelector(sampler, predictive=predictive, dynamic=dynamic, pcl=pcl, hints=hints, replay=replay,
                          round_multiple=world // math.gcd(group, world))


def _wrap_generation(trainer: Any, link: Any, selector: Any, correct_of: Correctness | None,
                     lengths: Callable[[], tuple[LengthBudget | None, Any]], guidance: Any = None) -> None:
    """Choose each training round's prompts, observe its signals, apply dynamic sampling, count rollouts.
    ``selector``: a ``PromptSelector`` or a ``StageSelector`` (pieces per stage); ``lengths()``: the length
    budget of the round (the current stage's) and the clock it reads."""
    generate, calculate = trainer._generate_and_score_completions, trainer._calculate_rewards
    accelerator = trainer.accelerator
    rows = _rows(trainer) if selector is not None else None
    store: ReplayGroups | None = getattr(trainer, "_cadence_replay", None)
    last: dict[str, torch.Tensor] = {}

    def calculate_rewards(inputs, prompts, completions, completion_ids_list):
        per_func = calculate(inputs, prompts, completions, completion_ids_list)  # all processes' rows
        last["rewards"] = per_func
        local = None if correct_of is None else correct_of.local(prompts, completions, completion_ids_list, inputs)
        if local is not None:
            last["correct"] = accelerator.gather(torch.tensor(local, device=per_func.device))
        return per_func

    def with_knobs(inputs: list[dict]) -> list[dict]:
        values = {name: link.knob(name) for name in link.knobs}
        length_budget, clock = lengths()
        if length_budget is not None and length_budget.name not in values:  # per stage: not a link knob
            values[length_budget.name] = length_budget(clock)
        out = [{**row, **values} for row in inputs]
        if length_budget is not None and length_budget.in_prompt:
            out = [{**row, "prompt": length_budget.prompt(row["prompt"], values[length_budget.name])} for row in out]
        return out

    def scored(out: dict) -> dict[str, torch.Tensor]:
        """The round's global per-completion signals (every process holds all of them)."""
        per_func = last.pop("rewards")
        weights = trainer.reward_weights.to(per_func.device)
        reward = (per_func * weights).nansum(dim=1)
        reward[torch.isnan(per_func).all(dim=1)] = torch.nan
        mask = out["completion_mask"] if "tool_mask" not in out else out["completion_mask"] * out["tool_mask"]
        signals = {"reward": reward, "advantage": accelerator.gather(out["advantages"]),
                   "length": accelerator.gather(mask.sum(dim=1).float())}
        if correct_of is not None:
            signals["correct"] = last.pop("correct") if correct_of.fn is not None else correct_of.of(per_func)
        return {k: v.detach().float().cpu() for k, v in signals.items()}

    def generate_and_score(inputs):
        if not trainer.model.training:
            return generate(with_knobs(inputs))
        if selector is None:
            out = generate(with_knobs(inputs))
            signals = scored(out)
            link.clock.report(samples=len(signals["length"]), tokens=float(signals["length"].sum()))
            return out
        active = selector.current() if hasattr(selector, "current") else selector  # the stage's pieces in place
        rounds: list[dict] = []
        whole: dict[int, dict] = {}                      # round -> every process's rows (with replay)
        tokens = [0.0]                                   # completion tokens of every round, all processes
        group, world, rank = trainer.num_generations, accelerator.num_processes, accelerator.process_index

        def rollout(ids: np.ndarray, levels: np.ndarray | None = None) -> dict[str, np.ndarray]:
            layout = np.repeat(ids, group)               # TRL's layout: each prompt num_generations times
            share = len(layout) // world
            mine = layout[rank * share:(rank + 1) * share]
            read = {int(i): rows[int(i)] for i in np.unique(mine)}   # one dataset read per prompt, not per row
            local = [{**read[int(i)], ID_COLUMN: int(i)} for i in mine]
            if levels is not None:                       # hints: the prompt rewritten with guidance of its tier
                tier = np.repeat(levels, group)[rank * share:(rank + 1) * share]
                local = [{**row, "prompt": guided_prompt(row, int(level), guidance)} for row, level in zip(local, tier)]
            out = generate(with_knobs(local))
            rounds.append(out)
            signals: dict[str, Any] = {k: v.numpy() for k, v in scored(out).items()}
            tokens[0] += float(signals["length"].sum())
            if store is not None and levels is None:    # the tensors of each group the buffer will keep
                adv = signals["advantage"].reshape(len(ids), group)
                kept = np.all(np.isfinite(adv), axis=1) & (np.abs(np.nan_to_num(adv)).max(axis=1) > REPLAY_ZERO)
                rows_all = whole[len(rounds) - 1] = _gathered(trainer, out) if kept.any() else {}
                signals["replay"] = [store.add({k: v[i * group:(i + 1) * group] for k, v in rows_all.items()})
                                     if keep else None for i, keep in enumerate(kept)]
            return signals

        per_round = trainer.args.generation_batch_size // group
        picks = active.select(per_round, rollout, hinted=rollout if active.hints is not None else None)
        link.clock.report(samples=picks.rollouts, tokens=tokens[0])
        for key, value in {"rollouts": picks.rollouts, **active.values()}.items():
            trainer._metrics["train"][f"cadence/rl/{key}"].append(float(value))
        replayed = [store.get(serial) for serial in picks.replayed or ()] if store is not None else []
        if store is not None:  # the groups some stage's buffer still holds
            buffers = selector.every("replay") if hasattr(selector, "every") else [selector.replay]
            store.keep(entry.payload for buffer in buffers for entry in buffer.entries)
        if len(rounds) == 1 and not replayed and [i for _, i in picks.chosen] == list(range(per_round)):
            return rounds[0]
        gathered = [whole[r] if whole.get(r) else _gathered(trainer, out) for r, out in enumerate(rounds)]
        return _assemble(trainer, gathered, picks.chosen, group, replayed)

    trainer._calculate_rewards = calculate_rewards
    trainer._generate_and_score_completions = generate_and_score


def guided_prompt(row: Mapping[str, Any], level: int, guidance: str | Callable[[dict, int], Any]) -> Any:
    """The row's prompt with guidance of tier ``level`` (1-based): ``guidance(row, level)``, or tier text
    ``row[guidance][level − 1]`` appended to the prompt (to the last message of a conversation).

        >>> guided_prompt({"prompt": "2+2=", "hint": [" (add)", " 4"]}, 2, "hint")
        '2+2= 4'
    """
    if callable(guidance):
        return guidance(dict(row), level)
    if guidance not in row:
        raise CadenceError(f"the rows reaching generation lack the guidance column {guidance!r} (was it removed as "
                           f"unused? set remove_unused_columns=False)")
    tiers = row[guidance]
    if not isinstance(tiers, (list, tuple)) or not tiers:
        raise CadenceError(f"column {guidance!r} must hold a list of guidance texts per row, got {tiers!r}")
    return with_guidance(row["prompt"], tiers[min(level, len(tiers)) - 1])


def prompt_embedding_features(trainer: Any, dim: int = 32, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Features for PCL's :class:`~cadence.rl.ValueModel` from the policy itself: the mean input
    embedding of each row's prompt tokens (string prompts; conversations use their messages' text),
    projected to ``dim`` by a fixed random Gaussian matrix (a small regressor; seeded)."""
    model, tokenizer, dataset = trainer.model, trainer.processing_class, trainer.train_dataset
    projection: list[torch.Tensor] = []

    def text(prompt: Any) -> str:
        return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)

    @torch.no_grad()
    def features(ids: np.ndarray) -> np.ndarray:
        table = model.get_input_embeddings().weight
        if not projection:
            g = torch.Generator().manual_seed(seed)
            projection.append(torch.randn(table.shape[1], dim, generator=g) / dim ** 0.5)
        rows = []
        for i in np.asarray(ids).reshape(-1):
            tokens = tokenizer(text(dataset[int(i)]["prompt"]), add_special_tokens=False)["input_ids"]
            rows.append(table[torch.as_tensor(tokens, device=table.device)].float().mean(0).cpu()
                        if len(tokens) else torch.zeros(table.shape[1]))
        return (torch.stack(rows) @ projection[0]).numpy().astype(np.float64)

    return features


def _rows(trainer: Any) -> Any:
    """The dataset the prompts are read from, with the columns TRL would keep."""
    dataset = trainer.train_dataset
    if hasattr(dataset, "column_names"):
        dataset = trainer._remove_unused_columns(dataset, description="training")
    return dataset


def _gathered(trainer: Any, out: dict) -> dict[str, torch.Tensor]:
    """Every process's rows of one generation output, padded to one width (``num_items_in_batch`` left out)."""
    accelerator = trainer.accelerator
    unknown = set(out) - LEFT_PADDED - RIGHT_PADDED - {"advantages", "num_items_in_batch"}
    if unknown:
        raise CadenceError(f"dynamic sampling in TRL assembles text batches; this round also has {sorted(unknown)} "
                           f"(multimodal inputs are not supported)")
    result = {}
    for key, t in out.items():
        if key == "num_items_in_batch":
            continue
        if t.dim() > 1 and accelerator.num_processes > 1:
            t = accelerator.pad_across_processes(t, dim=1, pad_index=_pad(trainer, key), pad_first=key in LEFT_PADDED)
        result[key] = accelerator.gather(t)
    return result


def _pad(trainer: Any, key: str) -> int:
    """The padding value of a generation output's tensor."""
    return trainer._tokenizer.pad_token_id if key in ("prompt_ids", "completion_ids") else int(key == "tool_mask")


def _assemble(trainer: Any, rounds: list[dict], chosen: list[tuple[int, int]], group: int,
              replayed: list[dict] = ()) -> dict:
    """This process's share of the chosen groups of every round (as :func:`_gathered` returns them),
    followed by the ``replayed`` groups' stored tensors, as one generation output."""
    accelerator = trainer.accelerator
    keys = list(rounds[0])
    for stored in replayed:
        if set(stored) != set(keys):
            raise CadenceError(f"a replayed group holds {sorted(stored)} but this round's generation returns "
                               f"{sorted(keys)}: the GRPOConfig changed what TRL computes since it was stored")
    groups = [{k: rounds[r][k][i * group:(i + 1) * group] for k in keys} for r, i in chosen]
    groups += [{k: stored[k].to(rounds[0][k].device) for k in keys} for stored in replayed]
    out: dict[str, Any] = {}
    for key in keys:
        left, pad = key in LEFT_PADDED, _pad(trainer, key)
        parts = [g[key] for g in groups]
        if parts[0].dim() > 1:
            width = max(p.shape[1] for p in parts)
            extra = [p.new_full((p.shape[0], width - p.shape[1], *p.shape[2:]), pad) for p in parts]
            parts = [torch.cat([e, p] if left else [p, e], dim=1) for e, p in zip(extra, parts)]
        merged = torch.cat(parts)
        share = len(merged) // accelerator.num_processes
        out[key] = merged[accelerator.process_index * share:(accelerator.process_index + 1) * share]
    mask = out["completion_mask"] if "tool_mask" not in out else out["completion_mask"] * out["tool_mask"]
    out["num_items_in_batch"] = accelerator.gather(mask.sum()).sum()
    return out


class ReplayGroups:
    """The tensors of the groups a :class:`~cadence.rl.ReplayBuffer` may replay, by serial number.

    The buffer's payload for a group is its serial (plain data, stored with the regimen's state);
    the tensors (every process's rows of the group, on the CPU) travel in a checkpoint file of their
    own (:data:`REPLAY_FILE`), which ``torch.load(weights_only=True)`` reads.

        >>> groups = ReplayGroups()
        >>> serial = groups.add({"advantages": torch.tensor([1.0, -1.0])})
        >>> groups.get(serial)["advantages"].tolist(), groups.keep([]), len(groups.groups)
        ([1.0, -1.0], None, 0)
    """

    kind = "cadence.trl.ReplayGroups"

    def __init__(self) -> None:
        self.groups: dict[int, dict[str, torch.Tensor]] = {}
        self.next = 0

    def add(self, tensors: Mapping[str, torch.Tensor]) -> int:
        """Keep a CPU copy of one group's tensors; returns its serial."""
        serial, self.next = self.next, self.next + 1
        self.groups[serial] = {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}
        return serial

    def get(self, serial: int) -> dict[str, torch.Tensor]:
        if int(serial) not in self.groups:
            raise StateError(f"the replay buffer holds group {serial}, whose tensors are missing (a checkpoint "
                             f"without its {REPLAY_FILE.format(rank='*')}?)")
        return self.groups[int(serial)]

    def keep(self, serials: Any) -> None:
        """Forget every group but ``serials`` (those still in the buffer)."""
        live = {int(s) for s in serials}
        self.groups = {s: g for s, g in self.groups.items() if s in live}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "next": self.next, "groups": dict(self.groups)}

    def load_state_dict(self, state: Any) -> None:
        if not isinstance(state, Mapping) or state.get("kind") != self.kind:
            raise StateError(f"not a {self.kind} state_dict")
        try:
            groups = {int(s): {str(k): torch.as_tensor(v) for k, v in g.items()} for s, g in state["groups"].items()}
            serial = int(state["next"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise StateError(f"malformed {self.kind} state_dict: {e!r}") from None
        self.groups, self.next = groups, serial


def _wrap_checkpoints(trainer: Any) -> None:
    """Save the generation round TRL has buffered with each checkpoint that falls inside it (and, with
    replay, the tensors of the buffer's groups with every checkpoint), and put them back (with TRL's
    micro-step counter) on resume, so the resumed run trains on the same completions."""
    save, load = trainer._save_checkpoint, trainer._load_optimizer_and_scheduler

    def save_checkpoint(model, trial):
        save(model, trial)
        folder = os.path.join(trainer._get_output_dir(trial=trial), f"checkpoint-{trainer.state.global_step}")
        generate_every = trainer.args.steps_per_generation * trainer.num_iterations
        if trainer._buffered_inputs is not None and trainer._step % generate_every:
            os.makedirs(folder, exist_ok=True)
            torch.save({"step": trainer._step, "buffer": trainer._buffered_inputs},
                       os.path.join(folder, BUFFER_FILE.format(rank=trainer.accelerator.process_index)))
        store = getattr(trainer, "_cadence_replay", None)
        if store is not None:
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, REPLAY_FILE.format(rank=trainer.accelerator.process_index))
            torch.save(store.state_dict(), path)

    def load_optimizer_and_scheduler(checkpoint):
        load(checkpoint)
        if checkpoint is None:
            return
        trainer._step = trainer.state.global_step * trainer.args.gradient_accumulation_steps
        _load_replay_groups(trainer, checkpoint)
        path = os.path.join(checkpoint, BUFFER_FILE.format(rank=trainer.accelerator.process_index))
        generate_every = trainer.args.steps_per_generation * trainer.num_iterations
        saved_world = len(glob.glob(os.path.join(checkpoint, BUFFER_FILE.format(rank="*"))))
        if saved_world and saved_world != trainer.accelerator.num_processes:
            raise CadenceError(f"{checkpoint} falls inside a generation round whose completions were split over "
                               f"{saved_world} processes ({BUFFER_FILE.format(rank='*')}); they cannot be re-split over "
                               f"{trainer.accelerator.num_processes}. Resume it with {saved_world} processes, or from a "
                               f"checkpoint between generation rounds (its step × gradient_accumulation_steps a multiple of "
                               f"steps_per_generation × num_iterations)")
        if os.path.exists(path):
            saved = torch.load(path, map_location=trainer.accelerator.device, weights_only=True)
            trainer._step, trainer._buffered_inputs = int(saved["step"]), saved["buffer"]
        elif trainer._step % generate_every:
            warnings.warn(f"{checkpoint} falls inside a generation round but holds no buffered round "
                          f"({BUFFER_FILE.format(rank=trainer.accelerator.process_index)}): the resumed run generates "
                          f"that round anew and differs from an uninterrupted one", stacklevel=2)

    trainer._save_checkpoint = save_checkpoint
    trainer._load_optimizer_and_scheduler = load_optimizer_and_scheduler


def _load_replay_groups(trainer: Any, checkpoint: str) -> None:
    """Put back the replay buffer's group tensors a checkpoint holds (with replay attached)."""
    store = getattr(trainer, "_cadence_replay", None)
    if store is None:
        return
    path = os.path.join(checkpoint, REPLAY_FILE.format(rank=trainer.accelerator.process_index))
    if not os.path.exists(path):
        raise StateError(f"{checkpoint} holds no replayed groups' tensors ({os.path.basename(path)}): it was saved "
                         f"without replay, or by another number of processes")
    store.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
