"""Train the lab's character-level :class:`~cadence.labs.tinygpt.TinyGPT` under a cadence LR schedule.

The loop is nanoGPT-sized: AdamW, a :class:`~cadence.optim.ScheduledLR` on a step-budget
:class:`~cadence.Clock`, batches from a :class:`DocumentStream`, a fixed validation set. It logs
every step in the :mod:`cadence.forecast.runlog` format and can return checkpoints that a later
call continues from, bit for bit, with the same or a different schedule (a WSD branch).

    >>> cfg = PretrainConfig(context=16, batch_size=4, n_layer=1, d_model=16, n_head=2, val_sequences=4)
    >>> result = train(cfg, "constant(3e-3)", steps=6, eval_every=3, progress=False, checkpoint_at=(3,))
    >>> len(result.log), sorted(result.checkpoints), result.final_val_loss > 0
    (6, [3], True)
    >>> more = train(cfg, "constant(3e-3)", steps=6, start_from=result.checkpoints[3], progress=False)
    >>> more.log.step.tolist() == [4, 5, 6] and more.final_val_loss == result.final_val_loss
    True
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cadence.clock import Clock
from cadence.errors import CadenceError, StateError
from cadence.forecast.runlog import RunLog
from cadence.gradnorm import grad_norms
from cadence.labs.pretrain.corpus import VOCAB_SIZE, Corpus, load_corpus
from cadence.labs.pretrain.stream import DocumentStream
from cadence.labs.tinygpt import GPTConfig, TinyGPT
from cadence.optim import ScheduledLR
from cadence.progress import Progress
from cadence.schedules.base import Schedule, as_schedule

CHECKPOINT_KIND = "cadence.pretrain.checkpoint"


@dataclass(frozen=True)
class PretrainConfig:
    """Model, batch and optimizer sizes of a lab run (the LR comes from the schedule).

    Validation uses the first ``val_sequences`` windows of the held-out documents whose quality
    is at least ``val_min_quality`` (0: the training distribution; e.g. 0.9: clean text only).
    """

    context: int = 32
    batch_size: int = 16
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 48
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    val_sequences: int = 128
    val_min_quality: float = 0.0

    def __post_init__(self) -> None:
        for name in ("context", "batch_size", "n_layer", "n_head", "d_model", "val_sequences"):
            if getattr(self, name) < 1:
                raise CadenceError(f"PretrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.val_min_quality <= 1.0:
            raise CadenceError(f"PretrainConfig.val_min_quality must lie in [0, 1], got {self.val_min_quality}")
        if self.d_model % self.n_head:
            raise CadenceError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        object.__setattr__(self, "betas", tuple(self.betas))

    @property
    def tokens_per_step(self) -> int:
        """Predicted tokens per optimizer step."""
        return self.batch_size * self.context

    def model_config(self) -> GPTConfig:
        return GPTConfig(vocab_size=VOCAB_SIZE, context=self.context, n_layer=self.n_layer,
                         n_head=self.n_head, d_model=self.d_model)


@dataclass
class TrainResult:
    """What :func:`train` returns: the log, the requested checkpoints and the trained model."""

    log: RunLog
    checkpoints: dict[int, dict[str, Any]]
    final_val_loss: float
    model: nn.Module = field(repr=False)
    schedule: str = ""


def make_model(cfg: PretrainConfig, seed: int) -> TinyGPT:
    """A freshly initialised model; the global torch RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyGPT(cfg.model_config())


