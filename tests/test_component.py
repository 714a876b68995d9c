import os
import subprocess
import sys

import numpy
import pytest
import torch
import spacy
import srsly
from seqeval.metrics import f1_score, precision_score, recall_score
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example
from thinc.api import Ragged

from spacy_contproto.component import SpanProbabilities
from spacy_contproto.model import doc_spans, span_head_module
from spacy_contproto.spans import OUTSIDE
from spacy_contproto.testing import as_seqeval, synthetic_docs

from .conftest import CONFIGS


def load_docs(path, vocab):
    return list(DocBin().from_disk(path).get_docs(vocab))


def teacher_config(encoder, **overrides):
    return spacy.util.load_config(CONFIGS / "teacher_cpu.cfg", overrides={"paths.encoder": str(encoder), **overrides})


def build_initialized(encoder, docs, **overrides):
    config = teacher_config(encoder, **overrides)
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    examples = [Example(nlp.make_doc(d.text), d) for d in docs]
    nlp.initialize(lambda: examples)
    return nlp


@pytest.fixture(scope="module")
def initialized_nlp(tiny_encoder):
    docs = synthetic_docs(spacy.blank("xx").vocab, 20, seed=3)
    return build_initialized(tiny_encoder, docs)


def test_factory_and_architectures_found_through_entry_points():
    # the script never imports spacy_contproto: spaCy must find it by its entry points
    code = (
        "import spacy\n"
        "nlp = spacy.blank('en')\n"
        "pipe = nlp.add_pipe('span_contproto')\n"
        "print(type(pipe).__module__, pipe.model.name)\n"
        "from spacy.util import registry\n"
        "registry.architectures.get('spacy_contproto.SpanContProto.v1')\n"
        "registry.layers.get('spacy_contproto.first_last_pooling.v1')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["spacy_contproto.component", "span_contproto"]


def test_spacy_train_learns_synthetic_corpus(trained_teacher, synthetic_corpus):
    nlp = spacy.load(trained_teacher)
    assert nlp.pipe_names == ["transformer", "span_contproto"]
    dev = load_docs(synthetic_corpus["dev"], nlp.vocab)
    scores = nlp.evaluate([Example(nlp.make_doc(d.text), d) for d in dev])
    # chance level is ~0 F1; the tiny random encoder must learn the corpus
    assert scores["ents_f"] > 0.8, scores
    assert set(scores["ents_per_type"]) == {"PER", "ORG", "LOC", "MISC"}
    log = (trained_teacher.parent / "train.log").read_text()
    assert "LOSS SPAN_" in log and "ENTS_F" in log


def test_scores_match_seqeval(trained_teacher, synthetic_corpus):
    nlp = spacy.load(trained_teacher)
    gold = load_docs(synthetic_corpus["dev"], nlp.vocab)
    # add an entity longer than max_span_length: unreachable, must count as a miss
    long_words = ["The", "Very", "Long", "Name", "Of", "Acme", "said", "so", "."]
    gold.append(Doc(nlp.vocab, words=long_words, ents=["O"] + ["B-ORG"] + ["I-ORG"] * 4 + ["O"] * 3))
    # an untrained-for-long mixture of right and wrong predictions
    predicted = list(nlp.pipe(d.text for d in gold))
    predicted[0].ents = []  # force some misses
    examples = [Example(p, g) for p, g in zip(predicted, gold)]
    scores = nlp.get_pipe("span_contproto").score(examples)
    y_true, y_pred = as_seqeval(gold), as_seqeval(predicted)
    assert scores["ents_p"] == pytest.approx(precision_score(y_true, y_pred))
    assert scores["ents_r"] == pytest.approx(recall_score(y_true, y_pred))
    assert scores["ents_f"] == pytest.approx(f1_score(y_true, y_pred))
    assert scores["ents_r"] < 1.0


def predictions_of(nlp, texts):
    pipe = nlp.get_pipe("span_contproto")
    docs = [nlp.get_pipe("transformer")(nlp.make_doc(t)) for t in texts]
    return pipe.predict(docs).probabilities


def test_round_trips_give_identical_predictions(trained_teacher, tmp_path):
    nlp = spacy.load(trained_teacher)
    texts = ["Anna Berg works for Globex in Oslo .", "Nothing here .", "Sofia won the World Cup ."]
    reference = predictions_of(nlp, texts)
    ents = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]

    nlp.to_disk(tmp_path / "saved")
    reloaded = spacy.load(tmp_path / "saved")
    assert numpy.array_equal(predictions_of(reloaded, texts), reference)
    assert [[(e.start, e.end, e.label_) for e in d.ents] for d in reloaded.pipe(texts)] == ents

    from_bytes = spacy.util.load_model_from_config(nlp.config).from_bytes(nlp.to_bytes())
    assert numpy.array_equal(predictions_of(from_bytes, texts), reference)

    pipe = nlp.get_pipe("span_contproto")
    fresh = spacy.util.load_model_from_config(nlp.config)
    fresh.get_pipe("transformer").from_bytes(nlp.get_pipe("transformer").to_bytes())
    fresh_pipe = fresh.get_pipe("span_contproto").from_bytes(pipe.to_bytes())
    assert fresh_pipe.labels == pipe.labels
    assert numpy.array_equal(predictions_of(fresh, texts), reference)


