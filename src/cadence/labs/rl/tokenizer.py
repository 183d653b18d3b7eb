"""A tiny character-level tokenizer for the RL lab's task suite.

Token 0 pads prompts on the left (so every prompt in a batch has the same width and the model
sees positions consistently); token 1 ends a response. A suite's tokenizer
(:attr:`~cadence.labs.rl.tasks.TaskSuite.tokenizer`) is :data:`ALPHABET` followed by the extra
characters its task families declare.

    >>> tok = CharTokenizer()
    >>> ids = tok.encode("12+3=")
    >>> tok.decode(ids)
    '12+3='
    >>> tok.prompts(["1+1=", "12+3="], width=6).shape
    (2, 6)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cadence.errors import CadenceError

PAD, EOS = "_", "$"
FILLER = "."
"""A filler character a response may contain anywhere; it is ignored when scoring."""
ALPHABET = PAD + EOS + "0123456789+*%=:.absc"
"""The standard characters (every one the built-in families use). ``_`` pads, ``$`` ends a
response, ``.`` is filler."""


class CharTokenizer:
    """Maps each character of :data:`ALPHABET` to one token id."""

    def __init__(self, alphabet: str = ALPHABET) -> None:
        if len(set(alphabet)) != len(alphabet):
            raise CadenceError("the tokenizer alphabet has repeated characters")
        missing = [c for c in (PAD, EOS, FILLER) if c not in alphabet]
        if missing:
            raise CadenceError(f"the tokenizer alphabet {alphabet!r} lacks {missing[0]!r} (padding, end, filler)")
        self.alphabet = alphabet
        self._index = {c: i for i, c in enumerate(alphabet)}
        self.pad_id, self.eos_id = self._index[PAD], self._index[EOS]

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text``; raises naming the first character outside the alphabet."""
        try:
            return np.array([self._index[c] for c in text], dtype=np.int64)
        except KeyError as e:
            raise CadenceError(f"character {e.args[0]!r} is not in the tokenizer alphabet {self.alphabet!r}") from None

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return "".join(self.alphabet[int(i)] for i in ids)

    def prompts(self, texts: Sequence[str], width: int) -> np.ndarray:
        """Left-pad each prompt to ``width`` tokens: an int64 array (len(texts), width)."""
        out = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        for row, text in enumerate(texts):
            if len(text) > width:
                raise CadenceError(f"prompt {text!r} is longer than the prompt width {width}")
            if text:
                out[row, width - len(text):] = self.encode(text)
        return out

    def response_text(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of a generated response, up to (not including) its first end token."""
        chars = []
        for i in ids:
            if int(i) == self.eos_id:
                break
            chars.append(self.alphabet[int(i)])
        return "".join(chars)