def validation_batch(corpus: Corpus, cfg: PretrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed validation set: ``val_sequences`` windows spread evenly over the validation text."""
    width = cfg.context + 1
    text = corpus.validation_text(cfg.val_min_quality)
    if len(text) < cfg.val_sequences * width:
        raise CadenceError(f"the validation text of quality >= {cfg.val_min_quality} has {len(text)} tokens, "
                           f"fewer than {cfg.val_sequences} sequences of {width}")
    starts = np.linspace(0, len(text) - width, cfg.val_sequences).astype(np.int64)
    block = torch.from_numpy(text[starts[:, None] + np.arange(width)].astype(np.int64))
    return block[:, :-1], block[:, 1:]


@torch.no_grad()
def evaluate(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Mean cross-entropy (nats per character) of ``model`` on ``batch``."""
    model.eval()
    x, y = batch
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
    model.train()
    return loss


def train(cfg: PretrainConfig, schedule: Schedule | str | float | dict, *, steps: int, seed: int = 0,
          order: Iterable[int] | np.ndarray | torch.utils.data.Sampler | None = None,
          start_from: dict[str, Any] | None = None, checkpoint_at: Iterable[int] = (),
          log_path: str | Path | None = None, eval_every: int = 100, progress: bool = True,
          corpus: Corpus | None = None, stream: Any = None) -> TrainResult:
    """Train for ``steps`` optimizer steps in total, the LR following ``schedule`` over that budget.

    Args:
        cfg: model and batch sizes.
        schedule: the LR schedule (spec text, object, dict or number), evaluated on a clock whose
            budget is ``steps``; fractions in it are fractions of ``steps``.
        steps: the run's total budget in steps. With ``start_from``, training continues from the
            checkpoint's step up to ``steps`` (the schedule is evaluated as if the run had had this
            budget from the start, which is how a WSD branch decays a constant-LR trunk).
        seed: model initialisation and, without ``order``, the per-epoch document shuffles.
        order: document ids in training order (array, sequence or torch ``Sampler``, read once);
            wraps around if the run needs more. With ``start_from``, a given order starts a new
            data phase from its beginning; without one the checkpoint's order and position resume.
        start_from: a checkpoint from an earlier :class:`TrainResult` (model, optimizer, clock, data).
        checkpoint_at: steps after which to return a checkpoint.
        log_path: write the run log there (``.csv`` or ``.jsonl``).
        eval_every: validation loss every this many steps (and always after the last step).
        progress: show a progress bar.
        corpus: the corpus (its validation text is the logged ``val_loss``); the shipped one by default.
        stream: a batch source replacing the document stream (``next_batch()`` of ``batch_size`` rows,
            ``state_dict``), e.g. a :class:`~cadence.labs.pretrain.continual.ReplayStream`; with
            ``start_from`` it starts a new data phase.

    Raises:
        CadenceError: bad sizes, a budget the checkpoint has already passed, unknown document ids.
        StateError: a checkpoint from another kind of run or another model size.
    """
    if steps < 1 or eval_every < 1:
        raise CadenceError(f"steps and eval_every must be >= 1, got steps={steps}, eval_every={eval_every}")
    corpus = corpus if corpus is not None else _shipped_corpus()
    schedule = as_schedule(schedule)
    wanted = sorted({int(s) for s in checkpoint_at})
    if wanted and not 1 <= wanted[0] <= wanted[-1] <= steps:
        raise CadenceError(f"checkpoint steps must lie in 1..{steps}, got {wanted}")

    model = make_model(cfg, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, betas=cfg.betas, weight_decay=cfg.weight_decay)
    clock = Clock(budget=steps, tokens_per_step=cfg.tokens_per_step, samples_per_step=cfg.batch_size)
    own_stream = stream is None
    if not own_stream and (getattr(stream, "batch_size", None), getattr(stream, "context", None)) != \
            (cfg.batch_size, cfg.context):
        raise CadenceError(f"the stream gives batches of batch_size={getattr(stream, 'batch_size', None)}, "
                           f"context={getattr(stream, 'context', None)}; "
                           f"the config has {cfg.batch_size}, {cfg.context}")
    if own_stream:
        stream = DocumentStream(corpus, batch_size=cfg.batch_size, context=cfg.context, seed=seed, order=order)
    if start_from is not None:
        _restore(start_from, cfg, model, optimizer, clock, stream, steps, keep_order=order is None and own_stream)
    scheduler = ScheduledLR(optimizer, lr=schedule, clock=clock)
    val_batch = validation_batch(corpus, cfg)

    start = int(clock.steps)
    n = steps - start
    log = {c: np.full(n, np.nan) for c in ("step", "tokens", "lr", "loss", "val_loss", "grad_norm", "grad_norm_l1")}
    checkpoints: dict[int, dict[str, Any]] = {}
    val_loss = math.nan
    model.train()
    for k in _progress(range(n), progress, f"train {schedule}"):
        x, y = stream.next_batch()
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        if not torch.isfinite(loss):
            raise CadenceError(f"training diverged at step {start + k + 1} (loss {loss.item()}); lower the LR")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        log["grad_norm"][k], log["grad_norm_l1"][k] = grad_norms(model.parameters())
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        clock.report(samples=cfg.batch_size, tokens=cfg.tokens_per_step)
        scheduler.step()
        step = int(clock.steps)
        log["step"][k], log["tokens"][k], log["lr"][k], log["loss"][k] = step, clock.tokens, lr, loss.item()
        if step % eval_every == 0 or step == steps:
            val_loss = evaluate(model, val_batch)
            log["val_loss"][k] = val_loss
        if step in wanted:
            checkpoints[step] = _checkpoint(cfg, schedule, model, optimizer, clock, stream)

    run_log = RunLog(log.pop("step"), log.pop("lr"), **log, name=str(schedule))
    if log_path is not None:
        run_log.write(log_path)
    return TrainResult(run_log, checkpoints, float(val_loss), model, str(schedule))


def _progress(it: range, show: bool, label: str) -> Iterator[int]:
    with Progress(enabled=show, transient=True) as progress:
        task = progress.task(label[:60], total=len(it), unit="steps")
        for k in it:
            yield k
            task.advance()


def _checkpoint(cfg: PretrainConfig, schedule: Schedule, model: nn.Module, optimizer: torch.optim.Optimizer,
                clock: Clock, stream: Any) -> dict[str, Any]:
    return {
        "kind": CHECKPOINT_KIND,
        "config": dataclasses.asdict(cfg),
        "schedule": str(schedule),
        "step": int(clock.steps),
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "clock": clock.state_dict(),
        "data": stream.state_dict(),
    }


def _restore(ckpt: dict[str, Any], cfg: PretrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
             clock: Clock, stream: Any, steps: int, *, keep_order: bool) -> None:
    """Load a checkpoint into fresh objects; checks everything before changing anything."""
    if not isinstance(ckpt, dict) or ckpt.get("kind") != CHECKPOINT_KIND:
        raise StateError(f"start_from is not a pre-training lab checkpoint (missing kind={CHECKPOINT_KIND!r})")
    saved = dict(ckpt["config"], betas=tuple(ckpt["config"]["betas"]))
    if saved != dataclasses.asdict(cfg):
        diff = {k: (saved.get(k), v) for k, v in dataclasses.asdict(cfg).items() if saved.get(k) != v}
        raise StateError(f"the checkpoint was saved with another PretrainConfig: (saved, given) = {diff}")
    if ckpt["step"] >= steps:
        raise CadenceError(f"the checkpoint is at step {ckpt['step']}, not before the budget of {steps} steps")
    # The new budget replaces the old one as if it had been set from the start (a branch re-derives its schedule).
    clock_state = dict(ckpt["clock"], budget=[float(steps), "steps"], anchor=[0.0, 0.0, 1.0],
                       schedule_total=float(steps))
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(copy.deepcopy(ckpt["optimizer"]))
    clock.load_state_dict(clock_state)
    if keep_order:
        stream.load_state_dict(ckpt["data"])


_CORPUS: list[Corpus] = []


def _shipped_corpus() -> Corpus:
    if not _CORPUS:
        _CORPUS.append(load_corpus())
    return _CORPUS[0]
