"""The trainable pipeline component ``span_contproto``."""
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import numpy
import srsly
import torch
from spacy import util
from spacy.attrs import ENT_IOB, IS_SPACE
from spacy.errors import Errors
from spacy.language import Language
from spacy.pipeline.trainable_pipe import TrainablePipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, CupyOps, Model, Optimizer, torch2xp, xp2torch
from thinc.types import Floats2d, Ragged

from .losses import (
    per_group_mean_weights,
    soft_cross_entropy,
    supervised_contrastive,
    symmetric_kl,
    weighted_cross_entropy,
)
from .model import SpanGradients, SpanOutputs, doc_spans, span_head_module, uses_listener
from .pseudo_labels import PAYLOAD_KEY, decode_payload
from .prototypes import PrototypeShapeError
from .self_training import OracleEntry, SelfTrainingState
from .settings import ContProtoSettings
from .spans import (
    OUTSIDE, class_log_prior, decode_non_overlapping, label_spans, spans_touching, token_runs, tokens_covered,
)

ORACLE_KEY = "contproto_oracle"  # target gold kept aside (reference user_data), never in a loss
LOSS_TERMS = ("src", "tgt", "cont", "reg")

DEFAULT_MODEL_CONFIG = """
[model]
@architectures = "spacy_contproto.SpanContProto.v1"
max_span_length = 4
width_embedding_width = 64
hidden_width = null
projection_width = 128
dropout = 0.2
token_features = "first_last"
mixed_precision = false

[model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
upstream = "*"

[model.tok2vec.pooling]
@layers = "spacy_contproto.first_last_pooling.v1"
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_MODEL_CONFIG)["model"]
OUTSIDE_LABEL = "O"


@dataclass
class SpanProbabilities:
    """What ``predict`` returns: the enumerated spans and their class probabilities
    (column 0 is "O", column i the i-th label of ``labels``)."""

    spans: Ragged
    probabilities: Floats2d


@Language.factory(
    "span_contproto",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type", "doc.spans"],
    default_config={
        "model": DEFAULT_MODEL,
        "spans_key": "contproto",
        "neg_span_weight": 0.5,
        "prior_bias": False,
        "contproto": {"@misc": "spacy_contproto.ContProto.v1"},
        "scorer": {"@scorers": "spacy.ner_scorer.v1"},
    },
    default_score_weights={
        "ents_f": 1.0,
        "ents_p": 0.0,
        "ents_r": 0.0,
        "ents_per_type": None,
    },
)
def make_span_contproto(
    nlp: Language,
    name: str,
    model: Model[List[Doc], SpanOutputs],
    spans_key: str,
    neg_span_weight: float,
    prior_bias: bool,
    contproto: ContProtoSettings,
    scorer: Optional[Callable],
) -> "SpanContProto":
    """Span-based NER (ContProto, Zhou et al. 2023) on transformer features.

    model: the span model (spacy_contproto.SpanContProto.v1).
    spans_key: key in doc.spans for all predicted entity spans with their scores.
    neg_span_weight: weight of non-entity ("O") spans in the source cross-entropy.
    prior_bias: at initialize, set the classifier's output bias to the log class frequencies
        of the source spans ("O" weighted by neg_span_weight), so that a fresh head starts out
        predicting "O" instead of spending its first steps learning that prior (the paper is
        silent; false keeps PyTorch's default initialisation).
    contproto: training settings (spacy_contproto.ContProto.v1, or
        spacy_contproto.Supervised.v1 for source cross-entropy only).
    scorer: scoring function, by default spaCy's NER scorer (ents_p/r/f).
    """
    return SpanContProto(
        nlp.vocab, model, name, spans_key=spans_key, neg_span_weight=neg_span_weight,
        prior_bias=prior_bias, contproto=contproto, scorer=scorer,
    )


class SpanContProto(TrainablePipe):
    def __init__(
        self,
        vocab: Vocab,
        model: Model[List[Doc], SpanOutputs],
        name: str = "span_contproto",
        *,
        spans_key: str = "contproto",
        neg_span_weight: float = 0.5,
        prior_bias: bool = False,
        contproto: Optional[ContProtoSettings] = None,
        scorer: Optional[Callable] = None,
    ) -> None:
        if not 0.0 <= neg_span_weight:
            raise ValueError(f"neg_span_weight must be >= 0, got {neg_span_weight}")
        self.vocab = vocab
        self.model = model
        self.name = name
        self.scorer = scorer
        self.cfg: Dict[str, Any] = {
            "labels": [],
            "spans_key": spans_key,
            "neg_span_weight": neg_span_weight,
            "prior_bias": prior_bias,
            "max_span_length": model.attrs["max_span_length"],
            "token_width": None,
        }
        self.settings = contproto if contproto is not None else ContProtoSettings()
        self.state: Optional[SelfTrainingState] = None

    # labels ---------------------------------------------------------------

    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> List[str]:
        return list(self.labels)

    @property
    def class_names(self) -> List[str]:
        """Names of the model's output columns: "O" then the labels."""
        return [OUTSIDE_LABEL, *self.labels]

    @property
    def spans_key(self) -> str:
        return self.cfg["spans_key"]

    @property
    def max_span_length(self) -> int:
        return self.model.attrs["max_span_length"]

    def add_label(self, label: str) -> int:
        if not isinstance(label, str):
            raise ValueError(Errors.E187)
        if label == OUTSIDE_LABEL:
            raise ValueError(f'"{OUTSIDE_LABEL}" is reserved for non-entity spans')
        if label in self.labels:
            return 0
        if self.model.get_ref("span_head").has_dim("nO"):
            # the head's output layer is sized at initialize; a late label would break update and loading
            raise ValueError(
                f"{self.name}: cannot add label {label!r} to an initialized component (its output "
                "layer is sized); build the pipeline anew from its config with every label "
                f"([initialize.components.{self.name}.labels], or labels found in the training "
                "data) and train it again"
            )
        self.cfg["labels"].append(label)
        self.vocab.strings.add(label)
        return 1

    def _label_indices(self) -> Dict[str, int]:
        return {label: i + 1 for i, label in enumerate(self.labels)}

    # initialisation ---------------------------------------------------------

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[List[str]] = None,
    ) -> None:
        """Labels from the source examples' doc.ents (or `labels`), model sizes from a
        sample, and, when the examples include target Docs with pseudo labels, the
        pseudo-label store for self-training."""
        validate_get_examples(get_examples, "SpanContProto.initialize")
        training = None
        if nlp is not None:
            training = _training_config(nlp)
            _check_accumulation_and_mixed_precision(nlp, training)
        self.settings.warn_about_training()
        if self.model.get_ref("span_head").attrs["mixed_precision"] and not isinstance(self.model.ops, CupyOps):
            raise ValueError(
                f"{self.name}: mixed_precision = true needs a GPU (spacy train --gpu-id N); on CPU set "
                f"[components.{self.name}.model] mixed_precision = false"
            )
        examples = list(get_examples())
        found = list(labels) if labels is not None else [ent.label_ for eg in examples for ent in eg.reference.ents]
        head = self.model.get_ref("span_head")
        if found and head.has_dim("nO"):
            # initialized before: start afresh, labels too (labels added before the first
            # initialize join the data's, as for spaCy's ner)
            self.cfg["labels"] = []
            head.set_dim("nO", None, force=True)
        for label in found:
            self.add_label(label)
        if not self.labels:
            raise ValueError(
                f"{self.name}: no entity labels found. Give training examples with "
                "doc.ents or pass labels to initialize ([initialize.components."
                f"{self.name}.labels])."
            )
        self._check_labels(examples)
        self._warn_unreachable([eg for eg in examples if not is_target(eg)])
        # initialize starts afresh, as it does for the transformer and spaCy's own components
        head._layers = []
        head.set_dim("nO", len(self.labels) + 1, force=True)
        sample = [eg.x for eg in examples if len(eg.x)][:64]
        self.model.initialize(X=sample)
        self.cfg["token_width"] = head.get_dim("nI")
        if self.cfg.get("prior_bias"):
            self._set_prior_bias([eg for eg in examples if not is_target(eg)])
        self.state = self._new_state()
        targets = [eg for eg in examples if is_target(eg)]
        if targets:
            if training is not None:
                self._check_training_config(training)
            self._build_store(targets)

    def _check_training_config(self, training: Dict[str, Any]) -> None:
        """[training] settings that self-training cannot work with, or that leave part of
        it silently undone."""
        max_epochs = training.get("max_epochs")
        if max_epochs == -1:
            # spaCy then initializes on the stream's first 100 Examples: the pseudo-label
            # store would lack the later target Docs
            raise ValueError(
                f"{self.name}: self-training needs [training] max_epochs >= 0; with -1 spaCy streams the "
                "corpus and initializes on its first 100 Examples only, so the pseudo labels of the "
                "other target Docs would never be read. Bound training with max_steps instead."
            )
        if isinstance(max_epochs, int) and max_epochs > 0 and max_epochs != self.settings.max_epochs:
            warnings.warn(
                f"{self.name}: contproto max_epochs = {self.settings.max_epochs}, but [training] "
                f"max_epochs = {max_epochs}; the beta schedule and the refinement checks use the former. "
                "Set [components.span_contproto.contproto] max_epochs = ${training.max_epochs}."
            )
        logger = (training.get("logger") or {}).get("@loggers")
        if self.settings.quality_log is not None and logger not in (None, "spacy_contproto.ConsoleLogger.v1"):
            warnings.warn(
                f"{self.name}: the last epoch's pseudo-label quality is logged when training ends by "
                f"spacy_contproto.ConsoleLogger.v1, and [training.logger] is {logger}: quality_log will "
                "miss its last row."
            )

    def _set_prior_bias(self, examples: List[Example]) -> None:
        spans = doc_spans([eg.predicted for eg in examples], self.max_span_length)
        gold, scored, _ = self.gold_targets(examples, spans)
        prior = class_log_prior(gold[scored], len(self.class_names), self.cfg["neg_span_weight"])
        output = span_head_module(self.model).classifier[-1]
        with torch.no_grad():
            output.bias.copy_(torch.as_tensor(prior, dtype=output.bias.dtype))

    def _new_state(self) -> SelfTrainingState:
        if self.settings.prototype_space == "projection":
            width = self.model.get_ref("span_head").attrs["projection_width"]
        else:
            width = span_head_module(self.model).span_width
        return SelfTrainingState(self.settings, self.class_names, width)

    def _build_store(self, targets: List[Example]) -> None:
        entries: Dict[str, numpy.ndarray] = {}
        oracle: Dict[str, OracleEntry] = {}
        span_arrays: Dict[str, numpy.ndarray] = {}
        label_index = self._label_indices()
        unknown_gold: Counter = Counter()
        lacking: Counter = Counter()  # component classes absent from a Doc's pseudo labels
        docs_lacking = 0
        for eg in targets:
            doc_id, probs, spans, classes = self._read_payload(eg)
            if doc_id in entries:
                continue
            absent = [c for c in self.class_names if c not in classes]
            lacking.update(absent)
            docs_lacking += bool(absent)
            entries[doc_id] = probs
            span_arrays[doc_id] = spans
            gold = eg.reference.user_data.get(ORACLE_KEY)
            if gold is not None:
                unknown_gold.update(l for _, _, l in gold if l not in label_index)
                # a label the component lacks gets class -1: never predicted, so a miss (as in evaluation)
                gold_spans = numpy.asarray([(s, e) for s, e, _ in gold], dtype=numpy.int64).reshape(-1, 2)
                gold_labels = numpy.asarray([label_index.get(l, -1) for _, _, l in gold], dtype=numpy.int64)
                oracle[doc_id] = (spans, gold_spans, gold_labels)
        if unknown_gold:
            detail = ", ".join(f"{label}: {n}" for label, n in sorted(unknown_gold.items()))
            warnings.warn(
                f"{self.name}: the target gold kept for the pseudo-label quality log has "
                f"{sum(unknown_gold.values())} entities with labels the component does not have "
                f"({detail}); they count as misses in the log's recall."
            )
        if lacking:
            detail = ", ".join(f"{label} ({n} Docs)" for label, n in sorted(lacking.items()))
            warnings.warn(
                f"{self.name}: the pseudo labels of {docs_lacking} of {len(entries)} target Docs lack "
                f"classes the component has: {detail}. Their probability starts at 0 there (only prototype "
                "refinement can raise it); was the teacher trained on fewer labels than the component has?"
            )
        assert self.state is not None
        self.state.build_store(entries, oracle, span_arrays)

    @staticmethod
    def _target_spans(spans: Ragged, target_doc: numpy.ndarray) -> List[numpy.ndarray]:
        """The span arrays of the batch's target Docs."""
        ends = numpy.cumsum(spans.lengths)
        return [spans.data[end - n : end] for end, n, target in zip(ends, spans.lengths, target_doc) if target]

    def _read_payload(self, eg: Example) -> Tuple[str, numpy.ndarray, numpy.ndarray, List[str]]:
        """The target Doc's id, teacher probabilities (columns in this component's
        class order), enumerated spans and the teacher's classes; clear errors for payloads
        that do not fit."""
        doc_id, probs, classes, max_len = decode_payload(eg.reference.user_data[PAYLOAD_KEY])
        unknown = [c for c in classes if c not in self.class_names]
        if unknown:
            raise ValueError(
                f"{self.name}: the pseudo labels of target Doc {doc_id!r} have classes the "
                f"component does not know: {unknown}; component labels: {list(self.labels)}. "
                "Pseudo-label with a teacher trained on the same label set."
            )
        if OUTSIDE_LABEL not in classes:
            # its rows would be renormalised over the entity classes: every span an entity
            raise ValueError(
                f"{self.name}: the pseudo labels of target Doc {doc_id!r} have no {OUTSIDE_LABEL!r} class "
                f"(classes {list(classes)}): they are not span_contproto's pseudo-label format "
                "(spacy_contproto/pseudo_labels.py); pseudo-label with `python -m spacy_contproto pseudo-label`."
            )
        if max_len != self.max_span_length:
            raise ValueError(
                f"{self.name}: target Doc {doc_id!r} was pseudo-labelled with max_span_length="
                f"{max_len}, the component uses {self.max_span_length}."
            )
        spans = doc_spans([eg.predicted], self.max_span_length).data
        n_spans = len(spans)
        if probs.shape[0] != n_spans:
            raise ValueError(
                f"{self.name}: target Doc {doc_id!r} has pseudo labels for {probs.shape[0]} spans "
                f"but {n_spans} spans are enumerated: tokens or sentence boundaries differ from "
                "the Docs the teacher labelled."
            )
        aligned = numpy.zeros((n_spans, len(self.class_names)), dtype=numpy.float32)
        aligned[:, [self.class_names.index(c) for c in classes]] = probs
        aligned /= numpy.maximum(aligned.sum(axis=1, keepdims=True), 1e-12)
        return doc_id, aligned, spans, classes

    def set_training_state(self, epoch: int, step: int) -> None:
        """Tell the component where training is (see spacy_contproto.training_schedule.v1)."""
        if self.state is not None:
            self.state.set_training_state(epoch, step)

    def finish_training(self) -> None:
        """End the last epoch: store flushed, final pseudo-label quality logged
        (called by spacy_contproto.ConsoleLogger.v1 when training ends)."""
        if self.state is not None and self.state.epoch_known:
            self.state.end_epoch(self.state.epoch)
            self.state.epoch_known = False

    def _warn_unreachable(self, examples: List[Example]) -> None:
        too_long = Counter(
            ent.label_
            for eg in examples
            for ent in eg.reference.ents
            if len(ent) > self.max_span_length
        )
        if too_long:
            total = sum(len(eg.reference.ents) for eg in examples)
            detail = ", ".join(f"{label}: {n}" for label, n in sorted(too_long.items()))
            warnings.warn(
                f"{self.name}: {sum(too_long.values())} of {total} gold entities are longer "
                f"than max_span_length={self.max_span_length} tokens and can never be "
                f"predicted; they count as misses in evaluation ({detail})."
            )

    # prediction -------------------------------------------------------------

    def predict(self, docs: Iterable[Doc]) -> SpanProbabilities:
        if not self.model.get_ref("span_head").layers:
            raise ValueError(
                f"{self.name} is not initialized: train it (spacy train), call nlp.initialize(), "
                "or load a trained pipeline"
            )
        docs = list(docs)
        outputs = self.model.predict(docs)
        return SpanProbabilities(outputs.spans, self.model.ops.softmax(outputs.logits))

    def set_annotations(self, docs: Iterable[Doc], predictions: SpanProbabilities) -> None:
        spans = predictions.spans
        probabilities = self.model.ops.to_numpy(predictions.probabilities)
        class_names = self.class_names
        offset = 0
        for doc, n_spans in zip(docs, spans.lengths):
            doc_spans = spans.data[offset : offset + n_spans]
            doc_probs = probabilities[offset : offset + n_spans]
            offset += n_spans
            best = doc_probs.argmax(axis=1) if n_spans else numpy.zeros(0, dtype=int)
            is_entity = best != OUTSIDE
            if n_spans:
                # as spaCy's ner: no entity starts (or, here, ends) on a whitespace token
                is_space = doc.to_array(IS_SPACE).astype(bool)
                is_entity &= ~is_space[doc_spans[:, 0]] & ~is_space[doc_spans[:, 1] - 1]
            cand_spans = doc_spans[is_entity]
            cand_labels = best[is_entity]
            cand_scores = doc_probs[is_entity][numpy.arange(len(cand_labels)), cand_labels]
            # as spaCy's ner: entities already on the Doc (an entity_ruler before this component,
            # or set by hand) and blocked tokens (Doc.set_ents(blocked=...)) stay as they are;
            # new entities only go around them, and every other token becomes "O"
            ent_iob = doc.to_array(ENT_IOB)
            free = ~spans_touching(cand_spans, numpy.isin(ent_iob, (1, 3)))
            keep = numpy.zeros(len(cand_spans), dtype=bool)
            keep[free] = decode_non_overlapping(cand_spans[free], cand_scores[free], len(doc))
            new = [
                Span(doc, int(s), int(e), label=class_names[c])
                for (s, e), c in zip(cand_spans[keep], cand_labels[keep])
            ]
            unset = (ent_iob == 0) & ~tokens_covered(cand_spans[keep], len(doc))
            outside = [Span(doc, int(s), int(e)) for s, e in token_runs(unset)]
            doc.set_ents(new, outside=outside, default="unmodified")
            group = SpanGroup(
                doc,
                name=self.spans_key,
                spans=[
                    Span(doc, int(s), int(e), label=class_names[c])
                    for (s, e), c in zip(cand_spans, cand_labels)
                ],
                attrs={"scores": numpy.asarray(cand_scores, dtype=numpy.float32)},
            )
            doc.spans[self.spans_key] = group

    # training ---------------------------------------------------------------

    @property
    def loss_names(self) -> List[str]:
        """Keys this component adds to the `losses` dict: its name (the weighted
        total) and name:src/tgt/cont/reg for each enabled loss."""
        s = self.settings
        enabled = dict(zip(LOSS_TERMS, (s.source_loss, s.target_loss, s.contrastive_loss, s.consistency_loss)))
        return [self.name] + [f"{self.name}:{t}" for t in LOSS_TERMS if enabled[t]]

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        if losses is None:
            losses = {}
        for key in self.loss_names:
            losses.setdefault(key, 0.0)
        examples = list(examples)
        validate_examples(examples, "SpanContProto.update")
        self._check_labels(examples)
        if not any(len(eg.predicted) for eg in examples):
            return losses
        if self.state is None:
            self.state = self._new_state()
        self.state.begin_training()
        self.model.attrs["n_views"] = self.settings.n_views
        self.model.attrs["view_source"] = self._view_source()
        outputs, backprop = self.model.begin_update([eg.predicted for eg in examples])
        result = self._compute_losses(examples, outputs)
        backprop(result.grads)
        if sgd is not None:
            self.finish_update(sgd)
        self._after_update(result, outputs)
        losses[self.name] += result.total
        for term, value in result.terms.items():
            losses[f"{self.name}:{term}"] += value
        return losses

    def _view_source(self) -> str:
        views = self.settings.views
        if views == "auto":
            return "head" if uses_listener(self.model) else "encoder"
        return views

    def _check_labels(self, examples: List[Example]) -> None:
        unknown = {ent.label_ for eg in examples for ent in eg.reference.ents} - set(self.labels)
        if unknown:
            raise ValueError(
                f"{self.name}: gold entities have labels the component does not know: "
                f"{sorted(unknown)}; known labels: {list(self.labels)}. Re-initialize "
                "with these labels or remove them from the data."
            )

    def get_loss(
        self, examples: Iterable[Example], outputs: SpanOutputs
    ) -> Tuple[float, SpanGradients]:
        """The weighted sum of the enabled losses and its gradient (see _compute_losses).
        outputs: the training forward pass's (``self.model.begin_update(docs)``)."""
        if not isinstance(outputs, SpanOutputs):
            raise TypeError(
                f"{self.name}.get_loss takes the SpanOutputs of the training forward pass "
                f"(self.model.begin_update(docs)), got {type(outputs).__name__}: predict's "
                "probabilities lack the views and projections the losses need; to score "
                "predictions use nlp.evaluate"
            )
        examples = list(examples)
        self._check_labels(examples)
        result = self._compute_losses(examples, outputs)
        return result.total, result.grads

    def _compute_losses(self, examples: List[Example], outputs: SpanOutputs) -> "LossResult":
        """Source cross-entropy (eq. 1: "O" spans weighted by neg_span_weight, spans
        touching a token with missing annotation left out, averaged per Doc, then over
        the Docs of the batch; convert-corpus writes one sentence per Doc), soft
        cross-entropy against the pseudo labels of target spans (eq. 2), supervised contrastive loss over the projected spans of both views
        (eq. 4-5) and symmetric KL between the views (eq. 6). With two views, eq. 1
        and 2 are averaged over the views."""
        s = self.settings
        ops = self.model.ops
        device = span_head_device(self.model)
        n_views = outputs.n_views
        lengths = numpy.asarray(outputs.spans.lengths, dtype=numpy.int64)
        n_spans = int(lengths.sum())
        n_classes = len(self.class_names)
        doc_index = numpy.repeat(numpy.arange(len(examples)), lengths)
        target_doc = numpy.asarray([is_target(eg) for eg in examples], dtype=bool)
        target_span = target_doc[doc_index] if n_spans else numpy.zeros(0, dtype=bool)
        targets, scored, _ = self.gold_targets(examples, outputs.spans)
        source_scored = scored & ~target_span

        logits = xp2torch(outputs.logits, requires_grad=True, device=device)
        views = logits.view(n_views, n_spans, n_classes)
        groups = torch.as_tensor(doc_index, device=device)
        gold = torch.as_tensor(targets, device=device)
        target_rows = torch.as_tensor(numpy.nonzero(target_span)[0], device=device)
        target_ids = [self._read_id(eg) for eg, target in zip(examples, target_doc) if target]
        # duplicates of a target Doc in a batch each read the same stored rows
        pseudo = torch.as_tensor(
            self.state.pseudo_labels(target_ids, self._target_spans(outputs.spans, target_doc))
            if target_ids else numpy.zeros((0, n_classes), "f"),
            device=device,
        )
        with torch.no_grad():
            predicted = torch.softmax(views, dim=-1).mean(dim=0).argmax(dim=-1)
        span_labels = torch.where(
            torch.as_tensor(source_scored, device=device), gold, torch.full_like(gold, -1)
        )
        if target_rows.numel():
            target_labels = predicted[target_rows] if s.contrastive_target_labels == "prediction" else pseudo.argmax(1)
            span_labels[target_rows] = target_labels

        total = logits.sum() * 0.0
        terms: Dict[str, float] = {}
        projections = None
        if s.source_loss:
            class_weight = torch.where(gold == OUTSIDE, self.cfg["neg_span_weight"], 1.0)
            weights = per_group_mean_weights(groups, torch.as_tensor(source_scored, device=device)) * class_weight
            loss = sum(weighted_cross_entropy(v, gold, weights) for v in views) / n_views
            total = total + s.source_weight * loss
            terms["src"] = float(loss.item())
        if s.target_loss:
            weights = per_group_mean_weights(groups, torch.as_tensor(target_span, device=device))
            loss = sum(
                soft_cross_entropy(v[target_rows], pseudo, weights[target_rows]) for v in views
            ) / n_views
            total = total + s.target_weight * loss
            terms["tgt"] = float(loss.item())
        if s.contrastive_loss:
            projections = xp2torch(outputs.projections, requires_grad=True, device=device)
            loss = supervised_contrastive(projections, span_labels.repeat(n_views), s.temperature)
            total = total + s.contrastive_weight * loss
            terms["cont"] = float(loss.item())
        if s.consistency_loss and n_views == 2:
            mask = torch.ones(n_spans, device=device) if s.consistency_spans == "all" else \
                torch.as_tensor(~target_span, dtype=torch.float32, device=device)
            loss = symmetric_kl(views[0], views[1], mask / mask.sum().clamp(min=1))
            total = total + s.consistency_weight * loss
            terms["reg"] = float(loss.item())
        if n_spans and total.requires_grad:
            total.backward()
        d_logits = torch2xp(logits.grad, ops=ops) if logits.grad is not None else ops.alloc2f(*outputs.logits.shape)
        d_projections = None
        if projections is not None and projections.grad is not None:
            d_projections = torch2xp(projections.grad, ops=ops)
        return LossResult(
            total=float(total.item()),
            terms=terms,
            grads=SpanGradients(d_logits=d_logits, d_projections=d_projections),
            span_labels=span_labels,
            predicted=predicted,
            target_rows=target_rows,
            target_ids=target_ids,
            pseudo=pseudo,
        )

    def _after_update(self, result: "LossResult", outputs: SpanOutputs) -> None:
        """Prototypes, margins and pseudo-label refinement (eq. 8-11) from the first
        view of this step's spans; gradients are not involved."""
        s = self.settings
        n_spans = result.span_labels.shape[0]
        if n_spans == 0:
            return
        device = span_head_device(self.model)
        if s.prototype_space == "projection":
            vectors = xp2torch(outputs.projections[:n_spans], device=device)
        else:
            vectors = torch.nn.functional.normalize(xp2torch(outputs.representations[:n_spans], device=device), dim=1)
        rows = result.target_rows
        if s.margin_labels == "prediction":
            margin_labels = result.predicted[rows]
        else:
            margin_labels = result.pseudo.argmax(dim=1)
        self.state.after_update(
            vectors, result.span_labels, result.target_ids, rows, result.pseudo, margin_labels
        )

    @staticmethod
    def _read_id(eg: Example) -> str:
        return str(eg.reference.user_data[PAYLOAD_KEY]["id"])

    def gold_targets(
        self, examples: List[Example], spans: Ragged
    ) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
        """Per enumerated span: its gold class index, whether it is scored (no token
        with missing annotation) and the index of its example."""
        label_index = self._label_indices()
        targets, scored = [], []
        offset = 0
        for eg, n_spans in zip(examples, spans.lengths):
            doc_spans = spans.data[offset : offset + n_spans]
            offset += n_spans
            x_ents, x_tags = eg.get_aligned_ents_and_ner()
            gold = numpy.asarray([(e.start, e.end) for e in x_ents], dtype=numpy.int64)
            gold_labels = numpy.asarray([label_index[e.label_] for e in x_ents], dtype=numpy.int64)
            targets.append(label_spans(doc_spans, gold, gold_labels, len(eg.predicted)))
            missing = numpy.asarray([tag is None for tag in x_tags], dtype=bool)
            scored.append(~spans_touching(doc_spans, missing))
        doc_index = numpy.repeat(numpy.arange(len(examples)), spans.lengths)
        if not targets:
            return numpy.zeros(0, dtype=numpy.int64), numpy.zeros(0, dtype=bool), doc_index
        return numpy.concatenate(targets), numpy.concatenate(scored), doc_index

    # serialisation ------------------------------------------------------------

    def _prepare_for_load(self) -> None:
        """Build the PyTorch head with the stored sizes so its weights can be loaded."""
        if self.cfg["max_span_length"] != self.max_span_length:
            raise ValueError(
                f"{self.name}: the saved component was trained with max_span_length="
                f"{self.cfg['max_span_length']}, but the model config says "
                f"{self.max_span_length}. Use the config the component was saved with."
            )
        head = self.model.get_ref("span_head")
        if head.layers:
            built = (head.get_dim("nO") - 1, head.get_dim("nI"))
            saved = (len(self.labels), self.cfg.get("token_width"))
            if built != saved:
                raise ValueError(
                    f"{self.name}: cannot load a component with {saved[0]} labels "
                    f"{list(self.labels)} and token width {saved[1]} into one initialized with "
                    f"{built[0]} labels and token width {built[1]}. Load it into a fresh, "
                    "uninitialized pipeline (spacy.load) instead."
                )
            return
        if not self.cfg.get("token_width") or not self.labels:
            raise ValueError(
                f"{self.name}: the saved component has no labels or token width; it was "
                "saved before nlp.initialize()."
            )
        head.set_dim("nI", self.cfg["token_width"])
        head.set_dim("nO", len(self.labels) + 1)
        head.initialize()

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> None:
        if self.state is not None and self.state.store is not None:
            self.state.store.flush()  # a checkpoint also makes the refined labels durable
        serialize = {
            "cfg": lambda p: srsly.write_json(p, self.cfg),
            "vocab": lambda p: self.vocab.to_disk(p, exclude=exclude),
            "model": lambda p: self.model.to_disk(p),
        }
        if self.state is not None:
            serialize["contproto"] = lambda p: p.write_bytes(self.state.to_bytes())
        util.to_disk(path, serialize, exclude)

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        serialize = {
            "cfg": lambda: srsly.json_dumps(self.cfg),
            "vocab": lambda: self.vocab.to_bytes(exclude=exclude),
            "model": self.model.to_bytes,
        }
        if self.state is not None:
            serialize["contproto"] = self.state.to_bytes
        return util.to_bytes(serialize, exclude)

    def from_disk(
        self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()
    ) -> "SpanContProto":
        path = util.ensure_path(path)
        util.from_disk(
            path,
            {
                "vocab": lambda p: self.vocab.from_disk(p, exclude=exclude),
                "cfg": lambda p: self.cfg.update(srsly.read_json(p)),
            },
            exclude,
        )
        self._prepare_for_load()
        util.from_disk(
            path,
            {
                "model": lambda p: self._load_model_bytes(p.read_bytes()),
                "contproto": lambda p: self._load_state(p.read_bytes()) if p.exists() else None,
            },
            exclude,
        )
        return self

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "SpanContProto":
        msg = srsly.msgpack_loads(bytes_data)
        if "cfg" not in exclude and "cfg" in msg:
            self.cfg.update(srsly.json_loads(msg["cfg"]))
        if "vocab" not in exclude and "vocab" in msg:
            self.vocab.from_bytes(msg["vocab"], exclude=exclude)
        self._prepare_for_load()
        if "model" not in exclude and "model" in msg:
            self._load_model_bytes(msg["model"])
        if "contproto" not in exclude and "contproto" in msg:
            self._load_state(msg["contproto"])
        return self

    def _load_state(self, data: bytes) -> None:
        self.state = self._new_state()
        try:
            self.state.from_bytes(data)
        except PrototypeShapeError as err:
            # the memory's width follows prototype_space, which a config edit can change after training
            raise ValueError(
                f"{self.name}: cannot load the saved prototype memory: {err}. The component now has "
                f"{len(self.class_names)} classes and prototype_space = {self.settings.prototype_space!r} "
                f"({self.state.memory.prototypes.shape[1]} dimensions); load it with the labels and "
                "[contproto] prototype_space it was trained with."
            ) from None

    def _load_model_bytes(self, data: bytes) -> None:
        try:
            self.model.from_bytes(data)
        except AttributeError:
            raise ValueError(Errors.E149) from None


