"""CoNLL/TSV -> .spacy conversion (spacy_contproto/corpus.py) on small files written here."""
import gzip
import os
import subprocess
import sys
import warnings
import zlib

import pytest
import spacy
import srsly
from spacy.tokens import DocBin

from spacy_contproto.corpus import (
    ConllStats, ConllWarning, check_spacy_output, conll_to_docs, convert_file, find_split, is_words_only, read_conll,
    read_docbin,
)
from spacy_contproto.training import SelfTrainingCorpus

VOCAB = spacy.blank("xx").vocab


def write(tmp_path, text, name="data.conll", encoding="utf8", newline="\n"):
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


def ents(doc):
    return [(e.text, e.label_) for e in doc.ents]


def sentences(n_columns, sep=" "):
    """Two sentences with the tag in the last of n_columns columns."""
    rows = [
        [("Angela", "B-PER"), ("Merkel", "I-PER"), ("visited", "O"), ("New", "B-LOC"), ("York", "I-LOC"), (".", "O")],
        [("The", "O"), ("United", "B-ORG"), ("Nations", "I-ORG"), ("met", "O")],
    ]
    filler = ["NNP", "B-NP", "lemma"][: n_columns - 2]
    return "\n\n".join(
        "\n".join(sep.join([word, *filler, tag]) for word, tag in sent) for sent in rows
    ) + "\n"


EXPECTED = [
    [("Angela Merkel", "PER"), ("New York", "LOC")],
    [("United Nations", "ORG")],
]


@pytest.mark.parametrize("n_columns", [2, 3, 4, 5])
@pytest.mark.parametrize("sep", [" ", "\t", " \t  "])
def test_columns_and_separators(tmp_path, n_columns, sep):
    stats = ConllStats()
    docs = conll_to_docs(write(tmp_path, sentences(n_columns, sep)), VOCAB, stats=stats)
    assert [ents(doc) for doc in docs] == EXPECTED
    assert docs[0].text == "Angela Merkel visited New York ."
    assert stats.sentences == 2 and stats.tokens == 10
    assert stats.columns == {n_columns: 10}
    assert stats.entities == {"PER": 1, "LOC": 1, "ORG": 1}
    assert (stats.encoding, stats.scheme, stats.stray_i) == ("utf-8", "iob2", 0)


def test_entity_offsets_and_doc_layout(tmp_path):
    docs = conll_to_docs(write(tmp_path, sentences(2)), VOCAB)
    doc = docs[0]
    assert [t.whitespace_ for t in doc] == [" "] * 5 + [""]
    for ent in doc.ents:
        assert doc.text[ent.start_char : ent.end_char] == ent.text
    assert [(e.start, e.end, e.start_char, e.end_char) for e in doc.ents] == [(0, 2, 0, 13), (3, 5, 22, 30)]
    assert [t.ent_iob_ for t in doc] == ["B", "I", "O", "B", "I", "O"]
    # one sentence per Doc, sentence starts set explicitly
    assert [t.is_sent_start for t in doc] == [True] + [False] * 5
    assert doc.has_annotation("SENT_START") and len(list(doc.sents)) == 1


def test_docstart_crlf_blank_lines(tmp_path):
    text = (
        "\n\n-DOCSTART- -X- O\n\n\n"
        "EU NNP B-ORG\nrejects VBZ O\n\n\n\n"
        "-DOCSTART- -X- O\n"
        "Peter NNP B-PER\n\n"
        "-DOCSTART- -X- O\n\n"
        "Blackburn NNP B-PER\n"  # no blank line before -DOCSTART-: it ends the sentence
        "-DOCSTART- -X- O\n"
        "BRUSSELS NNP B-LOC\n\n\n\n"
    )
    stats = ConllStats()
    docs = conll_to_docs(write(tmp_path, text, newline="\r\n"), VOCAB, stats=stats)
    assert [doc.text for doc in docs] == ["EU rejects", "Peter", "Blackburn", "BRUSSELS"]
    assert [ents(doc) for doc in docs] == [[("EU", "ORG")], [("Peter", "PER")], [("Blackburn", "PER")], [("BRUSSELS", "LOC")]]
    assert stats.documents == 4 and stats.sentences == 4
    assert all("\r" not in t.text for doc in docs for t in doc)


