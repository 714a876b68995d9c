"""Training-step time: ContProto vs a plain span head on the same transformer passes.

All variants share the pipeline of configs/contproto_cpu.cfg (transformer + listening
span_contproto) and train on the same batches of 16 source + 16 pseudo-labelled target
sentences. Variants:

- teacher: source cross-entropy only (spacy_contproto.Supervised.v1), source batch of 32
- plain: vanilla self-training, one view (source CE + target soft CE): the plain span head
- contproto: the full method, two head views on one transformer pass (listener)
- plain_embedded / contproto_embedded: the same with an embedded transformer, where
  ContProto's two views are two transformer passes (the paper's way)

The ratio contproto / plain is the cost of the head's second view, the contrastive and
consistency losses, prototypes, refinement and the pseudo-label store. Steps of the
variants alternate within each round; the median step time counts.

    python benchmarks/speed_training.py --encoder PATH_OR_NAME
"""
import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import spacy
import torch
from spacy.tokens import DocBin
from spacy.training import Corpus
from thinc.api import fix_random_seed

from spacy_contproto.pseudo_label import pseudo_label_file
from spacy_contproto.testing import make_tiny_encoder, synthetic_docs
from spacy_contproto.training import SelfTrainingCorpus

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
CONTPROTO = "components.span_contproto.contproto"
VARIANTS = {
    "teacher": {CONTPROTO: {"@misc": "spacy_contproto.Supervised.v1"}},
    "plain": {f"{CONTPROTO}.contrastive_loss": False, f"{CONTPROTO}.consistency_loss": False,
              f"{CONTPROTO}.prototypes": False},
    "contproto": {},
    # the component owns its transformer: ContProto's views are two transformer passes
    "plain_embedded": {"embedded": True, f"{CONTPROTO}.contrastive_loss": False,
                       f"{CONTPROTO}.consistency_loss": False, f"{CONTPROTO}.prototypes": False},
    "contproto_embedded": {"embedded": True},
}
EMBEDDED_TOK2VEC = {
    "@architectures": "spacy-transformers.Tok2VecTransformer.v3",
    "name": "${paths.encoder}",
    "grad_factor": 1.0,
    "mixed_precision": False,
    "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 128, "stride": 96},
    "pooling": {"@layers": "spacy_contproto.first_last_pooling.v1"},
    "tokenizer_config": {"use_fast": True},
    "transformer_config": {},
    "grad_scaler_config": {},
}


def build(encoder, paths, overrides):
    config = spacy.util.load_config(
        REPO / "configs" / "contproto_cpu.cfg",
        overrides={"paths.encoder": encoder, **{f"paths.{k}": str(v) for k, v in paths.items()}},
        interpolate=False,
    )
    overrides = dict(overrides)
    if overrides.pop("embedded", False):
        config["nlp"]["pipeline"] = ["span_contproto"]
        del config["components"]["transformer"]
        config["components"]["span_contproto"]["model"]["tok2vec"] = dict(EMBEDDED_TOK2VEC)
    for key, value in overrides.items():
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return spacy.util.load_model_from_config(config, auto_fill=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", help="HuggingFace name or folder (default: a tiny random BERT)")
    parser.add_argument("--source", type=Path, help="labelled source .spacy (default: synthetic)")
    parser.add_argument("--target", type=Path, help="unlabelled target .spacy (default: synthetic)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="speed_training")
    parser.add_argument("--gpu", type=int, default=-1, help="GPU id (-1: CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.gpu >= 0:
        spacy.require_gpu(args.gpu)
    # CUDA kernels run asynchronously: wait for them before reading the clock
    sync = torch.cuda.synchronize if args.gpu >= 0 else (lambda: None)
    encoder = args.encoder or str(make_tiny_encoder(REPO / "benchmarks" / ".cache" / "tiny-bert"))
    tmp = Path(tempfile.mkdtemp(prefix="contproto-speed-"))
    vocab = spacy.blank("xx").vocab
    source, target = args.source, args.target
    if source is None:
        source = tmp / "source.spacy"
        DocBin(docs=synthetic_docs(vocab, 400, seed=1)).to_disk(source)
    if target is None:
        target = tmp / "target.spacy"
        DocBin(docs=synthetic_docs(vocab, 400, seed=2), store_user_data=True).to_disk(target)
    paths = {"train": source, "dev": source, "target": target}
    # a teacher (initialised only: speed does not depend on its quality) labels the target
    teacher = build(encoder, {**paths, "target": source}, VARIANTS["teacher"])
    teacher.initialize(lambda: Corpus(source)(teacher))
    labelled = tmp / "target.pl.spacy"
    pseudo_label_file(teacher, target, labelled, progress=False)
    paths["target"] = labelled

    pipelines, batches = {}, {}
    for name, overrides in VARIANTS.items():
        fix_random_seed(0)
        nlp = build(encoder, paths, overrides)
        examples = list(SelfTrainingCorpus(source, labelled)(nlp))
        optimizer = nlp.initialize(lambda: examples)
        src = examples[0::2]
        mixed = [examples[i : i + 32] for i in range(0, len(examples) - 31, 32)]
        only_source = [src[i : i + 32] for i in range(0, len(src) - 31, 32)]
        batches[name] = only_source if name == "teacher" else mixed
        pipelines[name] = (nlp, optimizer)
    times = {name: [] for name in VARIANTS}
    words = {name: [] for name in VARIANTS}
    step = 0
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for i in range(args.steps):
            for name, (nlp, optimizer) in pipelines.items():
                batch = batches[name][(round_ * args.steps + i) % len(batches[name])]
                nlp.get_pipe("span_contproto").set_training_state(epoch=1, step=step)
                sync()
                start = time.perf_counter()
                nlp.update(batch, sgd=optimizer, losses={})
                sync()
                elapsed = time.perf_counter() - start
                if round_ > 0:
                    times[name].append(elapsed)
                    words[name].append(sum(len(eg.predicted) for eg in batch))
            step += 1
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "benchmark": "training step time (nlp.update incl. optimizer), median",
        "machine": (f"{torch.cuda.get_device_name(args.gpu)}, " if args.gpu >= 0 else "")
        + f"{platform.machine()} torch threads={args.threads}",
        "encoder": args.encoder or "tiny random BERT (2 layers, hidden 32)",
        "source": str(args.source or "synthetic"), "target": str(args.target or "synthetic"),
        "batch": "teacher: 32 source sentences; plain/contproto: 16 source + 16 target",
        "steps_per_round": args.steps, "rounds": args.rounds,
        "median_seconds_per_step": median,
        "mean_words_per_batch": {n: statistics.mean(w) for n, w in words.items()},
        "ratio_contproto_over_plain": median["contproto"] / median["plain"],
        "ratio_contproto_embedded_over_plain_embedded": median["contproto_embedded"] / median["plain_embedded"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Training step time ({result['encoder']})", "",
        f"Machine: {result['machine']}; median of {args.rounds} x {args.steps} steps per variant, alternating.", "",
        "| variant | s/step | words/batch |", "|---|---|---|",
        *[f"| {n} | {median[n]:.4f} | {result['mean_words_per_batch'][n]:.0f} |" for n in VARIANTS],
        "", f"contproto / plain (same transformer passes): **{result['ratio_contproto_over_plain']:.2f}x**",
        "", "With the component's own transformer, ContProto's two views are two transformer passes:",
        f"contproto_embedded / plain_embedded: {result['ratio_contproto_embedded_over_plain_embedded']:.2f}x",
    ]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
