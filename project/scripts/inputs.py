"""The project's steps read each other's files: a missing one is named with the step that writes it."""
from pathlib import Path
from typing import Iterable, Tuple

from wasabi import msg


def require(files: Iterable[Tuple[Path, str]]) -> None:
    """Exit with a message naming each missing file and the step that writes it."""
    missing = [(path, step) for path, step in files if not Path(path).exists()]
    for path, step in missing:
        msg.fail(f"{path} does not exist: run `spacy project run {step}` first "
                 "(with the same --vars.source and --vars.targets)")
    if missing:
        raise SystemExit(1)
