import gc

import numpy
import pytest

from spacy_contproto.pseudo_labels import (
    PseudoLabelStore,
    decode_payload,
    encode_payload,
    stable_doc_ids,
)

CLASSES = ["O", "PER", "LOC"]


def random_entries(n_docs=5, seed=0):
    rng = numpy.random.default_rng(seed)
    entries = {}
    for i in range(n_docs):
        p = rng.random((rng.integers(1, 9), len(CLASSES)))
        entries[f"doc{i}"] = p / p.sum(1, keepdims=True)
    return entries


def test_stable_ids_are_deterministic_and_distinguish_repeats():
    a = stable_doc_ids([["a", "b"], ["c"], ["a", "b"]])
    assert a == stable_doc_ids([["a", "b"], ["c"], ["a", "b"]])
    assert len(set(a)) == 3 and a[0] != a[2]
    assert stable_doc_ids([["c"]])[0] == a[1]  # independent of position
    assert stable_doc_ids([["ab"]]) != stable_doc_ids([["a", "b"]])


def test_payload_round_trip_is_fp16():
    probs = numpy.array([[0.1, 0.2, 0.7], [1 / 3, 1 / 3, 1 / 3]])
    payload = encode_payload("x", probs, CLASSES, 4)
    assert len(payload["probs"]) == probs.size * 2
    doc_id, decoded, classes, max_len = decode_payload(payload)
    assert (doc_id, classes, max_len) == ("x", CLASSES, 4)
    assert decoded.dtype == numpy.float32
    assert numpy.allclose(decoded, probs, atol=1e-3)
    assert numpy.array_equal(decoded, probs.astype(numpy.float16).astype(numpy.float32))
    with pytest.raises(ValueError, match="malformed"):
        decode_payload({"version": 1, "id": "x"})
    # a damaged payload names its Doc and the size it should have, not numpy's reshape error
    with pytest.raises(ValueError, match=r"payload of Doc 'x': probs holds 12 bytes, but 4 spans x 3 classes .* 24 bytes"):
        decode_payload({**payload, "n_spans": 4})
    with pytest.raises(ValueError, match=r"probs holds 11 bytes"):
        decode_payload({**payload, "probs": payload["probs"][:-1]})
    with pytest.raises(ValueError, match=r"probs holds str"):
        decode_payload({**payload, "probs": "text"})
    with pytest.raises(ValueError, match="must be"):
        encode_payload("x", probs, ["O", "PER"], 4)


@pytest.mark.parametrize("max_ram_bytes", [1 << 20, 0])
def test_store_get_set_flush_and_reopen(tmp_path, max_ram_bytes):
    entries = random_entries()
    store = PseudoLabelStore.create(entries, CLASSES, tmp_path / "store", max_ram_bytes=max_ram_bytes)
    assert store.memory_mapped == (max_ram_bytes == 0)
    assert store.nbytes == sum(len(v) for v in entries.values()) * len(CLASSES) * 2
    assert numpy.allclose(store.get("doc3"), entries["doc3"], atol=1e-3)
    new = numpy.tile([[1.0, 0.0, 0.0]], (len(entries["doc1"]), 1))
    store.set("doc1", new)
    ids = ["doc4", "doc1"]
    gathered = store.gather(ids)
    assert numpy.array_equal(gathered[len(entries["doc4"]):], new)
    store.scatter(ids, gathered * 0 + numpy.array([0.0, 1.0, 0.0]))
    store.flush()

    reopened = PseudoLabelStore.open(tmp_path / "store", max_ram_bytes=max_ram_bytes)
    assert reopened.ids() == store.ids() and reopened.classes == CLASSES
    assert numpy.array_equal(reopened.get("doc1"), numpy.tile([[0.0, 1.0, 0.0]], (len(new), 1)))
    assert numpy.array_equal(reopened.get("doc0"), store.get("doc0"))


def test_store_without_folder_stays_in_ram_and_memory_maps_when_large():
    store = PseudoLabelStore.create(random_entries(), CLASSES)
    assert not store.memory_mapped and store.directory is None
    big = PseudoLabelStore.create(random_entries(), CLASSES, max_ram_bytes=10)
    assert big.memory_mapped and (big.directory / "labels.f16").exists()
    temporary = big.directory
    del big
    gc.collect()
    assert not temporary.exists()  # a temporary folder goes with its store


def test_store_in_a_given_folder_outlives_the_store(tmp_path):
    store = PseudoLabelStore.create(random_entries(), CLASSES, tmp_path / "kept", max_ram_bytes=10)
    del store
    gc.collect()
    assert PseudoLabelStore.open(tmp_path / "kept").ids() == list(random_entries())


def test_store_errors(tmp_path):
    store = PseudoLabelStore.create(random_entries(), CLASSES, tmp_path / "s")
    with pytest.raises(KeyError, match="no pseudo labels"):
        store.get("missing")
    with pytest.raises(ValueError, match="shape"):
        store.set("doc0", numpy.zeros((99, 3)))
    (tmp_path / "s" / "labels.f16").write_bytes(b"\x00\x01")
    with pytest.raises(ValueError, match="shorter"):
        PseudoLabelStore.open(tmp_path / "s")
    with pytest.raises(ValueError, match="not a pseudo-label store"):
        PseudoLabelStore.open(tmp_path / "nothing")


@pytest.mark.parametrize("max_ram_bytes", [1 << 20, 10])
def test_store_relocates_into_a_folder(tmp_path, max_ram_bytes):
    entries = random_entries()
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "meta.json").write_text("an earlier run's store")
    store = PseudoLabelStore.create(entries, CLASSES, max_ram_bytes=max_ram_bytes)
    temporary = store.directory
    assert (tmp_path / "store" / "meta.json").read_text() == "an earlier run's store"
    store.relocate(tmp_path / "store")
    assert store.directory == tmp_path / "store" and store.memory_mapped == (max_ram_bytes == 10)
    if temporary is not None:
        assert not temporary.exists()  # the temporary copy is gone at once
    store.set("doc2", numpy.tile([[0.0, 0.0, 1.0]], (len(entries["doc2"]), 1)))
    store.flush()  # later writes reach the new folder
    reopened = PseudoLabelStore.open(tmp_path / "store")
    assert reopened.ids() == list(entries)
    assert numpy.array_equal(reopened.get("doc2"), store.get("doc2"))
    assert numpy.allclose(reopened.get("doc0"), entries["doc0"], atol=1e-3)
