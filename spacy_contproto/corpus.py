"""CoNLL / TSV NER files -> spaCy ``.spacy`` files (one Doc per sentence).

The input format, as the cross-lingual NER corpora have it (CoNLL-2002/2003, WikiANN):

- one token per line, 2 to 5 columns separated by runs of spaces and/or tabs; the word is
  the FIRST column and the NER tag the LAST (columns in between, e.g. POS, chunk or lemma,
  are ignored). When every token line holds a tab (TSV, e.g. WikiANN), only tabs separate
  columns, so a word holding a space (``New York<TAB>B-LOC``) is kept whole (counted in
  ``ConllStats.words_with_space``; the CLI warns when most words hold one, as in columns joined
  by spaces and tabs). A file whose token lines are mostly tab-separated, with words holding a
  space, is refused at its first line without a tab (read with spaces as separators too, those
  words would split). Only ASCII space
  and tab separate columns: other Unicode whitespace (no-break space, U+3000, ...) is part of
  a token. Unlabelled data (``unlabelled=True`` without ``keep_gold``) may have one column,
  the word only. Lines end in ``\\n`` or ``\\r\\n`` (a file whose only line break is
  ``\\r`` is split at it; a ``\\r`` inside a line of another file is refused); no other
  character ends a line (so a Latin-1 byte 0x85 or a U+2028 inside a token is harmless).
- sentences are separated by blank lines (any number of them, also at the start and end).
- ``-DOCSTART-`` lines (first column ``-DOCSTART-``) are document markers: they are counted
  (``ConllStats.documents``), never a sentence, and they end a sentence left open.
- encoding: UTF-8 (a byte-order mark is dropped), UTF-16 with a byte-order mark, or, when
  the bytes are not valid UTF-8, Latin-1 -- Windows-1252 when the file has bytes 0x80-0x9f,
  control characters in Latin-1; or the ``encoding`` you name. A file that is not valid UTF-8
  but holds UTF-8 characters elsewhere is refused (a damaged UTF-8 file would otherwise turn
  every one of its accented letters into two Latin-1 characters). Refused without a named
  encoding: a compressed file (gzip, zip, a ``.spacy`` DocBin) and a file with NUL bytes
  (binary, or UTF-16 without a byte-order mark: name ``utf-16-le``/``-be``).
- a language prefix on every word (XTREME's PAN-X files: ``de:Angela``) is removed, and
  named in ``ConllStats.language_prefix``; a file where some words lack it is read as is.
- tag schemes: IOB2 (every entity starts with ``B-``), IOB1 (``I-`` starts an entity; ``B-``
  only separates two adjacent entities of one type), and BIOES / BILOU (``S-``/``U-`` single,
  ``E-``/``L-`` last token), detected per file or named with ``scheme``.

Decoding IOB1 and IOB2 is one rule: an entity starts at ``B-X`` and at an ``I-X`` whose
previous token is not ``B-X``/``I-X`` (i.e. after ``O``, after another type, or at the start
of a sentence) -- spaCy's ``iob_to_biluo`` does exactly this. The scheme only decides what
such an ``I-X`` *means*: in IOB1 it is the normal start of an entity; in IOB2 it is a
"stray ``I-``" (an annotation error, e.g. one per split of CoNLL-2002 Spanish, and WikiANN zh's
``#`` token tagged ``O`` inside entities), read as ``B-X`` and reported with its line number
in ``ConllStats.stray_i_lines`` and a ``ConllWarning``. Auto-detection: BIOES when a tag has an
``E-``/``S-``/``L-``/``U-`` prefix; else IOB1 when more entities start with ``I-`` than with a
``B-`` that follows no same-type tag, else IOB2 (so a file without entities is IOB2). BIOES
input is checked strictly (``B-X`` must be followed by ``I-X``/``E-X``, etc.).

Refused with a ``ValueError`` that names ``file:line``:

- a tag that is not ``O`` or ``<B|I|E|S|L|U>-<label>`` (``X-PER``, ``B-``, ``PER``, ``o``);
- a line with one column (no tag; allowed for unlabelled data) or more than ``max_columns`` (5);
- a first column that counts 1, 2, 3, ... in every sentence (of two or more): token ids
  (GermEval-style files), which would be read as the words;
- a *ragged* sentence: a line with another number of columns than its sentence's first line.
  The tag is last, so such a line could be read, but in practice it means a token holding a
  space (``New York B-LOC`` read as word ``New``) or a broken line, and the word would be
  silently wrong. Different sentences may have different numbers of columns (e.g. two files
  concatenated); ``ConllStats.columns`` counts lines per number of columns;
- with an explicit ``scheme="iob1"|"iob2"``, a BIOES prefix; with BIOES, an ill-formed sequence.

Docs (``conll_to_docs``): one Doc per sentence, the file's words, a space after every token
but the last. Sentence starts are set explicitly, ``True`` on token 0 and ``False`` on the
rest (as spaCy's own ``spacy convert`` does for CoNLL NER), so ``doc.sents`` is the one
sentence and ``doc.has_annotation("SENT_START")`` holds without a parser.

Entities, three cases:

- labelled (``unlabelled=False``, source-language data): ``doc.ents`` from the tags, every
  other token explicitly outside (``ent_iob_ == "O"``), so a sentence without entities is
  gold "no entity here".
- ``unlabelled=True, keep_gold=False`` (the paper's protocol: target train with its labels
  removed): Docs with NO entity annotation at all (``doc.has_annotation("ENT_IOB")`` is
  False; every ``ent_iob_`` is ``""``). The tags are still read and checked, and counted in
  the stats, but not written.
- ``unlabelled=True, keep_gold=True``: the Docs keep the gold ``doc.ents`` (the file is the
  same as a labelled one). Use it for the target Docs of ContProto training: the reader
  ``spacy_contproto.SelfTrainingCorpus.v1`` gives target Docs a reference WITHOUT entity
  annotation and moves any gold entities aside, used only to log pseudo-label quality
  (``[paths] quality_log``). Do not use such a file as a labelled corpus (``spacy.Corpus.v1``)
  unless you mean to train on target gold.

``convert_file`` writes ``DocBin(store_user_data=True)`` and returns the ``ConllStats``; it
refuses, before reading the input, an output not ending in ``.spacy``, the input as output, and an
output it cannot write (``check_spacy_output``); then a file without sentences. ``read_docbin``
names a ``.spacy`` file that is text (with the command that converts it) or damaged.
"""
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

