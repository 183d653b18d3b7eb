"""cadence in TRL's ``GRPOTrainer``: a curriculum chooses the prompts, learns from each generation
round's rewards and advantages, and schedules (a response-length budget, say) reach reward functions.

:func:`attach` adds to a built ``GRPOTrainer``:

* ``sampler=CurriculumSampler(policy, batch_size=P, num_replicas=1)`` with ``P`` prompts per
  generation round (``generation_batch_size // num_generations``): :class:`RepeatLayout` lays the
  curriculum's choices out exactly as TRL's ``RepeatSampler`` does (each prompt ``num_generations``
  times in a row, each round's block ``num_iterations × steps_per_generation`` times); every process
  draws the same global stream, so prompt groups stay consistent across processes.
* after every training generation round, the policy observes one value per completion: the
  weighted total ``reward`` and the ``advantage`` TRL computed (prompt id repeated once per rollout),
  gathered across processes.
* ``knobs={"max_response_length": "ramp(start=64, end=512)"}``: each knob's value at the current
  clock is added to every row, so reward functions receive it as a keyword argument.
* ``lr=...`` schedules, logging and checkpointing work as in :func:`cadence.integrations.hf.attach`.
* ``plans=[LayerFreezing(...)]`` or ``RandomizedProgressive(...)`` (layer plans on the run's clock)
  choose the layers each step trains, updated before the step's generation round and forward
  pass, logged and checkpointed. Size plans are refused: GRPO's batches are prompt rows, their
  sequence length is the generation's (budget it with a knob the reward reads), and the rows per
  step are fixed by the generation round and its groups, which the advantages are computed over.

Three TRL methods are wrapped on the instance (``_prepare_inputs``, ``_generate_and_score_completions``
and ``_calculate_rewards``); the tests pin their behaviour for TRL 1.16 (the ``trl`` extra's minimum).
Checkpoints hold the curriculum, the position in the repeat layout and the prefetched rows, so
``resume_from_checkpoint`` continues with the prompts the uninterrupted run would have used.

Example (complete script: ``docs/integrations/trl.md``)::

    def brevity(completions, max_response_length, **kwargs):
        return [1.0 if len(c) <= b else 0.0 for c, b in zip(completions, max_response_length)]

    trainer = GRPOTrainer(model=model, reward_funcs=[brevity], args=config, train_dataset=prompts)
    attach(trainer, sampler=CurriculumSampler(DUMP(Arms(sources)), batch_size=2, num_replicas=1),
           knobs={"max_response_length": "ramp(start=4, end=16)"})
    trainer.train()
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import Sampler

from cadence.errors import CadenceError, StateError
from cadence.integrations.hf import CadenceCallback
from cadence.integrations.hf import attach as attach_hf
from cadence.integrations.tracking import TrackedSampler
from cadence.progressive.sizes import BatchSizeSchedule, SequenceLengthWarmup

ID_COLUMN = "cadence_id"
"""The dataset column through which each row carries its item id to the feedback."""


class RepeatLayout(Sampler[int]):
    """TRL's ``RepeatSampler`` layout over a curriculum's choices.

    Each block of ``prompts_per_block`` ids is one global batch of ``sampler``; every id appears
    ``num_generations`` times in a row, and the block is yielded ``repeat`` times. ``num_samples``
    ids are yielded over the whole run. The position inside the current block is part of
    :meth:`state_dict` (with the curriculum sampler's state), so a resumed run continues mid-block.

        >>> from cadence.curricula import Arms, CurriculumSampler, Uniform
        >>> layout = RepeatLayout(CurriculumSampler(Uniform(Arms(list("abcd"))), batch_size=2, num_replicas=1),
        ...                       num_generations=2, repeat=2, num_samples=8)
        >>> ids = list(layout); ids[:4] == ids[4:], ids[0] == ids[1], ids[2] == ids[3]
        (True, True, True)
    """

    def __init__(self, sampler: Any, *, num_generations: int, repeat: int, num_samples: int) -> None:
        if getattr(sampler, "num_replicas", 1) != 1:
            raise CadenceError("build the CurriculumSampler with num_replicas=1: every process must draw the same "
                               "global prompt stream, and the trainer shards it")
        self.sampler, self.num_generations, self.repeat = sampler, num_generations, repeat
        self.num_samples = num_samples
        self.policy = sampler.policy
        self._stream: Iterator[int] | None = None
        self._block: np.ndarray = np.zeros(0, dtype=np.int64)  # the current block, laid out
        self._pos = 0                                           # ids of the laid-out block yielded
        self._emitted = 0                                       # ids yielded over the run

    def __len__(self) -> int:
        return self.num_samples

    def _draw_block(self) -> np.ndarray:
        out = []
        for _ in range(self.sampler.batch_size):
            if self._stream is None:
                self._stream = iter(self.sampler)
            try:
                out.append(int(next(self._stream)))
            except StopIteration:
                self._stream = iter(self.sampler)
                out.append(int(next(self._stream)))
        return np.tile(np.repeat(out, self.num_generations), self.repeat)

    def __iter__(self) -> Iterator[int]:
        while self._emitted < self.num_samples:
            if self._pos >= len(self._block):
                self._block, self._pos = self._draw_block(), 0
            item = int(self._block[self._pos])
            self._pos += 1
            self._emitted += 1
            yield item

    def state_dict(self) -> dict[str, Any]:
        """The curriculum sampler's state and the position in the current block."""
        return {"kind": "cadence.RepeatLayout", "sampler": self.sampler.state_dict(), "block": self._block.copy(),
                "pos": self._pos, "emitted": self._emitted}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the curriculum sampler validates its own part first."""
        if not isinstance(state, Mapping) or state.get("kind") != "cadence.RepeatLayout":
            raise StateError("not a RepeatLayout state_dict (missing kind='cadence.RepeatLayout')")
        self.sampler.load_state_dict(state["sampler"])
        self._block = np.asarray(state["block"], dtype=np.int64).copy()
        self._pos, self._emitted, self._stream = int(state["pos"]), int(state["emitted"]), None


def attach(trainer: Any, *, sampler: Any = None, knobs: Mapping[str, Any] | None = None, lr: Any = None,
           **kwargs: Any) -> CadenceCallback:
    """Add cadence to a built ``trl.GRPOTrainer``; returns the callback (``callback.link`` holds the regimen).

    Args:
        trainer: a ``GRPOTrainer`` whose ``train_dataset`` is a ``datasets.Dataset`` of prompts.
        sampler: a curriculum sampler over the dataset's rows with ``batch_size`` = prompts per
            generation round and ``num_replicas=1``; its policy observes ``reward`` and ``advantage``.
        knobs: named schedules passed to reward functions as per-row keyword arguments.
        lr, **kwargs: as for :func:`cadence.integrations.hf.attach` (``budget``, ``clock``, ``plans``
            (layer plans only), fields).

    Raises:
        CadenceError: for a sampler whose batch is not one round's prompts, a policy needing a
            signal GRPO does not produce, a dataset without ``add_column``, or a size plan.
    """
    args = trainer.args
    plans = kwargs.get("plans") or ()
    sized = [type(p).__name__ for p in (plans.values() if isinstance(plans, Mapping) else plans)
             if isinstance(p, (SequenceLengthWarmup, BatchSizeSchedule))]
    if sized:
        raise CadenceError(f"{', '.join(sized)} cannot shape GRPO's batches: they are prompt rows whose sequences are "
                           f"generated, and each step's rows are fixed by the generation round's groups. Budget "
                           f"completion lengths with a knob the reward function reads; layer plans are supported")
    callback = attach_hf(trainer, lr=lr, knobs=knobs, **kwargs)
    link = callback.link
    if sampler is not None:
        policy = getattr(sampler, "policy", None)
        if policy is None:
            raise CadenceError(f"{type(sampler).__name__} has no .policy; pass a cadence CurriculumSampler")
        unavailable = set(policy.requires) - {"reward", "advantage"}
        if unavailable:
            raise CadenceError(f"{type(policy).__name__} needs {sorted(unavailable)}, but GRPO feedback gives "
                               f"reward and advantage")
        per_round = args.generation_batch_size // trainer.num_generations
        if sampler.batch_size != per_round:
            raise CadenceError(f"the curriculum sampler's batch_size must be the prompts per generation round, "
                               f"generation_batch_size // num_generations = {per_round}; got {sampler.batch_size}")
        if args.max_steps <= 0:
            raise CadenceError("a curriculum chooses prompts for a number of steps: set GRPOConfig(max_steps=...)")
        if not hasattr(trainer.train_dataset, "add_column"):
            raise CadenceError("the train_dataset must be a datasets.Dataset (rows carry their id in a column)")
        trainer.train_dataset = trainer.train_dataset.add_column(ID_COLUMN, list(range(len(trainer.train_dataset))))
        total = args.max_steps * args.gradient_accumulation_steps * args.generation_batch_size
        layout = RepeatLayout(sampler, num_generations=trainer.num_generations,
                              repeat=trainer.num_iterations * args.steps_per_generation, num_samples=total)
        tracked = TrackedSampler(layout, total, world=args.world_size, rank=args.process_index,
                                 host_skips=not args.ignore_data_skip)
        trainer._get_train_sampler = lambda *_, **__: tracked
        link.policy, link.sampler, link.tracker = policy, layout, tracked
    _wrap_generation(trainer, link)
    return callback


def _wrap_generation(trainer: Any, link: Any) -> None:
    """Add knob columns to each round's rows and send the round's rewards and advantages to the policy."""
    generate, calculate, prepare = (trainer._generate_and_score_completions, trainer._calculate_rewards,
                                    trainer._prepare_inputs)
    last: dict[str, torch.Tensor] = {}

    def prepare_inputs(generation_batch):  # one fetched batch per micro-step, used or (repeats) not
        if link.tracker is not None and trainer.model.training:
            link.tracker.consume(len(generation_batch))
        return prepare(generation_batch)

    def calculate_rewards(inputs, prompts, completions, completion_ids_list):
        per_func = calculate(inputs, prompts, completions, completion_ids_list)  # all processes' rows
        last["rewards"] = per_func
        return per_func

    def generate_and_score(inputs):
        values = {name: link.knob(name) for name in link.knobs}
        inputs = [{**row, **values} for row in inputs]
        out = generate(inputs)
        if link.policy is not None and trainer.model.training:
            per_func = last.pop("rewards")
            weights = trainer.reward_weights.to(per_func.device)
            total = (per_func * weights).nansum(dim=1)
            total[torch.isnan(per_func).all(dim=1)] = torch.nan
            rank, n = trainer.accelerator.process_index, len(inputs)
            link.observe([row[ID_COLUMN] for row in inputs], reward=total[rank * n:(rank + 1) * n],
                         advantage=out["advantages"])
        return out

    trainer._calculate_rewards = calculate_rewards
    trainer._generate_and_score_completions = generate_and_score
    trainer._prepare_inputs = prepare_inputs
