"""cadence in a Hugging Face ``Trainer``: schedules, a curriculum, checkpoints and logs, no subclass.

One call, :func:`attach`, after building the Trainer:

* ``lr="wsd(peak=3e-4, warmup=5%, decay=20%)"`` (plus any param-group field, e.g.
  ``weight_decay=...``) replaces ``lr_scheduler_type``: the Trainer's own optimizer is driven by a
  :class:`~cadence.optim.ScheduledLR` on a clock whose budget is the Trainer's ``max_steps``.
  A ``ScheduledLR`` passed with ``Trainer(optimizers=(opt, sched))`` is picked up as is.
* ``sampler=CurriculumSampler(policy, batch_size=...)`` makes the curriculum choose the training
  order (the Trainer's sampler is replaced on the instance) and feeds it per-sample losses, computed
  from the logits by ``compute_loss_func``, once per optimizer step.
* cadence state (clock, schedules, policy and sampler incl. RNGs, drawn-but-unused item ids) is
  stored in each checkpoint's ``trainer_state.json`` through the ``ExportableState`` protocol and
  restored by ``trainer.train(resume_from_checkpoint=...)``; the resumed run matches the
  uninterrupted one exactly.
* ``plans=[LayerFreezing(...), ...]`` (``cadence.progressive``, built on the run's clock) are
  updated when a step's batches are taken from the data loader (after the previous step moved the
  clock, before the forward pass) and checkpointed with the rest. Each batch taken for training
  passes through the plans (a ``SequenceLengthWarmup`` cuts it to the step's length), and a
  ``BatchSizeSchedule`` becomes the Trainer's batch sampler, drawing each batch with the size of
  the step it trains in (see ``docs/integrations/hf.md``).
* learning rates per group, knob values, progress, arm probabilities and plan values are added to
  every log (``on_log``), so TensorBoard, W&B or the console show them with no extra code.
* ``averaging=EMA(trainer.model, clock, ...)`` (``cadence.averaging``; or a regimen's
  ``StageAveraging``) is updated after every optimizer step, once the clock and the stages have
  moved, as a plain loop does; its state travels in each checkpoint's :data:`AVERAGING_FILE`.
  Read the average from ``callback.averaging``.

Example (see ``docs/integrations/hf.md`` for a complete script)::

    trainer = Trainer(model=model, args=TrainingArguments(max_steps=200, ...), train_dataset=ds)
    attach(trainer, lr="wsd(peak=1e-3, warmup=5%, decay=20%)",
           sampler=CurriculumSampler(DoReMi(Arms(keys), reference=ref), batch_size=args.per_device_train_batch_size))
    trainer.train()

With a curriculum, training runs for ``max_steps`` in one long epoch (``args.max_steps`` must be
set). On resume the Trainer fast-forwards past the batches it trained; the tracked sampler feeds it
placeholders for those, so the Trainer's RNG restore (dropout) stays exact too.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_pt_utils import BatchRebalanceSampler

from cadence.clock import Clock
from cadence.errors import CadenceError, StateError
from cadence.integrations.jsonstate import decode, encode
from cadence.regimen.file import Regimen
from cadence.regimen.link import Plans, RegimenLink, plans_clock
from cadence.regimen.staged import StageBatchSizes, StagePlans
from cadence.regimen.stages import StageRun
from cadence.integrations.tracking import TrackedSampler
from cadence.integrations.versions import check_methods, check_version
from cadence.optim import ScheduledLR
from cadence.progressive.sizes import BatchSizeSchedule, ScheduledBatchSampler

WRAPPED = {"_get_train_sampler": None, "get_batch_samples": ("epoch_iterator", "num_batches", "device")}
"""The ``Trainer`` methods :func:`attach` replaces or wraps, with the parameters it calls them with."""

AVERAGING_WRAPPED = {"_save_checkpoint": ("model", "trial"), "_load_optimizer_and_scheduler": ("checkpoint",)}
"""What ``averaging`` wraps as well: its averages travel in a checkpoint file of their own."""

AVERAGING_FILE = "cadence_averaging.pt"
"""A checkpoint's file for the averager's state (tensors; ``torch.load(weights_only=True)`` reads it)."""

PerSampleLoss = Callable[[Any, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def causal_lm_loss(outputs: Any, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample summed next-token cross-entropy and per-sample token counts (labels ``-100`` ignored).

        >>> logits = torch.zeros(2, 3, 4)
        >>> summed, counts = causal_lm_loss({"logits": logits}, torch.tensor([[0, 1, 2], [0, 1, -100]]))
        >>> counts.tolist(), round(float(summed[1] / counts[1]), 4)
        ([2, 1], 1.3863)
    """
    logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
    logits, targets = logits[:, :-1, :].float(), labels[:, 1:].to(logits.device)
    token_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                 ignore_index=-100, reduction="none").view(targets.shape)
    return token_loss.sum(dim=1), (targets != -100).sum(dim=1)


