"""spaCy training plumbing for self-training: the reader that mixes labelled source
Docs with pseudo-labelled target Docs, the schedule callback and a console logger
that shows every ContProto loss."""
import math
import sys
import warnings
from itertools import cycle, islice
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import srsly
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Corpus, Example
from spacy.training.corpus import walk_corpus
from spacy.util import ensure_path, registry
from wasabi import Printer

from .component import ORACLE_KEY, SpanContProto
from .corpus import read_docbin
from .evaluation import same_tokens
from .pseudo_labels import PAYLOAD_KEY

PSEUDO_LABEL_HINT = (
    "Pseudo-label them first: python -m spacy_contproto pseudo-label TEACHER_MODEL "
    "INPUT.spacy OUTPUT.spacy"
)


def target_example(nlp: Language, doc: Doc) -> Example:
    """An Example for an unlabelled target Doc: same tokens on both sides, no entity
    annotation in the reference (so no component can learn "no entities" from it),
    the pseudo labels in reference.user_data, and any gold entities moved aside
    under ORACLE_KEY for pseudo-label quality only."""
    reference, predicted = same_tokens(nlp, doc), same_tokens(nlp, doc)
    if doc.has_annotation("SENT_START"):
        for ref_token, pred_token, token in zip(reference, predicted, doc):
            ref_token.is_sent_start = pred_token.is_sent_start = token.is_sent_start
    reference.user_data[PAYLOAD_KEY] = doc.user_data[PAYLOAD_KEY]
    if doc.has_annotation("ENT_IOB"):
        reference.user_data[ORACLE_KEY] = [(e.start, e.end, e.label_) for e in doc.ents]
    return Example(predicted, reference)


