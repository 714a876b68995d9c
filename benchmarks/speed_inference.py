"""Inference speed: span_contproto vs spaCy's spancat (and ner) on the same transformer.

Each pipeline is transformer (shared, listener) + one span/entity component (span_contproto_z:
span_contproto also computing the span vectors z, which prediction skips unless
model.attrs["predict_representations"]), trained
for a few steps on the same labelled Docs so that predictions are realistic, then
timed with nlp.pipe over the same texts, alternating pipelines over several rounds
(best round counts). Writes JSON and markdown into benchmarks/results/.

    python benchmarks/speed_inference.py --encoder PATH_OR_NAME [--docs test.spacy]
"""
import argparse
import json
import platform
import random
import time
from pathlib import Path

import spacy
import torch
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import fix_random_seed

from spacy_contproto.testing import make_tiny_encoder, synthetic_docs

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"

SPANCAT = """
[components.spancat]
factory = "spancat"
spans_key = "sc"
threshold = 0.5
max_positive = 1

[components.spancat.suggester]
@misc = "spacy.ngram_suggester.v1"
sizes = {sizes}

[components.spancat.model]
@architectures = "spacy.SpanCategorizer.v1"

[components.spancat.model.reducer]
@layers = "spacy.mean_max_reducer.v1"
hidden_size = 128

[components.spancat.model.scorer]
@layers = "spacy.LinearLogistic.v1"

[components.spancat.model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
pooling = {{"@layers":"reduce_mean.v1"}}
"""

NER = """
[components.ner]
factory = "ner"

[components.ner.model]
@architectures = "spacy.TransitionBasedParser.v2"
state_type = "ner"
extra_state_tokens = false
hidden_width = 64
maxout_pieces = 2
use_upper = false

[components.ner.model.tok2vec]
@architectures = "spacy-transformers.TransformerListener.v1"
grad_factor = 1.0
pooling = {"@layers":"reduce_mean.v1"}
"""


def build_pipeline(component: str, encoder: str, max_span_length: int):
    config = spacy.util.load_config(
        REPO / "configs" / "teacher_cpu.cfg",
        overrides={"paths.encoder": encoder},
        interpolate=False,
    )
    if not component.startswith("span_contproto"):
        del config["components"]["span_contproto"]
        extra = SPANCAT.format(sizes=list(range(1, max_span_length + 1))) if component == "spancat" else NER
        config = spacy.util.load_config_from_str(config.to_str() + extra, interpolate=False)
        config["nlp"]["pipeline"] = ["transformer", component]
    else:
        config["components"]["span_contproto"]["model"]["max_span_length"] = max_span_length
    return spacy.util.load_model_from_config(config, auto_fill=True)


def copy_ents_to_spans(docs, key="sc"):
    for doc in docs:
        doc.spans[key] = list(doc.ents)
    return docs


def train_briefly(nlp, component, train_docs, steps, seed):
    fix_random_seed(seed)
    examples = [Example(nlp.make_doc(d.text), d) for d in train_docs]
    if component == "spancat":
        copy_ents_to_spans([eg.reference for eg in examples])
    optimizer = nlp.initialize(lambda: examples)
    optimizer.learn_rate = 1e-3 if steps else optimizer.learn_rate
    rng = random.Random(seed)
    for _ in range(steps):
        nlp.update(rng.sample(examples, min(16, len(examples))), sgd=optimizer, drop=0.1)
    return nlp


def time_pipe(nlp, texts, batch_size):
    start = time.perf_counter()
    n_words = sum(len(doc) for doc in nlp.pipe(texts, batch_size=batch_size))
    return n_words / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", help="HuggingFace name or folder (default: a tiny random BERT)")
    parser.add_argument("--docs", type=Path, help=".spacy file of Docs to time (default: synthetic)")
    parser.add_argument("--n-docs", type=int, default=500)
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--max-span-length", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--components", default="span_contproto,spancat,ner")
    parser.add_argument("--name", default="speed_inference")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder = args.encoder
    if encoder is None:
        encoder = str(make_tiny_encoder(REPO / "benchmarks" / ".cache" / "tiny-bert"))
    vocab = spacy.blank("xx").vocab
    if args.docs:
        docs = list(DocBin().from_disk(args.docs).get_docs(vocab))[: args.n_docs]
    else:
        docs = synthetic_docs(vocab, args.n_docs, seed=7)
    texts = [doc.text for doc in docs]
    train_docs = synthetic_docs(vocab, 200, seed=1)
    components = args.components.split(",")
    pipelines = {
        c: train_briefly(build_pipeline(c, encoder, args.max_span_length), c, train_docs, args.train_steps, 0)
        for c in components
    }
    if "span_contproto_z" in pipelines:
        pipelines["span_contproto_z"].get_pipe("span_contproto").model.attrs["predict_representations"] = True
    for nlp in pipelines.values():  # warm-up
        list(nlp.pipe(texts[:64], batch_size=args.batch_size))
    rounds = {c: [] for c in components}
    for _ in range(args.rounds):
        for c, nlp in pipelines.items():
            rounds[c].append(time_pipe(nlp, texts, args.batch_size))
    words_per_s = {c: max(r) for c, r in rounds.items()}
    result = {
        "benchmark": "inference words/s, transformer + component, nlp.pipe",
        "machine": f"{platform.machine()} {platform.processor() or ''} torch threads={args.threads}".strip(),
        "encoder": args.encoder or "tiny random BERT (2 layers, hidden 32)",
        "docs": str(args.docs) if args.docs else f"{len(texts)} synthetic sentences",
        "n_words": sum(len(d) for d in docs),
        "max_span_length": args.max_span_length,
        "batch_size": args.batch_size,
        "train_steps": args.train_steps,
        "rounds_words_per_s": rounds,
        "best_words_per_s": words_per_s,
    }
    if "spancat" in words_per_s and "span_contproto" in words_per_s:
        result["ratio_span_contproto_over_spancat"] = words_per_s["span_contproto"] / words_per_s["spancat"]
    if "span_contproto_z" in words_per_s and "span_contproto" in words_per_s:
        result["ratio_without_z_over_with_z"] = words_per_s["span_contproto"] / words_per_s["span_contproto_z"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Inference speed ({result['encoder']})", "",
        f"Machine: {result['machine']}; {result['docs']} ({result['n_words']} words), "
        f"batch {args.batch_size}, max span length {args.max_span_length}, best of {args.rounds} rounds.", "",
        "| pipeline | words/s |", "|---|---|",
        *[f"| transformer + {c} | {w:.0f} |" for c, w in words_per_s.items()],
    ]
    if "ratio_span_contproto_over_spancat" in result:
        lines += ["", f"span_contproto / spancat: **{result['ratio_span_contproto_over_spancat']:.2f}x**"]
    if "ratio_without_z_over_with_z" in result:
        lines += ["", f"span_contproto (prediction without z) / span_contproto_z (with z): "
                      f"**{result['ratio_without_z_over_with_z']:.2f}x**"]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
