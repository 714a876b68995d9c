"""Soft pseudo labels of target-language spans: the per-Doc payload written by
``pseudo-label`` and the store that keeps the refined labels for a training run.

Per-Doc payload, in ``doc.user_data["contproto"]`` (saved by DocBin with
``store_user_data=True``; msgpack, no pickle)::

    {"version": 1,
     "id": "<stable document id>",
     "classes": ["O", "LOC", ...],      # column names, "O" first
     "max_span_length": 4,
     "n_spans": 123,                     # spans enumerated as span_contproto does
     "probs": <bytes>}                   # float16, little-endian, (n_spans, len(classes)) row-major

Store on disk (a folder)::

    meta.json     {"format": "spacy-contproto-pseudo-labels", "version": 1, "classes": [...], "n_rows": N}
    index.json    {"ids": [...], "lengths": [...]}      # rows of a document follow the previous one's
    labels.f16    float16 little-endian (N, len(classes)) row-major, memory-mappable
"""
import hashlib
import json
import os
import shutil
import tempfile
import weakref
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy

PAYLOAD_KEY = "contproto"
PAYLOAD_VERSION = 1
STORE_FORMAT = "spacy-contproto-pseudo-labels"
STORE_VERSION = 1
FLOAT16 = numpy.dtype("<f2")


def stable_doc_ids(word_lists: Iterable[Sequence[str]], seen: Optional[Counter] = None) -> List[str]:
    """An id per document from its words: the same text gets the same id in every
    run and file order; repeated texts are told apart by their occurrence number
    (counted in `seen`, to continue over several calls)."""
    seen = Counter() if seen is None else seen
    ids = []
    for words in word_lists:
        digest = hashlib.sha1("\x1f".join(words).encode("utf8")).hexdigest()[:20]
        ids.append(f"{digest}-{seen[digest]}")
        seen[digest] += 1
    return ids


def encode_payload(doc_id: str, probs: numpy.ndarray, classes: Sequence[str], max_span_length: int) -> dict:
    probs = numpy.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ValueError(f"probs must be (n_spans, {len(classes)}), got {probs.shape}")
    return {
        "version": PAYLOAD_VERSION,
        "id": doc_id,
        "classes": list(classes),
        "max_span_length": int(max_span_length),
        "n_spans": int(probs.shape[0]),
        "probs": numpy.ascontiguousarray(probs, dtype=FLOAT16).tobytes(),
    }