class CadenceCallback(TrainerCallback, ExportableState):
    """Steps the link, feeds the curriculum, logs regimen values and checkpoints cadence state.

    Built by :func:`attach`; construct it yourself only to log/checkpoint a link without a curriculum.
    """

    def __init__(self, link: RegimenLink | None = None, per_sample_loss: PerSampleLoss = causal_lm_loss,
                 averaging: Any = None) -> None:
        if link is None:
            raise CadenceError("CadenceCallback needs a RegimenLink; build it with cadence.integrations.hf.attach")
        self.link, self.per_sample_loss, self.averaging = link, per_sample_loss, averaging
        self._ids: list[np.ndarray] = []
        self._losses: list[np.ndarray] = []
        self._local = np.zeros(2)  # this process's samples and label tokens in the current step
        self._step = 0  # the Trainer's global step the state belongs to
        self._used: dict[str, float] = {}  # scheduled optimizer fields the last optimizer step used
        self._deferred = False  # the Trainer loaded a scheduler state before the stages' state came back
        self._stop = False  # a stage ended and the Trainer runs one stage only

    def _defer_scheduler_state(self, state: Any) -> None:
        self._deferred = True

    # ------------------------------------------------------------------ loss (Trainer.compute_loss_func)
    def compute_loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        """The Trainer's loss (token-level mean, or sum / ``num_items_in_batch``), recording per-sample losses."""
        summed, counts = self.per_sample_loss(outputs, labels)
        if torch.is_grad_enabled() and self.link.tracker is not None:  # training, not evaluation
            self._ids.append(self.link.tracker.consume(labels.shape[0]))
            self._losses.append((summed.detach() / counts.clamp(min=1)).float().cpu().numpy())
            self._local += (labels.shape[0], float(counts.sum()))  # summed over processes once per step
        denominator = num_items_in_batch if num_items_in_batch is not None else counts.sum().clamp(min=1)
        return summed.sum() / denominator

    # ------------------------------------------------------------------ events
    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.link.begin_step()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Before the scheduler moves the clock: every process counts the global step, so the clocks
        (and sample or token budgets) agree."""
        if self.link.tracker is not None:
            samples, tokens = self._local
            self.link.count_global_step(samples=float(samples), tokens=float(tokens))
            self._local = np.zeros(2)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step = state.global_step
        if self.link.scheduler is not None:
            self.link.scheduler.__dict__.pop("load_state_dict", None)  # the link loads it itself from now on
        stored = state.stateful_callbacks.get(type(self).__name__)
        saved = (stored or {}).get("attributes", {}).get("cadence") if isinstance(stored, dict) else None
        if state.global_step > 0 and saved is not None:
            if saved.get("global_step") != state.global_step:
                raise StateError(f"cadence state was saved at step {saved.get('global_step')}, "
                                 f"but the checkpoint is at step {state.global_step}")
            self.link.load_state_dict(decode(saved)["link"])
        elif self._deferred:
            raise StateError("the checkpoint holds a scheduler state but no cadence state to restore the stages from")

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # the optimizer has just stepped with these values; the scheduler moves them on right after
        if self.link.scheduler is not None:
            self._used = {self.link.prefix + k: v for k, v in self.link.scheduler.values().items()}

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step = state.global_step
        if self._ids:  # before the stage may end: the step's feedback goes to the policy that drew its ids
            ids, losses = np.concatenate(self._ids), np.concatenate(self._losses)
            self._ids, self._losses = [], []
            self.link.observe(ids, loss=losses)
        if self.link.scheduler is None:
            self.link.step()
        else:
            self.link.after_step()  # stages whose budget is used up end here
        if self.averaging is not None:  # after the clock and the stages moved, as in a plain loop
            self.averaging.update()
        if self._stop:
            control.should_training_stop = True

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if logs is not None:
            self.link.log(logs)  # the stages' rules read the logged (and evaluation) metrics
            if self.link.done or self._stop:
                control.should_training_stop = True
        if logs is None or not any(k in logs for k in ("loss", "train_loss")):
            return
        values = self.link.values()
        values.update(self._used)  # cadence/lr/<g> = the LR the last step used, as the Trainer's learning_rate
        logs.update(values)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(values)

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        """``ExportableState``: the link's state as JSON, stored in ``trainer_state.json``."""
        return {"args": {}, "attributes": {"cadence": encode({"link": self.link.state_dict(), "global_step": self._step})}}


