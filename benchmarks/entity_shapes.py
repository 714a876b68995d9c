"""Errors per entity type and surface shape (why protocol 4 lowered German MISC).

Protocol 4 keeps English tokens such as "British-based" whole where protocols 1-3 split them; its
teachers scored German MISC lower. This scores each model on a test set's own tokens and splits,
per gold type, the gold entities by their surface shape (SHAPES below: hyphenated, several tokens,
a lowercase word such as a German adjective of nationality, a capitalised word ending in "er" such
as a German adjective of a city, any other word), and says what each missed gold entity
got instead: nothing, the same span with another label, or an overlapping span. Predicted entities
are split the same way for precision. Only counts are written, never the corpus's text.

    python benchmarks/entity_shapes.py TEST.spacy NAME=MODEL [NAME=MODEL ...] [--out STEM] [--add]

Writes benchmarks/results/STEM.json and .md (default STEM: entity_shapes); with --add, the models
already in STEM.json stay and the ones named are scored and added (or replaced).
"""
import argparse
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


SHAPES = ("hyphenated", "several tokens", "lowercase word", "capitalised word ending in 'er'",
          "other word")


def shape(span) -> str:
    """The first of SHAPES that fits the span's tokens."""
    if any("-" in t.text.strip("-") for t in span):
        return SHAPES[0]
    if len(span) > 1:
        return SHAPES[1]
    text = span.text
    if text[:1].islower():
        return SHAPES[2]
    if text.endswith("er"):
        return SHAPES[3]
    return SHAPES[4]


def outcome(gold_span, predicted_spans) -> str:
    """What the prediction did with one gold entity."""
    key = (gold_span.start, gold_span.end)
    same = predicted_spans.get(key)
    if same == gold_span.label_:
        return "found"
    if same is not None:
        return "other label"
    if any(s < gold_span.end and gold_span.start < e for (s, e) in predicted_spans):
        return "overlapping span"
    return "nothing"


def compare(predicted_docs, gold_docs) -> dict:
    """Counts per (type, shape): gold, found, the misses by outcome, predicted, correct."""
    counts = {}

    def row(label, group):
        return counts.setdefault(f"{label}/{group}", Counter())

    for pred, gold in zip(predicted_docs, gold_docs):
        predicted = {(e.start, e.end): e.label_ for e in pred.ents}
        gold_spans = {(e.start, e.end): e.label_ for e in gold.ents}
        for ent in gold.ents:
            r = row(ent.label_, shape(ent))
            r["gold"] += 1
            r[outcome(ent, predicted)] += 1
        for ent in pred.ents:
            r = row(ent.label_, shape(ent))
            r["predicted"] += 1
            r["correct"] += gold_spans.get((ent.start, ent.end)) == ent.label_
    table = {}
    order = lambda item: (item[0].split("/")[0], SHAPES.index(item[0].split("/", 1)[1]))
    for key, c in sorted(counts.items(), key=order):
        recall = 100 * c["found"] / c["gold"] if c["gold"] else None
        precision = 100 * c["correct"] / c["predicted"] if c["predicted"] else None
        table[key] = {**{k: int(v) for k, v in c.items()}, "recall": recall, "precision": precision}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("test", type=Path)
    parser.add_argument("models", nargs="+", help="NAME=PATH of a trained pipeline")
    parser.add_argument("--out", default="entity_shapes")
    parser.add_argument("--add", action="store_true",
                        help="keep the models already in STEM.json (scored on the same test file); score only these")
    args = parser.parse_args()

    import spacy
    from spacy.tokens import DocBin

    from spacy_contproto.evaluation import predict_and_score

    result = {"test": str(args.test), "machine": f"{platform.platform()}, {os.cpu_count()} CPU cores",
              "models": {}}
    if args.add and (RESULTS / f"{args.out}.json").exists():
        earlier = json.loads((RESULTS / f"{args.out}.json").read_text())
        stored = Path(earlier["test"])  # as given, from the repository's root as documented
        if (stored if stored.is_absolute() else REPO / stored).resolve() != args.test.resolve():
            parser.error(f"{args.out}.json scored {earlier['test']}, not {args.test}: name another --out")
        result["models"] = earlier["models"]
        if earlier["machine"] != result["machine"]:
            result["machine"] = f"{earlier['machine']} (earlier models); {result['machine']} (added)"
    for item in args.models:
        name, path = item.split("=", 1)
        nlp = spacy.load(path)
        gold = list(DocBin().from_disk(args.test).get_docs(nlp.vocab))
        start = time.perf_counter()
        predicted, scores = predict_and_score(nlp, gold)
        result["models"][name] = {"path": path, "f1": 100 * scores["ents_f"],
                                  "per_type_f1": {k: 100 * v["f"] for k, v in scores["ents_per_type"].items()},
                                  "seconds": time.perf_counter() - start, "groups": compare(predicted, gold)}
        print(name, f"F1 {100 * scores['ents_f']:.2f}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.out}.md").write_text(markdown(result))


def markdown(result: dict) -> str:
    fmt = lambda v: "" if v is None else f"{v:.1f}"
    lines = ["# Errors per entity type and shape (generated by benchmarks/entity_shapes.py)", "",
             f"Test set: `{Path(result['test']).name}`; machine: {result['machine']}. Shape: the first that fits "
             "of hyphenated (a token of the span contains '-' between other characters), several tokens, "
             "lowercase word, capitalised word ending in 'er', other word. Misses: what a gold "
             "entity not found got instead.", ""]
    for name, model in result["models"].items():
        lines += [f"## {name}: F1 {model['f1']:.2f}", "",
                  "| type / shape | gold | recall | nothing | other label | overlapping span | predicted | precision |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, r in model["groups"].items():
            lines.append(f"| {key} | {r.get('gold', 0)} | {fmt(r['recall'])} | {r.get('nothing', 0)} | "
                         f"{r.get('other label', 0)} | {r.get('overlapping span', 0)} | {r.get('predicted', 0)} | "
                         f"{fmt(r['precision'])} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
