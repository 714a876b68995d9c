"""Command line: ``python -m spacy_contproto ...`` and ``spacy contproto ...``."""
from pathlib import Path
from typing import Optional

import typer

contproto_app = typer.Typer(
    name="contproto",
    help="ContProto: cross-lingual span NER by contrastive self-training with prototypes.",
    no_args_is_help=True,
)


@contproto_app.callback()
def _commands() -> None:
    """ContProto commands (a group even while it has one command)."""


@contproto_app.command("pseudo-label")
def pseudo_label_command(
    teacher: Path = typer.Argument(..., help="Trained teacher pipeline (folder or package name)"),
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="Target Docs (.spacy)"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="Output .spacy with pseudo labels"),
    component: Optional[str] = typer.Option(None, help="span_contproto component to use (default: the only one)"),
    batch_size: int = typer.Option(64, help="Docs per batch"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
) -> None:
    """Store the teacher's soft class distribution of every enumerated span with each
    target Doc (fp16, msgpack in Doc.user_data; see spacy_contproto/pseudo_labels.py)."""
    import spacy
    from wasabi import msg

    from .pseudo_label import pseudo_label_file

    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    try:
        nlp = spacy.load(teacher)
        n = pseudo_label_file(nlp, input_path, output_path, component=component, batch_size=batch_size)
    except (OSError, ValueError) as err:
        msg.fail(str(err), exits=1)
    msg.good(f"Pseudo-labelled {n} Docs -> {output_path}")


def _register_with_spacy_cli() -> None:
    """Make the commands available as `spacy contproto ...` (spaCy imports the
    spacy_cli entry points at start-up)."""
    try:
        from spacy.cli._util import app as spacy_app
    except ImportError:  # pragma: no cover
        return
    if not any(group.name == "contproto" for group in spacy_app.registered_groups):
        spacy_app.add_typer(contproto_app, name="contproto")


_register_with_spacy_cli()


def main() -> None:
    contproto_app()