from spacy.tokens import Doc, DocBin
from spacy.training.iob_utils import biluo_tags_to_spans, biluo_to_iob, iob_to_biluo
from spacy.vocab import Vocab

DOCSTART = "-DOCSTART-"
SCHEMES = ("iob1", "iob2", "bioes")
SCHEME_ALIASES = {"iob": "iob2", "bio": "iob2", "bilou": "bioes", "iobes": "bioes"}
MAX_COLUMNS = 5
_TAG = re.compile(r"^([BIESLU])-(\S+)$")
_SEPARATOR = re.compile(r"[ \t]+")
_TAB_SEPARATOR = re.compile(r" *\t[ \t]*")  # a tab-separated file: a space inside a column is kept
_LANG_PREFIX = re.compile(r"^([a-z]{2,3}(?:-[a-z]+)?):.")  # XTREME's PAN-X words: "de:Angela"
# BIOES/BILOU prefixes in spaCy's BILUO spelling
_TO_BILUO = {"B": "B", "I": "I", "E": "L", "L": "L", "S": "U", "U": "U"}


class ConllWarning(UserWarning):
    """Something in a CoNLL file that was read, but worth knowing (stray I- tags)."""


@dataclass
class ConllStats:
    """What ``read_conll`` found in a file."""

    path: str = ""
    encoding: str = ""
    separator: str = ""  # "tab" (every token line has a tab) or "space/tab"
    scheme: str = ""
    sentences: int = 0
    tokens: int = 0
    documents: int = 0  # -DOCSTART- lines
    columns: Counter = field(default_factory=Counter)  # number of columns -> token lines
    entities: Counter = field(default_factory=Counter)  # label -> entities (in the file)
    stray_i_lines: List[int] = field(default_factory=list)  # IOB2 I-X read as B-X
    language_prefix: str = ""  # "de:" when every word had it (XTREME PAN-X) and it was removed
    words_with_space: int = 0  # tab-separated files keep spaces inside words

    @property
    def spaces_look_like_separators(self) -> bool:
        """Most words of a tab-separated file hold a space: columns joined by both (``paste``)?"""
        return self.separator == "tab" and self.words_with_space > self.tokens / 2

    @property
    def n_entities(self) -> int:
        return sum(self.entities.values())

    @property
    def stray_i(self) -> int:
        return len(self.stray_i_lines)

    def stray_i_message(self, max_lines: int = 10) -> str:
        lines = ", ".join(str(n) for n in self.stray_i_lines[:max_lines])
        more = f" (and {self.stray_i - max_lines} more)" if self.stray_i > max_lines else ""
        return (
            f"{self.path}: {self.stray_i} stray I- tag(s) with no B-/I- of the same type "
            f"before them (scheme {self.scheme}), read as B-: line(s) {lines}{more}"
        )

    def to_dict(self) -> Dict[str, object]:
        return {
            "path": self.path,
            "encoding": self.encoding,
            "separator": self.separator,
            "scheme": self.scheme,
            "sentences": self.sentences,
            "tokens": self.tokens,
            "documents": self.documents,
            "columns": dict(sorted(self.columns.items())),
            "entities": dict(sorted(self.entities.items())),
            "n_entities": self.n_entities,
            "stray_i": self.stray_i,
            "stray_i_lines": list(self.stray_i_lines),
            "language_prefix": self.language_prefix,
            "words_with_space": self.words_with_space,
        }


