import numpy
import pytest
import torch
from torch.nn import functional as F
from thinc.api import Ragged

from spacy_contproto.model import first_last_pooling
from spacy_contproto.span_head import SpanHead


def test_first_last_pooling_forward_backward():
    pool = first_last_pooling()
    X = numpy.arange(12, dtype="f").reshape(6, 2)
    # tokens of 2, 0, 1 and 3 word-pieces
    Y, backprop = pool(Ragged(X, numpy.array([2, 0, 1, 3], dtype="i")), is_train=True)
    assert Y.tolist() == [
        [0, 1, 2, 3],  # first piece row 0, last piece row 1
        [0, 0, 0, 0],  # no piece: zeros
        [4, 5, 4, 5],  # one piece is both first and last
        [6, 7, 10, 11],
    ]
    dY = numpy.ones((4, 4), dtype="f")
    dX = backprop(dY).data
    # one-piece token gets both halves' gradients; middle piece of the 3-piece token none
    assert dX.tolist() == [[1, 1], [1, 1], [2, 2], [1, 1], [0, 0], [1, 1]]


def make_head(mode, n_in=8):
    torch.manual_seed(0)
    return SpanHead(
        n_in, 3, max_span_length=4, width_embedding_width=5, hidden_width=None,
        projection_width=6, dropout=0.0, token_features=mode,
    )


def test_span_representation_first_last_uses_halves():
    head = make_head("first_last")
    tokens = torch.arange(24, dtype=torch.float32).reshape(3, 8)
    z = head.span_representations(tokens, torch.tensor([0]), torch.tensor([3]))
    assert z.shape == (1, 4 + 4 + 5)
    assert z[0, :4].tolist() == [0, 1, 2, 3]  # first half of token 0
    assert z[0, 4:8].tolist() == [20, 21, 22, 23]  # second half of token 2
    assert torch.equal(z[0, 8:], head.width_embedding.weight[2])


def test_span_representation_pooled_and_outputs():
    head = make_head("pooled")
    tokens = torch.randn(5, 8)
    logits, z, projected = head(tokens, torch.tensor([0, 1, 4]), torch.tensor([1, 3, 5]))
    assert logits.shape == (3, 3) and z.shape == (3, 8 + 8 + 5) and projected.shape == (3, 6)
    assert torch.allclose(z[1, :8], tokens[1]) and torch.allclose(z[1, 8:16], tokens[2])
    assert torch.allclose(projected.norm(dim=1), torch.ones(3))
    logits2, z2 = head(tokens, torch.tensor([0]), torch.tensor([1]), with_projection=False)
    assert torch.allclose(logits2, logits[:1])
    logits3, z3 = head(tokens, torch.tensor([0]), torch.tensor([1]), with_projection=False, with_representations=False)
    assert z3 is None and torch.allclose(logits3, logits[:1])


def test_span_head_outputs_float32_under_autocast():
    """Thinc's grad scaler scales the gradients handed to backward, which take the
    outputs' dtype: float16 outputs would round small gradients to 0 before scaling."""
    head = make_head("pooled")
    tokens = torch.randn(5, 8)
    with torch.autocast("cpu", dtype=torch.float16):
        outputs = head(tokens, torch.tensor([0, 1, 4]), torch.tensor([1, 3, 5]))
        assert head.classifier[-1](torch.randn(2, head.classifier[-1].in_features)).dtype == torch.float16
    assert [o.dtype for o in outputs] == [torch.float32] * 3
    logits = outputs[0]
    scaled = torch.full_like(logits, 1e-8).to(logits.dtype) * 2.0**16  # model.py's cast, then the scaler
    torch.autograd.backward([logits], [scaled])
    assert head.classifier[-1].weight.grad.abs().sum() > 0


def test_span_head_rejects_odd_first_last_width():
    with pytest.raises(ValueError, match="even width"):
        make_head("first_last", n_in=7)
    with pytest.raises(ValueError, match="token_features"):
        make_head("middle")


@pytest.mark.parametrize("mode", ["first_last", "pooled"])
def test_per_token_first_layers_equal_the_concatenated_span_vector(mode):
    head = make_head(mode)
    head.eval()
    tokens = torch.randn(7, 8, dtype=torch.float32)
    starts = torch.tensor([0, 0, 2, 3, 6])
    ends = torch.tensor([1, 4, 5, 4, 7])
    logits, z, projected = head(tokens, starts, ends)
    expected_logits = head.classifier(z)
    expected_projected = F.normalize(head.projection(z), dim=-1)
    assert torch.allclose(logits, expected_logits, atol=1e-5)
    assert torch.allclose(projected, expected_projected, atol=1e-5)