class LiveForecastCallback(TrainerCallback):
    """Feeds the Trainer's logged training loss to a :class:`~cadence.forecast.live.LiveForecast`
    (main process only) and adds its latest ``cadence/forecast/final_loss``, ``…/low``, ``…/high``
    to every log that has a loss. Fits run in a worker process (or thread), never on the training step.

    Build the forecast from the run's link: ``LiveForecastCallback(link.live_forecast(every=100))``.
    """

    def __init__(self, forecast: Any) -> None:
        self.forecast = forecast

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if logs is None or "loss" not in logs or not state.is_world_process_zero:
            return
        self.forecast.observe(state.global_step, logs["loss"])
        values = self.forecast.values()
        logs.update(values)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(values)


def attach(
    trainer: Trainer,
    *,
    lr: Any = None,
    budget: Any = None,
    clock: Clock | None = None,
    knobs: Mapping[str, Any] | None = None,
    sampler: Any = None,
    plans: Plans | None = None,
    per_sample_loss: PerSampleLoss = causal_lm_loss,
    stages: StageRun | None = None,
    averaging: Any = None,
    **fields: Any,
) -> CadenceCallback:
    """Add cadence to a built ``Trainer`` and return the callback that carries it.

    Args:
        trainer: a ``transformers.Trainer`` (or subclass such as TRL's) not yet trained.
        lr: a schedule or spec for the learning rate; with ``**fields`` (``weight_decay=...``) builds
            the Trainer's optimizer and a :class:`~cadence.optim.ScheduledLR` driving it.
        budget: the clock's budget (default: the Trainer's ``max_steps``); ignored if ``clock`` is given.
        clock: the clock to run on (default: the plans' clock, else a new one with ``budget``).
        knobs: other named schedules, logged and read with ``callback.link.knob(name)``.
        sampler: a curriculum sampler (``cadence.curricula.CurriculumSampler``) yielding item ids of
            ``trainer.train_dataset``; its ``policy`` receives per-sample losses.
        plans: progressive plans (``{name: plan}`` or a sequence) built on the run's clock (give it
            ``budget=args.max_steps``); updated when a step's batches are taken, applied to each of
            them, logged under ``cadence/plan/<name>/``, checkpointed. A ``BatchSizeSchedule``
            (``batches_per_step`` = accumulation steps × processes) becomes the batch sampler.
        per_sample_loss: ``(outputs, labels) -> (summed loss per sample, token count per sample)``;
            the default is next-token cross-entropy for causal LMs.
        stages: a :class:`~cadence.regimen.StageRun` on ``clock``: stages end on their budget after a
            step, or on their rules over the Trainer's logs (evaluation metrics included); when the
            last stage ends on a rule the Trainer stops.
        averaging: a weight averager over ``trainer.model`` on the run's clock (``cadence.averaging.EMA``,
            ``CheckpointAverage``, or a regimen's ``StageAveraging``), updated after every optimizer step
            and checkpointed in :data:`AVERAGING_FILE`.

    Raises:
        CadenceError: for a Trainer that already has a non-cadence scheduler and ``lr`` is given,
            a curriculum or batch-size plan without ``args.max_steps``, a batch-size plan with a
            curriculum or the wrong ``batches_per_step``, a ``compute_loss_func`` already set, or
            ``restore_callback_states_from_checkpoint=True`` (cadence restores its own state).
    """
    check_methods(trainer, "transformers", WRAPPED if averaging is None else {**WRAPPED, **AVERAGING_WRAPPED})
    check_version("transformers")
    check_version("accelerate")
    args = trainer.args
    if getattr(args, "restore_callback_states_from_checkpoint", False):
        raise CadenceError("set restore_callback_states_from_checkpoint=False: cadence restores its own state "
                           "on resume, and the Trainer's generic restore would replace its callback")
    scheduler = trainer.lr_scheduler if isinstance(trainer.lr_scheduler, ScheduledLR) else None
    sized = _batch_plan(trainer, plans, sampler)
    if clock is None:
        clock = plans_clock(plans)
    if lr is not None or fields:
        if trainer.lr_scheduler is not None:
            raise CadenceError("this Trainer already has an lr_scheduler; pass lr= to attach() or the scheduler, not both")
        if clock is None:
            clock = Clock(budget=budget if budget is not None else _max_steps(trainer, sampler))
        trainer.create_optimizer()
        scheduler = ScheduledLR(trainer.optimizer, lr, clock=clock, **fields)
        trainer.lr_scheduler = scheduler
    elif clock is None and scheduler is None:
        clock = Clock(budget=budget if budget is not None else _max_steps(trainer, sampler))

    tracked = None
    policy = None
    if sampler is not None:
        if args.max_steps <= 0:
            raise CadenceError("a curriculum chooses data for a number of steps, not epochs: set TrainingArguments(max_steps=...)")
        if trainer.compute_loss_func is not None:
            raise CadenceError("this Trainer already has a compute_loss_func; give its per-sample form as per_sample_loss=")
        policy = getattr(sampler, "policy", None)
        if policy is None:
            raise CadenceError(f"{type(sampler).__name__} has no .policy; pass a cadence CurriculumSampler")
        for each in [getattr(part, "policy", None) for part in getattr(sampler, "parts", [sampler])]:
            if set(each.requires) - {"loss"}:
                raise CadenceError(f"{type(each).__name__} needs {sorted(each.requires)}, but a Trainer gives "
                                   f"per-sample loss; choose a loss-driven policy (DoReMi, LossReweighting, ...)")
        # the whole run's ids over all processes: Accelerate gives each process every world_size-th batch
        total = args.max_steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        tracked = TrackedSampler(sampler, total, world=args.world_size, rank=args.process_index,
                                 host_skips=not args.ignore_data_skip)
        trainer._get_train_sampler = lambda *_, **__: tracked  # the documented override point, per instance

    link = RegimenLink(scheduler=scheduler, clock=None if scheduler else clock, knobs=knobs,
                       policy=policy, sampler=sampler, tracker=tracked, plans=plans, stages=stages)
    if link.plans:
        _plan_batches(trainer, link, sized)
    callback = CadenceCallback(link, per_sample_loss, averaging)
    link.averaging = averaging  # handed on with after=link
    if averaging is not None:
        if link.clock is not getattr(averaging, "clock", getattr(getattr(averaging, "stages", None), "clock", None)):
            raise CadenceError("the averager runs on another clock; build it on the run's clock")
        _checkpoint_averaging(trainer, averaging)
    if stages is not None and scheduler is not None:
        # the scheduler's joins follow the stages, whose state comes back (with the scheduler's own) in
        # on_train_begin; the Trainer loads scheduler.pt before that, against the joins of a fresh run
        scheduler.load_state_dict = callback._defer_scheduler_state
    if tracked is not None:
        trainer.compute_loss_func = callback.compute_loss
    trainer.callback_handler.callbacks.insert(0, callback)  # first, so reporting callbacks see its log values
    return callback