# A sentence while parsing: (words, raw tags, line number of each token)
_RawSentence = Tuple[List[str], List[str], List[int]]


# A multi-byte UTF-8 character: in a file that is not valid UTF-8 as a whole, such bytes mean
# a damaged UTF-8 file (Latin-1 text practically never holds them)
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
_C1_CONTROLS = re.compile(rb"[\x80-\x9f]")


def _line_of(data: bytes, offset: int) -> int:
    return data[:offset].count(b"\n") + 1


# gzip, zlib (what a .spacy DocBin is), zip: none of them starts a text file
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"\x78\x01", b"\x78\x9c", b"\x78\xda", b"PK\x03\x04")
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _refuse_binary(data: bytes, path: str) -> None:
    if data.startswith(_COMPRESSED_MAGIC):
        raise ValueError(
            f"{path}: a compressed or binary file (a .spacy DocBin, a .gz or .zip?), not CoNLL/TSV "
            "text: decompress a .gz or .zip first (a .spacy file is converted already)"
        )
    if b"\x00" in data and not data.startswith(_UTF16_BOMS):
        raise ValueError(
            f"{path}: NUL bytes: a binary file, or UTF-16 text without a byte-order mark "
            "(name the encoding: --encoding utf-16-le or utf-16-be)"
        )


def _decode(data: bytes, path: str, encoding: Optional[str]) -> Tuple[str, str]:
    if encoding is not None:
        try:
            return data.decode(encoding), encoding
        except LookupError:
            raise ValueError(f"{path}: unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{path}:{_line_of(data, err.start)}: not valid {encoding} ({err.reason})"
            ) from None
    _refuse_binary(data, path)
    if data.startswith(_UTF16_BOMS):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{path}: starts with a UTF-16 byte-order mark but is not valid UTF-16 ({err.reason} "
                f"at byte {err.start}): a truncated file?"
            ) from None
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as err:
        bad = err.start
    utf8_char = _UTF8_MULTIBYTE.search(data)
    if utf8_char is not None:
        raise ValueError(
            f"{path}:{_line_of(data, bad)}: byte 0x{data[bad]:02x} is not valid UTF-8, but the file "
            f"has UTF-8 characters elsewhere (line {_line_of(data, utf8_char.start())}): a damaged "
            "UTF-8 file? Mend that line, or name the encoding (--encoding) to read it as another one"
        )
    c1 = _C1_CONTROLS.search(data)
    if c1 is not None:  # control characters in Latin-1: curly quotes, dashes, euro... of cp1252
        try:
            return data.decode("cp1252"), "cp1252"
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{path}:{_line_of(data, err.start)}: neither UTF-8 nor Windows-1252, and byte "
                f"0x{data[err.start]:02x} would be a control character in Latin-1: name the "
                "encoding (--encoding)"
            ) from None
    return data.decode("latin-1"), "latin-1"


