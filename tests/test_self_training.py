"""ContProto self-training inside spaCy's training loop."""
import json
import math
import subprocess
import sys
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy
import pytest
import spacy
import torch
from spacy.tokens import Doc, DocBin
from thinc.api import fix_random_seed

from spacy_contproto.component import ORACLE_KEY
from spacy_contproto.pseudo_label import pseudo_label_file
from spacy_contproto.pseudo_labels import PAYLOAD_KEY, PseudoLabelStore, decode_payload, encode_payload
from spacy_contproto.training import SelfTrainingCorpus

from .conftest import CONFIGS, spacy_train_cmd


def contproto_nlp(encoder, corpus, target, **overrides):
    config = spacy.util.load_config(
        CONFIGS / "contproto_cpu.cfg",
        overrides={
            "paths.encoder": str(encoder), "paths.train": str(corpus["train"]),
            "paths.dev": str(corpus["dev"]), "paths.target": str(target), **overrides,
        },
    )
    return spacy.util.load_model_from_config(config, auto_fill=True)


def initialize(nlp, corpus, target, seed=0):
    fix_random_seed(seed)
    reader = SelfTrainingCorpus(corpus["train"], target)
    examples = list(reader(nlp))
    optimizer = nlp.initialize(lambda: examples)
    optimizer.learn_rate = 1e-3
    return examples, optimizer


def train_steps(nlp, examples, optimizer, epochs, steps_per_epoch, batch_size=16):
    """A small fixed-order training loop; returns the losses of each step."""
    pipe = nlp.get_pipe("span_contproto")
    history, step = [], 0
    for epoch in range(epochs):
        for i in range(steps_per_epoch):
            batch = examples[(i * batch_size) % len(examples):][:batch_size]
            pipe.set_training_state(epoch=epoch, step=step)
            losses = {}
            nlp.update(batch, sgd=optimizer, losses=losses)
            history.append(losses)
            step += 1
    return history


def load(path, vocab):
    return list(DocBin().from_disk(path).get_docs(vocab))


def test_pseudo_label_command_writes_documented_payload(tmp_path, trained_teacher, target_corpus):
    out = tmp_path / "pl.spacy"
    for cmd in (
        [sys.executable, "-m", "spacy_contproto", "pseudo-label"],
        [sys.executable, "-m", "spacy", "contproto", "pseudo-label"],
    ):
        result = subprocess.run(
            cmd + [str(trained_teacher), str(target_corpus["raw"]), str(out), "--batch-size", "7"],
            capture_output=True, text=True,
        )
        assert result.returncode == 0, result.stderr
        assert "Pseudo-labelled 60 Docs" in result.stdout
    vocab = spacy.blank("xx").vocab
    docs = load(out, vocab)
    raw = load(target_corpus["raw"], vocab)
    ids = []
    for doc, original in zip(docs, raw):
        payload = doc.user_data[PAYLOAD_KEY]
        doc_id, probs, classes, max_len = decode_payload(payload)
        assert classes[0] == "O" and set(classes[1:]) == {"PER", "ORG", "LOC", "MISC"}
        assert max_len == 4
        n = len(doc)
        assert probs.shape == (sum(n - w + 1 for w in range(1, 5) if w <= n), 5)
        assert len(payload["probs"]) == probs.size * 2  # fp16
        assert numpy.allclose(probs.sum(1), 1, atol=1e-2)
        assert [(e.start, e.end, e.label_) for e in doc.ents] == [
            (e.start, e.end, e.label_) for e in original.ents
        ]  # gold kept for quality measurement
        assert all(not isinstance(k, tuple) for k in doc.user_data)  # no transformer output saved
        ids.append(doc_id)
    assert len(set(ids)) == len(ids)
    # ids are stable: the in-process run of the fixture gave the same
    assert ids == [d.user_data[PAYLOAD_KEY]["id"] for d in load(target_corpus["pseudo_labelled"], vocab)]


def test_pseudo_labelled_docs_keep_the_sentences_their_spans_were_enumerated_in(trained_teacher):
    from spacy_contproto.model import doc_spans
    from spacy_contproto.pseudo_label import pseudo_label_docs

    nlp = spacy.load(trained_teacher)
    nlp.add_pipe("sentencizer", before="span_contproto")
    doc = Doc(nlp.vocab, words="Anna lives in Berlin . Paul works in Rome .".split())
    assert not doc.has_annotation("SENT_START")
    [labelled] = pseudo_label_docs(nlp, [doc])
    _, probs, _, max_len = decode_payload(labelled.user_data[PAYLOAD_KEY])
    assert len(list(labelled.sents)) == 2
    assert probs.shape[0] == len(doc_spans([labelled], max_len).data) == 2 * (4 + 4 + 3 + 2 + 1)  # not 34 over one 10-token sentence


