"""Teacher pseudo-labelling: soft class distributions of every enumerated span of
target Docs, stored with each Doc (format: pseudo_labels.py)."""
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import numpy
from spacy.attrs import SENT_START
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.util import minibatch

from .component import SpanContProto
from .corpus import check_spacy_output, read_docbin
from .pseudo_labels import PAYLOAD_KEY, encode_payload, stable_doc_ids


def find_component(nlp: Language, name: Optional[str] = None) -> str:
    names = [n for n, proc in nlp.pipeline if isinstance(proc, SpanContProto)]
    if name is not None:
        if name not in names:
            raise ValueError(
                f"the pipeline has no span_contproto component named {name!r}; it has {names} "
                f"(its components: {nlp.pipe_names})"
            )
        return name
    if len(names) != 1:
        raise ValueError(
            f"the pipeline must have exactly one span_contproto component, it has {names or 'none'}"
            + (f" (its components: {nlp.pipe_names})" if not names else "; name the one to use")
        )
    return names[0]


def pseudo_label_docs(
    nlp: Language, docs: Iterable[Doc], *, component: Optional[str] = None, batch_size: int = 64
) -> Iterator[Doc]:
    """Yield the Docs with the teacher's span probabilities in user_data.

    The teacher's earlier components (e.g. the transformer) run on copies, so the
    Docs keep their own annotation (gold entities stay for quality measurement)
    and carry no transformer output."""
    if batch_size < 1:  # minibatch would yield nothing: every Doc silently dropped
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    name = find_component(nlp, component)
    pipe: SpanContProto = nlp.get_pipe(name)
    upstream = [proc for n, proc in nlp.pipeline[: nlp.pipe_names.index(name)]]
    seen: Counter = Counter()
    for batch in minibatch(docs, batch_size):
        work = [doc.copy() for doc in batch]
        for proc in upstream:
            work = list(proc.pipe(work)) if hasattr(proc, "pipe") else [proc(d) for d in work]
        predictions = pipe.predict(work)
        probs = pipe.model.ops.to_numpy(predictions.probabilities)
        ids = stable_doc_ids([[t.text for t in doc] for doc in batch], seen)
        offset = 0
        for doc, worked, doc_id, n_spans in zip(batch, work, ids, predictions.spans.lengths):
            # spans were enumerated within the sentences the earlier components (e.g. a
            # sentencizer) set: the Doc must keep them for its labels to line up in training
            sent_starts = worked.to_array([SENT_START])
            if not numpy.array_equal(sent_starts, doc.to_array([SENT_START])):
                doc.from_array([SENT_START], sent_starts)
            doc.user_data[PAYLOAD_KEY] = encode_payload(
                doc_id, probs[offset : offset + n_spans], pipe.class_names, pipe.max_span_length
            )
            offset += n_spans
            yield doc


def load_teacher(teacher: Union[str, Path]) -> Language:
    """spacy.load of the teacher; its errors name the teacher (and model-best, when given the
    training output folder that holds it)."""
    import spacy

    try:
        return spacy.load(teacher)
    except (OSError, ValueError) as err:
        hint = ""
        if (Path(teacher) / "model-best").is_dir():
            hint = f" (a training output folder: did you mean {Path(teacher) / 'model-best'}?)"
        raise ValueError(f"cannot load the teacher {teacher}{hint}: {err}") from None


def read_target_docbin(input_path: Path) -> DocBin:
    """The target Docs to pseudo-label; a ValueError for a file that is not a .spacy file or
    holds no Docs (the CLI reads them before it loads the teacher)."""
    doc_bin = read_docbin(input_path, store_user_data=True)
    if not len(doc_bin):
        raise ValueError(f"{input_path} holds no Docs: nothing to pseudo-label")
    return doc_bin


def pseudo_label_file(
    nlp: Language, targets: Union[Path, DocBin], output_path: Path, *, component: Optional[str] = None,
    batch_size: int = 64, progress: bool = True,
) -> int:
    """Pseudo-label the Docs of a .spacy file (or its DocBin, read by read_target_docbin) into
    another .spacy file; returns the number of Docs."""
    check_spacy_output(output_path, None if isinstance(targets, DocBin) else targets)
    find_component(nlp, component)  # before the progress bar starts
    doc_bin = targets if isinstance(targets, DocBin) else read_target_docbin(targets)
    docs = doc_bin.get_docs(nlp.vocab)
    labelled = pseudo_label_docs(nlp, docs, component=component, batch_size=batch_size)
    if progress:
        from tqdm import tqdm

        labelled = tqdm(labelled, total=len(doc_bin), desc="pseudo-labelling", unit="doc")
    out = DocBin(store_user_data=True)
    n = 0
    for doc in labelled:
        out.add(doc)
        n += 1
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    out.to_disk(output_path)
    return n