def _normalise_scheme(scheme: Optional[str]) -> Optional[str]:
    if scheme is None:
        return None
    name = SCHEME_ALIASES.get(scheme.lower(), scheme.lower())
    if name not in SCHEMES:
        raise ValueError(
            f"unknown tag scheme {scheme!r}: use one of {', '.join(SCHEMES)} (or leave it unset)"
        )
    return name


def _lines(text: str, path: str) -> List[str]:
    """The file's lines, stripped; a file whose only line break is CR (old Mac) is split at CR."""
    breaks = "\n" if "\n" in text or "\r" not in text else "\r"
    lines = []
    for number, line in enumerate(text.split(breaks), start=1):
        line = line.rstrip("\r")
        if "\r" in line:
            raise ValueError(
                f"{path}:{number}: a carriage return (CR) inside the line: the file mixes line "
                "endings; convert it to LF (\\n) or CRLF line endings"
            )
        lines.append(line.strip(" \t"))
    return lines


def _is_token_line(line: str) -> bool:
    # split as the columns are: a line of other Unicode whitespace (no-break space) is a word
    return bool(line) and _SEPARATOR.split(line, maxsplit=1)[0] != DOCSTART


def _split_sentences(
    text: str, path: str, max_columns: int, stats: ConllStats, *, tagged: bool = True
) -> List[_RawSentence]:
    sentences: List[_RawSentence] = []
    words: List[str] = []
    tags: List[str] = []
    lines: List[int] = []
    first_columns = (0, 0)  # (number of columns, line) of the sentence's first line
    min_columns = 2 if tagged else 1

    def close() -> None:
        nonlocal words, tags, lines
        if words:
            sentences.append((words, tags, lines))
        words, tags, lines = [], [], []

    text_lines = _lines(text, path)
    is_token = [_is_token_line(line) for line in text_lines]
    token_lines = [line for line, token in zip(text_lines, is_token) if token]
    tab_separated = bool(token_lines) and all("\t" in line for line in token_lines)
    if not tab_separated:
        _refuse_mixed_separators(text_lines, is_token, path)
    stats.separator = "tab" if tab_separated else "space/tab"
    separator = _TAB_SEPARATOR if tab_separated else _SEPARATOR
    expected = f"{min_columns} to {max_columns} columns, the word first" + (
        " and the NER tag last" if tagged else " (and the NER tag last, if any)"
    )
    for number, (line, token) in enumerate(zip(text_lines, is_token), start=1):
        if not line:
            close()
            continue
        if not token:
            close()
            stats.documents += 1
            continue
        columns = separator.split(line)
        if len(columns) < min_columns:
            raise ValueError(f"{path}:{number}: one column ({line!r}): expected {expected}")
        if len(columns) > max_columns:
            comment = " (a comment line? remove the comment lines)" if line.startswith("#") else ""
            raise ValueError(f"{path}:{number}: {len(columns)} columns: expected {expected}{comment}")
        if not words:
            first_columns = (len(columns), number)
        elif len(columns) != first_columns[0]:
            comment = text_lines[first_columns[1] - 1].startswith("#") or line.startswith("#")
            cause = (
                "a comment line? Comment lines are read as tokens: remove the comment lines"
                if comment
                else "a token holding a space, or a broken line?"
            )
            raise ValueError(
                f"{path}:{number}: {len(columns)} columns, but this sentence's first line "
                f"({path}:{first_columns[1]}) has {first_columns[0]} (ragged lines are refused: {cause})"
            )
        stats.columns[len(columns)] += 1
        stats.words_with_space += " " in columns[0]
        words.append(columns[0])
        tags.append(columns[-1] if len(columns) > 1 else "O")
        lines.append(number)
    close()
    _refuse_id_column(sentences, path, stats)
    return sentences


