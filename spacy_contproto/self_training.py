"""Run state of ContProto self-training: prototypes and margins, the pseudo-label
store, the epoch schedule and the oracle pseudo-label quality (no spaCy here)."""
import hashlib
import json
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy
import srsly
import torch

from .prototypes import PrototypeMemory, beta_for_epoch, fixed_margins, refine_pseudo_labels
from .pseudo_labels import PseudoLabelStore
from .settings import ContProtoSettings
from .spans import OUTSIDE, decode_non_overlapping

# (spans (n, 2) of the document, gold spans (k, 2), gold class indices (k,))
OracleEntry = Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]


def span_digest(spans: numpy.ndarray) -> bytes:
    """A short fingerprint of a document's (n, 2) span array."""
    return hashlib.blake2b(numpy.ascontiguousarray(spans, dtype=numpy.int64).tobytes(), digest_size=8).digest()


class SelfTrainingState:
    def __init__(self, settings: ContProtoSettings, class_names: Sequence[str], prototype_width: int):
        self.settings = settings
        self.class_names = list(class_names)
        self.memory = PrototypeMemory(
            len(class_names), prototype_width, settings.prototype_alpha, settings.prototype_update
        )
        self.store: Optional[PseudoLabelStore] = None
        self.oracle: Dict[str, OracleEntry] = {}
        self.span_digests: Dict[str, bytes] = {}
        self.epoch = 0
        self.step = 0
        self.epoch_known = False
        self._warned_no_epochs = False
        self.training_started = False

    # pseudo labels ------------------------------------------------------------

    def build_store(
        self, entries: Dict[str, numpy.ndarray], oracle: Dict[str, OracleEntry],
        spans: Optional[Dict[str, numpy.ndarray]] = None,
    ) -> None:
        """entries: each document's pseudo-label rows; spans: the (n, 2) spans those rows belong to,
        which pseudo_labels checks each batch's spans against."""
        s = self.settings
        self.span_digests = {doc_id: span_digest(doc_spans) for doc_id, doc_spans in (spans or {}).items()}
        # in memory or a temporary folder until training starts (begin_training)
        self.store = PseudoLabelStore.create(entries, self.class_names, None, max_ram_bytes=s.store_max_ram_mb * (1 << 20))
        self.oracle = oracle
        self.training_started = False
        if s.prototypes and 0 < s.max_epochs < s.warmup_epochs + 2:
            # a span's label refined in epoch e is first read back in epoch e + 1
            warnings.warn(
                f"span_contproto: with max_epochs = {s.max_epochs} and warmup_epochs = {s.warmup_epochs}, "
                "no epoch trains on refined pseudo labels (a label refined in one epoch is first read "
                "in the next), so prototype refinement cannot change the model, only the stored labels. "
                f"Train for at least warmup_epochs + 2 = {s.warmup_epochs + 2} epochs."
            )

    def begin_training(self) -> None:
        """At the first update: the store moves to store_dir and the quality log starts
        afresh with the teacher's labels (epoch 0). Not at initialize, so that commands
        that only initialize (spacy debug data, init pipeline) leave an earlier run's
        refined labels and log alone, and a rerun's log holds that run only."""
        if self.training_started or self.store is None:
            return
        self.training_started = True
        s = self.settings
        if s.store_dir is not None:
            self.store.relocate(s.store_dir)
        if s.quality_log is not None and Path(s.quality_log).exists():
            Path(s.quality_log).unlink()
        self.log_quality(epoch=0)

    def pseudo_labels(
        self, doc_ids: Sequence[str], doc_spans: Optional[Sequence[numpy.ndarray]] = None
    ) -> numpy.ndarray:
        """The stored rows of the documents, concatenated; doc_spans: each document's spans in
        this batch, which must be the spans its rows were labelled for, in order."""
        if self.store is None:
            raise ValueError(
                "span_contproto got target-language Docs in training but has no pseudo-label store: "
                "either nlp.initialize() saw no target Docs (give the training corpus reader the target "
                "Docs, spacy_contproto.SelfTrainingCorpus.v1), or the component was sourced from a trained "
                "pipeline (`source =` in the config, or spacy.load): spaCy does not initialize a sourced "
                "component, so it never reads the target Docs' pseudo labels. For self-training, let "
                "span_contproto initialize (configs/contproto_cpu.cfg builds it afresh); to start from a "
                "teacher, source the transformer only."
            )
        if doc_spans is not None:
            self._check_spans(doc_ids, doc_spans)
        return self.store.gather(doc_ids)

    def _check_spans(self, doc_ids: Sequence[str], doc_spans: Sequence[numpy.ndarray]) -> None:
        # moved sentence boundaries can keep a Doc's number of spans and change which they are
        for doc_id, spans in zip(doc_ids, doc_spans):
            expected = self.span_digests.get(doc_id)
            if expected is not None and span_digest(spans) != expected:
                rows = int(self.store.row_counts([doc_id])[0])
                raise ValueError(
                    f"span_contproto: the spans of target Doc {doc_id!r} in this batch ({len(spans)}) are not "
                    f"the spans its {rows} pseudo-label rows were made for: its tokens or sentence boundaries "
                    "changed after it was pseudo-labelled (e.g. by a sentencizer or senter in [training] "
                    "annotating_components). Pseudo-label the Docs with the sentence boundaries training "
                    "gives them."
                )

    # schedule -----------------------------------------------------------------

    def set_training_state(self, epoch: int, step: int) -> None:
        """Called before each update (training callback). Ends finished epochs:
        margins for the next epoch, store flushed, quality logged."""
        if self.epoch_known:
            # epochs skipped by a hand-written loop saw no spans: margins from the one that did
            for finished in range(self.epoch, epoch):
                self.end_epoch(finished, margins=finished == self.epoch)
        self.epoch, self.step, self.epoch_known = epoch, step, True

    def end_epoch(self, finished_epoch: int, margins: bool = True) -> None:
        if margins:
            self.memory.end_epoch()
        if self.store is not None:
            self.store.flush()
            self.log_quality(epoch=finished_epoch + 1)

    @property
    def refining(self) -> bool:
        s = self.settings
        if not s.prototypes:
            return False
        if not self.epoch_known:
            if not self._warned_no_epochs:
                # with warm-up 0 it refines, but no epoch ever ends: the margins are never computed
                margins = "the class margins are never computed (refinement uses their start, 0), " if s.margin == "class" else ""
                consequence = (
                    "pseudo labels stay in warm-up and are never refined" if s.warmup_epochs > 0 else
                    f"no epoch ever ends for it: {margins}the refined labels are never flushed and "
                    "the quality log never passes epoch 0"
                )
                warnings.warn(
                    f"span_contproto does not know the training epoch, so {consequence}. Add the callback "
                    '[training.before_update] @callbacks = "spacy_contproto.training_schedule.v1" '
                    "(or call set_training_state(epoch, step) before each update in your own loop)."
                )
                self._warned_no_epochs = True
            return s.warmup_epochs == 0
        return self.epoch >= s.warmup_epochs

    def beta(self) -> float:
        s = self.settings
        return beta_for_epoch(
            self.epoch, s.max_epochs, start=s.beta, end=s.beta_end,
            schedule=s.beta_schedule, warmup_epochs=s.warmup_epochs,
        )

    def margins(self) -> torch.Tensor:
        s = self.settings
        if s.margin == "fixed":
            return fixed_margins(len(self.class_names), s.fixed_margin)
        if s.first_margin == "zero" and self.epoch <= s.warmup_epochs:
            return torch.zeros_like(self.memory.margins)
        return self.memory.margins

    # one training step ----------------------------------------------------------

    def after_update(
        self,
        vectors: torch.Tensor,
        span_labels: torch.Tensor,
        target_ids: Sequence[str],
        target_rows: torch.Tensor,
        target_pseudo: torch.Tensor,
        target_margin_labels: torch.Tensor,
    ) -> None:
        """Prototype update on the batch's spans (labels < 0 left out), margin
        statistics and, past warm-up, refinement of the target spans' pseudo labels.

        vectors: (n, D) normalised span vectors; target_rows: their rows that belong
        to target Docs, in the order of target_ids' spans."""
        self.memory.update(vectors, span_labels)
        if target_rows.numel() == 0:
            return
        similarities = self.memory.similarities(vectors[target_rows])
        self.memory.add_margin_statistics(similarities, target_margin_labels)
        if self.refining:
            refined = refine_pseudo_labels(
                target_pseudo.to(similarities), similarities, self.beta(), self.margins().to(similarities),
                criterion=self.settings.margin_criterion, outside=OUTSIDE,
            )
            self.store.scatter(target_ids, refined.cpu().numpy())

    # quality ------------------------------------------------------------------

    def quality(self) -> Optional[Dict[str, float]]:
        """Oracle micro P/R/F1 of the current pseudo labels (decoded like predictions)
        against the target gold kept aside, or None without gold."""
        if not self.oracle or self.store is None:
            return None
        counts = numpy.zeros(3, dtype=numpy.int64)
        for doc_id, (spans, gold_spans, gold_labels) in self.oracle.items():
            counts += entity_match_counts(self.store.get(doc_id), spans, gold_spans, gold_labels)
        return {**micro_prf(*counts), "n_docs": len(self.oracle)}

    def log_quality(self, epoch: int) -> None:
        if self.settings.quality_log is None:
            return
        scores = self.quality()
        if scores is None:
            return
        path = Path(self.settings.quality_log)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf8") as f:
            f.write(json.dumps({"epoch": epoch, "step": self.step, **scores}) + "\n")

    # serialisation -------------------------------------------------------------

    def to_bytes(self) -> bytes:
        return srsly.msgpack_dumps({k: _encode_array(v) for k, v in self.memory.to_dict().items()})

    def from_bytes(self, data: bytes) -> None:
        self.memory.load_dict(decode_state(data))