def test_empty_whitespace_and_entity_free_docs(trained_teacher):
    nlp = spacy.load(trained_teacher)
    docs = list(nlp.pipe(["", "   ", "It was a quiet and rainy morning .", "Paris"]))
    assert [len(d) for d in docs[:2]] == [0, 1]
    assert [len(d.ents) for d in docs[:3]] == [0, 0, 0]
    assert all("contproto" in d.spans for d in docs)
    assert [(e.text, e.label_) for e in docs[3].ents] == [("Paris", "LOC")]
    assert len(nlp("").spans["contproto"]) == 0


def span_probabilities(n_classes, peaks):
    """One row per span: probability p for class c, the rest shared evenly by the other classes."""
    probs = numpy.zeros((len(peaks), n_classes), dtype="f")
    for row, (c, p) in zip(probs, peaks):
        row[:] = (1 - p) / (n_classes - 1)
        row[c] = p
    return probs


def test_set_annotations_decodes_overlaps_by_probability(initialized_nlp):
    pipe = initialized_nlp.get_pipe("span_contproto")
    labels = pipe.labels
    doc = Doc(initialized_nlp.vocab, words=["a", "b", "c", "d", "e"])
    spans = numpy.array([[0, 2], [1, 3], [2, 4], [4, 5], [0, 1], [3, 4]], dtype="i")
    per, org = labels.index("PER") + 1, labels.index("ORG") + 1
    probs = span_probabilities(len(labels) + 1, [
        (per, 0.9),  # overlaps the better [1,3]
        (org, 0.95),
        (per, 0.6),  # overlaps [1,3]
        (org, 0.3),
        (per, 0.8),
        (0, 0.99),  # "O" wins: not an entity
    ])
    pipe.set_annotations([doc], SpanProbabilities(Ragged(spans, numpy.array([6], "i")), probs))
    assert [(e.start, e.end, e.label_) for e in doc.ents] == [(0, 1, "PER"), (1, 3, "ORG"), (4, 5, "ORG")]
    group = doc.spans["contproto"]
    assert [(s.start, s.end, s.label_) for s in group] == [
        (0, 2, "PER"), (1, 3, "ORG"), (2, 4, "PER"), (4, 5, "ORG"), (0, 1, "PER")
    ]
    assert group.attrs["scores"].tolist() == pytest.approx([0.9, 0.95, 0.6, 0.3, 0.8])


def test_set_annotations_keeps_preset_entities_and_skips_whitespace_edges(initialized_nlp):
    pipe = initialized_nlp.get_pipe("span_contproto")
    labels = pipe.labels
    doc = Doc(initialized_nlp.vocab, words=["a", "b", "\n", "d", "e"])
    doc.ents = [Span(doc, 4, 5, "LOC")]  # e.g. from an entity_ruler before the component
    spans = numpy.array([[0, 2], [1, 3], [2, 4], [3, 5], [3, 4]], dtype="i")
    per, org = labels.index("PER") + 1, labels.index("ORG") + 1
    probs = span_probabilities(len(labels) + 1, [
        (per, 0.9),
        (org, 0.95),  # ends on the whitespace token
        (per, 0.97),  # starts on it
        (org, 0.99),  # overlaps the preset entity
        (per, 0.5),
    ])
    pipe.set_annotations([doc], SpanProbabilities(Ragged(spans, numpy.array([5], "i")), probs))
    assert [(e.start, e.end, e.label_) for e in doc.ents] == [(0, 2, "PER"), (3, 4, "PER"), (4, 5, "LOC")]
    assert [(s.start, s.end, s.label_) for s in doc.spans["contproto"]] == [(0, 2, "PER"), (3, 5, "ORG"), (3, 4, "PER")]