def test_pseudo_label_command_errors_clearly(tmp_path, target_corpus, trained_teacher):
    def pseudo_label(*options):
        return subprocess.run(
            [sys.executable, "-m", "spacy_contproto", "pseudo-label", str(tmp_path / "no-model"),
             str(target_corpus["raw"]), str(tmp_path / "out.spacy"), *options],
            capture_output=True, text=True,
        )

    result = pseudo_label()
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    # an output the training readers would skip in a target folder
    result = subprocess.run(
        [sys.executable, "-m", "spacy_contproto", "pseudo-label", str(tmp_path / "no-model"),
         str(target_corpus["raw"]), str(tmp_path / "out.pl")], capture_output=True, text=True,
    )
    said = " ".join(result.stdout.split())
    assert result.returncode == 1 and "must end in .spacy" in said and not (tmp_path / "out.pl").exists()
    # the input as output, and an output under a file, fail before the teacher would label anything
    for output, message in ((target_corpus["raw"], "is the input file"), (tmp_path / "out.pl" / "x.spacy", "out.pl is a file")):
        (tmp_path / "out.pl").write_text("")
        result = subprocess.run(
            [sys.executable, "-m", "spacy_contproto", "pseudo-label", str(tmp_path / "no-model"),
             str(target_corpus["raw"]), str(output)], capture_output=True, text=True,
        )
        assert result.returncode == 1 and message in " ".join(result.stdout.split()), result.stdout
    # a training output folder instead of its model-best
    result = subprocess.run(
        [sys.executable, "-m", "spacy_contproto", "pseudo-label", str(Path(trained_teacher).parent),
         str(target_corpus["raw"]), str(tmp_path / "out.spacy")], capture_output=True, text=True,
    )
    said = " ".join(result.stdout.split())
    assert result.returncode == 1 and "cannot load the teacher" in said and "did you mean" in said and "model-best" in said
    # a batch size of 0 would write an empty file and report success
    result = pseudo_label("--batch-size", "0")
    assert result.returncode != 0 and "batch-size" in result.stdout + result.stderr
    assert not (tmp_path / "out.spacy").exists()
    if not torch.cuda.is_available():  # a GPU id on a machine without one: a message, not a traceback
        result = pseudo_label("--gpu-id", "0")
        assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr


def test_pseudo_label_docs_rejects_batch_size_0_and_empty_input(tmp_path, trained_teacher, target_corpus):
    from spacy_contproto.pseudo_label import pseudo_label_docs

    nlp = spacy.load(trained_teacher)
    docs = list(DocBin().from_disk(target_corpus["raw"]).get_docs(nlp.vocab))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        list(pseudo_label_docs(nlp, docs, batch_size=0))
    # an empty input would be "pseudo-labelled" into an empty output, reported as success
    from spacy_contproto.pseudo_label import pseudo_label_file

    empty = tmp_path / "empty.spacy"
    DocBin().to_disk(empty)
    with pytest.raises(ValueError, match="empty.spacy holds no Docs: nothing to pseudo-label"):
        pseudo_label_file(nlp, empty, tmp_path / "out.spacy", progress=False)
    assert not (tmp_path / "out.spacy").exists()


@pytest.mark.parametrize("setting", ["max_length", "limit", "target_limit"])
def test_reader_rejects_negative_limits(synthetic_corpus, target_corpus, setting):
    with pytest.raises(ValueError, match=f"{setting} must be >= 0"):
        SelfTrainingCorpus(synthetic_corpus["train"], target_corpus["pseudo_labelled"], **{setting: -1})


def test_reader_mixes_target_docs_without_gold(synthetic_corpus, target_corpus):
    nlp = spacy.blank("xx")
    examples = list(SelfTrainingCorpus(synthetic_corpus["train"], target_corpus["pseudo_labelled"])(nlp))
    targets = [eg for eg in examples if PAYLOAD_KEY in eg.reference.user_data]
    assert len(examples) - len(targets) == 160 and len(targets) == 160  # 60 target Docs, cycled
    assert all(PAYLOAD_KEY not in eg.reference.user_data for eg in examples[0::2])
    for eg in targets:
        assert not eg.reference.has_annotation("ENT_IOB")  # nothing to learn "no entities" from
        assert [t.text for t in eg.predicted] == [t.text for t in eg.reference]
    assert any(eg.reference.user_data[ORACLE_KEY] for eg in targets)
    half = list(SelfTrainingCorpus(synthetic_corpus["train"], target_corpus["pseudo_labelled"], target_per_source=0.5)(nlp))
    assert len(half) == 160 + 80