def test_latin1_detected_and_explicit(tmp_path):
    text = "Müller B-PER\nließ O\nGrüße O\n"
    path = write(tmp_path, text, encoding="latin-1")
    stats = ConllStats()
    docs = conll_to_docs(path, VOCAB, stats=stats)
    assert docs[0].text == "Müller ließ Grüße" and ents(docs[0]) == [("Müller", "PER")]
    assert stats.encoding == "latin-1"
    # UTF-8 is tried first (strictly)
    stats = ConllStats()
    assert conll_to_docs(write(tmp_path, text, "u.conll"), VOCAB, stats=stats)[0].text == "Müller ließ Grüße"
    assert stats.encoding == "utf-8"
    # an explicit encoding is used as given
    assert conll_to_docs(path, VOCAB, encoding="iso-8859-1")[0][0].text == "Müller"
    with pytest.raises(ValueError, match=r"data\.conll:1: not valid utf-8"):
        conll_to_docs(path, VOCAB, encoding="utf-8")


def test_utf8_bom_and_unicode_whitespace_in_tokens(tmp_path):
    # only ASCII space/tab separate columns; U+0085/U+2028 inside a token do not end a line
    text = "\ufeffa\u00a0b\tB-LOC\nx\u2028y\tO\nz\u0085\tO\n"
    stats = ConllStats()
    (doc,) = conll_to_docs(write(tmp_path, text), VOCAB, stats=stats)
    assert [t.text for t in doc] == ["a\u00a0b", "x\u2028y", "z\u0085"]
    assert stats.encoding == "utf-8" and stats.columns == {2: 3}
    assert conll_to_docs(write(tmp_path, text), VOCAB, encoding="utf-8")[0][0].text == "a\u00a0b"


IOB1 = (
    "-DOCSTART- -X- -X- -X- O\n\n"
    "Gro\u00dfer Gro\u00dfe NN I-NC O\n"
    "Peter Peter NE I-NC I-PER\nM\u00fcller M\u00fcller NE I-NC I-PER\n"
    "Hans Hans NE I-NC B-PER\n"  # B-: a second PER right after the first
    "und und KON O O\nBerlin Berlin NE I-NC I-LOC\nFC FC NE I-NC I-ORG\n"  # type change starts an entity
    ". . $. O O\n"
)


def test_iob1_detected(tmp_path):
    stats = ConllStats()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConllWarning)  # IOB1 I- starts are not stray
        docs = conll_to_docs(write(tmp_path, IOB1, encoding="latin-1"), VOCAB, stats=stats)
    assert ents(docs[0]) == [("Peter Müller", "PER"), ("Hans", "PER"), ("Berlin", "LOC"), ("FC", "ORG")]
    assert (stats.scheme, stats.encoding, stats.stray_i) == ("iob1", "latin-1", 0)
    assert stats.columns == {5: 8} and stats.entities == {"PER": 2, "LOC": 1, "ORG": 1}
    # normalised to IOB2 by read_conll
    (words, tags), = read_conll(write(tmp_path, IOB1, "b.conll"))
    assert tags == ["O", "B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "O"]


def test_iob2_stray_i(tmp_path):
    text = (
        "Sao B-LOC\nPaulo I-LOC\n\n"
        "el O\nReal I-ORG\nMadrid I-ORG\n\n"  # stray I- after O (line 5)
        "# O\nLi I-PER\n\n"  # ... and another (line 9)
        "Ana B-PER\nen O\n"
    )
    path = write(tmp_path, text)
    stats = ConllStats()
    with pytest.warns(ConllWarning, match=r"data\.conll: 2 stray I- tag.*line\(s\) 5, 9"):
        docs = conll_to_docs(path, VOCAB, stats=stats)
    assert [ents(d) for d in docs] == [[("Sao Paulo", "LOC")], [("Real Madrid", "ORG")], [("Li", "PER")], [("Ana", "PER")]]
    assert stats.scheme == "iob2" and stats.stray_i_lines == [5, 9]
    # the same file read as IOB1: no strays, same entities
    stats = ConllStats()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConllWarning)
        docs = conll_to_docs(path, VOCAB, scheme="iob1", stats=stats)
    assert stats.stray_i == 0 and [len(d.ents) for d in docs] == [1, 1, 1, 1]
    # an explicit IOB2 on an IOB1 file counts every I- start
    stats = ConllStats()
    with pytest.warns(ConllWarning):
        conll_to_docs(write(tmp_path, IOB1, "b.conll"), VOCAB, scheme="iob2", stats=stats)
    assert stats.stray_i_lines == [4, 8, 9]


