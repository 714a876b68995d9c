"""Pseudo-label every target language's train Docs with the teacher."""
from pathlib import Path

import spacy
import typer
from wasabi import msg

from inputs import require
from spacy_contproto.pseudo_label import pseudo_label_file


def main(
    teacher: Path = typer.Argument(..., help="Teacher pipeline"),
    corpus: Path = typer.Argument(..., help="Folder with {lang}_train.spacy (the project's corpus/target_train)"),
    targets: str = typer.Argument(..., help="Target languages, comma-separated"),
    output: Path = typer.Argument(..., help="Folder for {lang}_train.pl.spacy"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
) -> None:
    langs = [t for t in targets.split(",") if t]
    require([(teacher, "train-teacher"), *((corpus / f"{lang}_train.spacy", "corpus") for lang in langs)])
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    nlp = spacy.load(teacher)
    output.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        out = output / f"{lang}_train.pl.spacy"
        n = pseudo_label_file(nlp, corpus / f"{lang}_train.spacy", out)
        msg.good(f"{lang}: pseudo-labelled {n} Docs -> {out}")


if __name__ == "__main__":
    typer.run(main)