def test_reader_warns_when_target_docs_take_no_part(synthetic_corpus, target_corpus):
    nlp = spacy.blank("xx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 160 source x 0.5 covers all 60 target Docs: no warning
        list(SelfTrainingCorpus(synthetic_corpus["train"], target_corpus["pseudo_labelled"], target_per_source=0.5)(nlp))
    reader = SelfTrainingCorpus(synthetic_corpus["train"], target_corpus["pseudo_labelled"], target_per_source=0.25)
    with pytest.warns(UserWarning, match="Only 40 of the 60 target Docs .* target_per_source to 0.38"):
        examples = list(reader(nlp))
    assert len({eg.reference.user_data[PAYLOAD_KEY]["id"] for eg in examples if PAYLOAD_KEY in eg.reference.user_data}) == 40
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the suggested ratio uses every target Doc
        list(SelfTrainingCorpus(synthetic_corpus["train"], target_corpus["pseudo_labelled"], target_per_source=0.38)(nlp))


def test_reader_max_length_leaves_out_long_target_docs(synthetic_corpus, target_corpus):
    nlp = spacy.blank("xx")
    lengths = sorted(len(doc) for doc in load(target_corpus["pseudo_labelled"], nlp.vocab))
    limit = lengths[len(lengths) // 2]
    n_long = sum(n > limit for n in lengths)
    assert 0 < n_long < len(lengths) and lengths[0] > 1
    reader = SelfTrainingCorpus(synthetic_corpus["train"], target_corpus["pseudo_labelled"], max_length=limit)
    with pytest.warns(UserWarning, match=f"{n_long} of {len(lengths)} target Docs .* longer than max_length"):
        examples = list(reader(nlp))
    targets = [eg for eg in examples if PAYLOAD_KEY in eg.reference.user_data]
    assert targets and all(len(eg.predicted) <= limit for eg in targets)
    assert len({eg.reference.user_data[PAYLOAD_KEY]["id"] for eg in targets}) == len(lengths) - n_long
    too_short = SelfTrainingCorpus(synthetic_corpus["train"], target_corpus["pseudo_labelled"], max_length=lengths[0] - 1)
    with pytest.raises(ValueError, match="All 60 target Docs .* longer than max_length"):
        list(too_short(nlp))


def test_reader_keeps_source_tokens_unless_told(tmp_path, target_corpus):
    """Source spans must sit on the same token boundaries as the target spans: the
    tokenizer would split "Anglo-Dutch" where the corpus (and every target Doc) does not."""
    nlp = spacy.blank("xx")
    words = ["The", "Anglo-Dutch", "group", "merged", ".", "It", "grew", "."]
    doc = Doc(nlp.vocab, words=words, spaces=[True] * len(words), sent_starts=[True, False, False, False, False, True, False, False],
              ents=["O", "B-MISC", "O", "O", "O", "O", "O", "O"])
    source = tmp_path / "source.spacy"
    DocBin(docs=[doc]).to_disk(source)
    kept = [eg for eg in SelfTrainingCorpus(source, target_corpus["pseudo_labelled"])(nlp)
            if PAYLOAD_KEY not in eg.reference.user_data]
    assert [[t.text for t in eg.predicted] for eg in kept] == [words[:5], words[5:]]  # one per sentence
    assert [e.text for e in kept[0].reference.ents] == ["Anglo-Dutch"]
    retokenised = [eg for eg in SelfTrainingCorpus(source, target_corpus["pseudo_labelled"], gold_preproc=False)(nlp)
                   if PAYLOAD_KEY not in eg.reference.user_data]
    assert [t.text for t in retokenised[0].predicted][:4] == ["The", "Anglo", "-", "Dutch"]
    # max_length leaves out longer source sentences, as it leaves out longer target Docs
    longest_target = max(len(d) for d in load(target_corpus["pseudo_labelled"], nlp.vocab))
    long_words = ["word"] * (longest_target + 1) + ["."] + ["It", "grew", "."]
    long_doc = Doc(nlp.vocab, words=long_words, spaces=[True] * len(long_words),
                   sent_starts=[True] + [False] * (longest_target + 1) + [True, False, False])
    DocBin(docs=[long_doc]).to_disk(source)
    reader = SelfTrainingCorpus(source, target_corpus["pseudo_labelled"], max_length=longest_target)
    short = [eg for eg in reader(nlp) if PAYLOAD_KEY not in eg.reference.user_data]
    assert [[t.text for t in eg.predicted] for eg in short] == [["It", "grew", "."]]


def test_reader_errors(tmp_path, synthetic_corpus, target_corpus):
    nlp = spacy.blank("xx")
    empty = tmp_path / "empty.spacy"
    DocBin().to_disk(empty)
    with pytest.raises(ValueError, match="holds no Docs"):
        list(SelfTrainingCorpus(synthetic_corpus["train"], empty)(nlp))
    conll_only = tmp_path / "conll_only"
    conll_only.mkdir()
    (conll_only / "de_train.conll").write_text("Berlin B-LOC\n")
    with pytest.raises(ValueError, match=r"conll_only holds no Docs \(a folder's \.spacy files only: it holds 0 \.spacy files\)"):
        list(SelfTrainingCorpus(synthetic_corpus["train"], conll_only)(nlp))
    DocBin().to_disk(conll_only / "empty.spacy")
    with pytest.raises(ValueError, match=r"conll_only holds no Docs \(a folder's \.spacy files only: it holds 1 \.spacy file\)"):
        list(SelfTrainingCorpus(synthetic_corpus["train"], conll_only)(nlp))
    with pytest.raises(ValueError, match="60 of 60 Docs .* carry no pseudo labels.*pseudo-label"):
        list(SelfTrainingCorpus(synthetic_corpus["train"], target_corpus["raw"])(nlp))
    with pytest.raises(ValueError, match="source corpus .*missing.spacy does not exist"):
        SelfTrainingCorpus(tmp_path / "missing.spacy", target_corpus["pseudo_labelled"])
    with pytest.raises(ValueError, match="source corpus .*empty.spacy holds no Examples"):
        list(SelfTrainingCorpus(empty, target_corpus["pseudo_labelled"])(nlp))


def test_reader_target_folder_of_spacy_files(tmp_path, synthetic_corpus, target_corpus):
    nlp = spacy.blank("xx")
    docs = list(load(target_corpus["pseudo_labelled"], nlp.vocab))
    folder = tmp_path / "target"
    (folder / "b").mkdir(parents=True)
    DocBin(docs=docs[:25], store_user_data=True).to_disk(folder / "a.spacy")
    DocBin(docs=docs[25:], store_user_data=True).to_disk(folder / "b" / "c.spacy")
    (folder / "notes.txt").write_text("not a corpus")
    reader = SelfTrainingCorpus(synthetic_corpus["train"], folder)
    assert [d.text for d in reader.target_docs(nlp)] == [d.text for d in docs]


def test_refinement_only_after_warmup(tiny_encoder, synthetic_corpus, target_corpus):
    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, target_corpus["pseudo_labelled"])
    examples, optimizer = initialize(nlp, synthetic_corpus, target_corpus["pseudo_labelled"])
    state = nlp.get_pipe("span_contproto").state
    ids = state.store.ids()
    teacher_labels = state.store.gather(ids)
    history = train_steps(nlp, examples, optimizer, epochs=1, steps_per_epoch=6)
    assert numpy.array_equal(state.store.gather(ids), teacher_labels)  # warm-up epoch
    assert torch.any(state.memory.prototypes != 0)  # prototypes are built during warm-up
    pipe = nlp.get_pipe("span_contproto")
    pipe.set_training_state(epoch=1, step=6)
    assert torch.any(state.memory.margins != 0)  # margins from the warm-up epoch
    for step in range(6, 12):
        pipe.set_training_state(epoch=1, step=step)
        nlp.update(examples[step * 16 % len(examples):][:16], sgd=optimizer)
    refined = state.store.gather(ids)
    assert not numpy.array_equal(refined, teacher_labels)
    assert numpy.allclose(refined.sum(1), 1, atol=1e-2) and numpy.all(refined >= 0)
    for losses in history:
        assert set(losses) == {"transformer", *pipe.loss_names}
        assert all(math.isfinite(v) for v in losses.values())


def test_store_and_quality_log_written_from_the_first_update_on(tmp_path, tiny_encoder, synthetic_corpus,
                                                                 target_corpus):
    """Initializing alone (spacy debug data, init pipeline) leaves an earlier run's refined
    labels and log alone; a training run starts the log afresh."""
    store, quality = tmp_path / "store", tmp_path / "quality.jsonl"
    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, target_corpus["pseudo_labelled"],
                        **{"paths.pseudo_label_store": str(store), "paths.quality_log": str(quality)})
    examples, optimizer = initialize(nlp, synthetic_corpus, target_corpus["pseudo_labelled"])
    train_steps(nlp, examples, optimizer, epochs=2, steps_per_epoch=2)
    refined = PseudoLabelStore.open(store)
    earlier_labels, earlier_log = refined.gather(refined.ids()), quality.read_text()
    assert [json.loads(line)["epoch"] for line in earlier_log.splitlines()] == [0, 1]
    refined.scatter(refined.ids(), numpy.eye(refined.n_rows, len(refined.classes), dtype="f"))
    refined.flush()  # stands for labels that refinement moved
    earlier_labels = refined.gather(refined.ids())

    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, target_corpus["pseudo_labelled"],
                        **{"paths.pseudo_label_store": str(store), "paths.quality_log": str(quality)})
    examples, optimizer = initialize(nlp, synthetic_corpus, target_corpus["pseudo_labelled"])
    assert numpy.array_equal(PseudoLabelStore.open(store).gather(refined.ids()), earlier_labels)
    assert quality.read_text() == earlier_log
    train_steps(nlp, examples, optimizer, epochs=1, steps_per_epoch=1)
    teacher_labels = nlp.get_pipe("span_contproto").state.store.gather(refined.ids())
    assert numpy.array_equal(PseudoLabelStore.open(store).gather(refined.ids()), teacher_labels)
    assert [json.loads(line)["epoch"] for line in quality.read_text().splitlines()] == [0]