def test_i_of_other_type_starts_entity(tmp_path):
    with pytest.warns(ConllWarning, match=r"line\(s\) 2$"):  # IOB2: the I-LOC is stray
        docs = conll_to_docs(write(tmp_path, "a B-PER\nb I-LOC\nc I-LOC\nd B-LOC\n"), VOCAB)
    assert ents(docs[0]) == [("a", "PER"), ("b c", "LOC"), ("d", "LOC")]


def test_bioes_and_bilou(tmp_path):
    bioes = "New B-LOC\nYork E-LOC\nand O\nAna S-PER\nde B-ORG\nla I-ORG\nX E-ORG\n"
    stats = ConllStats()
    (doc,) = conll_to_docs(write(tmp_path, bioes), VOCAB, stats=stats)
    assert ents(doc) == [("New York", "LOC"), ("Ana", "PER"), ("de la X", "ORG")]
    assert stats.scheme == "bioes"
    bilou = bioes.replace("E-", "L-").replace("S-", "U-")
    (doc,) = conll_to_docs(write(tmp_path, bilou, "b.conll"), VOCAB, scheme="bilou")
    assert ents(doc) == [("New York", "LOC"), ("Ana", "PER"), ("de la X", "ORG")]
    with pytest.raises(ValueError, match=r"data\.conll:2: tag E-LOC is not IOB2"):
        conll_to_docs(write(tmp_path, bioes), VOCAB, scheme="iob2")
    with pytest.raises(ValueError, match=r"c\.conll:2: ill-formed BIOES.*not closed"):
        conll_to_docs(write(tmp_path, "New B-LOC\nand O\n", "c.conll"), VOCAB, scheme="bioes")
    with pytest.raises(ValueError, match=r"d\.conll:2: ill-formed BIOES.*E-PER without"):
        conll_to_docs(write(tmp_path, "x S-LOC\nz E-PER\n", "d.conll"), VOCAB)
    with pytest.raises(ValueError, match=r"e\.conll:1: ill-formed BIOES: the sentence ends"):
        conll_to_docs(write(tmp_path, "x B-LOC\n\ny S-PER\n", "e.conll"), VOCAB)


@pytest.mark.parametrize(
    "text,line,match",
    [
        ("a O\nb X-PER\n", 2, "unknown NER tag 'X-PER'"),
        ("a O\n\nb B-\n", 3, "unknown NER tag 'B-'"),
        ("a PER\n", 1, "unknown NER tag 'PER'"),
        ("a o\n", 1, "unknown NER tag 'o'"),
        ("a NN B-NP O\nb NN O\n", 2, r"3 columns, but this sentence's first line \(.*data\.conll:1\) has 4"),
        ("a NN O\n\nb O\nNew York B-LOC\n", 4, "3 columns, but this sentence's first line"),
        ("a O\nlonely\n", 2, "one column"),
        ("a 1 2 3 4 5 O\n", 1, "7 columns: expected 2 to 5"),
    ],
)
def test_malformed_input_refused_with_file_and_line(tmp_path, text, line, match):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=match) as err:
        conll_to_docs(path, VOCAB)
    assert f"{path}:{line}:" in str(err.value)


def test_other_errors(tmp_path):
    path = write(tmp_path, "a O\n")
    with pytest.raises(ValueError, match="unknown tag scheme 'iob3'"):
        conll_to_docs(path, VOCAB, scheme="iob3")
    with pytest.raises(ValueError, match="unknown encoding"):
        conll_to_docs(path, VOCAB, encoding="no-such-codec")
    with pytest.raises(ValueError, match="cannot read .*missing.conll"):
        conll_to_docs(tmp_path / "missing.conll", VOCAB)


def test_ragged_between_sentences_is_tolerated(tmp_path):
    stats = ConllStats()
    docs = conll_to_docs(write(tmp_path, "a NN B-PER\nb NN O\n\nc B-LOC\n"), VOCAB, stats=stats)
    assert [ents(d) for d in docs] == [[("a", "PER")], [("c", "LOC")]]
    assert stats.columns == {3: 2, 2: 1}


def test_empty_file(tmp_path):
    stats = ConllStats()
    assert conll_to_docs(write(tmp_path, "\n\n-DOCSTART- O\n\n"), VOCAB, stats=stats) == []
    assert (stats.sentences, stats.documents, stats.scheme) == (0, 1, "iob2")


