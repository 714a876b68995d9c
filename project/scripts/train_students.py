"""Train one ContProto student per target language with `spacy train`."""
import subprocess
import sys
from pathlib import Path
from typing import List

import typer
from wasabi import msg

from inputs import require


def main(
    config: Path = typer.Argument(..., help="Student config, e.g. configs/contproto_cpu.cfg"),
    corpus: Path = typer.Argument(..., help="Folder with {source}_train.spacy and {source}_dev.spacy"),
    pseudo: Path = typer.Argument(..., help="Folder with the pseudo-labelled {lang}_train.pl.spacy"),
    students: Path = typer.Argument(..., help="Output folder; one student per target language in {lang}/"),
    source: str = typer.Argument(...),
    targets: str = typer.Argument(...),
    encoder: str = typer.Argument(...),
    gpu_id: int = typer.Option(-1),
    overrides: List[str] = typer.Option([], "--override", help="Extra config overrides, key=value"),
) -> None:
    langs = [t for t in targets.split(",") if t]
    require([(corpus / f"{source}_{split}.spacy", "corpus") for split in ("train", "dev")]
            + [(pseudo / f"{lang}_train.pl.spacy", "pseudo-label") for lang in langs])
    for lang in langs:
        out = students / lang
        cmd = [
            sys.executable, "-m", "spacy", "train", str(config), "--output", str(out),
            "--gpu-id", str(gpu_id),
            "--paths.train", str(corpus / f"{source}_train.spacy"),
            "--paths.dev", str(corpus / f"{source}_dev.spacy"),
            "--paths.target", str(pseudo / f"{lang}_train.pl.spacy"),
            "--paths.encoder", encoder,
            "--paths.quality_log", str(out / "pseudo_label_quality.jsonl"),
            "--paths.pseudo_label_store", str(out / "pseudo_labels"),
        ]
        for item in overrides:
            key, _, value = item.partition("=")
            cmd += [f"--{key}", value]
        msg.info(f"Training the {lang} student")
        if subprocess.run(cmd).returncode != 0:
            msg.fail(f"Training the {lang} student failed", exits=1)


if __name__ == "__main__":
    typer.run(main)