def test_self_training_a_sourced_component_is_a_clear_error(trained_teacher, synthetic_corpus, target_corpus):
    """spaCy does not initialize a sourced (or loaded) component: it has no pseudo-label store."""
    nlp = spacy.load(trained_teacher)
    examples = list(SelfTrainingCorpus(synthetic_corpus["train"], target_corpus["pseudo_labelled"])(nlp))
    with pytest.raises(ValueError, match="source the transformer only"):
        nlp.update(examples[:8], sgd=nlp.create_optimizer())


def test_training_config_checks(tmp_path, tiny_encoder, synthetic_corpus, target_corpus):
    target = target_corpus["pseudo_labelled"]
    # streaming: spaCy initializes on the first 100 Examples, the store would miss later target Docs
    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, target, **{"training.max_epochs": -1})
    with pytest.raises(ValueError, match="max_epochs >= 0"):
        initialize(nlp, synthetic_corpus, target)
    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, target, **{
        "training.max_epochs": 3, "components.span_contproto.contproto.max_epochs": 5})
    with pytest.warns(UserWarning, match=r"contproto max_epochs = 5, but \[training\] max_epochs = 3"):
        initialize(nlp, synthetic_corpus, target)
    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, target, **{
        "paths.quality_log": str(tmp_path / "q.jsonl"), "training.logger": {"@loggers": "spacy.ConsoleLogger.v3"}})
    with pytest.warns(UserWarning, match="quality_log will miss its last row"):
        initialize(nlp, synthetic_corpus, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        initialize(contproto_nlp(tiny_encoder, synthetic_corpus, target,
                                 **{"paths.quality_log": str(tmp_path / "q.jsonl")}), synthetic_corpus, target)


def test_a_frozen_span_contproto_keeps_its_training_state(tiny_encoder, synthetic_corpus, target_corpus):
    from spacy_contproto.training import trained_contproto_pipes

    target = target_corpus["pseudo_labelled"]
    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, target)
    assert trained_contproto_pipes(nlp) == [nlp.get_pipe("span_contproto")]
    frozen = contproto_nlp(tiny_encoder, synthetic_corpus, target,
                           **{"training.frozen_components": ["span_contproto"]})
    assert trained_contproto_pipes(frozen) == []