def _refuse_mixed_separators(text_lines: List[str], is_token: List[bool], path: str) -> None:
    """A ValueError when most token lines are tab-separated with words holding a space, but some
    lines have no tab: the file would be read with spaces as separators too, splitting those
    words (silently, where a sentence's lines still agree on their column count)."""
    numbered = [(n, line) for n, (line, token) in enumerate(zip(text_lines, is_token), start=1) if token]
    untabbed = [n for n, line in numbered if "\t" not in line]
    tabbed = [(n, line) for n, line in numbered if "\t" in line]
    if not untabbed or len(tabbed) <= len(untabbed):
        return
    first_columns = ((n, _TAB_SEPARATOR.split(line, maxsplit=1)[0]) for n, line in tabbed)
    spaced = [(n, word) for n, word in first_columns if " " in word]
    # most words holding a space: columns joined by spaces too (ConllStats.spaces_look_like_separators)
    if not spaced or 2 * len(spaced) > len(tabbed):
        return
    word_line, word = spaced[0]
    more = f" (and {len(untabbed) - 1} more line{'s' if len(untabbed) > 2 else ''})" if len(untabbed) > 1 else ""
    raise ValueError(
        f"{path}:{untabbed[0]}: no tab, but {len(tabbed)} of the file's {len(numbered)} token lines are "
        f"tab-separated, with words holding a space such as {word!r} ({path}:{word_line}); read with "
        f"spaces as separators too, those words would split. Make {path}:{untabbed[0]}{more} tab-separated"
    )


def _refuse_id_column(sentences: List[_RawSentence], path: str, stats: ConllStats) -> None:
    """A ValueError when the first column counts the tokens of every sentence (GermEval-style
    files start with a token id): read as the words, every word would be a number."""
    if set(stats.columns) == {1} or len(sentences) < 2 or all(len(words) == 1 for words, _, _ in sentences):
        return  # a words-only file, or too little to tell ids from numbers

    def counts_its_tokens(words: List[str]) -> bool:
        start = 0 if words[0] == "0" else 1
        return words == [str(i) for i in range(start, start + len(words))]

    if all(counts_its_tokens(words) for words, _, _ in sentences):
        raise ValueError(
            f"{path}: the first column counts the tokens of every sentence (1, 2, 3, ...): token ids, "
            f"not words (line {sentences[0][2][0]}: {sentences[0][0][0]!r}). Remove the id column so that "
            "the word is the first column and the tag you want the last (the tag is read from the last)"
        )


def _common_language_prefix(raw: List[_RawSentence]) -> str:
    """The "xx:" that starts every word of the file (XTREME's PAN-X files write "de:Angela"),
    else ""."""
    words = [word for sentence in raw for word in sentence[0]]
    match = _LANG_PREFIX.match(words[0]) if words else None
    if match is None:
        return ""
    prefix = match.group(1) + ":"
    return prefix if all(word.startswith(prefix) and len(word) > len(prefix) for word in words) else ""


def _parse_tag(tag: str, path: str, line: int) -> Tuple[str, str]:
    """("O", "") or (prefix, label); a ValueError for anything else."""
    if tag == "O":
        return "O", ""
    match = _TAG.match(tag)
    if match is None:
        raise ValueError(
            f"{path}:{line}: unknown NER tag {tag!r}: expected O, or B-, I- (IOB), E-, S- "
            "(BIOES) or L-, U- (BILOU) followed by a label, e.g. B-PER"
        )
    return match.group(1), match.group(2)