def entity_match_counts(
    probs: numpy.ndarray, spans: numpy.ndarray, gold_spans: numpy.ndarray, gold_labels: numpy.ndarray
) -> Tuple[int, int, int]:
    """(correct, predicted, gold) entities of one Doc's span class probabilities, decoded like
    predictions (argmax, then non-overlapping by probability), against its gold entities."""
    best = probs.argmax(axis=1)
    is_entity = best != OUTSIDE
    cand, cand_labels = spans[is_entity], best[is_entity]
    scores = probs[is_entity][numpy.arange(len(cand_labels)), cand_labels]
    keep = decode_non_overlapping(cand, scores)
    predicted = {(int(s), int(e), int(c)) for (s, e), c in zip(cand[keep], cand_labels[keep])}
    gold = {(int(s), int(e), int(c)) for (s, e), c in zip(gold_spans, gold_labels)}
    return len(predicted & gold), len(predicted), len(gold)


def micro_prf(tp: int, n_pred: int, n_gold: int) -> Dict[str, float]:
    tp, n_pred, n_gold = int(tp), int(n_pred), int(n_gold)
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "n_gold": n_gold}


def decode_state(data: bytes) -> Dict[str, numpy.ndarray]:
    """The arrays of a saved state (prototypes, margins, margin statistics), e.g. for reports."""
    return {k: _decode_array(v) for k, v in srsly.msgpack_loads(data).items()}


_SAFE_DTYPES = {"<f4", "<f8", "<f2"}


def _encode_array(array: numpy.ndarray) -> dict:
    array = numpy.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<").str
    return {"dtype": dtype, "shape": list(array.shape), "data": array.astype(dtype).tobytes()}


def _decode_array(msg: dict) -> numpy.ndarray:
    """Numeric arrays only: nothing here is ever unpickled."""
    if msg.get("dtype") not in _SAFE_DTYPES:
        raise ValueError(f"refusing to load an array of dtype {msg.get('dtype')!r}")
    return numpy.frombuffer(msg["data"], dtype=msg["dtype"]).reshape(msg["shape"]).copy()