def decode_payload(payload: dict) -> Tuple[str, numpy.ndarray, List[str], int]:
    """(id, float32 probs (n_spans, C), classes, max_span_length) of a payload."""
    try:
        if payload["version"] != PAYLOAD_VERSION:
            raise ValueError(f"unsupported pseudo-label payload version {payload['version']}")
        classes = list(payload["classes"])
        doc_id, n_spans, data = str(payload["id"]), int(payload["n_spans"]), payload["probs"]
        max_span_length = int(payload["max_span_length"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"malformed pseudo-label payload: missing or bad field {err}") from None
    expected = n_spans * len(classes) * FLOAT16.itemsize
    if not isinstance(data, (bytes, bytearray)) or len(data) != expected:
        size = f"{len(data)} bytes" if isinstance(data, (bytes, bytearray)) else type(data).__name__
        raise ValueError(
            f"malformed pseudo-label payload of Doc {doc_id!r}: probs holds {size}, but {n_spans} spans x "
            f"{len(classes)} classes in float16 are {expected} bytes (a damaged or hand-edited file? "
            "pseudo-label the target Docs again)"
        )
    probs = numpy.frombuffer(data, dtype=FLOAT16).reshape(n_spans, len(classes)).astype(numpy.float32)
    return doc_id, probs, classes, max_span_length


class PseudoLabelStore:
    """fp16 soft labels, one row per enumerated span, keyed by document id.

    Held in RAM up to ``max_ram_bytes``; larger stores live in a memory-mapped file
    (in a temporary folder, removed with the store, when no folder is given). With a
    folder, ``flush()`` makes the current labels durable and ``open()`` reads them
    back, e.g. to inspect the refined labels after training. ``create()`` replaces
    a store already in the folder."""

    def __init__(
        self,
        classes: Sequence[str],
        ids: Sequence[str],
        lengths: Sequence[int],
        labels: numpy.ndarray,
        directory: Optional[Path],
    ):
        self.classes = list(classes)
        self.directory = directory
        self._remove_temporary: Optional[weakref.finalize] = None
        self._labels = labels
        self._ids = list(ids)
        lengths = numpy.asarray(lengths, dtype=numpy.int64)
        offsets = numpy.cumsum(lengths) - lengths
        self._rows: Dict[str, Tuple[int, int]] = {
            doc_id: (int(o), int(n)) for doc_id, o, n in zip(self._ids, offsets, lengths)
        }
        if len(self._rows) != len(self._ids):
            dupes = [i for i, c in Counter(self._ids).items() if c > 1][:5]
            raise ValueError(f"duplicate document ids in the pseudo-label store, e.g. {dupes}")

    # creation -----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        entries: Dict[str, numpy.ndarray],
        classes: Sequence[str],
        directory: Optional[Union[str, Path]] = None,
        max_ram_bytes: int = 1 << 30,
    ) -> "PseudoLabelStore":
        """A store holding ``entries`` (id -> (n_spans, C) probabilities)."""
        n_classes = len(classes)
        ids = list(entries)
        lengths = [int(numpy.shape(entries[i])[0]) for i in ids]
        n_rows = int(sum(lengths))
        nbytes = n_rows * n_classes * FLOAT16.itemsize
        memory_mapped = nbytes > max_ram_bytes
        temporary = directory is None and memory_mapped
        if temporary:
            directory = tempfile.mkdtemp(prefix="contproto-pseudo-labels-")
        directory = Path(directory) if directory is not None else None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        if memory_mapped:
            labels = numpy.memmap(
                directory / "labels.f16", dtype=FLOAT16, mode="w+", shape=(max(n_rows, 1), n_classes)
            )[:n_rows]
        else:
            labels = numpy.zeros((n_rows, n_classes), dtype=FLOAT16)
        offset = 0
        for doc_id, n in zip(ids, lengths):
            rows = numpy.asarray(entries[doc_id])
            if rows.ndim != 2 or rows.shape[1] != n_classes:
                raise ValueError(f"labels of {doc_id} have shape {rows.shape}, expected (n, {n_classes})")
            labels[offset : offset + n] = rows
            offset += n
        store = cls(classes, ids, lengths, labels, directory)
        if temporary:
            # nothing outside this store knows the folder: it goes when the store does
            store._remove_temporary = weakref.finalize(store, shutil.rmtree, str(directory), ignore_errors=True)
        if directory is not None:
            store.flush()
        return store

    @classmethod
    def open(cls, directory: Union[str, Path], max_ram_bytes: int = 1 << 30) -> "PseudoLabelStore":
        directory = Path(directory)
        try:
            meta = json.loads((directory / "meta.json").read_text(encoding="utf8"))
            index = json.loads((directory / "index.json").read_text(encoding="utf8"))
        except FileNotFoundError as err:
            raise ValueError(f"{directory} is not a pseudo-label store: {err.filename} is missing") from None
        if meta.get("format") != STORE_FORMAT or meta.get("version") != STORE_VERSION:
            raise ValueError(f"{directory} is not a version-{STORE_VERSION} pseudo-label store")
        classes, n_rows = meta["classes"], int(meta["n_rows"])
        path = directory / "labels.f16"
        expected = n_rows * len(classes) * FLOAT16.itemsize
        if not path.exists() or path.stat().st_size < expected:
            raise ValueError(f"{path} is missing or shorter than the {expected} bytes meta.json promises")
        if expected > max_ram_bytes:
            labels = numpy.memmap(path, dtype=FLOAT16, mode="r+", shape=(max(n_rows, 1), len(classes)))[:n_rows]
        else:
            labels = numpy.fromfile(path, dtype=FLOAT16, count=n_rows * len(classes))
            labels = labels.reshape(n_rows, len(classes))
        return cls(classes, index["ids"], index["lengths"], labels, directory)

    # access -------------------------------------------------------------------

    @property
    def memory_mapped(self) -> bool:
        return isinstance(self._labels, numpy.memmap) or isinstance(self._labels.base, numpy.memmap)

    @property
    def nbytes(self) -> int:
        return int(self._labels.size * FLOAT16.itemsize)

    @property
    def n_rows(self) -> int:
        return int(self._labels.shape[0])

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._rows

    def ids(self) -> List[str]:
        return list(self._ids)

    def _slice(self, doc_id: str) -> slice:
        try:
            offset, n = self._rows[doc_id]
        except KeyError:
            raise KeyError(f"document {doc_id!r} has no pseudo labels in the store") from None
        return slice(offset, offset + n)

    def row_counts(self, doc_ids: Sequence[str]) -> numpy.ndarray:
        """The number of stored rows (spans) of each document."""
        slices = [self._slice(i) for i in doc_ids]
        return numpy.asarray([where.stop - where.start for where in slices], dtype=numpy.int64)

    def get(self, doc_id: str) -> numpy.ndarray:
        return numpy.asarray(self._labels[self._slice(doc_id)], dtype=numpy.float32)

    def gather(self, doc_ids: Sequence[str]) -> numpy.ndarray:
        """Rows of several documents, concatenated in order, as float32."""
        if not doc_ids:
            return numpy.zeros((0, len(self.classes)), dtype=numpy.float32)
        return numpy.concatenate([self.get(i) for i in doc_ids])

    def set(self, doc_id: str, rows: numpy.ndarray) -> None:
        where = self._slice(doc_id)
        rows = numpy.asarray(rows)
        if rows.shape != (where.stop - where.start, len(self.classes)):
            raise ValueError(f"labels for {doc_id} have shape {rows.shape}, expected {(where.stop - where.start, len(self.classes))}")
        self._labels[where] = rows

    def scatter(self, doc_ids: Sequence[str], rows: numpy.ndarray) -> None:
        """Write concatenated rows back (the inverse of gather)."""
        offset = 0
        for doc_id in doc_ids:
            where = self._slice(doc_id)
            n = where.stop - where.start
            self.set(doc_id, rows[offset : offset + n])
            offset += n
        if offset != len(rows):
            raise ValueError(f"{len(rows)} rows given for {offset} spans")

    # persistence ----------------------------------------------------------------

    def relocate(self, directory: Union[str, Path]) -> None:
        """Keep the store in `directory` from now on (replacing a store there), e.g. once
        training starts: a store built by nlp.initialize() alone (spacy debug data, init
        pipeline) must not replace the refined labels of an earlier run."""
        directory = Path(directory)
        if self.directory is not None and directory.resolve() == self.directory.resolve():
            return
        directory.mkdir(parents=True, exist_ok=True)
        if self.memory_mapped:
            n_rows, n_classes = self._labels.shape
            base = self._labels if isinstance(self._labels, numpy.memmap) else self._labels.base
            base.flush()
            tmp = directory / "labels.f16.tmp"
            shutil.copyfile(base.filename, tmp)
            os.replace(tmp, directory / "labels.f16")
            self._labels = numpy.memmap(
                directory / "labels.f16", dtype=FLOAT16, mode="r+", shape=(max(n_rows, 1), n_classes)
            )[:n_rows]
        self.directory = directory
        self.flush()
        if self._remove_temporary is not None:
            self._remove_temporary()
            self._remove_temporary = None

    def flush(self) -> None:
        """Write labels, index and meta to the folder (no-op without one)."""
        if self.directory is None:
            return
        if self.memory_mapped:
            base = self._labels if isinstance(self._labels, numpy.memmap) else self._labels.base
            base.flush()
        else:
            _atomic_write(self.directory / "labels.f16", numpy.ascontiguousarray(self._labels).tobytes())
        index = {"ids": self._ids, "lengths": [self._rows[i][1] for i in self._ids]}
        _atomic_write(self.directory / "index.json", json.dumps(index).encode("utf8"))
        meta = {"format": STORE_FORMAT, "version": STORE_VERSION, "classes": self.classes, "n_rows": self.n_rows}
        _atomic_write(self.directory / "meta.json", json.dumps(meta).encode("utf8"))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
