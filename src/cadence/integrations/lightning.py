"""cadence in Lightning: one ``Callback`` for schedules, a curriculum, checkpoints and logs.

:class:`CadenceCallback` does for a ``lightning.pytorch.Trainer`` what
:func:`cadence.integrations.hf.attach` does for Hugging Face:

* ``lr="wsd(peak=3e-4, warmup=5%, decay=20%)"`` (and other param-group fields) drives the first
  optimizer from ``configure_optimizers`` through a :class:`~cadence.optim.ScheduledLR` stepped
  after every optimizer step, on a clock whose budget is the Trainer's ``max_steps`` (or its
  estimated stepping batches). A ``ScheduledLR`` returned by ``configure_optimizers`` with
  ``"interval": "step"`` is picked up instead, and Lightning steps it.
* ``sampler=CurriculumSampler(...)``: put ``callback.sampler`` in the training ``DataLoader``; the
  curriculum chooses the order, and per-sample losses that ``training_step`` returns under
  ``"sample_loss"`` reach the policy once per optimizer step.
* cadence state goes into every Lightning checkpoint (``Callback.state_dict``, JSON-safe values)
  and is restored by ``trainer.fit(..., ckpt_path=...)``; ids a loader prefetched but did not
  train go back into the sampler's position (or are replayed), so resume is exact, also at another
  number of processes with the same global batch (``docs/integrations/distributed.md``).
* ``plans=[LayerFreezing(...), ...]`` (``cadence.progressive``, built on the run's clock) are
  updated when the fetcher hands over a training batch (in the module's ``on_before_batch_transfer``,
  wrapped for the run), before the forward pass, and checkpointed with the rest. Each training
  batch passes through the plans there (a ``SequenceLengthWarmup`` cuts it to the step's length);
  a ``BatchSizeSchedule``'s ``batch_sampler`` in the DataLoader sizes each batch for the step it
  trains in, although the fetcher draws one batch ahead.
* under DDP every process counts the global step: the samples a curriculum sees and the tokens
  the plans report are summed over processes at each optimizer step, so clocks (and sample or
  token budgets) agree on every rank.
* ``averaging=EMA(module, clock, ...)`` (``cadence.averaging``, a regimen's ``StageAveraging``, or a
  function of the module building one when training starts) is updated after every optimizer step,
  once the clock and the stages have moved, as a plain loop does, and checkpointed with the rest
  (its tensors as they are). Read the average from ``callback.averaging``.
* learning rates, knobs, progress, arm probabilities and plan values are logged with
  ``pl_module.log_dict`` at every optimizer step, so any Lightning logger receives them; so are the
  step's gradient norms before clipping (``cadence/grad_norm``, ``cadence/grad_norm_l1``), from which
  ``cadence forecast --refine metrics.csv`` refines a schedule.

Example (complete script: ``docs/integrations/lightning.md``)::

    callback = CadenceCallback(lr="wsd(peak=1e-2, warmup=10%, decay=30%)",
                               sampler=CurriculumSampler(DoReMi(arms, reference=ref), batch_size=8))
    loader = DataLoader(dataset, batch_size=8, sampler=callback.sampler)
    # in training_step: return {"loss": per_sample.mean(), "sample_loss": per_sample}
    L.Trainer(max_steps=200, callbacks=[callback]).fit(module, loader)
"""

from __future__ import annotations

from typing import Any, Mapping

import lightning.pytorch as pl
import numpy as np

from cadence.clock import Clock
from cadence.errors import CadenceError, StateError
from cadence.gradnorm import grad_norms
from cadence.integrations.jsonstate import decode, encode
from cadence.regimen.link import Plans, RegimenLink, plans_clock
from cadence.regimen.stages import StageRun
from cadence.integrations.tracking import TrackedSampler
from cadence.integrations.versions import check_version
from cadence.optim import ScheduledLR
from cadence.progressive.sizes import BatchSizeSchedule