def _detect_scheme(parsed: List[List[Tuple[str, str]]]) -> str:
    i_starts = b_starts = 0
    for tags in parsed:
        previous = ("O", "")
        for prefix, label in tags:
            if prefix in "ESLU":
                return "bioes"
            continues = previous[0] in ("B", "I") and previous[1] == label
            if prefix == "I" and not continues:
                i_starts += 1
            elif prefix == "B" and not continues:
                b_starts += 1
            previous = (prefix, label)
    return "iob1" if i_starts > b_starts else "iob2"


def _iob_to_iob2(
    tags: List[Tuple[str, str]], lines: List[int], scheme: str, path: str, stats: ConllStats
) -> List[str]:
    out = []
    previous = ("O", "")
    for (prefix, label), line in zip(tags, lines):
        if prefix in "ESLU":
            raise ValueError(
                f"{path}:{line}: tag {prefix}-{label} is not {scheme.upper()}: name scheme='bioes' "
                "or leave the scheme to be detected"
            )
        if prefix == "O":
            out.append("O")
        elif prefix == "I" and not (previous[0] in ("B", "I") and previous[1] == label):
            if scheme == "iob2":
                stats.stray_i_lines.append(line)
            out.append(f"B-{label}")
        else:
            out.append(f"{prefix}-{label}")
        previous = (prefix, label)
    return out


def _bioes_to_iob2(tags: List[Tuple[str, str]], lines: List[int], path: str) -> List[str]:
    biluo = []
    open_label: Optional[str] = None  # label of the entity a B-/I- left open
    for (prefix, label), line in zip(tags, lines):
        original = "O" if prefix == "O" else f"{prefix}-{label}"
        tag = "O" if prefix == "O" else f"{_TO_BILUO[prefix]}-{label}"
        action = tag[0]
        if action in "IL" and open_label != label:
            raise ValueError(
                f"{path}:{line}: ill-formed BIOES: {original} without B-{label}/I-{label} before it"
            )
        if action in "BUO" and open_label is not None:
            raise ValueError(
                f"{path}:{line}: ill-formed BIOES: entity {open_label} not closed "
                f"(E-{open_label}) before {original}"
            )
        open_label = label if action in "BI" else None
        biluo.append(tag)
    if open_label is not None:
        raise ValueError(
            f"{path}:{lines[-1]}: ill-formed BIOES: the sentence ends inside entity "
            f"{open_label} (no E-{open_label})"
        )
    return biluo_to_iob(biluo)


def read_conll(
    path: Union[str, Path],
    *,
    encoding: Optional[str] = None,
    scheme: Optional[str] = None,
    max_columns: int = MAX_COLUMNS,
    tagged: bool = True,
    stats: Optional[ConllStats] = None,
) -> Iterator[Tuple[List[str], List[str]]]:
    """Yield ``(words, tags)`` per sentence of a CoNLL/TSV NER file, the tags normalised to
    IOB2 (every entity starts with ``B-``), whatever the file's scheme. See the module
    docstring for the format, the detection of encoding and scheme and the errors.

    encoding: None to detect (UTF-8, UTF-16 with a byte-order mark, else Windows-1252 or
        Latin-1; see the module docstring), or a codec name.
    scheme: None to detect, or "iob1", "iob2" ("iob", "bio"), "bioes" ("bilou", "iobes").
    tagged: False accepts lines with the word only (read as tag "O"), for unlabelled data.
    stats: a ConllStats to fill in (the file is read, checked and counted before the first
        sentence is yielded); stray I- tags also give one ConllWarning per file.
    """
    path = str(path)
    stats = stats if stats is not None else ConllStats()
    stats.path = path
    scheme = _normalise_scheme(scheme)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
    text, stats.encoding = _decode(data, path, encoding)
    if text.startswith("\ufeff"):  # a byte-order mark, also with an explicit encoding
        text = text[1:]
    raw = _split_sentences(text, path, max_columns, stats, tagged=tagged)
    stats.language_prefix = _common_language_prefix(raw)
    if stats.language_prefix:
        cut = len(stats.language_prefix)
        raw = [([w[cut:] for w in words], tags, lines) for words, tags, lines in raw]
    parsed = [[_parse_tag(t, path, n) for t, n in zip(tags, lines)] for _, tags, lines in raw]
    stats.scheme = scheme or _detect_scheme(parsed)
    sentences = []
    for (words, _, lines), tags in zip(raw, parsed):
        if stats.scheme == "bioes":
            iob2 = _bioes_to_iob2(tags, lines, path)
        else:
            iob2 = _iob_to_iob2(tags, lines, stats.scheme, path, stats)
        stats.entities.update(t[2:] for t in iob2 if t.startswith("B-"))
        stats.tokens += len(words)
        sentences.append((words, iob2))
    stats.sentences = len(sentences)
    if stats.stray_i_lines:
        warnings.warn(stats.stray_i_message(), ConllWarning, stacklevel=2)
    yield from sentences


