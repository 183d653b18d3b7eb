"""Pre-training lab: a character-level TinyGPT on a shipped corpus with a quality score per document.

    >>> from cadence.labs.pretrain import PretrainConfig, train
    >>> cfg = PretrainConfig(context=16, batch_size=4, n_layer=1, d_model=16, n_head=2, val_sequences=4)
    >>> train(cfg, "cosine(peak=3e-3)", steps=4, progress=False).log.step.tolist()
    [1, 2, 3, 4]
"""

from cadence.labs.pretrain.corpus import ALPHABET, VOCAB_SIZE, Corpus, decode, encode, load_corpus
from cadence.labs.pretrain.stream import DocumentStream
from cadence.labs.pretrain.train import PretrainConfig, TrainResult, evaluate, make_model, train

__all__ = [
    "ALPHABET", "VOCAB_SIZE", "Corpus", "decode", "encode", "load_corpus", "DocumentStream",
    "PretrainConfig", "TrainResult", "evaluate", "make_model", "train",
]