def test_convert_file_labelled_and_unlabelled(tmp_path):
    path = write(tmp_path, sentences(3) + "\nno O\nentities O\n")
    results = {}
    for name, kwargs in {
        "labelled": {},
        "unlabelled": {"unlabelled": True},
        "gold_kept": {"unlabelled": True, "keep_gold": True},
    }.items():
        out = tmp_path / "out" / f"{name}.spacy"
        stats = convert_file(path, out, lang="xx", **kwargs)
        assert stats.sentences == 3 and stats.n_entities == 3  # counted in the file either way
        docs = list(DocBin().from_disk(out).get_docs(VOCAB))
        assert [d.text for d in docs] == ["Angela Merkel visited New York .", "The United Nations met", "no entities"]
        assert all(d.has_annotation("SENT_START") for d in docs)
        results[name] = docs
    for name in ("labelled", "gold_kept"):
        docs = results[name]
        assert [ents(d) for d in docs] == EXPECTED + [[]]
        # no entity in a labelled sentence is gold "O", not missing
        assert all(d.has_annotation("ENT_IOB") for d in docs)
        assert [t.ent_iob_ for t in docs[2]] == ["O", "O"]
    for doc in results["unlabelled"]:
        assert not doc.has_annotation("ENT_IOB") and doc.ents == ()
        assert {t.ent_iob_ for t in doc} == {""}


def test_gold_kept_is_moved_aside_by_the_training_reader(tmp_path):
    from spacy_contproto.component import ORACLE_KEY
    from spacy_contproto.pseudo_labels import PAYLOAD_KEY
    from spacy_contproto.training import target_example

    path = write(tmp_path, sentences(2))
    nlp = spacy.blank("xx")
    for keep_gold, oracle in ((True, [(0, 2, "PER"), (3, 5, "LOC")]), (False, None)):
        out = tmp_path / f"{keep_gold}.spacy"
        convert_file(path, out, unlabelled=True, keep_gold=keep_gold)
        doc = next(DocBin().from_disk(out).get_docs(nlp.vocab))
        doc.user_data[PAYLOAD_KEY] = b""  # stands in for the pseudo labels
        example = target_example(nlp, doc)
        assert not example.reference.has_annotation("ENT_IOB")
        assert example.reference.user_data.get(ORACLE_KEY) == oracle


def test_user_data_stored(tmp_path):
    out = tmp_path / "x.spacy"
    convert_file(write(tmp_path, "a O\n"), out)
    assert "user_data" in srsly.msgpack_loads(zlib.decompress(out.read_bytes()))


class CliResult:
    def __init__(self, result):
        self.returncode = result.returncode
        self.stderr = result.stderr
        self.stdout = " ".join(result.stdout.split())  # wasabi wraps long lines


def run_cli(*args):
    env = {**os.environ, "ANSI_COLORS_DISABLED": "1"}
    return CliResult(subprocess.run(
        [sys.executable, "-m", "spacy_contproto", "convert-corpus", *map(str, args)],
        capture_output=True, text=True, env=env,
    ))


