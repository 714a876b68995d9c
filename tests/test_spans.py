import time

import numpy
import pytest

from spacy_contproto import spans as spans_module

from spacy_contproto.spans import (
    OUTSIDE,
    class_log_prior,
    decode_non_overlapping,
    enumerate_spans,
    label_spans,
    sentence_ids,
    spans_touching,
    token_runs,
    tokens_covered,
)


def test_sentence_ids_from_sent_starts():
    # spaCy SENT_START: 1 starts a sentence, -1 does not, 0 unknown
    assert sentence_ids(numpy.array([1, -1, -1, 1, -1, 0])).tolist() == [0, 0, 0, 1, 1, 1]
    # first token always starts a sentence
    assert sentence_ids(numpy.array([0, -1, 1])).tolist() == [0, 0, 1]
    assert sentence_ids(numpy.array([])).tolist() == []


def test_enumerate_spans_single_sentence():
    spans = enumerate_spans(numpy.zeros(3, dtype=int), max_span_length=2)
    assert spans.tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]
    assert spans.dtype == numpy.int32


def test_enumerate_spans_respects_sentences_and_max_length():
    # sentences: tokens 0-2 and 3-4
    spans = enumerate_spans(numpy.array([0, 0, 0, 1, 1]), max_span_length=4)
    expected = [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3], [3, 4], [3, 5], [4, 5]]
    assert spans.tolist() == expected


def test_enumerate_spans_count_formula():
    n, k = 10, 4
    spans = enumerate_spans(numpy.zeros(n, dtype=int), k)
    assert len(spans) == sum(n - w + 1 for w in range(1, k + 1))
    assert enumerate_spans(numpy.zeros(0, dtype=int), 4).shape == (0, 2)


def test_label_spans_exact_matches_only():
    spans = numpy.array([[0, 1], [0, 2], [1, 2], [2, 4], [3, 4]])
    gold = numpy.array([[0, 2], [3, 4]])
    labels = label_spans(spans, gold, numpy.array([2, 1]), n_tokens=5)
    assert labels.tolist() == [OUTSIDE, 2, OUTSIDE, OUTSIDE, 1]
    # a gold span that is not enumerated (too long) labels nothing
    labels = label_spans(spans, numpy.array([[0, 5]]), numpy.array([3]), n_tokens=5)
    assert labels.tolist() == [OUTSIDE] * 5
    assert label_spans(spans, numpy.zeros((0, 2)), numpy.zeros(0), 5).tolist() == [0] * 5


def test_spans_touching_flags():
    spans = numpy.array([[0, 1], [0, 3], [1, 2], [2, 4]])
    flags = numpy.array([False, False, True, False])
    assert spans_touching(spans, flags).tolist() == [False, True, False, True]


def test_tokens_covered_and_token_runs():
    spans = numpy.array([[1, 3], [2, 4], [6, 7]])
    assert tokens_covered(spans, 8).tolist() == [False, True, True, True, False, False, True, False]
    assert tokens_covered(numpy.zeros((0, 2)), 3).tolist() == [False] * 3
    flags = numpy.array([True, True, False, True, False, False, True])
    assert token_runs(flags).tolist() == [[0, 2], [3, 4], [6, 7]]
    assert token_runs(numpy.zeros(3, dtype=bool)).tolist() == []
    assert token_runs(numpy.zeros(0, dtype=bool)).shape == (0, 2)


def greedy_reference(spans, scores):
    """The obvious sequential greedy decoder, to check the vectorised one against."""
    order = sorted(range(len(spans)), key=lambda i: (-scores[i], spans[i][0], spans[i][1]))
    taken = []
    for i in order:
        s, e = spans[i]
        if all(e <= ts or s >= te for ts, te in (spans[j] for j in taken)):
            taken.append(i)
    mask = numpy.zeros(len(spans), dtype=bool)
    mask[taken] = True
    return mask


def test_decode_hand_made_overlaps():
    spans = numpy.array([[0, 2], [1, 3], [2, 4], [4, 5], [0, 1]])
    scores = numpy.array([0.9, 0.95, 0.6, 0.3, 0.8])
    # [1,3] wins, blocks [0,2] and [2,4]; [0,1] and [4,5] are free
    assert decode_non_overlapping(spans, scores).tolist() == [False, True, False, True, True]


def test_decode_chain_needs_several_rounds():
    # each span overlaps its neighbours; scores fall along the chain
    spans = numpy.array([[0, 2], [1, 3], [2, 4], [3, 5], [4, 6]])
    scores = numpy.array([0.9, 0.8, 0.7, 0.6, 0.5])
    assert decode_non_overlapping(spans, scores).tolist() == [True, False, True, False, True]


def test_decode_ties_prefer_earlier_then_shorter():
    spans = numpy.array([[1, 3], [0, 2], [0, 1]])
    scores = numpy.array([0.5, 0.5, 0.5])
    assert decode_non_overlapping(spans, scores).tolist() == [True, False, True]


@pytest.mark.parametrize("max_rounds", [0, 1, 16])
@pytest.mark.parametrize("seed", range(20))
def test_decode_matches_sequential_greedy(seed, max_rounds, monkeypatch):
    # max_rounds 0 and 1: the spans left after the vectorised rounds are taken one by one
    monkeypatch.setattr(spans_module, "MAX_DECODE_ROUNDS", max_rounds)
    rng = numpy.random.default_rng(seed)
    n_tokens = 30
    all_spans = enumerate_spans(numpy.zeros(n_tokens, dtype=int), 4)
    pick = rng.random(len(all_spans)) < 0.4
    spans = all_spans[pick]
    scores = rng.choice([0.1, 0.3, 0.5, 0.7, 0.9], size=len(spans))  # with ties
    got = decode_non_overlapping(spans, scores, n_tokens)
    assert got.tolist() == greedy_reference(spans.tolist(), scores.tolist()).tolist()


def test_decode_long_tied_chain_is_fast_and_greedy():
    # all-tied width-2 spans over 20000 tokens: one span per vectorised round, 10000 rounds
    # before MAX_DECODE_ROUNDS bounded them (14 s), now well under a second
    n = 20000
    spans = numpy.stack([numpy.arange(n - 1), numpy.arange(2, n + 1)], axis=1)
    start = time.perf_counter()
    got = decode_non_overlapping(spans, numpy.zeros(n - 1))
    assert time.perf_counter() - start < 2.0
    assert numpy.flatnonzero(got).tolist() == list(range(0, n - 1, 2))


def test_decode_empty():
    assert decode_non_overlapping(numpy.zeros((0, 2)), numpy.zeros(0)).shape == (0,)


def test_class_log_prior_hand_computed():
    # counts [4, 1, 1, 0] + 1 smoothing = [5, 2, 2, 1]; "O" at weight 0.5: 4 * 0.5 + 1 = 3
    prior = class_log_prior(numpy.array([0, 0, 0, 0, 1, 2]), 4, outside_weight=0.5)
    numpy.testing.assert_allclose(numpy.exp(prior), [3 / 8, 2 / 8, 2 / 8, 1 / 8])
    numpy.testing.assert_allclose(numpy.exp(class_log_prior(numpy.array([], dtype=int), 3)), [1 / 3] * 3)
