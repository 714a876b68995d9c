"""Span boundary features: "first_last" word-pieces vs "pooled" (mean) token vectors.

Trains the teacher (configs/teacher_cpu.cfg) once per setting on the same source data
and evaluates on the source dev set and on target test sets (zero-shot). Default data:
the project's demo corpus (written to a temporary folder); or --corpus DIR with
{source}_train/dev.spacy and {lang}_test.spacy.

    python benchmarks/token_features.py --encoder PATH_OR_NAME [--corpus DIR --targets de,es]
"""
import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import spacy
from spacy.tokens import DocBin

from spacy_contproto.corpus import convert_file
from spacy_contproto.demo import write_demo_corpus
from spacy_contproto.evaluation import predict_and_score

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SETTINGS = {
    "first_last": {"token_features": "first_last", "pooling": "spacy_contproto.first_last_pooling.v1"},
    "pooled": {"token_features": "pooled", "pooling": "reduce_mean.v1"},
}


def f1_on(model: Path, path: Path) -> float:
    nlp = spacy.load(model)
    gold = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    return predict_and_score(nlp, gold)[1]["ents_f"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--source", default="en")
    parser.add_argument("--targets", default="de,es")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--learn-rate", type=float, default=1e-4)
    parser.add_argument("--total-steps", type=int, default=240)
    parser.add_argument("--name", default="token_features")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="contproto-features-"))
    targets = args.targets.split(",")
    corpus = args.corpus
    if corpus is None:
        corpus = work / "corpus"
        write_demo_corpus(work / "demo", langs=[args.source, *targets])
        for lang in [args.source, *targets]:
            for split in ("train", "dev", "test"):
                convert_file(work / "demo" / lang / f"{split}.txt", corpus / f"{lang}_{split}.spacy")
    results = {}
    for name, setting in SETTINGS.items():
        out = work / name
        start = time.perf_counter()
        cmd = [
            sys.executable, "-m", "spacy", "train", str(REPO / "configs" / "teacher_cpu.cfg"), "--output", str(out),
            "--paths.train", str(corpus / f"{args.source}_train.spacy"),
            "--paths.dev", str(corpus / f"{args.source}_dev.spacy"), "--paths.encoder", args.encoder,
            "--components.span_contproto.model.token_features", setting["token_features"],
            "--components.span_contproto.model.tok2vec.pooling.@layers", setting["pooling"],
            "--training.max_epochs", str(args.epochs), "--training.batcher.size", str(args.batch),
            "--training.optimizer.learn_rate.initial_rate", str(args.learn_rate),
            "--training.optimizer.learn_rate.warmup_steps", "20",
            "--training.optimizer.learn_rate.total_steps", str(args.total_steps),
        ]
        subprocess.run(cmd, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        model = out / "model-best"
        scores = {f"{args.source}_dev": f1_on(model, corpus / f"{args.source}_dev.spacy")}
        scores.update({f"{t}_test": f1_on(model, corpus / f"{t}_test.spacy") for t in targets})
        results[name] = {"f1": scores, "train_seconds": seconds}
        print(name, scores, f"{seconds:.0f}s", flush=True)
    result = {
        "benchmark": "teacher F1 by span boundary features (one seed)",
        "machine": f"{platform.machine()}, 2 CPU threads",
        "encoder": args.encoder, "corpus": str(args.corpus or "demo corpus"),
        "schedule": {"epochs": args.epochs, "batch": args.batch, "learn_rate": args.learn_rate,
                     "total_steps": args.total_steps},
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    cols = list(next(iter(results.values()))["f1"])
    lines = [f"# Span boundary features ({args.encoder}, {result['corpus']})", "",
             f"Teacher trained {args.epochs} epochs, one seed; F1 x 100; {result['machine']}.", "",
             "| token_features | " + " | ".join(cols) + " | train s |", "|---" * (len(cols) + 2) + "|"]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * r['f1'][c]:.2f}" for c in cols) + f" | {r['train_seconds']:.0f} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
