"""Thinc architecture: tok2vec (transformer features) >> PyTorch span head.

The model maps a batch of Docs to :class:`SpanOutputs`: the enumerated spans of
every Doc and, for each span, classifier logits, the span representation z and
(in training) its L2-normalised projection for the contrastive loss.
"""
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy
from spacy.pipeline.tok2vec import Tok2VecListener
from spacy.tokens import Doc
from spacy_transformers.layers import TransformerListener
from spacy.util import registry
from thinc.api import ArgsKwargs, Model, PyTorchWrapper_v2, torch2xp, xp2torch
from thinc.types import Floats2d, Ragged

from .span_head import TOKEN_FEATURE_MODES, SpanHead
from .spans import enumerate_spans, sentence_ids


@dataclass
class SpanOutputs:
    spans: Ragged  # data: Ints2d (n_spans, 2) of [start, end) per doc; lengths: spans per doc
    logits: Floats2d
    # z = [h_start; h_end; width]; in prediction only with attrs predict_representations
    representations: Optional[Floats2d]
    projections: Optional[Floats2d] = None  # normalised projection of z (training only)
    n_views: int = 1  # arrays hold n_views dropout views of every span, view-major


@dataclass
class SpanGradients:
    d_logits: Optional[Floats2d] = None
    d_representations: Optional[Floats2d] = None
    d_projections: Optional[Floats2d] = None


def doc_spans(docs: List[Doc], max_span_length: int) -> Ragged:
    """Enumerate the spans of each Doc (within its sentences when they are set)."""
    per_doc = []
    for doc in docs:
        if doc.has_annotation("SENT_START"):
            ids = sentence_ids(doc.to_array("SENT_START"))
        else:
            ids = numpy.zeros(len(doc), dtype=numpy.int64)
        per_doc.append(enumerate_spans(ids, max_span_length))
    lengths = numpy.asarray([len(s) for s in per_doc], dtype=numpy.int32)
    data = numpy.concatenate(per_doc) if per_doc else numpy.zeros((0, 2), dtype=numpy.int32)
    return Ragged(data.astype(numpy.int32).reshape(-1, 2), lengths)