def permuted_gold_target(path, out, vocab):
    """The same target Docs and pseudo labels with different gold entities."""
    docs = list(DocBin(store_user_data=True).from_disk(path).get_docs(vocab))
    rng = numpy.random.default_rng(0)
    for doc in docs:
        labels = ["PER", "ORG", "LOC", "MISC"]
        doc.ents = [doc.char_span(e.start_char, e.end_char, label=rng.choice(labels)) for e in doc.ents][:1]
    DocBin(docs=docs, store_user_data=True).to_disk(out)
    return out


def test_target_gold_never_reaches_training(tmp_path, tiny_encoder, synthetic_corpus, target_corpus):
    vocab = spacy.blank("xx").vocab
    permuted = permuted_gold_target(target_corpus["pseudo_labelled"], tmp_path / "permuted.spacy", vocab)
    results = []
    for target in (target_corpus["pseudo_labelled"], permuted):
        nlp = contproto_nlp(tiny_encoder, synthetic_corpus, target, **{"components.span_contproto.contproto.warmup_epochs": 0})
        examples, optimizer = initialize(nlp, synthetic_corpus, target, seed=3)
        history = train_steps(nlp, examples, optimizer, epochs=2, steps_per_epoch=3)
        pipe = nlp.get_pipe("span_contproto")
        docs = [nlp.get_pipe("transformer")(nlp.make_doc(t)) for t in ["Anna Berg visited Oslo .", "Globex won ."]]
        results.append((history, pipe.predict(docs).probabilities, pipe.state.store.gather(pipe.state.store.ids()),
                        pipe.state.quality()))
    (h1, p1, s1, q1), (h2, p2, s2, q2) = results
    assert h1 == h2
    assert numpy.array_equal(p1, p2) and numpy.array_equal(s1, s2)
    assert q1 != q2  # the gold differs, and only the quality measurement sees it


