"""Continual pre-training in the lab: train on one corpus, continue on a shifted one with replay.

The recipe of "Simple and Scalable Strategies to Continually Pre-train Large Language Models"
(Ibrahim et al., arXiv 2403.08763): from a model whose LR has decayed on the old data D₀, re-warm
the LR and re-decay it over the new data D₁, and replay a fraction ρ of D₀ in every batch at the same
total batch (:class:`~cadence.curricula.Replay`). The new data here is the shipped corpus with its
letters rotated by 13 (:func:`shifted_corpus`): the same documents in another "language", a strong
shift at the character level (the paper's strong shift is English → German). :func:`run_continual`
reports the validation loss on both corpora after the continued phase: on D₀ (forgetting) and on D₁
(learning), over seeds with 95% t-intervals.

    >>> corpus = load_corpus()
    >>> corpus.decode(shifted_corpus(corpus).document(0))[:12], corpus.decode(corpus.document(0))[:12]
    ('Vib AiQ unf ', 'Ivo NvD has ')
"""

from __future__ import annotations

import codecs
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy import stats

from cadence.curricula.replay import Replay
from cadence.errors import CadenceError, StateError
from cadence.labs.pretrain.corpus import ALPHABET, Corpus, load_corpus
from cadence.labs.pretrain.stream import DocumentStream
from cadence.labs.pretrain.train import PretrainConfig, evaluate, train, validation_batch

FRACTIONS = (0.0, 0.05, 0.25)
"""Replay fractions compared: none, the paper's weak-shift value, its strong-shift value."""


def shifted_corpus(corpus: Corpus) -> Corpus:
    """``corpus`` with every letter rotated by 13 (ROT13); other characters and qualities unchanged."""
    table = np.array([ALPHABET.index(codecs.encode(c, "rot13")) for c in ALPHABET], dtype=np.uint8)
    return dataclasses.replace(corpus, train_tokens=table[corpus.train_tokens], val_tokens=table[corpus.val_tokens],
                               texts=tuple(codecs.encode(t, "rot13") for t in corpus.texts))


class ReplayStream:
    """Batches whose rows come from an old and a new :class:`DocumentStream`, split by a :class:`Replay`.

    Every row holds ``context + 1`` tokens, so the token share of the old rows is the row share;
    old rows come first in each batch. State: both streams' positions and the replay counts.
    """

    kind = "cadence.pretrain.ReplayStream"

    def __init__(self, old: Corpus, new: Corpus, replay: Replay, *, batch_size: int, context: int,
                 seed: int = 0) -> None:
        self.replay, self.batch_size, self.context = replay, batch_size, context
        self.old = DocumentStream(old, batch_size=1, context=context, seed=seed + 1)
        self.new = DocumentStream(new, batch_size=1, context=context, seed=seed)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``(inputs, targets)``: ``batch_size`` rows, the replayed ones from the old data first."""
        n_old, n_new = self.replay.split(self.batch_size, tokens_per_row=self.context + 1)
        rows = [self.old.next_batch() for _ in range(n_old)] + [self.new.next_batch() for _ in range(n_new)]
        return torch.cat([x for x, _ in rows]), torch.cat([y for _, y in rows])

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "old": self.old.state_dict(), "new": self.new.state_dict(),
                "replay": self.replay.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("kind") != self.kind:
            raise StateError(f"not a ReplayStream state_dict (kind={self.kind!r})")
        backup = self.state_dict()
        try:
            self.old.load_state_dict(state["old"])
            self.new.load_state_dict(state["new"])
            self.replay.load_state_dict(state["replay"])
        except Exception:
            self.old.load_state_dict(backup["old"])
            self.new.load_state_dict(backup["new"])
            self.replay.load_state_dict(backup["replay"])
            raise


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` and its t-interval (the mean itself, twice, for fewer than two values)."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class ContinualRow:
    """One replay fraction over seeds: validation loss on the old and the new corpus, (mean, low, high)."""

    fraction: float
    old_loss: tuple[float, float, float]
    new_loss: tuple[float, float, float]
    replayed: float
    """The share of phase-2 tokens that came from the old data (mean over seeds)."""


@dataclass
class ContinualResult:
    """What :func:`run_continual` returns: one row per fraction, the phase-1 losses, the settings."""

    rows: list[ContinualRow]
    before_old: tuple[float, float, float]
    before_new: tuple[float, float, float]
    settings: dict[str, Any]
    seconds: float


def phase_specs(peak: float, first: int, warmup: str = "1%") -> tuple[str, str]:
    """LR specs of the two phases: warmup and cosine to 0.1·peak on D₀ over ``first`` steps; then
    the same shape again over the continued steps (re-warm, re-decay)."""
    one = f"rewarm(peak={peak:g}, warmup={warmup})"
    return one, f"join({one}, {one}, at=[{first} steps])"


def run_continual(cfg: PretrainConfig, *, first: int = 600, second: int = 300, seeds: int = 3,
                  fractions: Sequence[float] = FRACTIONS, peak: float = 3e-3,
                  on_step: Callable[[], None] | None = None) -> ContinualResult:
    """Per seed: ``first`` steps on the shipped corpus, then ``second`` more on its shifted copy at
    each replay fraction, all branches from the same phase-1 checkpoint; losses on both corpora."""
    if first < 1 or second < 1 or seeds < 1 or not fractions:
        raise CadenceError(f"run_continual needs first, second, seeds >= 1 and a fraction; got {first}, {second}, "
                           f"{seeds}, {list(fractions)}")
    for f in fractions:
        Replay(f)   # validates every fraction before any work
    torch.set_num_threads(1)
    start = time.perf_counter()
    old = load_corpus()
    new = shifted_corpus(old)
    val_old, val_new = validation_batch(old, cfg), validation_batch(new, cfg)
    spec_one, spec_two = phase_specs(peak, first)
    losses = {f: {"old": [], "new": [], "replayed": []} for f in fractions}
    before_old, before_new = [], []
    for seed in range(seeds):
        base = train(cfg, spec_one, steps=first, seed=seed, corpus=old, progress=False, eval_every=10**9,
                     checkpoint_at=(first,))
        before_old.append(evaluate(base.model, val_old))
        before_new.append(evaluate(base.model, val_new))
        if on_step is not None:
            on_step()
        for f in fractions:
            replay = Replay(f)
            stream = ReplayStream(old, new, replay, batch_size=cfg.batch_size, context=cfg.context, seed=seed)
            out = train(cfg, spec_two, steps=first + second, seed=seed, corpus=new, stream=stream, progress=False,
                        eval_every=10**9, start_from=base.checkpoints[first])
            losses[f]["old"].append(evaluate(out.model, val_old))
            losses[f]["new"].append(evaluate(out.model, val_new))
            losses[f]["replayed"].append(replay.realized)
            if on_step is not None:
                on_step()
    rows = [ContinualRow(f, mean_interval(v["old"]), mean_interval(v["new"]), float(np.mean(v["replayed"])))
            for f, v in losses.items()]
    settings = {"first": first, "second": second, "seeds": seeds, "peak": peak, "schedule_one": spec_one,
                "schedule_two": spec_two, "config": dataclasses.asdict(cfg)}
    return ContinualResult(rows, mean_interval(before_old), mean_interval(before_new), settings,
                           time.perf_counter() - start)