def is_target(eg: Example) -> bool:
    """Whether an Example is an unlabelled target-language Doc with pseudo labels."""
    return PAYLOAD_KEY in eg.reference.user_data


def span_head_device(model: Model) -> torch.device:
    return model.get_ref("span_head").layers[0].shims[0].device


@dataclass
class LossResult:
    total: float
    terms: Dict[str, float]
    grads: SpanGradients
    span_labels: torch.Tensor  # per span: gold (source), current/pseudo label (target), -1 none
    predicted: torch.Tensor  # per span: argmax of the current prediction (views averaged)
    target_rows: torch.Tensor  # spans of target Docs
    target_ids: List[str]  # ids of the target Docs, in batch order
    pseudo: torch.Tensor  # pseudo labels of the target spans (rows of target_rows)


def _training_config(nlp: Language) -> dict:
    """nlp's [training] block, its variables resolved where they can be."""
    try:
        return dict(nlp.config.interpolate().get("training", {}))
    except Exception:  # e.g. a variable that only `spacy train` overrides fills
        return dict(nlp.config.get("training", {}))


def _sets_mixed_precision(config) -> bool:
    if isinstance(config, dict):
        return config.get("mixed_precision") is True or any(_sets_mixed_precision(v) for v in config.values())
    return False


def _check_accumulation_and_mixed_precision(nlp: Language, training: Dict[str, Any]) -> None:
    """Thinc's PyTorch shim unscales every accumulated parameter gradient at each backward,
    so with accumulate_gradient > 1 all sub-batches but the last would lose their gradients
    (training: nlp's [training] block, from _training_config)."""
    accumulate = training.get("accumulate_gradient", 1)
    if not isinstance(accumulate, int) or accumulate <= 1:
        return
    frozen = set(training.get("frozen_components", []))
    mixed = [
        name for name, config in nlp.config.get("components", {}).items()
        if name not in frozen and _sets_mixed_precision(config)
    ]
    if mixed:
        raise ValueError(
            f"[training] accumulate_gradient = {accumulate} with mixed precision in {', '.join(mixed)}: Thinc's "
            "grad scaler divides every accumulated gradient by the loss scale at each backward, so the gradients "
            "of all sub-batches but the last would be lost. Set accumulate_gradient = 1 (use a smaller "
            "[training.batcher] size to save memory) or mixed_precision = false."
        )