@pytest.mark.parametrize("with_preset", [False, True])
def test_set_annotations_respects_blocked_tokens(initialized_nlp, with_preset):
    # Doc.set_ents(blocked=...): "never an entity for spaCy's built-in NER"; they stay blocked
    pipe = initialized_nlp.get_pipe("span_contproto")
    labels = pipe.labels
    doc = Doc(initialized_nlp.vocab, words=["a", "b", "c", "d", "e", "f"])
    doc.set_ents([Span(doc, 5, 6, "LOC")] if with_preset else [], blocked=[Span(doc, 0, 2)], default="missing")
    spans = numpy.array([[0, 2], [1, 3], [2, 3], [3, 4]], dtype="i")
    per = labels.index("PER") + 1
    probs = span_probabilities(len(labels) + 1, [(per, 0.9), (per, 0.8), (OUTSIDE, 0.9), (per, 0.7)])
    pipe.set_annotations([doc], SpanProbabilities(Ragged(spans, numpy.array([4], "i")), probs))
    preset = [(5, 6, "LOC")] if with_preset else []
    assert [(e.start, e.end, e.label_) for e in doc.ents] == [(3, 4, "PER")] + preset
    # blocked tokens keep ent_iob "B" without a type; every other token is annotated
    assert [t.ent_iob_ for t in doc] == ["B", "B", "O", "B", "O", "B" if with_preset else "O"]
    assert [t.ent_type_ for t in doc][:2] == ["", ""]


def test_get_loss_refuses_predict_output_clearly(initialized_nlp):
    pipe = initialized_nlp.get_pipe("span_contproto")
    doc = initialized_nlp.make_doc("Anna lives in Paris .")
    eg = Example(doc, doc.copy())
    with pytest.raises(TypeError, match="get_loss takes the SpanOutputs of the training forward pass"):
        pipe.get_loss([eg], pipe.predict(list(initialized_nlp.pipe([doc.copy()], disable=["span_contproto"]))))
    # a gold label the component lacks: the same clear error as update, not a KeyError
    gold = initialized_nlp.make_doc("Anna lives in Paris .")
    gold.ents = [Span(gold, 3, 4, "EVENT")]
    outputs = pipe.model.predict([doc])
    with pytest.raises(ValueError, match=r"gold entities have labels the component does not know: \['EVENT'\]"):
        pipe.get_loss([Example(doc, gold)], outputs)


def test_initialize_warns_about_unreachable_entities(tiny_encoder):
    vocab = spacy.blank("xx").vocab
    docs = synthetic_docs(vocab, 10, seed=4)
    docs.append(Doc(vocab, words="A B C D E F .".split(), ents=["B-ORG"] + ["I-ORG"] * 4 + ["O", "O"]))
    with pytest.warns(UserWarning, match=r"1 of \d+ gold entities are longer than max_span_length=4.*ORG: 1"):
        build_initialized(tiny_encoder, docs)


def test_missing_annotation_and_negative_weight_in_loss(initialized_nlp):
    pipe = initialized_nlp.get_pipe("span_contproto")
    vocab = initialized_nlp.vocab
    # tokens 3-4 have missing entity annotation
    words = ["Anna", "Berg", "visited", "the", "city", "."]
    gold = Doc(vocab, words=words, ents=["B-PER", "I-PER", "O", "", "", "O"])
    eg = Example(Doc(vocab, words=words), gold)
    spans = doc_spans([eg.predicted], pipe.max_span_length)
    targets, scored, _ = pipe.gold_targets([eg], spans)
    as_tuples = [tuple(s) for s in spans.data.tolist()]
    assert targets[as_tuples.index((0, 2))] == pipe.labels.index("PER") + 1
    touching_missing = [(s < 5 and e > 3) for s, e in as_tuples]
    assert scored.tolist() == [not t for t in touching_missing]

    outputs = pipe.model.predict([eg.predicted])
    loss, grads = pipe.get_loss([eg], outputs)
    assert loss > 0
    d = grads.d_logits
    assert numpy.all(d[~scored] == 0) and numpy.all(numpy.abs(d[scored]).sum(1) > 0)

    pipe.cfg["neg_span_weight"] = 0.0
    try:
        _, grads0 = pipe.get_loss([eg], outputs)
    finally:
        pipe.cfg["neg_span_weight"] = 0.5
    is_entity = targets > 0
    assert numpy.all(grads0.d_logits[~is_entity] == 0)
    # entity spans: same weight, but the per-sentence normaliser is unchanged
    assert numpy.allclose(grads0.d_logits[is_entity], d[is_entity])