def test_views_encoder_needs_embedded_transformer(tiny_encoder, synthetic_corpus, target_corpus):
    nlp = contproto_nlp(
        tiny_encoder, synthetic_corpus, target_corpus["pseudo_labelled"],
        **{"components.span_contproto.contproto.views": "encoder"},
    )
    examples, optimizer = initialize(nlp, synthetic_corpus, target_corpus["pseudo_labelled"])
    with pytest.raises(ValueError, match="embedded"):
        nlp.update(examples[:4], sgd=optimizer)


def test_two_head_views_differ_by_dropout(tiny_encoder, synthetic_corpus, target_corpus):
    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, target_corpus["pseudo_labelled"])
    examples, optimizer = initialize(nlp, synthetic_corpus, target_corpus["pseudo_labelled"])
    pipe = nlp.get_pipe("span_contproto")
    docs = [eg.predicted for eg in examples[:4]]
    for doc in docs:
        nlp.get_pipe("transformer")(doc)
    pipe.model.attrs["n_views"] = 2
    outputs, _ = pipe.model.begin_update(docs)
    n = outputs.logits.shape[0] // 2
    assert outputs.n_views == 2 and n == outputs.spans.data.shape[0]
    assert not numpy.allclose(outputs.logits[:n], outputs.logits[n:])


TABLE3 = {
    "full": {},
    "w/o proto": {"prototypes": False},
    "w/o proto & cl": {"prototypes": False, "contrastive_loss": False},
    "w/o reg": {"consistency_loss": False},
    "fixed margin": {"margin": "fixed"},
    "proto w/o cl": {"contrastive_loss": False, "prototype_space": "representation"},
    "vanilla self-training": {"prototypes": False, "contrastive_loss": False, "consistency_loss": False},
}


@pytest.mark.parametrize("ablation", list(TABLE3))
def test_table3_ablations_train(ablation, tiny_encoder, synthetic_corpus, target_corpus):
    switches = {f"components.span_contproto.contproto.{k}": v for k, v in TABLE3[ablation].items()}
    switches["components.span_contproto.contproto.warmup_epochs"] = 0
    # span vectors 2 * 32 + 16 = 80 wide, so the two prototype spaces differ in width
    switches["components.span_contproto.model.width_embedding_width"] = 16
    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, target_corpus["pseudo_labelled"], **switches)
    # the paper's fixed r = 1.0 can never be passed: initialize says so
    expect = pytest.warns(UserWarning, match="never exceeds 1") if ablation == "fixed margin" else nullcontext()
    with expect:
        examples, optimizer = initialize(nlp, synthetic_corpus, target_corpus["pseudo_labelled"])
    pipe = nlp.get_pipe("span_contproto")
    ids = pipe.state.store.ids()
    teacher_labels = pipe.state.store.gather(ids)
    history = train_steps(nlp, examples, optimizer, epochs=1, steps_per_epoch=2)
    settings = pipe.settings
    expected_terms = {"src", "tgt"} | ({"cont"} if settings.contrastive_loss else set()) | (
        {"reg"} if settings.consistency_loss else set())
    assert {k.split(":")[1] for k in history[-1] if ":" in k} == expected_terms
    assert all(math.isfinite(v) for v in history[-1].values())
    refined = not numpy.array_equal(pipe.state.store.gather(ids), teacher_labels)
    assert refined == settings.prototypes
    width = pipe.state.memory.prototypes.shape[1]
    assert (width == 128) == (settings.prototype_space == "projection")


