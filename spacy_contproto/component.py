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
from spacy.errors import Errors
from spacy.language import Language
from spacy.pipeline.trainable_pipe import TrainablePipe
from spacy.tokens import Doc, Span, SpanGroup
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer, torch2xp, xp2torch
from thinc.types import Floats2d, Ragged

from .losses import per_group_mean_weights, weighted_cross_entropy
from .model import SpanGradients, SpanOutputs
from .spans import OUTSIDE, decode_non_overlapping, label_spans, spans_touching

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
    scorer: Optional[Callable],
) -> "SpanContProto":
    """Span-based NER (ContProto, Zhou et al. 2023) on transformer features.

    model: the span model (spacy_contproto.SpanContProto.v1).
    spans_key: key in doc.spans for all predicted entity spans with their scores.
    neg_span_weight: weight of non-entity ("O") spans in the source cross-entropy.
    scorer: scoring function, by default spaCy's NER scorer (ents_p/r/f).
    """
    return SpanContProto(
        nlp.vocab, model, name, spans_key=spans_key, neg_span_weight=neg_span_weight, scorer=scorer
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
            "max_span_length": model.attrs["max_span_length"],
            "token_width": None,
        }

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
        self._allow_extra_label()
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
        validate_get_examples(get_examples, "SpanContProto.initialize")
        examples = list(get_examples())
        if labels is not None:
            for label in labels:
                self.add_label(label)
        else:
            for eg in examples:
                for ent in eg.reference.ents:
                    self.add_label(ent.label_)
        if not self.labels:
            raise ValueError(
                f"{self.name}: no entity labels found. Give training examples with "
                "doc.ents or pass labels to initialize ([initialize.components."
                f"{self.name}.labels])."
            )
        self._warn_unreachable(examples)
        head = self.model.get_ref("span_head")
        head.set_dim("nO", len(self.labels) + 1)
        sample = [eg.x for eg in examples[:64]]
        self.model.initialize(X=sample)
        self.cfg["token_width"] = head.get_dim("nI")

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
            cand_spans = doc_spans[is_entity]
            cand_labels = best[is_entity]
            cand_scores = doc_probs[is_entity][numpy.arange(len(cand_labels)), cand_labels]
            keep = decode_non_overlapping(cand_spans, cand_scores, len(doc))
            doc.ents = [
                Span(doc, int(s), int(e), label=class_names[c])
                for (s, e), c in zip(cand_spans[keep], cand_labels[keep])
            ]
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
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "SpanContProto.update")
        self._check_labels(examples)
        if not any(len(eg.predicted) for eg in examples):
            return losses
        outputs, backprop = self.model.begin_update([eg.predicted for eg in examples])
        loss, grads = self.get_loss(examples, outputs)
        backprop(grads)
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

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
        """Source cross-entropy (eq. 1) over all enumerated spans: "O" spans weighted
        by neg_span_weight, spans touching a token with missing annotation left out,
        each sentence's spans averaged, then the batch averaged."""
        examples = list(examples)
        targets, scored, doc_index = self.gold_targets(examples, outputs.spans)
        weights = numpy.where(targets == OUTSIDE, self.cfg["neg_span_weight"], 1.0)
        device = self.model.get_ref("span_head").layers[0].shims[0].device
        logits = xp2torch(outputs.logits, requires_grad=True, device=device)
        span_weights = per_group_mean_weights(
            torch.as_tensor(doc_index, device=device), torch.as_tensor(scored, device=device)
        ) * torch.as_tensor(weights, dtype=torch.float32, device=device)
        loss = weighted_cross_entropy(logits, torch.as_tensor(targets, device=device), span_weights)
        if logits.shape[0] == 0:
            return 0.0, SpanGradients(d_logits=self.model.ops.alloc2f(*outputs.logits.shape))
        loss.backward()
        d_logits = torch2xp(logits.grad, ops=self.model.ops)
        return float(loss.item()), SpanGradients(d_logits=d_logits)

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
            return
        if not self.cfg.get("token_width") or not self.labels:
            raise ValueError(
                f"{self.name}: the saved component has no labels or token width; it was "
                "saved before nlp.initialize()."
            )
        head.set_dim("nI", self.cfg["token_width"])
        head.set_dim("nO", len(self.labels) + 1)
        head.initialize()

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
        util.from_disk(path, {"model": lambda p: self._load_model_bytes(p.read_bytes())}, exclude)
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
        return self

    def _load_model_bytes(self, data: bytes) -> None:
        try:
            self.model.from_bytes(data)
        except AttributeError:
            raise ValueError(Errors.E149) from None
