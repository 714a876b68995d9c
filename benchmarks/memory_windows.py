"""Where a training step's memory goes: the transformer's padded windows.

spacy-transformers cuts each Doc into strided windows of tokens (128, stride 96 in the
shipped configs) and runs every window of a batch as one padded tensor, as long as the
batch's longest window in word pieces. Activation memory of the forward + backward pass
therefore grows with (windows in the batch) x (longest window)^2 for attention and
x (longest window) for the rest: one long sentence with many word pieces sets the memory of
its whole batch.

This benchmark measures it on the reproduction's corpus samples (benchmarks/reproduce.py
prepare), for batches drawn as the students draw them (16 source + 16 target sentences):
1. the distribution of window counts and longest windows over random batches per target;
2. peak RSS of one forward + backward pass of the encoder (train mode, one thread, fresh
   process each) at the median batch shape and at the worst batch shape seen per target.

    python benchmarks/memory_windows.py [--work W] [--encoder E] [--batches 500]
"""
import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / ".cache" / "reproduce" / "protocol2" / "conll"
ENCODER = REPO / "benchmarks" / ".cache" / "multilingual-e5-small"
WINDOW, STRIDE, MAX_PIECES = 128, 96, 512


def window_lengths(path: Path, tokenizer) -> list:
    """Per Doc, the word-piece length of each of its strided windows, as spacy-transformers
    builds them (strided_spans.v1; window texts tokenised with special tokens)."""
    import spacy
    from spacy.tokens import DocBin
    from spacy_transformers.util import registry

    get_spans = registry.span_getters.get("spacy-transformers.strided_spans.v1")(window=WINDOW, stride=STRIDE)
    docs = list(DocBin().from_disk(path).get_docs(spacy.blank("xx").vocab))
    spans = get_spans(docs)
    flat = [span.text for doc_spans in spans for span in doc_spans]
    pieces = [min(len(ids), MAX_PIECES) for ids in tokenizer(flat, add_special_tokens=True)["input_ids"]]
    result, i = [], 0
    for doc_spans in spans:
        result.append(pieces[i:i + len(doc_spans)])
        i += len(doc_spans)
    return result


def batch_shapes(source: list, target: list, n_batches: int, seed: int) -> list:
    """(windows, longest window) of n random batches of 16 source + 16 target Docs."""
    rng = random.Random(seed)
    shapes = []
    for _ in range(n_batches):
        windows = [w for i in rng.sample(range(len(source)), 16) for w in source[i]]
        windows += [w for i in rng.sample(range(len(target)), 16) for w in target[i]]
        shapes.append((len(windows), max(windows)))
    return shapes


def measure_step(encoder: Path, n: int, length: int) -> dict:
    """Peak RSS of one encoder forward + backward on an (n, length) batch, in a fresh process."""
    code = (
        "import resource, sys, torch\n"
        "from transformers import AutoModel\n"
        "torch.set_num_threads(1); torch.manual_seed(0)\n"
        "m = AutoModel.from_pretrained(sys.argv[1]); m.train()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "ids = torch.randint(5, 1000, (int(sys.argv[2]), int(sys.argv[3])))\n"
        "m(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.sum().backward()\n"
        "print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(encoder), str(n), str(length)],
                         capture_output=True, text=True, check=True).stdout.split()
    before, after = int(out[-2]) / 2**20, int(out[-1]) / 2**20
    return {"windows": n, "longest_pieces": length, "model_loaded_gib": round(before, 2),
            "peak_gib": round(after, 2), "step_adds_gib": round(after - before, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=WORK, help="a corpus folder of reproduce.py (its corpus/)")
    parser.add_argument("--encoder", type=Path, default=ENCODER)
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--source", default="en")
    parser.add_argument("--targets", default="de,es,nl")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(args.encoder))
    corpus = args.work / "corpus"
    source = window_lengths(corpus / f"{args.source}_train.spacy", tokenizer)
    results = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
               "encoder": str(args.encoder.name), "window_tokens": WINDOW, "stride_tokens": STRIDE,
               "batch": "16 source + 16 target sentences", "batches_drawn": args.batches, "targets": {}}
    for lang in args.targets.split(","):
        target = window_lengths(corpus / f"{lang}_train.spacy", tokenizer)
        shapes = batch_shapes(source, target, args.batches, seed=0)
        cost = [n * length for n, length in shapes]
        median = sorted(shapes, key=lambda s: s[0] * s[1])[len(shapes) // 2]
        worst = max(shapes, key=lambda s: s[0] * s[1] ** 2)
        pieces = [w for doc in target for w in doc]
        results["targets"][lang] = {
            "longest_window_pieces": max(pieces),
            "docs_with_several_windows": sum(len(doc) > 1 for doc in target),
            "padded_pieces_per_batch_median": statistics.median(cost),
            "padded_pieces_per_batch_max": max(cost),
            "median_batch": measure_step(args.encoder, *median),
            "worst_batch": measure_step(args.encoder, *worst),
        }
        print(lang, results["targets"][lang], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory_windows.json").write_text(json.dumps(results, indent=2))
    lines = ["# Memory of a training step: the transformer's padded windows (benchmarks/memory_windows.py)", "",
             f"Machine: {results['machine']['platform']}, {results['machine']['cpu_count']} cores. Encoder "
             f"{results['encoder']}, windows of {WINDOW} tokens (stride {STRIDE}); batches of 16 {args.source} + 16 "
             f"target sentences drawn {args.batches} times from the reproduction's samples. Peak RSS of one "
             "encoder forward + backward (train mode, fresh process) at the median and at the worst batch shape "
             "(windows x longest window in word pieces; every window is padded to the longest).", "",
             "| target | longest window (pieces) | docs with >1 window | padded pieces / batch, median / max | "
             "median batch: shape, step adds | worst batch: shape, step adds |",
             "|---|---|---|---|---|---|"]
    for lang, r in results["targets"].items():
        med, worst = r["median_batch"], r["worst_batch"]
        lines.append(f"| {lang} | {r['longest_window_pieces']} | {r['docs_with_several_windows']} | "
                     f"{r['padded_pieces_per_batch_median']:.0f} / {r['padded_pieces_per_batch_max']:.0f} | "
                     f"{med['windows']} x {med['longest_pieces']}, {med['step_adds_gib']:.2f} GiB | "
                     f"{worst['windows']} x {worst['longest_pieces']}, {worst['step_adds_gib']:.2f} GiB |")
    (RESULTS / "memory_windows.md").write_text("\n".join(lines) + "\n")
    print(f"Wrote {RESULTS / 'memory_windows.md'}")


if __name__ == "__main__":
    main()
