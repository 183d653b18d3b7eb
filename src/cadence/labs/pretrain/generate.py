"""Deterministic generator of the pre-training lab's corpus (its output ships in ``data/``).

The text describes a small invented world (people, towns, trades, animals, colours) whose facts
stay consistent across documents, so a model can learn spelling, grammar and facts at different
speeds. Every training document is clean prose corrupted by a noise level ``r`` drawn uniformly
from [0, 1] (character substitutions, dropped and repeated words, spam lines); its quality score
is ``1 - r``. Validation documents are clean (quality 1): the target distribution that quality
curricula aim at.

Document ``i`` depends only on ``(seed, split, i)``, so any document can be regenerated alone.

    >>> doc = generate_document(7, split="train")
    >>> 0.0 <= doc["quality"] <= 1.0 and doc["split"] == "train"
    True

Regenerate the shipped file with ``python -m cadence.labs.pretrain.generate``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from cadence.labs.pretrain.corpus import DATA_FILE

SEED = 20241
TRAIN_DOCUMENTS = 3600
VAL_DOCUMENTS = 240

_FIRST = ("Ada Bram Cleo Dara Emil Fenna Gus Hana Ivo Jora Kell Lina Milo Nora Otto Pia Quin Rosa Sami Tova "
          "Uli Vera Wim Xena Yara Zeno Alba Boris Cyra Dov").split()
_TOWNS = ("Ashford Brindle Corren Dunmere Elmstead Fallow Greywick Harlow Ivybridge Juniper Kestrel Lowmoor "
          "Marsh Nettlefield Oakhaven").split()
_TRADES = "baker smith weaver miller potter fisher mason tailor carpenter brewer shepherd cooper".split()
_ANIMALS = "dog cat goat horse hen owl fox crow mule pig".split()
_COLOURS = "red blue green grey yellow brown white black".split()
_GOODS = "bread nails cloth flour bowls fish stone coats chairs ale wool barrels".split()  # one per trade
_VERBS = ("walked ran hurried wandered rode sailed climbed").split()
_PLACES = "market river bridge hill square harbour mill forest chapel inn".split()
_TIMES = "in the morning|at noon|in the evening|at dawn|late at night|on market day".split("|")
_WEATHER = "rain fell softly|the wind was cold|the sun was warm|fog covered the fields|snow lay on the roofs".split("|")
_FEELINGS = "glad tired curious worried proud calm hungry".split()
_SPAM = ("CLICK HERE to win a FREE prize!!!|Subscribe now for more updates|best deals best deals best deals|"
         "Page 1 of 3 | Next >>|Copyright all rights reserved|buy cheap now www dot example dot com").split("|")
_NOISE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#@$%&*~^/|<>"


def _world(seed: int) -> dict[str, dict[str, str]]:
    """The invented world's fixed facts: each person's town, trade, animal and favourite colour."""
    rng = np.random.default_rng([seed, 0])
    pick = lambda items: items[int(rng.integers(len(items)))]  # noqa: E731
    return {name: {"town": pick(_TOWNS), "trade": pick(_TRADES), "animal": pick(_ANIMALS),
                   "colour": pick(_COLOURS)} for name in _FIRST}


class _Writer:
    """Writes clean sentences about the world with a private generator."""

    def __init__(self, rng: np.random.Generator, world: dict[str, dict[str, str]]) -> None:
        self.rng, self.world = rng, world

    def pick(self, items: list[str] | tuple[str, ...]) -> str:
        return items[int(self.rng.integers(len(items)))]

    def sentence(self, who: str) -> str:
        f = self.world[who]
        goods = _GOODS[_TRADES.index(f["trade"])]
        forms = (
            f"{who} is a {f['trade']} who lives in {f['town']}.",
            f"{who} {self.pick(_VERBS)} to the {self.pick(_PLACES)} {self.pick(_TIMES)}.",
            f"Every week {who} sells {goods} at the market in {f['town']}.",
            f"{who} has a {f['colour']} {f['animal']} that follows {who} everywhere.",
            f"In {f['town']}, {self.pick(_WEATHER)}, and {who} felt {self.pick(_FEELINGS)}.",
            f"The {f['animal']} of {who} is {f['colour']}, and it sleeps by the door.",
            f"When {who} makes {goods}, the work takes {int(self.rng.integers(2, 10))} hours.",
            f"{who} met {self.pick(_FIRST)} near the {self.pick(_PLACES)} and they talked about {goods}.",
        )
        return self.pick(forms)

    def document(self) -> str:
        who = self.pick(_FIRST)
        n_par = int(self.rng.integers(2, 5))
        paragraphs = []
        for _ in range(n_par):
            n_sent = int(self.rng.integers(3, 7))
            cast = [who] + [self.pick(_FIRST) for _ in range(2)]
            paragraphs.append(" ".join(self.sentence(self.pick(cast)) for _ in range(n_sent)))
        return "\n".join(paragraphs)


def _corrupt(text: str, r: float, rng: np.random.Generator) -> str:
    """Degrade ``text`` with noise level ``r`` in [0, 1]: word drops/repeats, character
    substitutions and spam lines, each more frequent as ``r`` grows."""
    lines = []
    for line in text.split("\n"):
        words = []
        for w in line.split(" "):
            u = rng.random()
            if u < 0.15 * r:
                continue  # dropped
            words.append(w)
            if u > 1 - 0.1 * r:
                words.append(w)  # repeated
        chars = list(" ".join(words))
        hits = np.flatnonzero(rng.random(len(chars)) < 0.12 * r)
        for i in hits:
            chars[i] = _NOISE_CHARS[int(rng.integers(len(_NOISE_CHARS)))]
        lines.append("".join(chars))
        if rng.random() < 0.8 * r:
            lines.append(_SPAM[int(rng.integers(len(_SPAM)))])
    return "\n".join(lines)


def generate_document(i: int, *, split: str = "train", seed: int = SEED) -> dict:
    """Document ``i`` of ``split`` (``"train"`` or ``"val"``): ``{"id", "split", "quality", "text"}``."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    rng = np.random.default_rng([seed, 1 if split == "train" else 2, i])
    text = _Writer(rng, _world(seed)).document()
    r = float(rng.random())
    text = _corrupt(text, r, rng)
    return {"id": i, "split": split, "quality": round(1.0 - r, 4), "text": text}


def generate_corpus(seed: int = SEED, train: int = TRAIN_DOCUMENTS, val: int = VAL_DOCUMENTS) -> list[dict]:
    """All documents, training first, then validation."""
    return ([generate_document(i, split="train", seed=seed) for i in range(train)]
            + [generate_document(i, split="val", seed=seed) for i in range(val)])


def write_corpus(path: Path = DATA_FILE, seed: int = SEED) -> Path:
    """Write the corpus as gzipped JSON lines (deterministic bytes: no timestamp in the gzip header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(d, sort_keys=True) + "\n" for d in generate_corpus(seed)).encode("utf-8")
    path.write_bytes(gzip.compress(body, mtime=0))
    return path


if __name__ == "__main__":
    print(f"wrote {write_corpus()}")
