"""The shipped corpus: deterministic generation, quality scores, encoding, the training stream."""

import gzip
import json

import numpy as np
import pytest

from cadence.errors import CadenceError, StateError
from cadence.labs.pretrain import ALPHABET, Corpus, DocumentStream, decode, encode, load_corpus
from cadence.labs.pretrain.corpus import DATA_FILE, SEPARATOR
from cadence.labs.pretrain.generate import TRAIN_DOCUMENTS, VAL_DOCUMENTS, generate_document


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return load_corpus()


def test_shipped_file_is_the_generators_output() -> None:
    with gzip.open(DATA_FILE, "rt") as f:
        shipped = [json.loads(line) for line in f]
    assert len(shipped) == TRAIN_DOCUMENTS + VAL_DOCUMENTS
    for i in (0, 1, 777, TRAIN_DOCUMENTS - 1):
        assert shipped[i] == generate_document(i, split="train")
    assert shipped[TRAIN_DOCUMENTS + 3] == generate_document(3, split="val")
    assert DATA_FILE.stat().st_size < 3_000_000


def test_quality_spans_the_range_and_tracks_noise(corpus) -> None:
    q = corpus.quality
    assert q.min() < 0.05 and q.max() > 0.95 and 0.4 < q.mean() < 0.6
    # low-quality documents contain noise characters that clean prose never has
    noisy = set("#@$%&*~^/|<>")
    frac = np.array([sum(c in noisy for c in t) / len(t) for t in corpus.texts])
    assert frac[q > 0.8].mean() < 0.2 * frac[q < 0.2].mean()


def test_by_quality_orders_documents_ascending(corpus) -> None:
    order = corpus.by_quality()
    assert sorted(order.tolist()) == list(range(corpus.n_train))
    assert np.all(np.diff(corpus.quality[order]) >= 0)
    assert np.all(np.diff(corpus.quality[corpus.by_quality(descending=True)]) <= 0)


def test_validation_text_filters_by_quality(corpus) -> None:
    clean, full = corpus.validation_text(0.9), corpus.validation_text(0.0)
    assert 0 < len(clean) < 0.2 * len(full)
    spam = lambda tokens: decode(tokens).count("!!!") / len(tokens)  # noqa: E731
    assert spam(clean) < 0.5 * spam(full)
    with pytest.raises(CadenceError, match="quality"):
        corpus.validation_text(1.01)


def test_encode_decode_round_trip_and_unknown_characters() -> None:
    text = "Ada walked to the mill.\nIt rained!"
    assert decode(encode(text)) == text and len(ALPHABET) == 96
    with pytest.raises(CadenceError, match="outside the lab alphabet"):
        encode("naïve")


def test_stream_follows_the_given_order_and_wraps(corpus) -> None:
    order = [5, 2]
    stream = DocumentStream(corpus, batch_size=1, context=63, order=order)
    expected = np.concatenate([corpus.document(5), [SEPARATOR], corpus.document(2), [SEPARATOR]] * 3)
    batches = (stream.next_batch() for _ in range(20))
    got = np.concatenate([np.append(x[0].numpy(), y[0, -1].item()) for x, y in batches])
    np.testing.assert_array_equal(got, expected[:len(got)])


def test_stream_state_resumes_exactly_and_rejects_foreign_state(corpus) -> None:
    a = DocumentStream(corpus, batch_size=3, context=16, seed=4)
    for _ in range(5):
        a.next_batch()
    b = DocumentStream(corpus, batch_size=3, context=16, seed=0)
    b.load_state_dict(a.state_dict())
    for _ in range(3):
        assert all((u == v).all() for u, v in zip(a.next_batch(), b.next_batch()))
    before = b.state_dict()
    with pytest.raises(StateError, match="batch_size"):
        b.load_state_dict(DocumentStream(corpus, batch_size=2, context=16).state_dict())
    with pytest.raises(StateError, match="kind"):
        b.load_state_dict({"offset": 0})
    assert b.state_dict() == before
    with pytest.raises(CadenceError, match="unknown document ids"):
        DocumentStream(corpus, batch_size=1, context=8, order=[0, corpus.n_train])
