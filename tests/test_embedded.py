"""span_contproto with its own (embedded) transformer instead of a listener."""
import shutil

import numpy
import spacy
from spacy.tokens import DocBin
from spacy.training import Example

from .conftest import CONFIGS, run_spacy_train

EMBEDDED_TOK2VEC = """
[components.span_contproto.model.tok2vec]
@architectures = "spacy-transformers.Tok2VecTransformer.v3"
name = ${paths.encoder}
grad_factor = 1.0
mixed_precision = false

[components.span_contproto.model.tok2vec.get_spans]
@span_getters = "spacy-transformers.strided_spans.v1"
window = 128
stride = 96

[components.span_contproto.model.tok2vec.pooling]
@layers = "spacy_contproto.first_last_pooling.v1"

[components.span_contproto.model.tok2vec.tokenizer_config]
use_fast = true

[components.span_contproto.model.tok2vec.transformer_config]

[components.span_contproto.model.tok2vec.grad_scaler_config]
"""


def embedded_config_text() -> str:
    config = spacy.util.load_config(CONFIGS / "teacher_cpu.cfg", interpolate=False)
    config["nlp"]["pipeline"] = ["span_contproto"]
    del config["components"]["transformer"]
    del config["components"]["span_contproto"]["model"]["tok2vec"]
    return config.to_str() + EMBEDDED_TOK2VEC


def test_embedded_transformer_trains_saves_and_loads_without_encoder_folder(
    tmp_path, tiny_encoder, synthetic_corpus
):
    encoder = shutil.copytree(tiny_encoder, tmp_path / "encoder-copy")
    config_path = tmp_path / "embedded.cfg"
    config_path.write_text(embedded_config_text())
    run_spacy_train(
        config_path, tmp_path / "out", encoder, synthetic_corpus,
        "--training.max_epochs", "0", "--training.max_steps", "150",
        "--training.eval_frequency", "50",
        "--training.optimizer.learn_rate.initial_rate", "0.001",
        "--training.optimizer.learn_rate.warmup_steps", "10",
    )
    shutil.rmtree(encoder)  # the saved pipeline must carry the transformer itself
    nlp = spacy.load(tmp_path / "out" / "model-best")
    assert nlp.pipe_names == ["span_contproto"]
    dev = list(DocBin().from_disk(synthetic_corpus["dev"]).get_docs(nlp.vocab))
    scores = nlp.evaluate([Example(nlp.make_doc(d.text), d) for d in dev])
    assert scores["ents_f"] > 0.8, scores

    texts = [d.text for d in dev[:5]]
    probs = nlp.get_pipe("span_contproto").predict([nlp.make_doc(t) for t in texts]).probabilities
    nlp.to_disk(tmp_path / "again")
    reloaded = spacy.load(tmp_path / "again")
    probs2 = reloaded.get_pipe("span_contproto").predict([nlp.make_doc(t) for t in texts]).probabilities
    assert numpy.array_equal(probs, probs2)
