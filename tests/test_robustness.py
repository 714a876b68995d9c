"""Inputs and faults real users meet (issue 6): long, right-to-left and CJK text, very long
tokens, mixed-language batches, one-class label sets, reruns and killed runs."""
import json
import math
import signal
import subprocess

import numpy
import spacy
import torch
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from spacy_contproto.pseudo_label import pseudo_label_file
from spacy_contproto.pseudo_labels import PseudoLabelStore
from spacy_contproto.testing import synthetic_docs, synthetic_sentences

from .conftest import CONFIGS, spacy_train_cmd
from .test_self_training import contproto_nlp, initialize, train_steps


def test_long_doc_uses_strided_windows_and_finds_late_entities(trained_teacher):
    nlp = spacy.load(trained_teacher)
    sentences = synthetic_sentences(60, seed=21)
    text = " ".join(" ".join(words) for words, _ in sentences)
    doc = nlp(text)
    # far past the config's first strided window of 128 tokens
    assert len(doc) > 3 * 128
    late = [e for e in doc.ents if e.start > len(doc) * 3 // 4]
    assert late, "no entity found in the last quarter of a long document"
    gold_late = {
        (" ".join(words[s:e]), label)
        for words, ents in sentences[45:] for s, e, label in ents
    }
    assert {(e.text, e.label_) for e in late} & gold_late


def test_arabic_and_chinese_text(trained_teacher):
    nlp = spacy.load(trained_teacher)
    texts = ["ذهب أحمد حسن إلى القاهرة يوم الاثنين .", "李 伟 在 北 京 工 作 。", "", "مرحبا"]
    docs = list(nlp.pipe(texts))
    for doc in docs:
        ents = list(doc.ents)
        assert all(0 <= e.start < e.end <= len(doc) for e in ents)
        assert "contproto" in doc.spans
    # one character per token stays one token per character
    zh = nlp.make_doc(texts[1])
    assert len(zh) == 8


def span_scores(doc):
    group = doc.spans["contproto"]
    return [(s.start, s.end, s.label_) for s in group], list(group.attrs["scores"])


def test_very_long_tokens_are_truncated_not_fatal(trained_teacher):
    """Tokens of many word pieces overflow the transformer's input; spacy-transformers
    truncates the pieces and the component still annotates every Doc."""
    nlp = spacy.load(trained_teacher)
    texts = ["x" * 99, " ".join(["x" * 99] * 3), "a" * 5000, "Anna Berg " + "b" * 3000 + " Berlin ."]
    for text, doc in zip(texts, nlp.pipe(texts)):
        assert len(doc) == len(nlp.make_doc(text))
        assert all(0 <= e.start < e.end <= len(doc) for e in doc.ents)
        _, scores = span_scores(doc)
        assert all(math.isfinite(s) for s in scores)


def test_predictions_do_not_depend_on_the_batch(trained_teacher):
    """Mixed languages and lengths in one batch: each Doc gets what it gets alone."""
    nlp = spacy.load(trained_teacher)
    texts = [
        "Anna Berg arbeitet für Siemens in Berlin .", "ذهب أحمد حسن إلى القاهرة .", "李 伟 在 北 京 工 作 。",
        "Juan Pérez vive en Madrid y trabaja para Telefónica .", "",
        " ".join(" ".join(w) for w, _ in synthetic_sentences(12, seed=5)),
    ]
    batched = list(nlp.pipe(texts, batch_size=len(texts)))
    for text, doc in zip(texts, batched):
        alone = nlp(text)
        assert [(e.start, e.end, e.label_) for e in doc.ents] == [(e.start, e.end, e.label_) for e in alone.ents]
        spans, scores = span_scores(doc)
        spans_alone, scores_alone = span_scores(alone)
        assert spans == spans_alone
        numpy.testing.assert_allclose(scores, scores_alone, atol=1e-4)


def test_one_class_label_set_trains_without_nan(tmp_path, tiny_encoder):
    """Only PER: prototypes for PER and "O", margins, refinement and all losses stay finite."""
    vocab = spacy.blank("xx").vocab
    source = synthetic_docs(vocab, 48, seed=3)
    for doc in source:
        doc.ents = [e for e in doc.ents if e.label_ == "PER"]
    corpus = {"train": tmp_path / "train.spacy", "dev": tmp_path / "dev.spacy"}
    DocBin(docs=source).to_disk(corpus["train"])
    DocBin(docs=source[:8]).to_disk(corpus["dev"])
    teacher = spacy.util.load_model_from_config(
        spacy.util.load_config(CONFIGS / "teacher_cpu.cfg", overrides={"paths.encoder": str(tiny_encoder)}),
        auto_fill=True,
    )
    teacher.initialize(lambda: [Example(teacher.make_doc(d.text), d) for d in source])
    raw, labelled = tmp_path / "target.spacy", tmp_path / "target.pl.spacy"
    DocBin(docs=synthetic_docs(vocab, 32, seed=4, with_entities=False), store_user_data=True).to_disk(raw)
    pseudo_label_file(teacher, raw, labelled, progress=False)

    nlp = contproto_nlp(tiny_encoder, corpus, labelled)
    examples, optimizer = initialize(nlp, corpus, labelled)
    pipe = nlp.get_pipe("span_contproto")
    assert pipe.labels == ("PER",)
    history = train_steps(nlp, examples, optimizer, epochs=3, steps_per_epoch=4)
    assert all(math.isfinite(v) for losses in history for v in losses.values())
    assert history[-1]["span_contproto:cont"] > 0
    memory = pipe.state.memory
    assert torch.isfinite(memory.prototypes).all() and torch.isfinite(memory.margins).all()
    labels = pipe.state.store.gather(pipe.state.store.ids())
    assert numpy.isfinite(labels).all()
    numpy.testing.assert_allclose(labels.astype("float32").sum(axis=1), 1.0, atol=2e-3)
    doc = nlp("Anna Berg lives in Berlin .")
    assert {e.label_ for e in doc.ents} <= {"PER"}


def contproto_train_cmd(output, encoder, corpus, target, *overrides, config=CONFIGS / "contproto_cpu.cfg"):
    return spacy_train_cmd(
        config, output, encoder, corpus, "--paths.target", str(target),
        "--training.optimizer.learn_rate.initial_rate", "0.001", "--training.optimizer.learn_rate.warmup_steps", "2",
        *overrides,
    )


def test_two_spacy_train_runs_with_one_seed_agree(tmp_path, tiny_encoder, synthetic_corpus, target_corpus):
    """Same seed, same data: the same losses at every step, the same scores and pseudo labels."""
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        cmd = contproto_train_cmd(
            out, tiny_encoder, synthetic_corpus, target_corpus["pseudo_labelled"],
            "--training.max_epochs", "2", "--training.eval_frequency", "5",
            "--training.logger.output_file", str(out / "log.jsonl"),
            "--paths.pseudo_label_store", str(out / "store"), "--system.seed", "7",
        )
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        meta = json.loads((out / "model-best" / "meta.json").read_text())
        store = PseudoLabelStore.open(out / "store")
        runs.append((records, meta["performance"], store.gather(store.ids())))
    (log_a, perf_a, labels_a), (log_b, perf_b, labels_b) = runs
    assert len(log_a) >= 3
    assert [r["losses"] for r in log_a] == [r["losses"] for r in log_b]
    assert perf_a == perf_b
    assert numpy.array_equal(labels_a, labels_b)


def test_interrupted_training_leaves_model_and_store_usable(tmp_path, tiny_encoder, synthetic_corpus, target_corpus):
    """A run killed (SIGKILL) in its second epoch, after a checkpoint: the saved model loads and
    predicts, and the pseudo-label store on disk opens with every target Doc's labels."""
    code = tmp_path / "kill.py"
    code.write_text(
        "import os, signal\n"
        "from spacy import registry\n"
        "from spacy_contproto.training import create_training_schedule\n\n"
        "@registry.callbacks('test.kill_in_epoch.v1')\n"
        "def make(epoch: int, step: int):\n"
        "    schedule = create_training_schedule()\n"
        "    def callback(nlp, args):\n"
        "        if args['epoch'] >= epoch and args['step'] >= step:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "        schedule(nlp, args)\n"
        "    return callback\n"
    )
    config = spacy.util.load_config(CONFIGS / "contproto_cpu.cfg")
    config["training"]["before_update"] = {"@callbacks": "test.kill_in_epoch.v1", "epoch": 1, "step": 12}
    config_path = tmp_path / "config.cfg"
    config.to_disk(config_path)
    out, store = tmp_path / "out", tmp_path / "store"
    cmd = contproto_train_cmd(
        out, tiny_encoder, synthetic_corpus, target_corpus["pseudo_labelled"],
        "--training.max_epochs", "3", "--training.eval_frequency", "4", "--paths.pseudo_label_store", str(store),
        "--code", str(code), config=config_path,
    )
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    for model in ("model-last", "model-best"):
        nlp = spacy.load(out / model)
        doc = nlp("Anna Berg works for Siemens in Berlin .")
        assert "contproto" in doc.spans
    reopened = PseudoLabelStore.open(store)
    assert len(reopened) == 60
    labels = reopened.gather(reopened.ids())
    assert numpy.isfinite(labels).all()
    numpy.testing.assert_allclose(labels.astype("float32").sum(axis=1), 1.0, atol=2e-3)


def test_mixed_language_target_batches_train(tmp_path, trained_teacher, tiny_encoder, synthetic_corpus):
    """Target Docs in German, Spanish, Arabic and Chinese side by side in every batch."""
    from spacy_contproto.demo import demo_sentences

    nlp_xx = spacy.blank("xx")
    docs = []
    for lang in ("de", "es"):
        docs += [Doc(nlp_xx.vocab, words=words) for words, _ in demo_sentences(lang, 8, seed=1)]
    docs += [nlp_xx.make_doc(t) for t in ["ذهب أحمد حسن إلى القاهرة يوم الاثنين .", "李 伟 在 北 京 工 作 。"] * 4]
    order = numpy.random.default_rng(0).permutation(len(docs))
    raw, labelled = tmp_path / "mixed.spacy", tmp_path / "mixed.pl.spacy"
    DocBin(docs=[docs[i] for i in order], store_user_data=True).to_disk(raw)
    pseudo_label_file(spacy.load(trained_teacher), raw, labelled, progress=False)

    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, labelled)
    examples, optimizer = initialize(nlp, synthetic_corpus, labelled)
    history = train_steps(nlp, examples, optimizer, epochs=2, steps_per_epoch=3, batch_size=32)
    assert all(math.isfinite(v) for losses in history for v in losses.values())
    assert all(losses["span_contproto:tgt"] > 0 for losses in history)
    store = nlp.get_pipe("span_contproto").state.store
    assert len(store) == len(docs)
