import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import spacy
from spacy.tokens import DocBin

from spacy_contproto.testing import make_tiny_encoder, synthetic_docs

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("encoder") / "tiny-bert")


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> dict:
    """Labelled train/dev .spacy files of synthetic sentences."""
    folder = tmp_path_factory.mktemp("corpus")
    vocab = spacy.blank("xx").vocab
    paths = {}
    for split, n, seed in (("train", 160, 1), ("dev", 40, 2)):
        paths[split] = folder / f"{split}.spacy"
        DocBin(docs=synthetic_docs(vocab, n, seed=seed)).to_disk(paths[split])
    return paths


def spacy_train_cmd(config: Path, output: Path, encoder: Path, corpus: dict, *overrides: str) -> List[str]:
    return [
        sys.executable, "-m", "spacy", "train", str(config), "--output", str(output),
        "--paths.train", str(corpus["train"]), "--paths.dev", str(corpus["dev"]),
        "--paths.encoder", str(encoder), *overrides,
    ]


def run_spacy_train(config: Path, output: Path, encoder: Path, corpus: dict, *overrides: str):
    result = subprocess.run(spacy_train_cmd(config, output, encoder, corpus, *overrides), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="session")
def trained_teacher(tmp_path_factory, tiny_encoder, synthetic_corpus) -> Path:
    """A listener pipeline trained with `spacy train` and configs/teacher_cpu.cfg as is,
    only paths and a short schedule overridden."""
    output = tmp_path_factory.mktemp("teacher")
    result = run_spacy_train(
        CONFIGS / "teacher_cpu.cfg", output, tiny_encoder, synthetic_corpus,
        "--training.max_epochs", "0", "--training.max_steps", "150",
        "--training.eval_frequency", "50",
        "--training.optimizer.learn_rate.initial_rate", "0.001",
        "--training.optimizer.learn_rate.warmup_steps", "10",
    )
    (output / "train.log").write_text(result.stdout + result.stderr)
    return output / "model-best"


@pytest.fixture(scope="session")
def target_corpus(tmp_path_factory, trained_teacher) -> dict:
    """Unlabelled-target .spacy files: raw (gold kept for quality) and pseudo-labelled
    by the trained teacher."""
    from spacy_contproto.pseudo_label import pseudo_label_file

    folder = tmp_path_factory.mktemp("target")
    vocab = spacy.blank("xx").vocab
    raw = folder / "target.spacy"
    DocBin(docs=synthetic_docs(vocab, 60, seed=11), store_user_data=True).to_disk(raw)
    labelled = folder / "target.pl.spacy"
    pseudo_label_file(spacy.load(trained_teacher), raw, labelled, progress=False)
    return {"raw": raw, "pseudo_labelled": labelled}