class SelfTrainingCorpus:
    """Labelled source Examples interleaved with pseudo-labelled target Examples,
    ``target_per_source`` target Docs after each source Doc on average (the target
    Docs are cycled when there are fewer of them). One pass over the source corpus
    is one epoch. spaCy's training loop shuffles the Examples of an epoch before
    batching (max_epochs >= 0; span_contproto refuses the streaming max_epochs = -1),
    so a batch holds about as many target as source Docs, not exactly.
    Target Docs beyond (source Docs x target_per_source) take no part in training;
    the reader warns when that happens.

    gold_preproc (default True) keeps the source Docs' own tokens, as the target Docs and
    the pseudo labels always keep theirs: with False, spaCy's Corpus re-tokenises the
    source text with nlp's tokenizer (e.g. "Anglo-Dutch" becomes three tokens), so the
    model would learn source spans over other token boundaries than the target spans it
    is trained and evaluated on. With gold_preproc, source Docs are split into sentences
    when they have boundaries.

    max_length (tokens, 0 = no limit) bounds both sides: with gold_preproc, source
    sentences and target Docs longer than it are left out (target Docs with a warning:
    their pseudo labels belong to the whole Doc); without it, source Docs as spaCy's
    Corpus does (a Doc of max_length tokens or more is split into sentences when it has
    boundaries, else skipped). A long Doc sets the memory of its whole batch:
    spacy-transformers pads every window of a batch to the longest one
    (benchmarks/memory_windows.py)."""

    def __init__(
        self,
        source: Union[str, Path],
        target: Union[str, Path],
        *,
        target_per_source: float = 1.0,
        max_length: int = 0,
        limit: int = 0,
        target_limit: int = 0,
        gold_preproc: bool = True,
    ):
        if target_per_source < 0:
            raise ValueError(f"target_per_source must be >= 0, got {target_per_source}")
        for name, value in (("max_length", max_length), ("limit", limit), ("target_limit", target_limit)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (0: no limit), got {value}")
        if source is None or not ensure_path(source).exists():
            raise ValueError(f"source corpus {source} does not exist")
        # spaCy's Corpus ignores max_length with gold_preproc: __call__ applies it then
        self.source = Corpus(source, max_length=0 if gold_preproc else max_length, limit=limit,
                             gold_preproc=gold_preproc)
        self.target_path = ensure_path(target)
        self.target_per_source = target_per_source
        self.target_limit = target_limit
        self.max_length = max_length
        self.warned_unused_targets = False

    def target_docs(self, nlp: Language) -> List[Doc]:
        path = self.target_path
        if path is None or not path.exists():
            raise ValueError(f"target corpus {path} does not exist")
        # a folder as spaCy's Corpus reads one: its .spacy files, sorted, recursively
        files = walk_corpus(path, ".spacy") if path.is_dir() else [path]
        all_docs = (doc for file in files for doc in read_docbin(file).get_docs(nlp.vocab))
        docs = list(islice(all_docs, self.target_limit or None))
        if not docs:
            files_held = f"{len(files)} .spacy file{'' if len(files) == 1 else 's'}"
            read = f" (a folder's .spacy files only: it holds {files_held})" if path.is_dir() else ""
            raise ValueError(
                f"target corpus {path} holds no Docs{read}: self-training needs unlabelled target "
                "Docs (train on the source corpus alone with configs/teacher_cpu.cfg)."
            )
        if self.max_length > 0:
            kept = [doc for doc in docs if len(doc) <= self.max_length]
            if not kept:
                raise ValueError(
                    f"All {len(docs)} target Docs in {path} are longer than max_length = "
                    f"{self.max_length} tokens; raise [corpora.train] max_length or set it to 0."
                )
            if len(kept) < len(docs):
                warnings.warn(
                    f"{len(docs) - len(kept)} of {len(docs)} target Docs in {path} are longer than "
                    f"max_length = {self.max_length} tokens and are left out of self-training.",
                    stacklevel=2,
                )
            docs = kept
        missing = sum(PAYLOAD_KEY not in doc.user_data for doc in docs)
        if missing:
            raise ValueError(
                f"{missing} of {len(docs)} Docs in {path} carry no pseudo labels. {PSEUDO_LABEL_HINT}"
            )
        return docs

    def __call__(self, nlp: Language) -> Iterator[Example]:
        targets = [target_example(nlp, doc) for doc in self.target_docs(nlp)]
        target_stream = cycle(targets)
        owed = 0.0
        n_source = n_target = 0
        for example in self.source(nlp):
            if self.source.gold_preproc and self.max_length > 0 and len(example.reference) > self.max_length:
                continue
            yield example
            n_source += 1
            owed += self.target_per_source
            while owed >= 1.0:
                yield next(target_stream)
                n_target += 1
                owed -= 1.0
        if n_source == 0:
            raise ValueError(
                f"source corpus {self.source.path} holds no Examples (spaCy reads only files ending "
                "in .spacy, also inside a folder; with max_length, every Doc may be longer)"
            )
        if n_target < len(targets) and not self.warned_unused_targets:
            self.warned_unused_targets = True
            # rounded up, so that the suggested ratio covers every target Doc
            needed = math.ceil(100 * len(targets) / n_source) / 100
            warnings.warn(
                f"Only {n_target} of the {len(targets)} target Docs in {self.target_path} take part in "
                f"training: an epoch is one pass over the {n_source} source Examples with "
                f"target_per_source = {self.target_per_source} target Docs after each. Raise "
                f"[corpora.train] target_per_source to {needed} to use them "
                "all, or set target_limit to silence this.",
                stacklevel=2,
            )


@registry.readers("spacy_contproto.SelfTrainingCorpus.v1")
def create_self_training_corpus(
    source: Optional[Path],
    target: Optional[Path],
    target_per_source: float = 1.0,
    max_length: int = 0,
    limit: int = 0,
    target_limit: int = 0,
    gold_preproc: bool = True,
) -> Callable[[Language], Iterable[Example]]:
    """Training corpus for ContProto: labelled source Docs (.spacy) mixed with
    pseudo-labelled target Docs (.spacy written by the pseudo-label command). Each of
    source and target is a .spacy file or a folder of them, as for spacy.Corpus.v1.
    gold_preproc: keep the source Docs' tokens (True) or re-tokenise their text (False)."""
    for name, value in (("source", source), ("target", target)):
        if value is None:
            raise ValueError(
                f"spacy_contproto.SelfTrainingCorpus.v1 needs a {name} corpus: set "
                f"[paths] {'train' if name == 'source' else 'target'} (e.g. --paths.{'train' if name == 'source' else 'target'} FILE.spacy)"
            )
    return SelfTrainingCorpus(
        source, target, target_per_source=target_per_source, max_length=max_length,
        limit=limit, target_limit=target_limit, gold_preproc=gold_preproc,
    )


def learn_rate_ends_early(training: Dict[str, Any], steps_per_epoch: int) -> Optional[str]:
    """A warning when the learning-rate schedule reaches its last step (warmup_linear
    decays to 0 there) well before training ends, else None. training: the [training]
    block; steps_per_epoch: measured over the first epoch."""
    schedule = training.get("optimizer", {}).get("learn_rate")
    if not isinstance(schedule, dict) or not isinstance(schedule.get("total_steps"), int):
        return None
    total, max_epochs, max_steps = schedule["total_steps"], training.get("max_epochs", 0), training.get("max_steps", 0)
    planned = [n for n in ((steps_per_epoch * max_epochs) if max_epochs > 0 else 0, max_steps) if n > 0]
    if not planned or min(planned) <= total * 1.05:  # a last partial batch or two is no news
        return None
    end = min(planned)
    return (
        f"the learning-rate schedule ends at step {total} (training.optimizer.learn_rate.total_steps) but "
        f"training runs about {end} steps ({steps_per_epoch} steps per epoch, max_epochs = {max_epochs}, "
        f"max_steps = {max_steps}): its last {end - total} steps train with the schedule's final rate "
        f"(0 for warmup_linear). Set total_steps to about {end}."
    )


def trained_contproto_pipes(nlp: Language) -> List[SpanContProto]:
    """The span_contproto components being trained (a frozen one keeps its state)."""
    frozen = set(nlp.config.get("training", {}).get("frozen_components", []))
    return [proc for name, proc in nlp.pipeline if isinstance(proc, SpanContProto) and name not in frozen]


@registry.callbacks("spacy_contproto.training_schedule.v1")
def create_training_schedule() -> Callable[[Language, Dict[str, Any]], None]:
    """[training.before_update] callback: tells span_contproto components the epoch
    and step (warm-up, margins from the previous epoch, beta schedule, quality log), and
    warns once the first epoch's length shows the learning-rate schedule ending early."""
    checked = False

    def before_update(nlp: Language, args: Dict[str, Any]) -> None:
        nonlocal checked
        epoch, step = int(args["epoch"]), int(args["step"])
        for proc in trained_contproto_pipes(nlp):
            proc.set_training_state(epoch=epoch, step=step)
        if epoch >= 1 and not checked:
            checked = True
            message = learn_rate_ends_early(nlp.config.interpolate()["training"], step // epoch)
            if message:
                warnings.warn(message)

    return before_update


def freeze_word_embeddings(nlp: Language) -> int:
    """Stop training the input word-piece embeddings of every HuggingFace transformer in
    nlp (shared or embedded). Returns the number of parameters frozen.

    They are most of a multilingual encoder's weights (250k x 384 of multilingual-e5-small's
    118M), so freezing them cuts the optimizer's work and memory; Thinc's PyTorch shim
    skips parameters without a gradient."""
    from transformers import PreTrainedModel
    from thinc.shims import PyTorchShim

    frozen, seen = 0, set()
    # components, not pipeline: spaCy disables sourced components while initializing
    for _, proc in nlp.components:
        model = getattr(proc, "model", None)
        if model is None:
            continue
        for node in model.walk():
            for shim in node.shims:
                torch_model = getattr(shim, "_model", None) if isinstance(shim, PyTorchShim) else None
                if not isinstance(torch_model, PreTrainedModel) or id(torch_model) in seen:
                    continue
                seen.add(id(torch_model))
                weight = torch_model.get_input_embeddings().weight
                if weight.requires_grad:
                    weight.requires_grad_(False)
                    frozen += weight.numel()
    return frozen


@registry.callbacks("spacy_contproto.freeze_word_embeddings.v1")
def create_freeze_word_embeddings() -> Callable[[Language], Language]:
    """[initialize.after_init] callback: freeze the transformers' word-piece embeddings
    (see freeze_word_embeddings). The shipped configs leave it off; benchmarks/reproduce.py turns it on."""

    def after_init(nlp: Language) -> Language:
        if freeze_word_embeddings(nlp) == 0:
            raise ValueError(
                "freeze_word_embeddings: no HuggingFace transformer with trainable input "
                "embeddings found in the pipeline"
            )
        return nlp

    return after_init


@registry.loggers("spacy_contproto.ConsoleLogger.v1")
def create_console_logger(
    output_file: Optional[str] = None,
) -> Callable:
    """Like spaCy's console logger, with a column per loss term of span_contproto
    (name:src, :tgt, :cont, :reg) besides each component's total; optionally also
    JSONL lines with every loss and score."""

    def setup_printer(nlp: Language, stdout: IO = sys.stdout, stderr: IO = sys.stderr) -> Tuple[Callable, Callable]:
        msg = Printer(no_print=True)
        write = lambda text: print(text, file=stdout, flush=True)  # noqa: E731
        loss_cols: List[str] = []
        for name, proc in nlp.pipeline:
            if isinstance(proc, SpanContProto):
                loss_cols.extend(proc.loss_names)
            elif getattr(proc, "is_trainable", False):
                loss_cols.append(name)
        score_weights = nlp.config["training"]["score_weights"]
        score_cols = [col for col, value in score_weights.items() if value is not None]
        headers = ["E", "#"] + [f"Loss {c}" for c in loss_cols] + score_cols + ["Score"]
        widths = [3, 6] + [max(8, len(c) + 5) for c in loss_cols] + [max(6, len(c)) for c in score_cols] + [6]
        write(msg.row([h.upper() for h in headers], widths=widths, spacing=2))
        write(msg.row(["-" * w for w in widths], spacing=2))
        stream = None
        if output_file:
            Path(output_file).parent.mkdir(parents=True, exist_ok=True)
            stream = open(output_file, "w", encoding="utf8")

        def log_step(info: Optional[Dict[str, Any]]) -> None:
            if info is None:
                return
            losses = {c: float(info["losses"].get(c, 0.0)) for c in loss_cols}
            scores = {}
            for col in score_cols:
                value = info["other_scores"].get(col, 0.0)
                scores[col] = float(value) * (1 if col == "speed" else 100) if value is not None else 0.0
            row = [info["epoch"], info["step"]] + [f"{v:.2f}" for v in losses.values()]
            row += [f"{v:.2f}" for v in scores.values()] + [f"{float(info['score']):.2f}"]
            write(msg.row(row, widths=widths, aligns=["r"] * len(widths), spacing=2))
            if stream is not None:
                record = {"epoch": info["epoch"], "step": info["step"], "losses": losses,
                          "scores": scores, "score": float(info["score"])}
                stream.write(srsly.json_dumps(record) + "\n")
                stream.flush()

        def finalize() -> None:
            for proc in trained_contproto_pipes(nlp):
                proc.finish_training()
            if stream is not None:
                stream.close()

        return log_step, finalize

    return setup_printer