def test_unknown_pseudo_label_classes_are_a_clear_error(tmp_path, tiny_encoder, synthetic_corpus, target_corpus):
    vocab = spacy.blank("xx").vocab
    docs = list(DocBin(store_user_data=True).from_disk(target_corpus["pseudo_labelled"]).get_docs(vocab))
    for doc in docs:
        doc_id, probs, classes, max_len = decode_payload(doc.user_data[PAYLOAD_KEY])
        doc.user_data[PAYLOAD_KEY] = encode_payload(doc_id, probs, ["O", "PER", "ORG", "LOC", "DATE"], max_len)
    bad = tmp_path / "bad.spacy"
    DocBin(docs=docs, store_user_data=True).to_disk(bad)
    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, bad)
    with pytest.raises(ValueError, match=r"classes the component does not know: \['DATE'\]"):
        initialize(nlp, synthetic_corpus, bad)
    docs = list(DocBin(store_user_data=True).from_disk(target_corpus["pseudo_labelled"]).get_docs(vocab))
    for doc in docs:  # no "O" column: every span would become an entity
        doc_id, probs, classes, max_len = decode_payload(doc.user_data[PAYLOAD_KEY])
        keep = [i for i, c in enumerate(classes) if c != "O"]
        doc.user_data[PAYLOAD_KEY] = encode_payload(doc_id, probs[:, keep], [classes[i] for i in keep], max_len)
    DocBin(docs=docs, store_user_data=True).to_disk(bad)
    with pytest.raises(ValueError, match=r"have no 'O' class"):
        initialize(contproto_nlp(tiny_encoder, synthetic_corpus, bad), synthetic_corpus, bad)


def test_pseudo_labels_lacking_a_component_class_warn(tmp_path, tiny_encoder, synthetic_corpus, target_corpus):
    vocab = spacy.blank("xx").vocab
    docs = list(DocBin(store_user_data=True).from_disk(target_corpus["pseudo_labelled"]).get_docs(vocab))
    for doc in docs[:3]:  # a teacher without LOC labelled three of the Docs
        doc_id, probs, classes, max_len = decode_payload(doc.user_data[PAYLOAD_KEY])
        keep = [i for i, c in enumerate(classes) if c != "LOC"]
        doc.user_data[PAYLOAD_KEY] = encode_payload(doc_id, probs[:, keep], [classes[i] for i in keep], max_len)
    lacking = tmp_path / "lacking.spacy"
    DocBin(docs=docs, store_user_data=True).to_disk(lacking)
    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, lacking)
    with pytest.warns(UserWarning, match=rf"pseudo labels of 3 of {len(docs)} target Docs lack classes the component has: LOC \(3 Docs\)"):
        initialize(nlp, synthetic_corpus, lacking)
    store = nlp.get_pipe("span_contproto").state.store
    loc = store.classes.index("LOC")
    first_ids = [decode_payload(d.user_data[PAYLOAD_KEY])[0] for d in docs[:3]]
    assert not store.gather(first_ids)[:, loc].any()
    with warnings.catch_warnings():  # the teacher's full label set: no such warning
        warnings.filterwarnings("error", message=".*lack classes")
        initialize(contproto_nlp(tiny_encoder, synthetic_corpus, target_corpus["pseudo_labelled"]),
                   synthetic_corpus, target_corpus["pseudo_labelled"])


def test_prototypes_and_margins_saved_with_component(tiny_encoder, synthetic_corpus, target_corpus, tmp_path):
    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, target_corpus["pseudo_labelled"])
    examples, optimizer = initialize(nlp, synthetic_corpus, target_corpus["pseudo_labelled"])
    train_steps(nlp, examples, optimizer, epochs=2, steps_per_epoch=2)
    state = nlp.get_pipe("span_contproto").state
    nlp.to_disk(tmp_path / "saved")
    loaded = spacy.load(tmp_path / "saved").get_pipe("span_contproto").state
    assert torch.equal(loaded.memory.prototypes, state.memory.prototypes)
    assert torch.equal(loaded.memory.margins, state.memory.margins)
    pipe_bytes = nlp.get_pipe("span_contproto").to_bytes()
    fresh = contproto_nlp(tiny_encoder, synthetic_corpus, target_corpus["pseudo_labelled"])
    restored = fresh.get_pipe("span_contproto").from_bytes(pipe_bytes).state
    assert torch.equal(restored.memory.prototypes, state.memory.prototypes)