def fixed_features_tok2vec(width=8, mixed_precision=False):
    """A tok2vec giving each token a random vector, the same for a Doc's tokens at every call;
    with mixed_precision it holds a PyTorch shim that claims mixed precision (as an embedded
    transformer's would)."""
    from thinc.api import Model, PyTorchWrapper_v2

    def forward(model, docs, is_train):
        return [model.ops.asarray2f(numpy.random.RandomState(len(doc)).randn(len(doc), width)) for doc in docs], lambda d: []

    layers = [PyTorchWrapper_v2(torch.nn.Linear(1, 1), mixed_precision=True)] if mixed_precision else []
    return Model("fixed_features", forward, layers=layers)


def two_view_head_grads(monkeypatch, mixed_precision):
    """The span head's parameter gradients after one two-view backward of ones into the logits."""
    from spacy.tokens import Doc
    from spacy.vocab import Vocab
    from thinc.api import fix_random_seed
    from thinc.shims.pytorch_grad_scaler import PyTorchGradScaler

    from spacy_contproto.model import SpanGradients, build_span_contproto_model, span_head_module

    # Thinc's grad scaler refuses CPU tensors; the scaling itself is a multiplication
    monkeypatch.setattr(PyTorchGradScaler, "_scale_tensor",
                        lambda self, t, per_device, inplace: t.mul_(self._scale) if inplace else t * self._scale)
    fix_random_seed(0)
    model = build_span_contproto_model(fixed_features_tok2vec(), token_features="pooled", dropout=0.0,
                                       mixed_precision=mixed_precision)
    model.get_ref("span_head").set_dim("nO", 3)
    docs = [Doc(Vocab(), words=["a", "b", "c"]), Doc(Vocab(), words=["d", "e"])]
    model.initialize(X=docs)
    model.attrs["n_views"] = 2
    outputs, backprop = model.begin_update(docs)
    assert outputs.logits.shape[0] == 2 * outputs.spans.data.shape[0]
    n = outputs.spans.data.shape[0]
    assert numpy.allclose(outputs.logits[:n], outputs.logits[n:])  # no dropout: equal views
    backprop(SpanGradients(d_logits=numpy.ones_like(outputs.logits)))
    return {name: p.grad.clone() for name, p in span_head_module(model).named_parameters() if p.grad is not None}


def test_two_views_keep_both_views_head_gradients_under_mixed_precision(monkeypatch):
    """Thinc's grad scaler divides all accumulated parameter gradients at each backward: with
    one head call per view, the first view's gradients were divided by the loss scale twice."""
    plain = two_view_head_grads(monkeypatch, mixed_precision=False)
    scaled = two_view_head_grads(monkeypatch, mixed_precision=True)
    bias = "classifier.3.bias"
    # 2 docs: 6 + 3 spans, each view's d_logits of ones
    assert plain[bias].tolist() == [18.0, 18.0, 18.0]
    assert plain.keys() == scaled.keys()
    for name in plain:
        assert torch.allclose(plain[name], scaled[name], rtol=1e-3, atol=1e-4), name


def test_prediction_computes_span_vectors_only_when_asked():
    """Prediction needs the logits only: z (n_spans x span width, the largest output) is
    computed in training, and in prediction with attrs predict_representations."""
    from spacy.tokens import Doc
    from spacy.vocab import Vocab

    from spacy_contproto.model import build_span_contproto_model, span_head_module

    model = build_span_contproto_model(fixed_features_tok2vec(), token_features="pooled", dropout=0.0)
    model.get_ref("span_head").set_dim("nO", 3)
    docs = [Doc(Vocab(), words=["a", "b", "c"]), Doc(Vocab(), words=[])]
    model.initialize(X=docs)
    plain = model.predict(docs)
    assert plain.representations is None and plain.projections is None and plain.logits.shape == (6, 3)
    model.attrs["predict_representations"] = True
    asked = model.predict(docs)
    assert asked.representations.shape == (6, span_head_module(model).span_width)
    numpy.testing.assert_allclose(asked.logits, plain.logits, rtol=1e-6)
    assert model.predict([Doc(Vocab(), words=[])]).representations.shape[0] == 0
    model.attrs["predict_representations"] = False
    assert model.predict([Doc(Vocab(), words=[])]).representations is None
    trained, _ = model.begin_update(docs)
    assert trained.representations.shape == asked.representations.shape


def test_encoder_views_refuse_a_mixed_precision_embedded_encoder():
    from spacy.tokens import Doc
    from spacy.vocab import Vocab

    from spacy_contproto.model import build_span_contproto_model

    model = build_span_contproto_model(fixed_features_tok2vec(mixed_precision=True), token_features="pooled")
    model.get_ref("span_head").set_dim("nO", 3)
    docs = [Doc(Vocab(), words=["a", "b", "c"])]
    model.initialize(X=docs)
    model.attrs.update(n_views=2, view_source="encoder")
    with pytest.raises(ValueError, match="mixed_precision = false"):
        model.begin_update(docs)
    model.attrs["view_source"] = "head"
    outputs, _ = model.begin_update(docs)
    assert outputs.n_views == 2