def _checkpoint_averaging(trainer: Trainer, averaging: Any) -> None:
    """Save the averager's state with each checkpoint (main process; every process holds the same average)
    and load it back on resume, before training continues."""
    save, load = trainer._save_checkpoint, trainer._load_optimizer_and_scheduler

    def save_checkpoint(model, trial):
        save(model, trial)
        if trainer.is_world_process_zero():
            folder = os.path.join(trainer._get_output_dir(trial=trial), f"checkpoint-{trainer.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            torch.save(averaging.state_dict(), os.path.join(folder, AVERAGING_FILE))

    def load_optimizer_and_scheduler(checkpoint):
        load(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, AVERAGING_FILE)
        if not os.path.exists(path):
            raise StateError(f"{checkpoint} holds no averager state ({AVERAGING_FILE}): it was saved without averaging")
        averaging.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    trainer._save_checkpoint = save_checkpoint
    trainer._load_optimizer_and_scheduler = load_optimizer_and_scheduler


class TrainerBatchSampler(ScheduledBatchSampler, BatchRebalanceSampler):
    """A :class:`~cadence.progressive.ScheduledBatchSampler` the Trainer accepts as its batch sampler:
    the Trainer passes a ``BatchRebalanceSampler`` to its DataLoader as ``batch_sampler`` and leaves
    its sharding to it (this one yields this process's batches only)."""


def _batch_plan(trainer: Trainer, plans: Plans | None, sampler: Any) -> BatchSizeSchedule | StageBatchSizes | None:
    """The plans' ``BatchSizeSchedule`` (with stages: ``StagePlans.batch_sizes``), checked against the Trainer
    before anything is attached."""
    args = trainer.args
    if isinstance(plans, StagePlans):  # the stages size their batches: one sampler, sized by the step's stage
        staged = plans.batch_sizes(fixed=args.per_device_train_batch_size)
        sized = [] if staged is None else [staged]
    else:
        found = (plans.values() if isinstance(plans, Mapping) else plans) or ()
        sized = [plan for plan in found if isinstance(plan, BatchSizeSchedule)]
    if not sized:
        return None
    if len(sized) > 1 or sampler is not None or args.max_steps <= 0:
        raise CadenceError("a BatchSizeSchedule draws the Trainer's batches: give one, without a curriculum sampler, "
                           "and set TrainingArguments(max_steps=...)")
    per_step = args.gradient_accumulation_steps * args.world_size
    if sized[0].batches_per_step != per_step:
        raise CadenceError(f"build the BatchSizeSchedule with batches_per_step={per_step} (gradient accumulation "
                           f"steps × processes); it has {sized[0].batches_per_step}")
    if trainer.train_dataset is None or not hasattr(trainer.train_dataset, "__len__"):
        raise CadenceError("a BatchSizeSchedule needs a train_dataset with a length (a map-style dataset)")
    return sized[0]


def _plan_batches(trainer: Trainer, link: RegimenLink, sized: BatchSizeSchedule | None) -> None:
    """Update the plans when a step's batches are taken and pass each batch through them; with a
    ``BatchSizeSchedule``, draw the batches with its sizes."""
    args, fetch = trainer.args, trainer.get_batch_samples

    def get_batch_samples(epoch_iterator: Any, num_batches: int, device: Any) -> Any:
        link.begin_step()  # the previous step has moved the clock: it is at the step these batches train in
        before = link.clock.pending["tokens"]
        batches = fetch((link.shape(batch) for batch in epoch_iterator), num_batches, device)
        # the plans reported this process's tokens; every process counts the global step, so clocks agree
        link.count_global_step(queued_tokens=link.clock.pending["tokens"] - before)
        return batches

    trainer.get_batch_samples = get_batch_samples  # the Trainer's method that takes each step's batches
    if sized is not None:
        # on resume the Trainer replays and skips the batches of the steps already trained, from step 0
        seed = args.seed if args.data_seed is None else args.data_seed
        sampler = TrainerBatchSampler(sized, len(trainer.train_dataset), seed=seed, rank=args.process_index,
                                      world=args.world_size, start=None if args.ignore_data_skip else 0)
        trainer._get_train_sampler = lambda *_, **__: sampler  # the documented override point, per instance


def attach_regimen(regimen: Regimen, trainer: Trainer, *, after: RegimenLink | None = None,
                   stop_on_transition: bool = False, per_sample_loss: PerSampleLoss = causal_lm_loss) -> CadenceCallback:
    """:func:`attach` with everything a regimen file holds (``Regimen.attach(trainer)`` calls it):
    its clock, stages, optimizer fields, knobs, curriculum (arms from ``trainer.train_dataset``; stages
    with curricula of their own switch at their first step: :class:`~cadence.regimen.staged.StageSampler`),
    plans (layers by attribute path on ``trainer.model``; a stage's own plans run on its progress:
    :class:`~cadence.regimen.staged.StagePlans`) and averaging over ``trainer.model`` (a stage's own:
    :class:`~cadence.regimen.staged.StageAveraging`), ``callback.averaging``.

    A run whose stages need different trainers (SFT, then GRPO) hands the regimen on: ``after`` is
    the previous trainer's link, whose clock and stages this trainer continues (its ``max_steps``
    fits in what remains); ``stop_on_transition`` stops the Trainer when its stage ends."""
    regimen = regimen.for_part(part_index(after, stop_on_transition))
    regimen.refuse("hf")
    clock = regimen_clock(regimen, trainer, after, stop_on_transition)
    stages = regimen.stage_run(clock)
    fields = regimen.lr_schedules(stages)
    args = trainer.args  # a stage's own curriculum switches at the step its stage starts: ids per step of the stream
    sampler = regimen.build_data(trainer.train_dataset, clock, stages, host="hf", ids_per_step=args.world_size
                                 * args.per_device_train_batch_size * args.gradient_accumulation_steps)
    plans = regimen.build_plans(clock, trainer.model, stages) if regimen.has_plans() else None
    callback = attach(trainer, lr=fields.pop("lr", None), clock=clock, knobs=regimen.knob_schedules(stages),
                      sampler=sampler, plans=plans, per_sample_loss=per_sample_loss, stages=stages,
                      averaging=regimen.build_averaging(trainer.model, clock, stages), **fields)
    finish(callback, after, stop_on_transition)
    return callback


def part_index(after: RegimenLink | None, stop_on_transition: bool) -> int | None:
    """The stage a trainer that runs one stage runs (``None``: it runs them all)."""
    if after is not None:
        return after.stages.index if after.stages is not None else 0
    return 0 if stop_on_transition else None


def finish(callback: CadenceCallback, after: RegimenLink | None, stop_on_transition: bool) -> None:
    """Continue ``after``'s clock, stages and averaging (``link.averaging``); stop the Trainer at a stage
    transition if asked."""
    link = callback.link
    if after is not None:
        if (after.stages is None) != (link.stages is None):
            raise CadenceError("after: the previous link runs another regimen (stages differ)")
        previous = getattr(after, "averaging", None)
        if (previous is None) != (callback.averaging is None):
            raise CadenceError(f"after: the previous trainer's regimen averages "
                               f"{'nothing' if previous is None else 'weights'}, this one "
                               f"{'nothing' if callback.averaging is None else 'weights'}: attach the same regimen")
        link.load_state_dict(after.state_dict(), only=("clock", "stages") if link.stages else ("clock",))
        if previous is not None:  # averagers shared with earlier stages continue; a stage's own has not started
            callback.averaging.load_state_dict(previous.state_dict())
        if link.scheduler is not None:
            link.scheduler._write_lr(link.scheduler.get_lr())
            link.scheduler._apply_other_fields()
    if stop_on_transition:
        if link.stages is None:
            raise CadenceError("stop_on_transition: this regimen has no stages")
        link.stages.on_transition(lambda event: _stop_at_transition(callback))


def _stop_at_transition(callback: CadenceCallback) -> None:
    """Stop the Trainer; its layer plans let go of their layers (the next trainer's plans set them from the clock)."""
    callback._stop = True
    callback.link.plans.release()


def regimen_clock(regimen: Regimen, trainer: Trainer, after: RegimenLink | None = None,
                  part: bool = False) -> Clock:
    """The regimen's clock; a regimen without a budget runs on the Trainer's ``max_steps``. A trainer
    that runs part of the regimen (``after`` a previous one, or ``part``: until its stage ends) has a
    ``max_steps`` within what remains; one that runs it all, the budget."""
    steps = trainer.args.max_steps
    budget = regimen.budget
    done = after.clock.steps if after is not None else 0
    if (after is not None or part) and (budget is None or budget.unit != "steps" or steps <= 0
                                        or done + steps > budget.amount):
        raise CadenceError(f"budget: a trainer that runs part of a regimen needs a budget in steps and max_steps "
                           f"within what remains ({budget} budget, {done:g} steps done, max_steps={steps})")
    if after is None and not part and budget is not None and budget.unit == "steps" and steps > 0 and budget.amount != steps:
        raise CadenceError(f"budget: the regimen's budget is {budget}, but the Trainer runs max_steps={steps}; "
                           f"make them agree (or continue a previous trainer's regimen with after=)")
    return regimen.clock(default_budget=None if budget is not None else _max_steps(trainer, None))


def _max_steps(trainer: Trainer, sampler: Any) -> int:
    """The number of optimizer steps ``trainer.train()`` will run."""
    if trainer.args.max_steps > 0:
        return trainer.args.max_steps
    if sampler is not None:
        raise CadenceError("a curriculum chooses data for a number of steps, not epochs: set TrainingArguments(max_steps=...)")
    return trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[-1]
