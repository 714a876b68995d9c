"""Span enumeration, gold matching and non-overlapping decoding.

Plain numpy on token offsets: no spaCy objects, no loop per span. A span is a
row ``[start, end)`` of token indices within one document.
"""
from typing import Optional

import numpy

OUTSIDE = 0  # class index of the non-entity class "O"; entity labels are 1..C


def sentence_ids(sent_starts: numpy.ndarray) -> numpy.ndarray:
    """Sentence number of each token, from spaCy's SENT_START values (1 = starts a sentence)."""
    starts = numpy.asarray(sent_starts) == 1
    if starts.size:
        starts[0] = True
    return numpy.cumsum(starts) - 1


def enumerate_spans(sent_ids: numpy.ndarray, max_span_length: int) -> numpy.ndarray:
    """Every span of 1..max_span_length tokens that lies inside one sentence.

    Returns an int32 array (n_spans, 2) of [start, end), ordered by start, then width.
    """
    sent_ids = numpy.asarray(sent_ids)
    n_tokens = sent_ids.shape[0]
    widths = numpy.arange(1, max_span_length + 1)
    starts = numpy.arange(n_tokens)
    # grid[start, width-1]; invalid cells are masked out
    ends = starts[:, None] + widths[None, :]
    inside = ends <= n_tokens
    same_sentence = numpy.zeros_like(inside)
    same_sentence[inside] = (
        sent_ids[numpy.broadcast_to(starts[:, None], ends.shape)[inside]]
        == sent_ids[ends[inside] - 1]
    )
    start_idx, width_idx = numpy.nonzero(same_sentence)
    spans = numpy.stack([start_idx, start_idx + widths[width_idx]], axis=1)
    return spans.astype(numpy.int32, copy=False).reshape(-1, 2)


def span_keys(spans: numpy.ndarray, n_tokens: int) -> numpy.ndarray:
    """A unique integer per [start, end) within a document of n_tokens tokens."""
    spans = numpy.asarray(spans, dtype=numpy.int64).reshape(-1, 2)
    return spans[:, 0] * (n_tokens + 1) + spans[:, 1]


