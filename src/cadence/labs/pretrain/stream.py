"""The training stream: documents concatenated in an order, cut into batches, with a resumable position.

The stream is a sequence of epochs. Each epoch lists document ids: the given ``order`` (the same
list every epoch, so an order shorter than the run wraps around), or, without one, a fresh
permutation of all training documents drawn from ``(seed, epoch)``. Documents are joined with a
newline; each batch takes the next ``batch_size × (context + 1)`` tokens. The position is one
integer, so resume is exact.

    >>> from cadence.labs.pretrain.corpus import load_corpus
    >>> stream = DocumentStream(load_corpus(), batch_size=2, context=8, seed=0)
    >>> x, y = stream.next_batch()
    >>> tuple(x.shape), bool((x[:, 1:] == y[:, :-1]).all())
    ((2, 8), True)
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from cadence.errors import CadenceError, StateError
from cadence.labs.pretrain.corpus import SEPARATOR, Corpus


def as_order(order: Iterable[int] | np.ndarray | torch.utils.data.Sampler, corpus: Corpus) -> np.ndarray:
    """Document ids as an ``int64`` array, checked against ``corpus``. A torch ``Sampler`` (or any
    iterable) is read once, in full."""
    ids = np.asarray(order if isinstance(order, np.ndarray) else list(iter(order)))
    if ids.ndim != 1 or len(ids) == 0:
        raise CadenceError("a data order must be a non-empty 1-D sequence of document ids")
    if not np.issubdtype(ids.dtype, np.integer):
        raise CadenceError(f"document ids must be integers, got dtype {ids.dtype}")
    bad = ids[(ids < 0) | (ids >= corpus.n_train)]
    if len(bad):
        raise CadenceError(f"unknown document ids {bad[:5].tolist()}; the corpus has ids 0..{corpus.n_train - 1}")
    return ids.astype(np.int64)


class DocumentStream:
    """Batches of ``(inputs, targets)`` from ``corpus`` documents in a fixed or seeded order."""

    def __init__(self, corpus: Corpus, *, batch_size: int, context: int, seed: int = 0,
                 order: Iterable[int] | np.ndarray | torch.utils.data.Sampler | None = None) -> None:
        self.corpus = corpus
        self.batch_size, self.context, self.seed = batch_size, context, seed
        self._set_order(None if order is None else as_order(order, corpus))
        self.offset = 0  # tokens consumed so far
        self._epoch_cache: tuple[int, np.ndarray] | None = None

    def _set_order(self, order: np.ndarray | None) -> None:
        """Fix the order and the epoch length it implies (tokens of every document plus separators)."""
        self.order = order
        ids = order if order is not None else np.arange(self.corpus.n_train)
        self._epoch_length = int(self.corpus.lengths[ids].sum()) + len(ids)

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * (self.context + 1)

    def epoch_ids(self, epoch: int) -> np.ndarray:
        """Document ids of epoch ``epoch``."""
        if self.order is not None:
            return self.order
        return np.random.default_rng([self.seed, epoch]).permutation(self.corpus.n_train)

    def _epoch_tokens(self, epoch: int) -> np.ndarray:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            c = self.corpus
            ids = self.epoch_ids(epoch)
            pieces = [c.train_tokens[c.train_starts[i]:c.train_starts[i + 1]] for i in ids]
            sep = np.array([SEPARATOR], dtype=np.uint8)
            self._epoch_cache = (epoch, np.concatenate([p for piece in pieces for p in (piece, sep)]))
        return self._epoch_cache[1]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``(inputs, targets)``, each ``(batch_size, context)`` of ``int64``."""
        need, out = self.tokens_per_batch, []
        length = self._epoch_length
        while need > 0:
            epoch, within = divmod(self.offset, length)
            chunk = self._epoch_tokens(epoch)[within:within + need]
            out.append(chunk)
            need -= len(chunk)
            self.offset += len(chunk)
        block = torch.from_numpy(np.concatenate(out).astype(np.int64)).view(self.batch_size, self.context + 1)
        return block[:, :-1], block[:, 1:]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The position and what defines the order (plain types)."""
        return {"kind": "cadence.pretrain.DocumentStream", "offset": self.offset, "seed": self.seed,
                "batch_size": self.batch_size, "context": self.context,
                "order": None if self.order is None else self.order.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; raises :class:`StateError`, changing nothing, on foreign state."""
        if not isinstance(state, dict) or state.get("kind") != "cadence.pretrain.DocumentStream":
            raise StateError("not a DocumentStream state_dict (missing kind='cadence.pretrain.DocumentStream')")
        try:
            offset, seed = int(state["offset"]), int(state["seed"])
            order = None if state["order"] is None else as_order(state["order"], self.corpus)
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"malformed DocumentStream state_dict: {e}") from e
        if (state.get("batch_size"), state.get("context")) != (self.batch_size, self.context):
            raise StateError(
                f"this stream state was saved for batch_size={state.get('batch_size')}, "
                f"context={state.get('context')}; "
                f"this stream has batch_size={self.batch_size}, context={self.context}")
        self.offset, self.seed, self._epoch_cache = offset, seed, None
        self._set_order(order)