@registry.architectures("spacy_contproto.SpanContProto.v1")
def build_span_contproto_model(
    tok2vec: Model[List[Doc], List[Floats2d]],
    max_span_length: int = 4,
    width_embedding_width: int = 64,
    hidden_width: Optional[int] = None,
    projection_width: int = 128,
    dropout: float = 0.2,
    token_features: str = "first_last",
    mixed_precision: bool = False,
) -> Model[List[Doc], SpanOutputs]:
    """Span-based NER model of the paper's §2.2 plus the projection head of §3.1.

    tok2vec: token features, usually a spacy-transformers listener or embedded
        transformer; with token_features="first_last" its pooling must be
        spacy_contproto.first_last_pooling.v1.
    max_span_length: longest span enumerated, in tokens (published code: 4).
    width_embedding_width: size of the span-width embedding.
    hidden_width: hidden layer of the classifier MLP; null = span vector width.
    projection_width: output of the contrastive projection head (paper: 128).
    dropout: dropout inside the classifier (published: 0.2) and on the token features
        (this implementation).
    token_features: "first_last" (start = first word-piece of the first token,
        end = last word-piece of the last token) or "pooled" (one vector per token).
    mixed_precision: run the span head under torch autocast (GPU).
    """
    if max_span_length < 1:
        raise ValueError(f"max_span_length must be >= 1, got {max_span_length}")
    for name, width in (("width_embedding_width", width_embedding_width), ("projection_width", projection_width),
                        ("hidden_width", 1 if hidden_width is None else hidden_width)):
        if width < 1:
            raise ValueError(f"{name} must be >= 1, got {width}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if token_features not in TOKEN_FEATURE_MODES:
        raise ValueError(
            f"token_features must be one of {TOKEN_FEATURE_MODES}, got {token_features!r}"
        )
    # another pooling would give vectors of the right width whose halves mean nothing
    if token_features == "first_last" and not any(node.name == "first_last_pooling" for node in tok2vec.walk()):
        raise ValueError(
            'token_features = "first_last" reads the first and last word piece of each token, which only '
            "the pooling spacy_contproto.first_last_pooling.v1 provides (in the transformer listener or "
            'embedded transformer); use that pooling, or token_features = "pooled" with another'
        )
    head: Model = Model(
        "span_contproto_head",
        forward=_head_forward,
        init=_head_init,
        dims={"nI": None, "nO": None},
        attrs={
            "max_span_length": max_span_length,
            "width_embedding_width": width_embedding_width,
            "hidden_width": hidden_width,
            "projection_width": projection_width,
            "dropout": dropout,
            "token_features": token_features,
            "mixed_precision": mixed_precision,
        },
    )
    model: Model = Model(
        "span_contproto",
        forward=_forward,
        init=_init,
        layers=[tok2vec, head],
        attrs={
            "max_span_length": max_span_length,
            "predict_projections": False,
            "predict_representations": False,
            "n_views": 1,
            "view_source": "head",
        },
    )
    model.set_ref("tok2vec", tok2vec)
    model.set_ref("span_head", head)
    return model


def _init(model: Model, X: Optional[List[Doc]] = None, Y=None) -> None:
    tok2vec = model.get_ref("tok2vec")
    head = model.get_ref("span_head")
    non_empty = [doc for doc in X if len(doc)] if X is not None else None
    if not non_empty and not head.has_dim("nI"):
        raise ValueError(
            "span_contproto needs at least one non-empty Doc to infer the width "
            "of its token features during initialization."
        )
    if any(isinstance(node, TransformerListener) and not node.has_dim("nO") for node in tok2vec.walk()):
        # the upstream transformer component sets its listeners' width when it links them
        raise ValueError(
            "span_contproto's tok2vec listens to a `transformer` component, but no such component has "
            "linked it: add the transformer component before span_contproto in the pipeline and initialize "
            "the whole pipeline (nlp.initialize()), or embed the encoder in span_contproto's own model "
            "(tok2vec = spacy-transformers.Tok2VecTransformer.v3, see README)."
        )
    # a transformer cannot be initialised on empty Docs alone
    tok2vec.initialize(X=non_empty) if non_empty else tok2vec.initialize()
    if not head.has_dim("nI"):
        sample = non_empty[:8]
        features = tok2vec.predict(sample)
        widths = {f.shape[1] for f in features if f.shape[0]}
        if len(widths) != 1:
            raise ValueError(f"tok2vec gave token vectors of inconsistent widths {widths}")
        head.set_dim("nI", widths.pop())
    head.initialize()


def span_head_module(model: Model) -> SpanHead:
    """The initialised torch SpanHead inside a span_contproto model."""
    return model.get_ref("span_head").layers[0].shims[0]._model


def _head_init(model: Model, X=None, Y=None) -> None:
    if model.layers:
        return
    for dim in ("nI", "nO"):
        if not model.has_dim(dim):
            raise ValueError(f"span_contproto head: dimension {dim} must be set before initialize")
    attrs = model.attrs
    module = SpanHead(
        model.get_dim("nI"),
        model.get_dim("nO"),
        max_span_length=attrs["max_span_length"],
        width_embedding_width=attrs["width_embedding_width"],
        hidden_width=attrs["hidden_width"],
        projection_width=attrs["projection_width"],
        dropout=attrs["dropout"],
        token_features=attrs["token_features"],
    )
    model._layers = [
        PyTorchWrapper_v2(
            module,
            convert_inputs=_convert_head_inputs,
            convert_outputs=_convert_head_outputs,
            mixed_precision=attrs["mixed_precision"],
        )
    ]


def _head_forward(model: Model, X, is_train: bool):
    return model.layers[0](X, is_train)


def _convert_head_inputs(model: Model, X, is_train: bool):
    tokens, starts, ends, with_projection, with_representations = X
    device = model.shims[0].device
    tokens_t = xp2torch(tokens, requires_grad=is_train, device=device)
    starts_t = xp2torch(model.ops.xp.asarray(starts, dtype="int64"), device=device)
    ends_t = xp2torch(model.ops.xp.asarray(ends, dtype="int64"), device=device)

    def backprop(d_inputs: ArgsKwargs) -> Floats2d:
        return torch2xp(d_inputs.args[0], ops=model.ops)

    inputs = ArgsKwargs(
        args=(tokens_t, starts_t, ends_t),
        kwargs={"with_projection": with_projection, "with_representations": with_representations},
    )
    return inputs, backprop


def _convert_head_outputs(model: Model, inputs_outputs, is_train: bool):
    _, outputs = inputs_outputs
    # SpanHead returns float32 under autocast too: the gradients below keep that dtype
    # until Thinc's grad scaler has scaled them
    converted = tuple(None if t is None else torch2xp(t.float(), ops=model.ops) for t in outputs)

    def backprop(grads: Tuple[Optional[Floats2d], ...]) -> ArgsKwargs:
        tensors, grad_tensors = [], []
        for tensor, grad in zip(outputs, grads):
            if grad is not None:
                tensors.append(tensor)
                grad_t = xp2torch(model.ops.asarray(grad), device=tensor.device)
                grad_tensors.append(grad_t.to(tensor.dtype))
        return ArgsKwargs(args=(tensors,), kwargs={"grad_tensors": grad_tensors})

    return converted, backprop


def uses_listener(model: Model) -> bool:
    """Whether the model's tok2vec listens to a shared upstream component (spacy-transformers'
    TransformerListener or spaCy's Tok2VecListener): such a listener gives one output per
    batch, so it cannot give two encoder views."""
    return any(isinstance(node, (TransformerListener, Tok2VecListener)) for node in model.get_ref("tok2vec").walk())


def _forward(
    model: Model, docs: List[Doc], is_train: bool
) -> Tuple[SpanOutputs, Callable[[SpanGradients], List[Doc]]]:
    """Spans and their outputs. In training with attrs n_views=2 every span gets two
    dropout views, stacked view-major: from two tok2vec passes (view_source
    "encoder") or from two dropout passes of the span head over one tok2vec pass ("head"),
    made in one head call over the stacked views."""
    tok2vec = model.get_ref("tok2vec")
    head = model.get_ref("span_head")
    ops = model.ops
    spans = doc_spans(docs, model.attrs["max_span_length"])
    n_classes = head.get_dim("nO")
    with_projection = is_train or model.attrs["predict_projections"]
    with_representations = is_train or model.attrs["predict_representations"]
    n_views = model.attrs.get("n_views", 1) if is_train else 1
    if spans.data.shape[0] == 0:
        # No token in the whole batch (only empty Docs): spacy-transformers' pooling
        # cannot run on such a batch, and there is nothing to score.
        outputs = SpanOutputs(
            spans=spans,
            logits=ops.alloc2f(0, n_classes),
            representations=ops.alloc2f(0, span_head_module(model).span_width) if with_representations else None,
            projections=ops.alloc2f(0, head.attrs["projection_width"]) if with_projection else None,
            n_views=n_views,
        )
        return outputs, lambda grads: []
    n_encoder_passes = n_views if model.attrs.get("view_source", "head") == "encoder" else 1
    if n_encoder_passes > 1 and uses_listener(model):
        raise ValueError(
            "span_contproto: views = \"encoder\" needs the component's own (embedded) "
            "transformer; with a listener to a shared component (transformer or tok2vec) use views = \"head\"."
        )
    if n_encoder_passes > 1 and is_train and any(
        getattr(shim, "_mixed_precision", False) for node in tok2vec.walk() for shim in node.shims
    ):
        # Thinc's PyTorch shim unscales all accumulated parameter gradients at each backward
        raise ValueError(
            "span_contproto: views = \"encoder\" backpropagates through the embedded transformer twice per "
            "update, which Thinc's grad scaler does not support under mixed precision (the second backward "
            "would divide the first pass's gradients by the loss scale again); set the embedded "
            "transformer's mixed_precision = false or use views = \"head\"."
        )
    encoder_passes = [tok2vec(docs, is_train) for _ in range(n_encoder_passes)]
    features = encoder_passes[0][0]
    lengths = numpy.asarray([f.shape[0] for f in features], dtype=numpy.int64)
    doc_offsets = numpy.cumsum(lengths) - lengths
    span_offsets = numpy.repeat(doc_offsets, spans.lengths)
    starts = spans.data[:, 0] + span_offsets
    ends = spans.data[:, 1] + span_offsets
    n_spans = spans.data.shape[0]
    # One head call for all views, the views' token rows stacked (spans of view v index
    # block v): with mixed precision, Thinc's grad scaler divides every parameter's
    # accumulated gradient at each backward, so a second head call's backward would
    # wipe out the first view's share of the head's gradients.
    view_tokens = [
        ops.xp.concatenate([f for f in encoder_passes[min(view, n_encoder_passes - 1)][0] if f.shape[0]], axis=0)
        for view in range(n_views)
    ]
    n_tokens = view_tokens[0].shape[0]
    view_offsets = numpy.repeat(numpy.arange(n_views, dtype=numpy.int64) * n_tokens, n_spans)
    head_inputs = (
        view_tokens[0] if n_views == 1 else ops.xp.concatenate(view_tokens, axis=0),
        numpy.tile(starts, n_views) + view_offsets,
        numpy.tile(ends, n_views) + view_offsets,
        with_projection,
        with_representations,
    )
    head_outputs, backprop_head = head(head_inputs, is_train)
    outputs = SpanOutputs(
        spans=spans,
        logits=head_outputs[0],
        representations=head_outputs[1],
        projections=head_outputs[2] if with_projection else None,
        n_views=n_views,
    )

    def backprop(grads: SpanGradients) -> List[Doc]:
        head_grads = [grads.d_logits, grads.d_representations]
        if with_projection:
            head_grads.append(grads.d_projections)
        d_tokens_per_pass = [None] * n_encoder_passes
        if any(g is not None for g in head_grads):
            d_tokens = backprop_head(tuple(head_grads))
            for view in range(n_views):
                d_view = d_tokens[view * n_tokens : (view + 1) * n_tokens]
                p = min(view, n_encoder_passes - 1)
                d_tokens_per_pass[p] = d_view if d_tokens_per_pass[p] is None else d_tokens_per_pass[p] + d_view
        split_at = numpy.cumsum(lengths)[:-1]
        result: List[Doc] = []
        for (pass_features, backprop_tok2vec), d_tokens in zip(encoder_passes, d_tokens_per_pass):
            if d_tokens is None:
                d_tokens = ops.alloc2f(*view_tokens[0].shape)
            d_features = ops.xp.split(d_tokens, split_at)
            d_features = [
                d if f.shape[0] else ops.alloc2f(*f.shape) for d, f in zip(d_features, pass_features)
            ]
            result = backprop_tok2vec(d_features)
        return result

    return outputs, backprop


@registry.layers("spacy_contproto.first_last_pooling.v1")
def first_last_pooling() -> Model[Ragged, Floats2d]:
    """Pool word-pieces to tokens as [first word-piece; last word-piece].

    A token with no word-piece (e.g. a whitespace token) gets zeros.
    """
    return Model("first_last_pooling", _first_last_forward)


def _first_last_forward(model: Model, Xr: Ragged, is_train: bool):
    ops = model.ops
    X = Xr.dataXd
    lengths = ops.asarray(Xr.lengths, dtype="int64")
    n_rows, width = lengths.shape[0], X.shape[1]
    has_pieces = lengths > 0
    firsts = ops.xp.cumsum(lengths) - lengths
    lasts = firsts + lengths - 1
    rows = ops.xp.nonzero(has_pieces)[0]
    Y = ops.alloc2f(n_rows, 2 * width)
    Y[rows, :width] = X[firsts[rows]]
    Y[rows, width:] = X[lasts[rows]]

    def backprop(dY: Floats2d) -> Ragged:
        dX = ops.alloc2f(X.shape[0], width)
        # scatter_add: first and last are the same row for one-piece tokens
        ops.scatter_add(dX, firsts[rows].astype("int32"), ops.as_contig(dY[rows, :width]))
        ops.scatter_add(dX, lasts[rows].astype("int32"), ops.as_contig(dY[rows, width:]))
        return Ragged(dX, Xr.lengths)

    return Y, backprop