def label_spans(
    spans: numpy.ndarray,
    gold_spans: numpy.ndarray,
    gold_labels: numpy.ndarray,
    n_tokens: int,
) -> numpy.ndarray:
    """Class index of each enumerated span: the gold label where a gold span
    matches it exactly, OUTSIDE otherwise."""
    spans = numpy.asarray(spans).reshape(-1, 2)
    result = numpy.full(spans.shape[0], OUTSIDE, dtype=numpy.int64)
    gold_spans = numpy.asarray(gold_spans).reshape(-1, 2)
    if gold_spans.shape[0] == 0 or spans.shape[0] == 0:
        return result
    gold_keys = span_keys(gold_spans, n_tokens)
    order = numpy.argsort(gold_keys)
    sorted_keys = gold_keys[order]
    keys = span_keys(spans, n_tokens)
    pos = numpy.clip(numpy.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
    hit = sorted_keys[pos] == keys
    result[hit] = numpy.asarray(gold_labels)[order][pos[hit]]
    return result


def spans_touching(spans: numpy.ndarray, token_flags: numpy.ndarray) -> numpy.ndarray:
    """Whether each span contains at least one flagged token."""
    spans = numpy.asarray(spans).reshape(-1, 2)
    counts = numpy.concatenate([[0], numpy.cumsum(numpy.asarray(token_flags, dtype=bool))])
    return (counts[spans[:, 1]] - counts[spans[:, 0]]) > 0


def tokens_covered(spans: numpy.ndarray, n_tokens: int) -> numpy.ndarray:
    """Per token, whether any of the [start, end) spans holds it."""
    spans = numpy.asarray(spans, dtype=numpy.int64).reshape(-1, 2)
    delta = numpy.zeros(n_tokens + 1, dtype=numpy.int64)
    numpy.add.at(delta, spans[:, 0], 1)
    numpy.add.at(delta, spans[:, 1], -1)
    return numpy.cumsum(delta[:-1]) > 0


def token_runs(token_flags: numpy.ndarray) -> numpy.ndarray:
    """The maximal [start, end) runs of flagged tokens, shape (n_runs, 2)."""
    flags = numpy.asarray(token_flags, dtype=numpy.int8)
    edges = numpy.flatnonzero(numpy.diff(numpy.concatenate([[0], flags, [0]])))
    return edges.reshape(-1, 2)


# rounds of vectorised decoding before the rest is taken one by one (see decode_non_overlapping)
MAX_DECODE_ROUNDS = 16


def decode_non_overlapping(
    spans: numpy.ndarray, scores: numpy.ndarray, n_tokens: Optional[int] = None
) -> numpy.ndarray:
    """Greedy decoding: take spans by descending score, skipping any span that
    overlaps one already taken. Ties go to the earlier, then shorter, span.

    Returns a boolean mask over ``spans``. Computed in rounds without a loop per
    span: each round accepts every span that outranks all live spans it overlaps
    (greedy would accept exactly these, since nothing better can block them), then
    drops the live spans that touch an accepted one. A chain of overlapping spans with
    falling (or tied) scores accepts one span per round, so after ``MAX_DECODE_ROUNDS``
    the few spans still live are taken in rank order one by one.
    """
    spans = numpy.asarray(spans, dtype=numpy.int64).reshape(-1, 2)
    n_spans = spans.shape[0]
    accepted = numpy.zeros(n_spans, dtype=bool)
    if n_spans == 0:
        return accepted
    if n_tokens is None:
        n_tokens = int(spans[:, 1].max())
    order = numpy.lexsort((spans[:, 1], spans[:, 0], -numpy.asarray(scores)))
    rank = numpy.empty(n_spans, dtype=numpy.int64)
    rank[order] = numpy.arange(n_spans)
    widths = spans[:, 1] - spans[:, 0]
    # one row per (span, covered token)
    owner = numpy.repeat(numpy.arange(n_spans), widths)
    offsets = numpy.arange(owner.shape[0]) - numpy.repeat(numpy.cumsum(widths) - widths, widths)
    token = spans[owner, 0] + offsets
    alive = numpy.ones(n_spans, dtype=bool)
    for _ in range(MAX_DECODE_ROUNDS):
        if not alive.any():
            return accepted
        live_rows = alive[owner]
        best = numpy.full(n_tokens, n_spans, dtype=numpy.int64)
        numpy.minimum.at(best, token[live_rows], rank[owner[live_rows]])
        wins_token = live_rows & (best[token] == rank[owner])
        won = alive & (numpy.bincount(owner, weights=wins_token, minlength=n_spans) == widths)
        accepted |= won
        covered = numpy.zeros(n_tokens, dtype=bool)
        covered[token[won[owner]]] = True
        alive &= numpy.bincount(owner, weights=covered[token], minlength=n_spans) == 0
    # the spans still live touch no accepted one; plain Python objects, as this loop is per span
    taken = bytearray(n_tokens)
    rest = order[alive[order]]
    for i, start, end in zip(rest.tolist(), spans[rest, 0].tolist(), spans[rest, 1].tolist()):
        if not any(taken[start:end]):
            taken[start:end] = b"\x01" * (end - start)
            accepted[i] = True
    return accepted


def class_log_prior(span_classes: numpy.ndarray, n_classes: int, outside_weight: float = 1.0) -> numpy.ndarray:
    """log of the (add-one smoothed) class frequencies of labelled spans, with "O" spans
    counted outside_weight times: an output bias with which an untrained classifier's
    softmax already predicts these frequencies."""
    counts = numpy.bincount(numpy.asarray(span_classes, dtype=numpy.int64), minlength=n_classes)
    counts = counts[:n_classes].astype(numpy.float64) + 1.0
    counts[OUTSIDE] = (counts[OUTSIDE] - 1.0) * outside_weight + 1.0
    return numpy.log(counts / counts.sum())