def test_unknown_gold_label_is_a_clear_error(initialized_nlp):
    pipe = initialized_nlp.get_pipe("span_contproto")
    vocab = initialized_nlp.vocab
    gold = Doc(vocab, words=["Tuesday", "came"], ents=["B-DATE", "O"])
    eg = Example(Doc(vocab, words=["Tuesday", "came"]), gold)
    with pytest.raises(ValueError, match=r"labels the component does not know: \['DATE'\]"):
        pipe.update([eg])


def test_initialize_without_labels_is_a_clear_error(tiny_encoder):
    docs = synthetic_docs(spacy.blank("xx").vocab, 5, seed=1, with_entities=False)
    with pytest.raises(ValueError, match="no entity labels found"):
        build_initialized(tiny_encoder, docs)


def test_initialize_labels_narrower_than_the_data_is_a_clear_error(tiny_encoder):
    docs = synthetic_docs(spacy.blank("xx").vocab, 10, seed=2)
    config = teacher_config(tiny_encoder)
    config["components"]["span_contproto"]["prior_bias"] = True  # its class prior reads every gold entity
    config["initialize"]["components"]["span_contproto"] = {"labels": ["PER"]}
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    examples = [Example(nlp.make_doc(d.text), d) for d in docs]
    with pytest.raises(ValueError, match=r"labels the component does not know: \['LOC', 'MISC', 'ORG'\]"):
        nlp.initialize(lambda: examples)


def test_adding_a_label_after_initialize_is_a_clear_error(tiny_encoder):
    nlp = build_initialized(tiny_encoder, synthetic_docs(spacy.blank("xx").vocab, 10, seed=3))
    pipe = nlp.get_pipe("span_contproto")
    assert pipe.add_label("PER") == 0  # known labels stay a no-op
    with pytest.raises(ValueError, match="cannot add label 'NEW' to an initialized component.*build the pipeline anew"):
        pipe.add_label("NEW")
    assert "NEW" not in pipe.labels


def test_predicting_with_an_uninitialized_component_is_a_clear_error(tiny_encoder):
    config = teacher_config(tiny_encoder)
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    with pytest.raises(ValueError, match="span_contproto is not initialized"):
        nlp.get_pipe("span_contproto").predict([nlp.make_doc("Anna Berg")])


def test_initialize_on_empty_docs_only_is_a_clear_error(tiny_encoder):
    vocab = spacy.blank("xx").vocab
    config = teacher_config(tiny_encoder)
    config["initialize"]["components"]["span_contproto"] = {"labels": ["PER"]}
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    empty = [Example(Doc(nlp.vocab, words=[]), Doc(nlp.vocab, words=[])) for _ in range(3)]
    with pytest.raises(ValueError, match="at least one non-empty Doc"):
        nlp.initialize(lambda: empty)
    # empty Docs first, the sample for the widths comes from the non-empty ones after them
    docs = [Doc(vocab, words=[]) for _ in range(70)] + synthetic_docs(vocab, 5, seed=4)
    nlp = build_initialized(tiny_encoder, docs)
    assert nlp.get_pipe("span_contproto").cfg["token_width"] > 0


def test_mixed_precision_on_cpu_is_a_clear_error(tiny_encoder):
    docs = synthetic_docs(spacy.blank("xx").vocab, 5, seed=3)
    with pytest.raises(ValueError, match="mixed_precision = true needs a GPU"):
        build_initialized(tiny_encoder, docs, **{"components.span_contproto.model.mixed_precision": True})