def test_spacy_train_with_contproto_config(tmp_path, tiny_encoder, synthetic_corpus, target_corpus):
    # the JSONL log's folder does not exist yet: the logger makes it, as spaCy's ConsoleLogger
    log, quality, store = tmp_path / "logs" / "log.jsonl", tmp_path / "quality.jsonl", tmp_path / "store"
    cmd = spacy_train_cmd(
        CONFIGS / "contproto_cpu.cfg", tmp_path / "out", tiny_encoder, synthetic_corpus,
        "--paths.target", str(target_corpus["pseudo_labelled"]),
        "--paths.quality_log", str(quality), "--paths.pseudo_label_store", str(store),
        "--training.logger.output_file", str(log), "--training.max_epochs", "3",
        "--training.eval_frequency", "4", "--training.optimizer.learn_rate.initial_rate", "0.001",
    )
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    header = next(line for line in result.stdout.splitlines() if "LOSS SPAN_CONTPROTO:SRC" in line)
    for term in ("TGT", "CONT", "REG"):
        assert f"LOSS SPAN_CONTPROTO:{term}" in header
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) >= 3
    for record in records:
        assert set(record["losses"]) == {
            "transformer", "span_contproto", "span_contproto:src", "span_contproto:tgt",
            "span_contproto:cont", "span_contproto:reg",
        }
        assert all(math.isfinite(v) for v in record["losses"].values())
    assert all(record["losses"]["span_contproto:cont"] > 0 for record in records[1:])
    rows = [json.loads(line) for line in quality.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]  # teacher labels, then after each epoch
    assert all(0 <= r["f1"] <= 1 for r in rows)
    from spacy_contproto.pseudo_labels import PseudoLabelStore

    reopened = PseudoLabelStore.open(store)
    assert len(reopened) == 60
    nlp = spacy.load(tmp_path / "out" / "model-last")
    assert nlp.get_pipe("span_contproto").state is not None


@pytest.mark.parametrize("max_epochs,prototypes,warns", [(2, True, True), (3, True, False), (2, False, False)])
def test_warns_when_refined_labels_are_never_trained_on(tiny_encoder, synthetic_corpus, target_corpus,
                                                         max_epochs, prototypes, warns):
    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, target_corpus["pseudo_labelled"],
                        **{"training.max_epochs": max_epochs,
                           "components.span_contproto.contproto.prototypes": prototypes})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        initialize(nlp, synthetic_corpus, target_corpus["pseudo_labelled"])
    assert any("no epoch trains on refined pseudo labels" in str(w.message) for w in caught) == warns


def test_quality_log_counts_target_gold_of_labels_the_component_lacks(tmp_path, tiny_encoder, synthetic_corpus,
                                                                       target_corpus):
    vocab = spacy.blank("xx").vocab
    docs = list(DocBin(store_user_data=True).from_disk(target_corpus["pseudo_labelled"]).get_docs(vocab))
    n_gold = sum(len(doc.ents) for doc in docs)
    first = next(doc for doc in docs if doc.ents)
    first.ents = [first.char_span(e.start_char, e.end_char, label="FOO" if i == 0 else e.label_)
                  for i, e in enumerate(first.ents)]
    target = tmp_path / "foo.spacy"
    DocBin(docs=docs, store_user_data=True).to_disk(target)
    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, target)
    with pytest.warns(UserWarning, match=r"1 entities with labels the component does not have \(FOO: 1\)"):
        initialize(nlp, synthetic_corpus, target)
    quality = nlp.get_pipe("span_contproto").state.quality()
    assert quality["n_gold"] == n_gold  # the FOO entity counts, as a miss


def test_target_doc_whose_spans_no_longer_match_its_pseudo_labels_is_a_clear_error(tiny_encoder, synthetic_corpus,
                                                                                   target_corpus):
    from spacy_contproto.component import is_target

    target = target_corpus["pseudo_labelled"]
    nlp = contproto_nlp(tiny_encoder, synthetic_corpus, target)
    examples, optimizer = initialize(nlp, synthetic_corpus, target)
    batch = [eg for eg in examples if is_target(eg) and len(eg.predicted) > 3][:2]
    nlp.get_pipe("span_contproto").set_training_state(epoch=0, step=0)
    nlp.update(batch, sgd=optimizer)  # as labelled: fine
    # a sentence boundary set after pseudo-labelling (as an annotating sentencizer would) changes its spans
    batch[1].predicted[2].is_sent_start = True
    with pytest.raises(ValueError, match=r"the spans of target Doc '.+' in this batch \(\d+\) are not the spans"):
        nlp.update(batch, sgd=optimizer)


def test_pseudo_labelling_with_a_pipeline_without_the_component_fails_before_the_progress_bar(
    tmp_path, target_corpus, capsys
):
    nlp = spacy.blank("xx")
    nlp.add_pipe("sentencizer")
    with pytest.raises(ValueError, match=r"it has none \(its components: \['sentencizer'\]\)"):
        pseudo_label_file(nlp, target_corpus["raw"], tmp_path / "out.spacy")
    assert "pseudo-labelling" not in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"no span_contproto component named 'ner'; it has \[\] \(its components: \['sentencizer'\]\)"):
        pseudo_label_file(nlp, target_corpus["raw"], tmp_path / "out.spacy", component="ner")