class CadenceCallback(pl.Callback):
    """Schedules, a curriculum, checkpointed state and logs for a Lightning run.

    Args:
        lr, **fields: schedules (objects or specs) for the first optimizer's param groups; leave
            out to use a ``ScheduledLR`` from ``configure_optimizers`` (or none).
        budget: the clock's budget (default: ``trainer.max_steps``, else estimated stepping batches).
        clock: the clock to run on (default: the plans' clock, else a new one with ``budget``).
        knobs: other named schedules, logged and read with ``callback.link.knob(name)``.
        sampler: a curriculum sampler; use :attr:`sampler` (the tracked wrapper) in the DataLoader.
        plans: progressive plans (``{name: plan}`` or a sequence) built on the run's clock; updated
            when each training batch leaves the fetcher, applied to it, logged under
            ``cadence/plan/<name>/``, checkpointed. A ``BatchSizeSchedule`` needs ``batches_per_step =
            accumulate_grad_batches × processes``; put its ``batch_sampler`` in the DataLoader.
        loss_key: where ``training_step``'s output holds per-sample losses (shape ``[batch]``).
        log: whether to ``log_dict`` regimen values at every optimizer step.
        stages: a :class:`~cadence.regimen.StageRun` on ``clock``: stages end on their budget after a
            step, or on their rules over the metrics of each validation run (``trainer.callback_metrics``);
            when the last stage ends on a rule the Trainer stops.
        averaging: a weight averager on the run's clock, or a function ``module -> averager`` called
            when training starts; updated after every optimizer step, checkpointed with the rest.
    """

    def __init__(self, *, lr: Any = None, budget: Any = None, clock: Clock | None = None,
                 knobs: Mapping[str, Any] | None = None, sampler: Any = None, plans: Plans | None = None,
                 loss_key: str = "sample_loss", log: bool = True, stages: StageRun | None = None,
                 averaging: Any = None, **fields: Any) -> None:
        check_version("lightning")
        if sampler is not None and getattr(sampler, "policy", None) is None:
            raise CadenceError(f"{type(sampler).__name__} has no .policy; pass a cadence CurriculumSampler")
        for each in [part.policy for part in getattr(sampler, "parts", [sampler])] if sampler is not None else []:
            if set(each.requires) - {"loss"}:
                raise CadenceError(f"{type(each).__name__} needs {sorted(each.requires)}, but the callback feeds "
                                   f"per-sample loss; choose a loss-driven policy (DoReMi, ...)")
        self.lr, self.fields, self.budget, self.knobs, self.plans = lr, fields, budget, knobs, plans
        self.clock = clock if clock is not None else plans_clock(plans)
        self.curriculum, self.loss_key, self.log = sampler, loss_key, log
        self.stages = stages
        self.averaging = averaging
        self._averaging_saved: dict | None = None  # an averager's state a checkpoint held before it was built
        if stages is not None and self.clock is None:
            self.clock = stages.clock
        # each rank draws its own shard, so the tracker consumes this rank's ids only
        self.sampler = TrackedSampler(sampler) if sampler is not None else None
        self.link: RegimenLink | None = None
        self._owns_scheduler = False
        self._saved: dict | None = None
        self._seen_step = 0
        self._local = np.zeros(2)  # this process's samples and plan-reported tokens in the current step
        self._ids: list[np.ndarray] = []
        self._losses: list[np.ndarray] = []
        self._shaped: pl.LightningModule | None = None  # the module whose hook is wrapped (picklable for ddp_spawn)

    # ------------------------------------------------------------------ setup
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        found = [c for c in trainer.lr_scheduler_configs if isinstance(c.scheduler, ScheduledLR)]
        scheduler = None
        if self.lr is not None or self.fields:
            if found:
                raise CadenceError("configure_optimizers already returns a ScheduledLR; give lr= to one of them only")
            clock = self.clock if self.clock is not None else Clock(budget=self._budget(trainer))
            scheduler = ScheduledLR(trainer.optimizers[0], self.lr, clock=clock, **self.fields)
            self._owns_scheduler = True
        elif found:
            if found[0].interval != "step":
                raise CadenceError("a cadence ScheduledLR counts optimizer steps: return it with 'interval': 'step'")
            scheduler = found[0].scheduler
        clock = None if scheduler is not None else (self.clock or Clock(budget=self._budget(trainer)))
        self.link = RegimenLink(scheduler=scheduler, clock=clock, knobs=self.knobs,
                                policy=getattr(self.curriculum, "policy", None), sampler=self.curriculum,
                                tracker=self.sampler, plans=self.plans, stages=self.stages)
        if self._saved is not None:  # the data side came back in load_state_dict
            self.link.load_state_dict(self._saved, only=set(self._saved) - {"kind", "sampler", "tracker"})
            self._saved = None
        if callable(self.averaging) and not hasattr(self.averaging, "update"):
            self.averaging = self.averaging(pl_module)
        if self.averaging is not None and self._averaging_saved is not None:
            self.averaging.load_state_dict(self._averaging_saved)
            self._averaging_saved = None
        self._seen_step = trainer.global_step
        self._local = np.zeros(2)
        if self.link.plans:
            self._shape_training_batches(trainer, pl_module)

    def _shape_training_batches(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Wrap the module's ``on_before_batch_transfer`` for this run: Lightning calls it when a
        batch leaves the fetcher to be trained on, which a callback hook cannot replace."""
        per_step = trainer.accumulate_grad_batches * trainer.world_size
        for plan in self.link.plans.plans.values():
            if isinstance(plan, BatchSizeSchedule) and plan.batches_per_step != per_step:
                raise CadenceError(f"build the BatchSizeSchedule with batches_per_step={per_step} "
                                   f"(accumulate_grad_batches × processes); it has {plan.batches_per_step}")
        link, before_transfer = self.link, pl_module.on_before_batch_transfer

        def shaped(batch: Any, dataloader_idx: int) -> Any:
            batch = before_transfer(batch, dataloader_idx)
            if not trainer.training:
                return batch
            link.begin_step()  # the previous step has moved the clock: it is at the step this batch trains in
            before = link.clock.pending["tokens"]
            batch = link.shape(batch)
            self._local[1] += link.clock.pending["tokens"] - before  # this process's tokens; summed at the step
            return batch

        pl_module.on_before_batch_transfer = shaped
        self._shaped = pl_module

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._shaped is not None:  # the module's own hook again, also after a failed run
            self._shaped.__dict__.pop("on_before_batch_transfer", None)
            self._shaped = None

    def _budget(self, trainer: pl.Trainer) -> Any:
        if self.budget is not None:
            return self.budget
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.max_steps
        steps = trainer.estimated_stepping_batches
        if steps == float("inf"):
            raise CadenceError("cannot size the clock: set Trainer(max_steps=...) or CadenceCallback(budget=...)")
        return int(steps)

    # ------------------------------------------------------------------ per batch
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.link.begin_step()  # per micro-batch under accumulation; a plan acts once per clock step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        link = self.link
        if self.sampler is not None:
            if not isinstance(outputs, Mapping) or self.loss_key not in outputs:
                raise CadenceError(f"with a curriculum, training_step must return a dict with per-sample losses "
                                   f"under {self.loss_key!r}, e.g. {{'loss': l.mean(), {self.loss_key!r}: l}}")
            losses = outputs[self.loss_key].detach().float().cpu().numpy().reshape(-1)
            self._ids.append(self.sampler.consume(len(losses)))
            self._losses.append(losses)
            self._local[0] += len(losses)
        if trainer.global_step == self._seen_step:  # accumulating: no optimizer step yet
            return
        self._seen_step = trainer.global_step
        self._count_global_step()
        if self._ids:  # before the stage may end: the step's feedback goes to the policy that drew its ids
            ids, losses = np.concatenate(self._ids), np.concatenate(self._losses)
            self._ids, self._losses = [], []
            link.observe(ids, loss=losses)
        if self._owns_scheduler:
            link.scheduler.step()
        if link.scheduler is None:
            link.step()
        else:
            link.after_step()  # stages whose budget is used up end here
        if self.averaging is not None:  # after the clock and the stages moved, as in a plain loop
            self.averaging.update()
        if self.log:
            pl_module.log_dict(link.values(), on_step=True, on_epoch=False)  # identical on every rank

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.link is None or trainer.sanity_checking:
            return
        self.link.log(trainer.callback_metrics)  # the stages' rules read each validation run's metrics
        if self.link.done:
            trainer.should_stop = True

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if self.log:  # after backward, before clipping: what schedule refinement reads (cadence.forecast.refine)
            l2, l1 = grad_norms(pl_module.parameters())
            p = self.link.prefix
            pl_module.log_dict({p + "grad_norm": l2, p + "grad_norm_l1": l1}, on_step=True, on_epoch=False)

    def _count_global_step(self) -> None:
        """Report the step's samples and tokens summed over processes, so every rank's clock counts the
        global step. The plans' tokens are already queued as this process's own; a ``BatchSizeSchedule``
        reports global samples itself and is left alone."""
        if self.sampler is None and not self.link.plans:
            return
        self.link.count_global_step(samples=float(self._local[0]), queued_tokens=float(self._local[1]))
        self._local = np.zeros(2)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The link's state, JSON-safe, and the averager's (tensors; checkpoints load with ``weights_only=True``)."""
        if self.link is not None:
            state = self.link.state_dict()
            if self.sampler is not None:  # prefetched ids back into the sampler: no per-process ids saved
                state["sampler"], state["tracker"] = self.sampler.fold(state["sampler"], state["tracker"])
            state = encode(state)
        else:
            state = encode(self._saved) if self._saved is not None else {}
        if self._averaging_saved is not None:  # restored, not yet loaded into the averager built at train start
            state["averaging"] = self._averaging_saved
        elif self.averaging is not None and hasattr(self.averaging, "state_dict"):
            state["averaging"] = self.averaging.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the curriculum's sampler and the plans' clock now (Lightning's fetcher draws a
        batch before training starts); the rest once :meth:`on_train_start` has built the link."""
        if not state_dict:
            return
        state_dict = dict(state_dict)
        averaged = state_dict.pop("averaging", None)
        if (averaged is None) != (self.averaging is None):
            raise StateError(f"the checkpoint {'holds' if averaged is not None else 'lacks'} an averager's state; "
                             f"this callback {'has no' if self.averaging is None else 'has an'} averager")
        state = decode(state_dict)
        if self.link is not None:
            self.link.load_state_dict(state)
            if averaged is not None:
                self.averaging.load_state_dict(averaged)
            return
        self._averaging_saved = averaged
        if self.sampler is not None:
            data_side = RegimenLink(policy=self.curriculum.policy, sampler=self.curriculum, tracker=self.sampler)
            data_side.load_state_dict(state, only=("sampler", "tracker"))
        if self.clock is not None:  # a plan's batch sampler reads the clock when the fetcher draws
            RegimenLink(clock=self.clock).load_state_dict(state, only=("clock",))
        if self.stages is not None:
            self.stages.load_state_dict(state["stages"])
        self._saved = state


def attach_regimen(regimen: Any, trainer: pl.Trainer, *, model: pl.LightningModule | None = None,
                   dataset: Any = None, **options: Any) -> CadenceCallback:
    """A :class:`CadenceCallback` with everything a regimen file holds, appended to ``trainer``'s
    callbacks (``Regimen.attach(trainer)`` calls it). ``model`` is needed for plans (layers by
    attribute path; a stage's own plans run on its progress), ``dataset`` for arms from a column;
    averaging is built over ``model`` (default: the module being fit) when training starts; put ``callback.sampler`` in the DataLoader
    when there is a curriculum (stages with curricula of their own switch at their first step:
    :class:`~cadence.regimen.staged.StageSampler`). ``options``: ``loss_key``, ``log``."""
    regimen = regimen.for_part(None)
    regimen.refuse("lightning")
    if any(isinstance(c, CadenceCallback) for c in trainer.callbacks):
        raise CadenceError("this Trainer already has a CadenceCallback; attach once, with every part")
    steps = trainer.max_steps
    budget = regimen.budget
    if budget is not None and budget.unit == "steps" and steps and steps > 0 and budget.amount != steps:
        raise CadenceError(f"budget: the regimen's budget is {budget}, but the Trainer runs max_steps={steps}; "
                           f"make them agree")
    if budget is None and not (steps and steps > 0):
        raise CadenceError("budget: give the regimen a budget, or the Trainer max_steps")
    clock = regimen.clock(default_budget=None if budget is not None else steps)
    stages = regimen.stage_run(clock)
    fields = regimen.lr_schedules(stages)
    sampler = regimen.build_data(dataset, clock, stages, host="lightning",  # ids per step of this process's stream
                                 ids_per_step=lambda first: first.local_batch_size * trainer.accumulate_grad_batches)
    plans = regimen.build_plans(clock, model, stages) if regimen.has_plans() else None
    def averaging(module: pl.LightningModule) -> Any:  # built over the module being fit, when training starts
        return regimen.build_averaging(module if model is None else model, clock, stages)

    if regimen.averaging is None and not any("averaging" in own for own in regimen.stage_pieces):
        averaging = None
    callback = CadenceCallback(lr=fields.pop("lr", None), clock=clock, knobs=regimen.knob_schedules(stages),
                               sampler=sampler, plans=plans, stages=stages, averaging=averaging, **options, **fields)
    trainer.callbacks.insert(0, callback)  # before checkpointing callbacks, so a checkpoint holds the stepped link
    return callback
class LiveForecastCallback(pl.Callback):
    """Feeds the training loss to a :class:`~cadence.forecast.live.LiveForecast` every
    ``record_every`` optimizer steps (global zero only; one ``float()`` of the loss then) and logs
    its latest ``cadence/forecast/final_loss``, ``…/low``, ``…/high`` to the trainer's loggers at
    every multiple of the forecast's ``every``. Fits run in a worker process (or thread), off the training step.

    Build the forecast from the run's link (``link.live_forecast(every=100)``), or directly from the
    schedule's per-step LRs (``LiveForecast(lr_per_step(spec, steps))``).
    """

    def __init__(self, forecast: Any, *, record_every: int = 10) -> None:
        if int(record_every) < 1:
            raise CadenceError(f"record_every must be >= 1, got {record_every}")
        self.forecast, self.record_every = forecast, int(record_every)
        self.logged_steps: list[int] = []
        self._seen = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step == 0 or step == self._seen:
            return  # micro-batches of one optimizer step (gradient accumulation) count once
        self._seen = step
        if step % self.record_every == 0:
            loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
            if loss is not None:
                self.forecast.observe(step, float(loss))
        values = self.forecast.values() if step % self.forecast.every == 0 else {}
        if values:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=step)
            self.logged_steps.append(step)

    def state_dict(self) -> dict[str, Any]:
        return self.forecast.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.forecast.load_state_dict(state_dict)
