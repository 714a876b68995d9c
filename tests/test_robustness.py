"""Inputs real users feed the component (issue 6): long, right-to-left and CJK text."""
import spacy

from spacy_contproto.testing import synthetic_sentences


def test_long_doc_uses_strided_windows_and_finds_late_entities(trained_teacher):
    nlp = spacy.load(trained_teacher)
    sentences = synthetic_sentences(60, seed=21)
    text = " ".join(" ".join(words) for words, _ in sentences)
    doc = nlp(text)
    # at least one word-piece per token: far past the config's first 128-piece window
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