def sentence_to_doc(
    vocab: Vocab, words: List[str], tags: List[str], *, unlabelled: bool = False, keep_gold: bool = False
) -> Doc:
    """One Doc for one sentence: spaces after all tokens but the last, explicit sentence
    starts (token 0 only), and the entities of the IOB tags unless ``unlabelled`` and not
    ``keep_gold`` (then no entity annotation at all)."""
    doc = Doc(vocab, words=words, spaces=[True] * (len(words) - 1) + [False])
    for i, token in enumerate(doc):
        token.is_sent_start = i == 0
    if not unlabelled or keep_gold:
        doc.set_ents(biluo_tags_to_spans(doc, iob_to_biluo(tags)), default="outside")
    return doc


def conll_to_docs(
    path: Union[str, Path],
    vocab: Vocab,
    *,
    unlabelled: bool = False,
    keep_gold: bool = False,
    encoding: Optional[str] = None,
    scheme: Optional[str] = None,
    max_columns: int = MAX_COLUMNS,
    stats: Optional[ConllStats] = None,
) -> List[Doc]:
    """The sentences of a CoNLL/TSV NER file as Docs, one per sentence (see the module
    docstring: entities from the tags when labelled; none at all with ``unlabelled=True``,
    the gold ``doc.ents`` kept with ``unlabelled=True, keep_gold=True``)."""
    return [
        sentence_to_doc(vocab, words, tags, unlabelled=unlabelled, keep_gold=keep_gold)
        for words, tags in read_conll(
            path, encoding=encoding, scheme=scheme, max_columns=max_columns,
            tagged=not unlabelled or keep_gold, stats=stats,
        )
    ]


def find_split(data: Union[str, Path], dataset: str, lang: str, split: str) -> Path:
    """The one file {data}/{dataset}/{lang}/{split}.* of a corpus folder laid out like
    ../shared/data (dataset may be a glob such as "conll200*")."""
    found = sorted(Path(data).glob(f"{dataset}/{lang}/{split}.*"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"Expected one file {data}/{dataset}/{lang}/{split}.*, found {[str(f) for f in found]}"
        )
    return found[0]


def is_words_only(path: Union[str, Path], *, encoding: Optional[str] = None) -> bool:
    """Whether every token line of a CoNLL/TSV file has one column (words without tags, i.e.
    unlabelled text); False for a file that cannot be read or parsed, or that mixes lines with
    and without tags. Used to suggest, or take, the unlabelled reading after a labelled one failed."""
    stats = ConllStats()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConllWarning)
        try:
            for _ in read_conll(path, encoding=encoding, tagged=False, stats=stats):
                pass
        except ValueError:
            return False
    return set(stats.columns) == {1}


def check_spacy_output(output_path: Union[str, Path], input_path: Union[str, Path, None] = None) -> None:
    """A ValueError for an output that would fail or be lost, checked before any work: one
    not ending in .spacy (spaCy's corpus readers take only .spacy files from a folder, so a
    target folder would silently skip it), the input itself, a folder, or a place that
    cannot be written (a file where its folder should be, a folder without write access)."""
    output_path = Path(output_path)
    if output_path.suffix != ".spacy":
        raise ValueError(f"output {output_path} must end in .spacy (spaCy's corpus readers only read .spacy files)")
    if input_path is not None and output_path.resolve() == Path(input_path).resolve():
        raise ValueError(f"output {output_path} is the input file: name another output")
    if output_path.is_dir():
        raise ValueError(f"output {output_path} is a folder: name a file ending in .spacy")
    existing = output_path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot create the output folder {output_path.parent}: {existing} is a file")
    if output_path.exists():
        if not os.access(output_path, os.W_OK):
            raise ValueError(f"cannot write {output_path}: the file is read-only")
    elif not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {output_path}: no write permission in {existing}")