def test_first_last_features_without_first_last_pooling_are_a_clear_error(tiny_encoder):
    config = teacher_config(tiny_encoder)
    config["components"]["span_contproto"]["model"]["tok2vec"]["pooling"] = {"@layers": "reduce_mean.v1"}
    with pytest.raises(ValueError, match="first_last_pooling"):
        spacy.util.load_model_from_config(config, auto_fill=True)
    config["components"]["span_contproto"]["model"]["token_features"] = "pooled"
    spacy.util.load_model_from_config(config, auto_fill=True)


@pytest.mark.parametrize("setting,value", [("hidden_width", -5), ("projection_width", 0),
                                           ("width_embedding_width", -1), ("dropout", 1.0)])
def test_invalid_model_sizes_are_clear_errors(tiny_encoder, setting, value):
    config = teacher_config(tiny_encoder)
    config["components"]["span_contproto"]["model"][setting] = value
    with pytest.raises(ValueError, match=setting):
        spacy.util.load_model_from_config(config, auto_fill=True)


def test_sourcing_into_another_pipeline_with_replaced_listener(trained_teacher, tmp_path):
    trained = spacy.load(trained_teacher)
    text = "Anna Berg works for Globex in Oslo ."
    expected = [(e.start, e.end, e.label_) for e in trained(text).ents]
    trained.replace_listeners("transformer", "span_contproto", ["model.tok2vec"])
    nlp = spacy.blank("xx")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("span_contproto", source=trained)
    assert [(e.start, e.end, e.label_) for e in nlp(text).ents] == expected
    nlp.to_disk(tmp_path / "combined")
    reloaded = spacy.load(tmp_path / "combined")
    assert reloaded.pipe_names == ["sentencizer", "span_contproto"]
    assert [(e.start, e.end, e.label_) for e in reloaded(text).ents] == expected


def test_loading_a_different_label_set_is_a_clear_error(trained_teacher, tiny_encoder):
    saved = spacy.load(trained_teacher).get_pipe("span_contproto").to_bytes()
    docs = synthetic_docs(spacy.blank("xx").vocab, 10, seed=5)
    other = build_initialized(tiny_encoder, docs, **{"components.span_contproto.model.max_span_length": 4})
    pipe = other.get_pipe("span_contproto")
    pipe.cfg["labels"] = ["PER", "ORG"]  # pretend it was initialized with two labels
    pipe.model.get_ref("span_head").set_dim("nO", 3, force=True)
    with pytest.raises(ValueError, match=r"cannot load a component with 4 labels .* initialized with 2 labels"):
        pipe.from_bytes(saved)


def test_loading_a_different_max_span_length_is_a_clear_error(trained_teacher, tmp_path):
    nlp = spacy.load(trained_teacher)
    config = nlp.config.copy()
    config["components"]["span_contproto"]["model"]["max_span_length"] = 3
    other = spacy.util.load_model_from_config(config)
    with pytest.raises(ValueError, match="max_span_length=4, but the model config says 3"):
        other.get_pipe("span_contproto").from_bytes(nlp.get_pipe("span_contproto").to_bytes())


def test_loading_prototypes_of_another_width_is_a_clear_error(trained_teacher):
    from spacy_contproto.self_training import SelfTrainingState

    pipe = spacy.load(trained_teacher).get_pipe("span_contproto")
    msg = srsly.msgpack_loads(pipe.to_bytes())
    # what a model trained with the other prototype_space (another memory width) would have saved
    msg["contproto"] = SelfTrainingState(pipe.settings, pipe.class_names, 7).to_bytes()
    with pytest.raises(ValueError, match=r"prototype memory: saved prototypes have shape \(5, 7\).* prototype_space = 'projection' \(128 dimensions\)"):
        pipe.from_bytes(srsly.msgpack_dumps(msg))