def test_cli(tmp_path):
    path = write(tmp_path, "el O\nReal I-ORG\nMadrid I-ORG\n\nAna B-PER\n", name="es.conll")
    out = tmp_path / "sub" / "es.spacy"
    result = run_cli(path, out, "--lang", "es")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Wrote 2 Docs" in result.stdout and "ORG 1, PER 1" in result.stdout
    assert "1 stray I- tag" in result.stdout and "line(s) 2" in result.stdout
    docs = list(DocBin().from_disk(out).get_docs(VOCAB))
    assert [ents(d) for d in docs] == [[("Real Madrid", "ORG")], [("Ana", "PER")]]

    result = run_cli(path, out, "--unlabelled", "--scheme", "iob1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no entity annotation" in result.stdout and "stray" not in result.stdout
    assert not any(d.has_annotation("ENT_IOB") for d in DocBin().from_disk(out).get_docs(VOCAB))

    result = run_cli(path, out, "--unlabelled", "--keep-gold", "--encoding", "latin-1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gold entities kept" in result.stdout and "encoding latin-1" in result.stdout
    assert [len(d.ents) for d in DocBin().from_disk(out).get_docs(VOCAB)] == [1, 1]


def test_cli_errors_without_traceback(tmp_path):
    bad = write(tmp_path, "a O\nb X-PER\n", name="bad.conll")
    result = run_cli(bad, tmp_path / "bad.spacy")
    assert result.returncode == 1
    assert f"{bad}:2: unknown NER tag 'X-PER'" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "bad.spacy").exists()
    # unlabelled text converted as labelled (or with its gold kept): the message names the flag
    words = write(tmp_path, "Anna\nlacht\n", name="words.txt")
    for flags in ([], ["--unlabelled", "--keep-gold"]):
        result = run_cli(words, tmp_path / "w.spacy", *flags)
        said = " ".join(result.stdout.split())
        assert result.returncode == 1 and "one column" in said and "convert it with --unlabelled (without --keep-gold)" in said
    assert run_cli(words, tmp_path / "w.spacy", "--unlabelled").returncode == 0
    # a labelled file with one line that lost its tag: no hint (--unlabelled would drop all its gold)
    result = run_cli(write(tmp_path, "Anna B-PER\nlacht O\n\nBerlin\n", name="lost.conll"), tmp_path / "l.spacy")
    assert result.returncode == 1 and "one column" in result.stdout and "--unlabelled" not in result.stdout
    result = run_cli(write(tmp_path, "no O\nentity O\n", name="plain.conll"), tmp_path / "p.spacy")
    assert result.returncode == 0 and "plain.conll has no entities" in result.stdout
    result = run_cli(write(tmp_path, "a O\n"), tmp_path / "x.spacy", "--lang", "qq")
    assert result.returncode == 1 and "unknown language 'qq'" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    try:
        import pythainlp  # noqa: F401
    except ImportError:  # a known language whose tokenizer library is missing is not "unknown"
        result = run_cli(write(tmp_path, "a O\n"), tmp_path / "x.spacy", "--lang", "th")
        assert result.returncode == 1 and "language 'th' needs a library" in result.stdout


def test_find_split_one_file_per_split(tmp_path):
    (tmp_path / "conll2002" / "es").mkdir(parents=True)
    (tmp_path / "conll2002" / "es" / "train.conll").write_text("x O\n")
    (tmp_path / "conll2002" / "es" / "test.conll").write_text("x O\n")
    (tmp_path / "conll2002" / "es" / "test.txt").write_text("x O\n")
    assert find_split(tmp_path, "conll200*", "es", "train") == tmp_path / "conll2002" / "es" / "train.conll"
    with pytest.raises(FileNotFoundError, match="found \\[\\]"):
        find_split(tmp_path, "conll2002", "es", "dev")
    with pytest.raises(FileNotFoundError, match="test.conll.*test.txt"):
        find_split(tmp_path, "conll2002", "es", "test")


def test_encodings_detected_and_damaged_utf8_refused(tmp_path):
    # Windows-1252: bytes 0x80-0x9f are quotes and the euro sign there, control characters in Latin-1
    stats = ConllStats()
    path = write(tmp_path, "\u201cHallo\u201d O\n\u20ac B-MISC\n", encoding="cp1252")
    (doc,) = conll_to_docs(path, VOCAB, stats=stats)
    assert [t.text for t in doc] == ["\u201cHallo\u201d", "\u20ac"] and stats.encoding == "cp1252"
    # UTF-16 with its byte-order mark
    stats = ConllStats()
    (doc,) = conll_to_docs(write(tmp_path, "\ufeffK\u00f6ln B-LOC\n", encoding="utf-16-le"), VOCAB, stats=stats)
    assert ents(doc) == [("K\u00f6ln", "LOC")] and stats.encoding == "utf-16"
    # one bad byte in a UTF-8 file: refused, not the whole file read as Latin-1 ("MÃ¼ller")
    path = tmp_path / "damaged.conll"
    path.write_bytes("M\u00fcller B-PER\nin O\n\n".encode("utf8") + b"bad\xff O\n")
    with pytest.raises(ValueError, match=r"damaged\.conll:4: byte 0xff is not valid UTF-8.*\(line 1\)"):
        conll_to_docs(path, VOCAB)
    assert conll_to_docs(path, VOCAB, encoding="latin-1")[1][0].text == "bad\u00ff"


def test_tab_separated_file_keeps_spaces_inside_words(tmp_path):
    text = "-DOCSTART- -X- O\n\nPeter\tB-PER\nlives \t O\n\nNew York\tB-LOC\n\nParis\tNNP\tB-LOC\n"
    stats = ConllStats()
    docs = conll_to_docs(write(tmp_path, text), VOCAB, stats=stats)
    assert [[t.text for t in d] for d in docs] == [["Peter", "lives"], ["New York"], ["Paris"]]
    assert [ents(d) for d in docs] == [[("Peter", "PER")], [("New York", "LOC")], [("Paris", "LOC")]]
    assert stats.separator == "tab" and stats.documents == 1 and stats.columns == {2: 3, 3: 1}
    # one token line without a tab: the whole file is split at spaces and tabs, as before
    stats = ConllStats()
    docs = conll_to_docs(write(tmp_path, "a\tO\nb O\n"), VOCAB, stats=stats)
    assert [t.text for t in docs[0]] == ["a", "b"] and stats.separator == "space/tab"


def test_cr_only_line_endings(tmp_path):
    docs = conll_to_docs(write(tmp_path, "EU B-ORG\nrejects O\n\nGerman B-MISC\n", newline="\r"), VOCAB)
    assert [ents(d) for d in docs] == [[("EU", "ORG")], [("German", "MISC")]]
    path = tmp_path / "mixed.conll"
    path.write_bytes(b"a O\nb O\rc O\n")
    with pytest.raises(ValueError, match=r"mixed\.conll:2: a carriage return \(CR\) inside the line"):
        conll_to_docs(path, VOCAB)


def test_unlabelled_data_may_have_no_tag_column(tmp_path):
    path = write(tmp_path, "Angela\nMerkel\n\nParis\n")
    docs = conll_to_docs(path, VOCAB, unlabelled=True)
    assert [d.text for d in docs] == ["Angela Merkel", "Paris"]
    assert not any(d.has_annotation("ENT_IOB") for d in docs)
    for kwargs in ({}, {"unlabelled": True, "keep_gold": True}):  # these need the tags
        with pytest.raises(ValueError, match=r"data\.conll:1: one column"):
            conll_to_docs(path, VOCAB, **kwargs)


def test_is_words_only_tells_unlabelled_text_from_tagged_and_mixed_files(tmp_path):
    assert is_words_only(write(tmp_path, "Angela\nMerkel\n\nParis\n", name="words.conll"))
    assert not is_words_only(write(tmp_path, "Angela B-PER\nParis B-LOC\n", name="tagged.conll"))
    # one line that lost its tag in a labelled file is not unlabelled text
    assert not is_words_only(write(tmp_path, "Angela B-PER\nMerkel\n\nParis B-LOC\n", name="mixed.conll"))
    assert not is_words_only(tmp_path / "missing.conll")
    # a stray I- tag warns when read as data, not when only probed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stray = write(tmp_path, "Paris B-LOC\n\nBerlin B-LOC\n\nRome I-LOC\n", name="stray.conll")
        assert not is_words_only(stray)
    with pytest.warns(ConllWarning, match="stray I-"):
        list(read_conll(stray, tagged=False))


def test_convert_file_refuses_what_would_lose_data(tmp_path):
    path = write(tmp_path, "a B-PER\n")
    with pytest.raises(ValueError, match=r"must end in \.spacy"):
        convert_file(path, tmp_path / "out.docbin")
    same = write(tmp_path, "a B-PER\n", name="same.spacy")
    with pytest.raises(ValueError, match="is the input file"):
        convert_file(same, tmp_path / "." / "same.spacy")
    assert same.read_text() == "a B-PER\n"
    with pytest.raises(ValueError, match="no sentences"):
        convert_file(write(tmp_path, "\n-DOCSTART- O\n\n", name="empty.conll"), tmp_path / "e.spacy")
    assert not (tmp_path / "e.spacy").exists()
    with pytest.raises(ValueError, match="cannot create the output folder"):
        convert_file(path, path / "sub" / "out.spacy")


def test_pan_x_language_prefix_removed_only_when_every_word_has_it(tmp_path):
    stats = ConllStats()
    docs = conll_to_docs(write(tmp_path, "de:Angela\tB-PER\nde:Merkel\tI-PER\n\nde:in\tO\n"), VOCAB, stats=stats)
    assert [d.text for d in docs] == ["Angela Merkel", "in"] and ents(docs[0]) == [("Angela Merkel", "PER")]
    assert stats.language_prefix == "de:"
    stats = ConllStats()
    docs = conll_to_docs(write(tmp_path, "de:Angela\tB-PER\nhttp:x\tO\n"), VOCAB, stats=stats)
    assert docs[0].text == "de:Angela http:x" and stats.language_prefix == ""


def test_cli_max_columns(tmp_path):
    path = write(tmp_path, "a 1 2 3 4 5 B-PER\n")
    assert "7 columns: expected 2 to 5" in run_cli(path, tmp_path / "a.spacy").stdout
    result = run_cli(path, tmp_path / "a.spacy", "--max-columns", "7")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [ents(d) for d in DocBin().from_disk(tmp_path / "a.spacy").get_docs(VOCAB)] == [[("a", "PER")]]


@pytest.mark.parametrize("blank", ["\u00a0", "\u3000", "\x0c"])
def test_line_of_other_unicode_whitespace_is_a_word(tmp_path, blank):
    # only ASCII space/tab separate columns: such a line is a one-column line, not a crash
    path = write(tmp_path, f"EU B-ORG\nrejects O\n{blank}\nGerman B-MISC\n")
    with pytest.raises(ValueError, match=r"data\.conll:3: one column"):
        conll_to_docs(path, VOCAB)
    path = write(tmp_path, f"EU\n{blank}\nrejects\n")
    (doc,) = conll_to_docs(path, VOCAB, unlabelled=True)
    assert [t.text for t in doc] == ["EU", blank, "rejects"]


def test_binary_and_truncated_input_refused_with_the_cause(tmp_path):
    spacy_file = tmp_path / "docs.spacy"
    DocBin(docs=[spacy.blank("xx")("a b")]).to_disk(spacy_file)
    with pytest.raises(ValueError, match=r"docs\.spacy: a compressed or binary file \(a \.spacy DocBin"):
        list(read_conll(spacy_file))
    gz = tmp_path / "data.conll.gz"
    gz.write_bytes(gzip.compress(b"EU B-ORG\n"))
    with pytest.raises(ValueError, match="compressed or binary file"):
        list(read_conll(gz))
    utf16 = write(tmp_path, "K\u00f6ln B-LOC\n", encoding="utf-16-le")  # no byte-order mark
    with pytest.raises(ValueError, match="NUL bytes.*--encoding utf-16-le"):
        list(read_conll(utf16))
    assert list(read_conll(utf16, encoding="utf-16-le")) == [(["K\u00f6ln"], ["B-LOC"])]
    truncated = tmp_path / "truncated.conll"
    truncated.write_bytes("\ufeffK\u00f6ln B-LOC\n".encode("utf-16-le") + b"x")
    with pytest.raises(ValueError, match=r"truncated\.conll: starts with a UTF-16 byte-order mark but is not valid"):
        list(read_conll(truncated))


def test_tab_separated_file_whose_columns_are_also_joined_by_spaces(tmp_path):
    pasted = write(tmp_path, "EU NNP\tB-ORG\nrejects VBZ\tO\n\nGerman JJ\tB-MISC\n")
    result = run_cli(pasted, tmp_path / "pasted.spacy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 of 3 words hold a space" in result.stdout
    stats = ConllStats()
    conll_to_docs(write(tmp_path, "New York\tB-LOC\nis\tO\nbig\tO\n", name="tsv.conll"), VOCAB, stats=stats)
    assert stats.words_with_space == 1 and not stats.spaces_look_like_separators


def test_tab_separated_file_with_a_line_of_spaces_is_refused_at_that_line(tmp_path):
    # read with spaces as separators, both 3-column lines would agree and lose "Angeles", "York"
    mixed = write(tmp_path, "Los Angeles\tB-LOC\nNew York\tB-LOC\n\nis\tO\nbig\tO\n\nhe O\n")
    with pytest.raises(ValueError, match=r"data\.conll:7: no tab, but 4 of the file's 5 token lines are tab-sep.*'Los Angeles' \(.*data\.conll:1\)"):
        conll_to_docs(mixed, VOCAB)
    # the same file with that line fixed keeps the words whole
    fixed = write(tmp_path, "Los Angeles\tB-LOC\nNew York\tB-LOC\n\nis\tO\nbig\tO\n\nhe\tO\n", name="fixed.conll")
    assert [doc[0].text for doc in conll_to_docs(fixed, VOCAB)] == ["Los Angeles", "is", "he"]
    # columns joined by spaces and tabs, or tabs in a minority of lines, read as before
    joined = write(tmp_path, "EU NNP\tB-ORG\nrejects VBZ\tO\nGerman JJ O\n", name="joined.conll")
    assert [t.text for t in conll_to_docs(joined, VOCAB)[0]] == ["EU", "rejects", "German"]
    few_tabs = write(tmp_path, "Paris\tB-LOC\nis O\nbig O\n", name="few.conll")
    assert [t.text for t in conll_to_docs(few_tabs, VOCAB)[0]] == ["Paris", "is", "big"]


def test_output_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    path = write(tmp_path, "a B-PER\n")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=r"cannot create the output folder .*a_file.*: .*a_file is a file"):
        check_spacy_output(tmp_path / "a_file" / "sub" / "out.spacy")
    (tmp_path / "folder.spacy").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        convert_file(path, tmp_path / "folder.spacy")
    check_spacy_output(tmp_path / "new" / "deeper" / "out.spacy")  # folders to be created are fine
    assert not (tmp_path / "new").exists()


def test_token_id_column_is_refused(tmp_path):
    ids = write(tmp_path, "1\tEU\t_\tB-ORG\n2\trejects\t_\tO\n\n1\tGerman\t_\tB-MISC\n")
    with pytest.raises(ValueError, match=r"counts the tokens of every sentence \(1, 2, 3, \.\.\.\): token ids.*line 1: '1'"):
        conll_to_docs(ids, VOCAB)
    # numbers as words are kept where they do not count every sentence's tokens, in a
    # single sentence, and as the only column of words-only text
    numbers = write(tmp_path, "1 O\n2 O\n\n1 O\nMay O\n", name="numbers.conll")
    assert [[t.text for t in d] for d in conll_to_docs(numbers, VOCAB)] == [["1", "2"], ["1", "May"]]
    single = write(tmp_path, "1 O\n2 O\n", name="single.conll")
    assert [[t.text for t in d] for d in conll_to_docs(single, VOCAB)] == [["1", "2"]]
    words_only = write(tmp_path, "1\n2\n\n1\n2\n", name="words.conll")
    assert len(conll_to_docs(words_only, VOCAB, unlabelled=True)) == 2


def test_comment_lines_are_named_in_column_errors(tmp_path):
    path = write(tmp_path, "# sent_id = 1\nEU B-ORG\nrejects O\n")
    with pytest.raises(ValueError, match=r"data\.conll:2: 2 columns.* has 4 .*comment line\?"):
        conll_to_docs(path, VOCAB)
    path = write(tmp_path, "# text = EU rejects German call to boycott\nEU B-ORG\n", name="long.conll")
    with pytest.raises(ValueError, match=r"long\.conll:1: 9 columns: .*\(a comment line\? remove the comment lines\)"):
        conll_to_docs(path, VOCAB)


def test_damaged_spacy_files_are_named(tmp_path):
    docbin = tmp_path / "ok.spacy"
    nlp = spacy.blank("xx")
    DocBin(docs=[nlp(f"sentence {i} of the file .") for i in range(100)]).to_disk(docbin)
    truncated = tmp_path / "truncated.spacy"
    truncated.write_bytes(docbin.read_bytes()[: docbin.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated\.spacy is not a \.spacy file .*or it is damaged \(not zlib-compressed, or cut short\)$"):
        read_docbin(truncated)
    foreign = tmp_path / "foreign.spacy"
    foreign.write_bytes(zlib.compress(srsly.msgpack_dumps({"a": 1})))
    with pytest.raises(ValueError, match=r"foreign\.spacy is not a \.spacy file .*damaged \(KeyError"):
        read_docbin(foreign)
    with pytest.raises(ValueError, match=r"is a folder, not a \.spacy file"):
        read_docbin(tmp_path)
    empty = tmp_path / "empty.spacy"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.spacy is empty"):
        read_docbin(empty)
    # text that convert-corpus reads gets the command that converts it, in any encoding it reads
    for name, data in (("utf16.spacy", "EU\tB-ORG\n".encode("utf-16")),
                       ("latin1.spacy", "K\u00f6ln\u00a0B-LOC\n".encode("latin-1")),
                       # 11 + 409 lines of 10 bytes + 5: the probe's 4096 bytes end inside a "\u00df"
                       ("long.spacy", ("Zentrale O\n" + "Stra\u00dfe O\n" * 1000).encode("utf8"))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=f"{name} is not a .spacy file .* but text.*convert-corpus"):
            read_docbin(tmp_path / name)


def test_conll_file_where_a_spacy_file_is_expected(tmp_path):
    conll = write(tmp_path, "EU B-ORG\n")
    with pytest.raises(ValueError, match=r"data\.conll is not a \.spacy file.*convert-corpus .*data\.conll OUTPUT\.spacy"):
        read_docbin(conll)
    spacy_file = tmp_path / "ok.spacy"
    DocBin(docs=[spacy.blank("xx")("a b")]).to_disk(spacy_file)
    assert len(read_docbin(spacy_file)) == 1
    reader = SelfTrainingCorpus(spacy_file, conll)
    with pytest.raises(ValueError, match="is not a .spacy file"):
        reader.target_docs(spacy.blank("xx"))
    result = subprocess.run(
        [sys.executable, "-m", "spacy_contproto", "pseudo-label", "no-such-teacher", str(conll), str(tmp_path / "o.spacy")],
        capture_output=True, text=True, env={**os.environ, "ANSI_COLORS_DISABLED": "1"},
    )
    # the input is read before the teacher is loaded
    assert result.returncode == 1 and "data.conll is not a .spacy file" in " ".join(result.stdout.split())
    assert "Traceback" not in result.stdout + result.stderr
