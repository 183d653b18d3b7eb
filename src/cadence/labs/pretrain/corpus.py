"""The lab's corpus: documents with a quality score each, encoded at the character level.

The alphabet is printable ASCII plus newline (96 symbols); every document is one token array.
Every document carries a quality in [0, 1]; validation documents are held out from the same
distribution.

    >>> corpus = load_corpus()
    >>> corpus.n_train > 1000 and corpus.decode(corpus.document(0))[:10] == corpus.texts[0][:10]
    True
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadence.errors import CadenceError

DATA_FILE = Path(__file__).parent / "data" / "corpus.jsonl.gz"
"""The shipped corpus (written by :mod:`cadence.labs.pretrain.generate`)."""
ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))
"""The character vocabulary: newline, then printable ASCII (token id = index)."""
VOCAB_SIZE = len(ALPHABET)
SEPARATOR = ALPHABET.index("\n")
"""Token placed between documents in the training stream."""

_TABLE = np.full(256, -1, dtype=np.int16)
_TABLE[np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)] = np.arange(VOCAB_SIZE)


def encode(text: str) -> np.ndarray:
    """Token ids (``uint8``) of ``text``; raises :class:`CadenceError` on characters outside :data:`ALPHABET`."""
    raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    ids = _TABLE[raw]
    if (ids < 0).any():
        bad = sorted({chr(b) if b < 128 else f"\\x{b:02x}" for b in raw[ids < 0]})
        raise CadenceError(f"text has characters outside the lab alphabet: {''.join(bad)!r}")
    return ids.astype(np.uint8)


def decode(ids: np.ndarray) -> str:
    """Text of token ids."""
    return "".join(ALPHABET[int(i)] for i in ids)


@dataclass(frozen=True)
class Corpus:
    """Training and validation documents as one token array each plus offsets.

    ``train_tokens[train_starts[i]:train_starts[i + 1]]`` is training document ``i``;
    ``quality[i]`` its score in [0, 1] (higher is cleaner). ``val_*`` likewise for validation.
    """

    train_tokens: np.ndarray
    train_starts: np.ndarray
    quality: np.ndarray
    val_tokens: np.ndarray
    val_starts: np.ndarray
    val_quality: np.ndarray
    texts: tuple[str, ...]

    @property
    def n_train(self) -> int:
        """Number of training documents (valid ids are ``0 .. n_train - 1``)."""
        return len(self.quality)

    @property
    def lengths(self) -> np.ndarray:
        """Token count of each training document."""
        return np.diff(self.train_starts)

    def document(self, i: int) -> np.ndarray:
        """Tokens of training document ``i``."""
        if not 0 <= i < self.n_train:
            raise CadenceError(f"unknown document id {i}; the corpus has ids 0..{self.n_train - 1}")
        return self.train_tokens[self.train_starts[i]:self.train_starts[i + 1]]

    decode = staticmethod(decode)

    def validation_text(self, min_quality: float = 0.0) -> np.ndarray:
        """Validation documents of quality ``>= min_quality``, each followed by a newline, in order."""
        keep = np.flatnonzero(self.val_quality >= min_quality)
        if len(keep) == 0:
            raise CadenceError(f"no validation document has quality >= {min_quality}")
        sep = np.array([SEPARATOR], dtype=np.uint8)
        return np.concatenate([p for i in keep
                               for p in (self.val_tokens[self.val_starts[i]:self.val_starts[i + 1]], sep)])

    def by_quality(self, descending: bool = False) -> np.ndarray:
        """Document ids sorted by quality, ascending by default (ties by id): a quality curriculum."""
        order = np.lexsort((np.arange(self.n_train), -self.quality if descending else self.quality))
        return order.astype(np.int64)

    @classmethod
    def from_documents(cls, documents: list[dict]) -> Corpus:
        """Build from dicts with ``text``, ``quality`` and ``split`` (``"train"``/``"val"``)."""
        train = [d for d in documents if d.get("split", "train") == "train"]
        val = [d for d in documents if d.get("split") == "val"]
        if not train or not val:
            raise CadenceError(f"a corpus needs training and validation documents; got {len(train)} and {len(val)}")
        quality, val_quality = (np.array([float(d["quality"]) for d in docs]) for docs in (train, val))
        if not all(np.all((q >= 0) & (q <= 1)) for q in (quality, val_quality)):
            raise CadenceError("document quality scores must lie in [0, 1]")
        tokens, starts = _pack(train)
        val_tokens, val_starts = _pack(val)
        return cls(tokens, starts, quality, val_tokens, val_starts, val_quality, tuple(d["text"] for d in train))


def _pack(documents: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Documents' tokens joined into one array, and the start offsets (plus the end)."""
    encoded = [encode(d["text"]) for d in documents]
    starts = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
    return np.concatenate(encoded), starts


def load_corpus(path: str | Path | None = None) -> Corpus:
    """Load the corpus shipped with cadence (or a ``.jsonl``/``.jsonl.gz`` file in the same format:
    one ``{"id", "split", "quality", "text"}`` object per line)."""
    path = Path(path) if path is not None else DATA_FILE
    if not path.exists():
        raise CadenceError(f"corpus file {path} not found; regenerate it with python -m cadence.labs.pretrain.generate")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        documents = [json.loads(line) for line in f if line.strip()]
    return Corpus.from_documents(documents)