def test_torch_weights_are_loaded_with_weights_only(trained_teacher, monkeypatch):
    import torch

    calls = []
    original = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only", "default"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    spacy.load(trained_teacher)
    # thinc's PyTorchShim calls torch.load without weights_only: torch >= 2.6 defaults it to True
    assert calls and all(c in ("default", True) for c in calls)
    # and the default refuses arbitrary pickled objects (torch >= 2.6: weights_only=True)
    import io
    import pickle

    buffer = io.BytesIO()
    torch.save({"obj": Counterfeit()}, buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        original(buffer)


class Counterfeit:
    """An arbitrary class: unpickling it would run code of the file's choosing."""


def test_prior_bias_starts_a_fresh_head_at_the_weighted_class_frequencies(tiny_encoder):
    from spacy_contproto.model import span_head_module
    from spacy_contproto.spans import label_spans

    docs = synthetic_docs(spacy.blank("xx").vocab, 20, seed=4)
    nlp = build_initialized(tiny_encoder, docs, **{"components.span_contproto.prior_bias": True})
    pipe = nlp.get_pipe("span_contproto")
    index = {name: i for i, name in enumerate(pipe.class_names)}
    spans = doc_spans(docs, pipe.max_span_length)
    classes, offset = [], 0
    for doc, n in zip(docs, spans.lengths):
        gold = numpy.asarray([(e.start, e.end) for e in doc.ents]).reshape(-1, 2)
        labels = numpy.asarray([index[e.label_] for e in doc.ents])
        classes.append(label_spans(spans.data[offset : offset + n], gold, labels, len(doc)))
        offset += n
    counts = numpy.bincount(numpy.concatenate(classes), minlength=len(index)) + 1.0
    counts[0] = (counts[0] - 1) * 0.5 + 1  # "O" spans at neg_span_weight
    bias = span_head_module(pipe.model).classifier[-1].bias.detach().numpy()
    probs = numpy.exp(bias) / numpy.exp(bias).sum()
    numpy.testing.assert_allclose(probs, counts / counts.sum(), rtol=1e-5)
    # without the option the bias is PyTorch's default, not the prior
    plain = build_initialized(tiny_encoder, docs).get_pipe("span_contproto")
    plain_bias = span_head_module(plain.model).classifier[-1].bias.detach().numpy()
    assert not numpy.allclose(plain_bias, bias, atol=0.1)


@pytest.mark.parametrize("component", ["span_contproto", "transformer"])
def test_accumulating_gradients_under_mixed_precision_is_a_clear_error(tiny_encoder, component):
    """Thinc's grad scaler unscales all accumulated gradients at each backward: every
    sub-batch but the last would lose its gradients."""
    docs = synthetic_docs(spacy.blank("xx").vocab, 5, seed=3)
    mixed = {f"components.{component}.model.mixed_precision": True}
    with pytest.raises(ValueError, match="accumulate_gradient = 2 with mixed precision in " + component):
        build_initialized(tiny_encoder, docs, **{"training.accumulate_gradient": 2}, **mixed)
    # a frozen component does not backpropagate
    if component == "transformer":
        nlp = build_initialized(tiny_encoder, docs, **{"training.accumulate_gradient": 2,
                                                       "training.frozen_components": ["transformer"]}, **mixed)
        assert nlp.get_pipe("span_contproto").labels
    # one backward per update is fine
    if component == "transformer":
        assert build_initialized(tiny_encoder, docs, **mixed).get_pipe("span_contproto").labels


def test_initialize_again_starts_the_span_head_afresh(tiny_encoder):
    docs = synthetic_docs(spacy.blank("xx").vocab, 5, seed=3)
    nlp = build_initialized(tiny_encoder, docs)
    head = span_head_module(nlp.get_pipe("span_contproto").model)
    with torch.no_grad():
        for p in head.parameters():
            p.fill_(0.123)
    examples = [Example(nlp.make_doc(d.text), d) for d in docs]
    nlp.initialize(lambda: examples)
    fresh = span_head_module(nlp.get_pipe("span_contproto").model)
    assert not all(torch.all(p == 0.123) for p in fresh.parameters())


def test_initialize_again_takes_the_new_data_labels(tiny_encoder):
    vocab = spacy.blank("xx").vocab
    nlp = build_initialized(tiny_encoder, synthetic_docs(vocab, 10, seed=3))
    assert set(nlp.get_pipe("span_contproto").labels) == {"PER", "ORG", "LOC", "MISC"}
    docs = [Doc(nlp.vocab, words=["Ann", "lives", "in", "Rome"], ents=["B-FOO", "O", "O", "B-BAR"])] * 4
    nlp.initialize(lambda: [Example(nlp.make_doc(d.text), d) for d in docs])
    assert nlp.get_pipe("span_contproto").labels == ("FOO", "BAR")
    assert {ent.label_ for ent in nlp("Ann lives in Rome").ents} <= {"FOO", "BAR"}


def test_labels_added_before_the_first_initialize_join_the_data_labels(tiny_encoder):
    docs = synthetic_docs(spacy.blank("xx").vocab, 10, seed=3)
    nlp = spacy.util.load_model_from_config(teacher_config(tiny_encoder), auto_fill=True)
    nlp.get_pipe("span_contproto").add_label("EXTRA")
    nlp.initialize(lambda: [Example(nlp.make_doc(d.text), d) for d in docs])
    assert set(nlp.get_pipe("span_contproto").labels) == {"EXTRA", "PER", "ORG", "LOC", "MISC"}


def tok2vec_listener_nlp(views="auto"):
    nlp = spacy.blank("xx")
    nlp.add_pipe("tok2vec", config={"model": {
        "@architectures": "spacy.HashEmbedCNN.v2", "width": 32, "depth": 1, "embed_size": 500, "window_size": 1,
        "maxout_pieces": 2, "subword_features": True, "pretrained_vectors": None}})
    nlp.add_pipe("span_contproto", config={
        "model": {"token_features": "pooled",
                  "tok2vec": {"@architectures": "spacy.Tok2VecListener.v1", "width": 32, "upstream": "*"}},
        "contproto": {"@misc": "spacy_contproto.ContProto.v1", "views": views}})
    examples = [Example(nlp.make_doc(d.text), d) for d in synthetic_docs(nlp.vocab, 8, seed=3)]
    nlp.initialize(lambda: examples)
    return nlp, examples


def test_a_spacy_tok2vec_listener_gets_head_views_and_one_backprop_per_update():
    nlp, examples = tok2vec_listener_nlp()
    assert nlp.get_pipe("span_contproto")._view_source() == "head"
    listener = nlp.get_pipe("tok2vec").listeners[-1]
    backprops = []
    receive = listener.receive

    def counting_receive(batch_id, outputs, backprop):
        receive(batch_id, outputs, lambda d_outputs: (backprops.append(1), backprop(d_outputs))[1])

    listener.receive = counting_receive
    losses = nlp.update(examples, sgd=nlp.create_optimizer())
    assert len(backprops) == 1 and losses["span_contproto"] > 0


def test_encoder_views_with_a_spacy_tok2vec_listener_are_a_clear_error():
    with pytest.raises(ValueError, match='views = "encoder" needs the component\'s own'):
        nlp, examples = tok2vec_listener_nlp(views="encoder")
        nlp.update(examples)


def test_a_listener_with_no_upstream_component_is_a_clear_error():
    nlp = spacy.blank("xx")
    nlp.add_pipe("span_contproto")  # listens to a `transformer` component the pipeline lacks
    examples = [Example(nlp.make_doc(d.text), d) for d in synthetic_docs(nlp.vocab, 4, seed=3)]
    with pytest.raises(ValueError, match="no such component has linked it"):
        nlp.initialize(lambda: examples)


def test_n_process_gives_the_single_process_annotations(trained_teacher, synthetic_corpus):
    # the README's recipe for nlp.pipe(n_process=2) on CPU: torch's OpenMP pool deadlocks in forked
    # workers (any spaCy transformer pipeline), so one torch thread first; run in a subprocess so a
    # hang fails the test instead of the suite
    code = (
        "import sys, numpy, spacy, torch\n"
        "from spacy.tokens import DocBin\n"
        "nlp = spacy.load(sys.argv[1])\n"
        "texts = [d.text for d in DocBin().from_disk(sys.argv[2]).get_docs(nlp.vocab)][:24]\n"
        "def annotations(docs):\n"
        "    return [([(e.start, e.end, e.label_) for e in d.ents],\n"
        "             [(s.start, s.end, s.label_) for s in d.spans['contproto']],\n"
        "             numpy.round(d.spans['contproto'].attrs['scores'], 6).tolist()) for d in docs]\n"
        "torch.set_num_threads(1)\n"
        "one = annotations(nlp.pipe(texts, batch_size=4))\n"
        "two = annotations(nlp.pipe(texts, batch_size=4, n_process=2))\n"
        "assert sum(len(ents) for ents, _, _ in one) > 0\n"
        "print('same' if one == two else f'differ: {one} {two}')\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(trained_teacher), str(synthetic_corpus["dev"])],
                         capture_output=True, text=True, timeout=180, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "same", out.stdout[-2000:]