def convert_file(
    input_path: Union[str, Path],
    output_path: Union[str, Path],
    lang: str = "xx",
    unlabelled: bool = False,
    keep_gold: bool = False,
    *,
    encoding: Optional[str] = None,
    scheme: Optional[str] = None,
    max_columns: int = MAX_COLUMNS,
) -> ConllStats:
    """Convert a CoNLL/TSV NER file to a ``.spacy`` file (``DocBin(store_user_data=True)``)
    of one Doc per sentence; returns the ConllStats. The output folder is created.

    Refused: an output that does not end in ``.spacy`` (spaCy's corpus readers skip such
    files), the input itself as output, an output that cannot be written, and an input
    without any sentence."""
    import spacy

    input_path, output_path = Path(input_path), Path(output_path)
    check_spacy_output(output_path, input_path)

    try:
        spacy.util.get_lang_class(lang)
    except ImportError as err:
        raise ValueError(f"unknown language {lang!r}: {err}") from None
    try:
        vocab = spacy.blank(lang).vocab
    except ImportError as err:  # a known language whose tokenizer needs a library (th, vi, ...)
        raise ValueError(f"language {lang!r} needs a library that is not installed: {err}") from None
    stats = ConllStats()
    docs = conll_to_docs(
        input_path, vocab, unlabelled=unlabelled, keep_gold=keep_gold,
        encoding=encoding, scheme=scheme, max_columns=max_columns, stats=stats,
    )
    if not docs:
        raise ValueError(f"{input_path}: no sentences (an empty file, or only blank and -DOCSTART- lines)")
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the output folder {output_path.parent}: {err.strerror or err}") from None
    DocBin(docs=docs, store_user_data=True).to_disk(output_path)
    return stats


def read_docbin(path: Union[str, Path], *, store_user_data: bool = False) -> DocBin:
    """A .spacy file's DocBin; a ValueError naming the file when it is not one (a text file,
    e.g. CoNLL, given where converted Docs are expected gets the command that converts it)."""
    path = Path(path)
    try:
        return DocBin(store_user_data=store_user_data).from_disk(path)
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not a .spacy file") from None
    except (ValueError, KeyError, TypeError, IndexError, AssertionError) as err:
        # zlib, msgpack and spaCy each fail their own way on foreign bytes
        with path.open("rb") as f:
            head = f.read(_TEXT_PROBE_BYTES)
        if not head:
            raise ValueError(f"{path} is empty, not a .spacy file (a spaCy DocBin)") from None
        if _is_convertible_text(head):
            raise ValueError(
                f"{path} is not a .spacy file (a spaCy DocBin) but text. Convert a CoNLL/TSV file with "
                f"`python -m spacy_contproto convert-corpus {path} OUTPUT.spacy` (add --unlabelled for "
                "target-language text)"
            ) from None
        reason = "not zlib-compressed, or cut short" if "E1014" in str(err) else f"{type(err).__name__}: {err}"
        raise ValueError(f"{path} is not a .spacy file (a spaCy DocBin), or it is damaged ({reason})") from None


_TEXT_PROBE_BYTES = 4096


def _is_convertible_text(head: bytes) -> bool:
    """Whether a file's first bytes are text that convert-corpus would read (its own encoding
    detection: a DocBin is compressed, so never is)."""
    # a cut after the first bytes may split a multi-byte character
    cuts = range(4) if len(head) == _TEXT_PROBE_BYTES else range(1)
    for cut in cuts:
        try:
            _decode(head[: len(head) - cut], "", None)
            return True
        except ValueError:
            continue
    return False
