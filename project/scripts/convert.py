"""Convert the source and target CoNLL/TSV files to .spacy.

Files are found as {data}/{dataset}/{lang}/{split}.* (the layout of ../shared/data;
`dataset` may be a glob such as "conll200*"). With dataset "demo", the demo corpus (seeded,
so the same for the same sizes and languages) is written first, every time, so that
changed `demo_train` or `targets` take effect. Target train sets become unlabelled Docs with
their gold kept aside (for pseudo-label quality only); a target train file of words only (one
column, no tags) is read as such, and its training then logs no pseudo-label quality.
Target train sets go to {output}/target_train/, the other files to {output}/: the steps that read
only the target train sets (pseudo-labelling) depend on that folder alone, so a changed test
set does not rerun them."""
from pathlib import Path

import typer
from wasabi import msg

from spacy_contproto import corpus
from spacy_contproto.corpus import convert_file, is_words_only
from spacy_contproto.demo import write_demo_corpus

TARGET_TRAIN = "target_train"  # project.yml's pseudo-label step reads (and depends on) this subfolder


def find_split(data: Path, dataset: str, lang: str, split: str) -> Path:
    try:
        return corpus.find_split(data, dataset, lang, split)
    except FileNotFoundError as err:
        msg.fail(str(err), exits=1)


def main(
    data: Path = typer.Argument(..., help="Data folder laid out like ../shared/data"),
    dataset: str = typer.Argument(..., help="Dataset folder (or glob) inside data, e.g. demo, conll200*, wikiann"),
    source: str = typer.Argument(..., help="Source language"),
    targets: str = typer.Argument(..., help="Target languages, comma-separated"),
    output: Path = typer.Argument(..., help="Output folder for .spacy files (target train sets in its target_train/)"),
    demo_train: int = typer.Option(600, help="Demo corpus: train sentences per language (dev 1/4, test 1/3 of it)"),
    package_target: str = typer.Option("", help="The target whose student `package` builds: checked here, at the start"),
) -> None:
    target_langs = [t for t in targets.split(",") if t]
    if not target_langs:
        msg.fail("No target language given (--vars.targets, e.g. de,es)", exits=1)
    if package_target and package_target not in target_langs:
        # else only the last step, package, would fail, for want of that student
        msg.fail(f"package_target {package_target!r} is not one of the targets {','.join(target_langs)}: "
                 f"set --vars.package_target to one of them", exits=1)
    if dataset == "demo":
        if demo_train < 1:
            msg.fail(f"demo_train must be at least 1, got {demo_train}", exits=1)
        sizes = {"train": demo_train, "dev": max(demo_train // 4, 1), "test": max(demo_train // 3, 1)}
        try:
            write_demo_corpus(data / "demo", langs=[source, *target_langs], sizes=sizes)
        except (ValueError, OSError) as err:
            msg.fail(f"Cannot write the demo corpus to {data / 'demo'}: {err}", exits=1)
        msg.good(f"Wrote the demo corpus to {data / 'demo'}")
    jobs = [(source, "train", False), (source, "dev", False)]
    jobs += [(t, "train", True) for t in target_langs] + [(t, "test", False) for t in target_langs]
    for lang, split, unlabelled in jobs:
        path = find_split(data, dataset, lang, split)
        folder = output / TARGET_TRAIN if unlabelled else output
        out = folder / f"{lang}_{split}.spacy"
        kind = "unlabelled, gold aside" if unlabelled else "labelled"
        # written beside and moved into place: a refused file leaves an earlier output alone
        partial = folder / f".{lang}_{split}.partial.spacy"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            try:  # a tagged target file keeps its gold aside
                stats = convert_file(path, partial, unlabelled=unlabelled, keep_gold=unlabelled)
            except ValueError:
                # a file of words only is unlabelled data too; one that mixes both is refused
                if not unlabelled or not is_words_only(path):
                    raise
                stats = convert_file(path, partial, unlabelled=True)
                kind = "unlabelled, words only: no pseudo-label quality log"
            partial.replace(out)
        except (ValueError, OSError) as err:
            partial.unlink(missing_ok=True)
            msg.fail(f"Cannot convert {path}: {err}", exits=1)
        msg.good(f"{path} -> {out}: {stats.sentences} sentences ({kind})")


if __name__ == "__main__":
    typer.run(main)
