"""Can the prototypes of a trained student tell the entity classes apart?

ContProto's refinement (eq. 9-10) moves a target span's pseudo label towards the class of its
nearest prototype. That helps only if, in the projection space, spans of one entity class are
nearer their own prototype than the others'. This script measures that on gold-labelled target
test sentences, for the students benchmarks/reproduce.py trained:

- nearest-prototype accuracy on gold entity spans (over entity prototypes only, and over all
  prototypes including "O"), against the classifier's accuracy on the same spans (its argmax
  over all classes, and over the entity classes only: how well it types an entity);
- nearest-centroid accuracy, with centroids of the gold spans themselves: the best any
  prototype memory could do in that space;
- mean cosine of gold entity spans to their own prototype and to the nearest other entity
  prototype (the gap the margin test works with);
- the same for the span representations z (the classifier's input) by nearest centroid.

    python benchmarks/diagnose_prototypes.py --corpus conll [--protocol 2] [--training-seed 1] [--teacher-seed 1] \
        de:contproto de:vanilla

--protocol defaults to reproduce.py's MAIN_PROTOCOL (4); --teacher-seed to the protocol's own teacher.
Writes benchmarks/results/diagnose_prototypes_{corpus}[_protocol{N}][_seed{S}][-teacher{T}].json and .md.
"""
import argparse
import json
import platform
import random
import sys
from pathlib import Path
from typing import Dict, List

import numpy

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "benchmarks"))
import reproduce  # noqa: E402


def decoding_counts(gold_doc, predicted_doc, spans: numpy.ndarray, logits: numpy.ndarray, names: List[str]) -> Dict[str, int]:
    """Gold entities, decoded entities, true positives, and the gold entities whose own span the
    classifier labels right but that the decoded doc.ents lack (an overlapping span won)."""
    from spacy_contproto.spans import OUTSIDE

    best = logits.argmax(1)
    span_label = {(int(a), int(b)): names[c] for (a, b), c in zip(spans, best) if c != OUTSIDE}
    gold = {(e.start, e.end, e.label_) for e in gold_doc.ents}
    predicted = {(e.start, e.end, e.label_) for e in predicted_doc.ents}
    span_right = {g for g in gold if span_label.get(g[:2]) == g[2]}
    return {"gold": len(gold), "predicted": len(predicted), "true_positives": len(gold & predicted),
            "span_right": len(span_right), "span_right_lost_in_decoding": len(span_right - predicted)}


def span_outputs(nlp, docs, batch_size: int = 64):
    """Gold class, classifier logits, projection and representation of every enumerated span,
    and the decoding counts (decoding_counts) summed over the docs."""
    from spacy.training import Example

    from spacy_contproto.component import SpanProbabilities
    from spacy_contproto.evaluation import same_tokens

    component = nlp.get_pipe("span_contproto")
    component.model.attrs["predict_projections"] = True
    component.model.attrs["predict_representations"] = True
    ops = component.model.ops
    gold_all, logits_all, proj_all, repr_all = [], [], [], []
    counts: Dict[str, int] = {}
    for i in range(0, len(docs), batch_size):
        batch = docs[i : i + batch_size]
        words = (same_tokens(nlp, d) for d in batch)
        inputs = list(nlp.pipe(words, disable=["span_contproto"]))
        out = component.model.predict(inputs)
        gold, _, _ = component.gold_targets([Example(x, y) for x, y in zip(inputs, batch)], out.spans)
        component.set_annotations(inputs, SpanProbabilities(out.spans, ops.softmax(out.logits)))
        spans, logits, offset = ops.to_numpy(out.spans.data), ops.to_numpy(out.logits), 0
        for x, y, n in zip(inputs, batch, ops.to_numpy(out.spans.lengths)):
            doc_counts = decoding_counts(y, x, spans[offset:offset + n], logits[offset:offset + n], component.class_names)
            counts = {k: counts.get(k, 0) + v for k, v in doc_counts.items()}
            offset += n
        gold_all.append(gold)
        logits_all.append(ops.to_numpy(out.logits))
        proj_all.append(ops.to_numpy(out.projections))
        repr_all.append(ops.to_numpy(out.representations))
    return (component, numpy.concatenate(gold_all), numpy.concatenate(logits_all),
            numpy.concatenate(proj_all), numpy.concatenate(repr_all), counts)


def centroid_accuracy(vectors: numpy.ndarray, gold: numpy.ndarray, classes: List[int], normalise: bool) -> float:
    """Nearest class centroid (of the gold spans themselves), over the given classes."""
    if normalise:
        vectors = vectors / numpy.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
    centroids = numpy.stack([vectors[gold == c].mean(0) for c in classes])
    if normalise:
        centroids /= numpy.linalg.norm(centroids, axis=1, keepdims=True).clip(1e-12)
        nearest = (vectors @ centroids.T).argmax(1)
    else:
        nearest = ((vectors[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    return float((numpy.asarray(classes)[nearest] == gold).mean())


def diagnose(model_dir: Path, test: Path, n_sentences: int, seed: int) -> Dict:
    import spacy
    from spacy.tokens import DocBin

    from spacy_contproto.spans import OUTSIDE

    nlp = spacy.load(model_dir)
    docs = list(DocBin().from_disk(test).get_docs(nlp.vocab))
    docs = [d for d in docs if len(d)]
    random.Random(seed).shuffle(docs)
    docs = docs[:n_sentences]
    component, gold, logits_all, proj, reprs, counts = span_outputs(nlp, docs)
    names = component.class_names
    prototypes = component.state.memory.prototypes.numpy() if component.state is not None else None
    if prototypes is None or not numpy.any(prototypes):
        raise SystemExit(f"{model_dir}: no prototypes saved with this model")
    entity = gold != OUTSIDE
    entity_classes = [c for c in range(len(names)) if c != OUTSIDE and (gold == c).any()]
    g, logits, z, x = gold[entity], logits_all[entity], proj[entity], reprs[entity]
    p = logits.argmax(1)
    typed = numpy.full_like(logits, -numpy.inf)
    typed[:, entity_classes] = logits[:, entity_classes]
    p_typed = typed.argmax(1)
    sims = z @ prototypes.T
    own = sims[numpy.arange(len(g)), g]
    other = sims.copy()
    other[numpy.arange(len(g)), g] = -numpy.inf
    other[:, OUTSIDE] = -numpy.inf
    entity_only = numpy.full_like(sims, -numpy.inf)
    entity_only[:, entity_classes] = sims[:, entity_classes]
    per_class = {}
    for c in entity_classes:
        m = g == c
        per_class[names[c]] = {"spans": int(m.sum()),
                               "nearest_entity_prototype_accuracy": round(float((entity_only[m].argmax(1) == c).mean()), 4),
                               "classifier_accuracy": round(float((p[m] == c).mean()), 4),
                               "classifier_entity_type_accuracy": round(float((p_typed[m] == c).mean()), 4)}
    return {
        "model": str(model_dir), "test": str(test), "sentences": len(docs), "spans": int(len(gold)),
        "gold_entity_spans_enumerated": int(entity.sum()), "classes": names, "decoding": counts,
        "classifier_accuracy": round(float((p == g).mean()), 4),
        "classifier_entity_type_accuracy": round(float((p_typed == g).mean()), 4),
        "nearest_prototype_accuracy_all_classes": round(float((sims.argmax(1) == g).mean()), 4),
        "nearest_entity_prototype_accuracy": round(float((entity_only.argmax(1) == g).mean()), 4),
        "projection_nearest_centroid_accuracy": round(centroid_accuracy(z, g, entity_classes, True), 4),
        "representation_nearest_centroid_accuracy": round(centroid_accuracy(x, g, entity_classes, False), 4),
        "mean_cosine_to_own_prototype": round(float(own.mean()), 4),
        "mean_cosine_to_nearest_other_entity_prototype": round(float(other.max(1).mean()), 4),
        "share_nearer_own_than_any_other_entity_prototype": round(float((own > other.max(1)).mean()), 4),
        "o_spans_nearest_prototype_is_o": round(float(((proj[~entity] @ prototypes.T).argmax(1) == OUTSIDE).mean()), 4),
        "margins": [round(float(m), 4) for m in component.state.memory.margins.numpy()],
        "per_class": per_class,
    }


def markdown(results: List[Dict], corpus: str, protocol: int, training_seed: int, sample_seed: int,
             teacher: str = "") -> str:
    lines = [f"# Prototype diagnostics ({corpus}, protocol {protocol}, students' training seed "
             f"{training_seed}{teacher}; generated by "
             "benchmarks/diagnose_prototypes.py)", "",
             f"{results[0]['sentences']} non-empty target test sentences (the first after a shuffle with seed {sample_seed}; "
             "all of them when that is every one), model-last of each student; "
             "accuracies over the enumerated spans that match a gold entity.", "",
             "| target | student | gold entity spans | classifier acc. | classifier entity-type acc. | nearest entity prototype acc. | "
             "nearest prototype acc. (incl. O) | gold-centroid acc., projections | gold-centroid acc., z | "
             "cos own prototype | cos nearest other entity prototype |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['target']} | {r['variant']} | {r['gold_entity_spans_enumerated']} | {r['classifier_accuracy']:.3f} | {r['classifier_entity_type_accuracy']:.3f} | "
                     f"{r['nearest_entity_prototype_accuracy']:.3f} | {r['nearest_prototype_accuracy_all_classes']:.3f} | "
                     f"{r['projection_nearest_centroid_accuracy']:.3f} | {r['representation_nearest_centroid_accuracy']:.3f} | "
                     f"{r['mean_cosine_to_own_prototype']:.3f} | {r['mean_cosine_to_nearest_other_entity_prototype']:.3f} |")
    lines += ["", "Decoding on the same sentences (doc.ents, greedy non-overlapping): gold entities whose own span the "
              "classifier labels right, and how many of those an overlapping span displaced.", "",
              "| target | student | gold entities | decoded P | decoded R | own span labelled right | of those, lost in decoding |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        d = r["decoding"]
        lines.append(f"| {r['target']} | {r['variant']} | {d['gold']} | {d['true_positives'] / max(d['predicted'], 1):.3f} | "
                     f"{d['true_positives'] / max(d['gold'], 1):.3f} | {d['span_right']} | {d['span_right_lost_in_decoding']} |")
    lines += ["", "Per class, nearest entity prototype / classifier entity-type accuracy:", ""]
    for r in results:
        parts = [f"{c} {v['nearest_entity_prototype_accuracy']:.2f} / {v['classifier_entity_type_accuracy']:.2f} (n={v['spans']})"
                 for c, v in r["per_class"].items()]
        lines.append(f"- {r['target']} {r['variant']}: " + ", ".join(parts))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cells", nargs="+", help="LANG:VARIANT of benchmarks/reproduce.py students")
    parser.add_argument("--corpus", default="conll")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".cache" / "reproduce")
    parser.add_argument("--protocol", type=int, choices=sorted(reproduce.PROTOCOLS), default=reproduce.MAIN_PROTOCOL,
                        help="protocol version of benchmarks/reproduce.py (default: its MAIN_PROTOCOL, 4)")
    parser.add_argument("--training-seed", type=int, default=0, help="the students' training seed (reproduce.py grid --seed)")
    parser.add_argument("--teacher-seed", type=int, default=None,
                        help="the seed of the students' teacher (reproduce.py grid --teacher-seed; default: the protocol's)")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="which test sentences are sampled")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    work, students = reproduce.work_folders(args.work, args.corpus, args.protocol)
    teacher_seed, tag = reproduce.resolve_teacher(args.teacher_seed, args.protocol)
    results = []
    for cell in args.cells:
        lang, _, variant = cell.partition(":")
        model = students / reproduce.student_name(lang, variant, args.training_seed, tag) / "model-last"
        if not model.exists():
            sys.exit(f"{model} does not exist: train it with benchmarks/reproduce.py grid --protocol {args.protocol} "
                     f"--seed {args.training_seed}{reproduce.teacher_seed_flag(teacher_seed, args.protocol)} {cell}")
        result = {"protocol_version": args.protocol, "training_seed": args.training_seed, "teacher_seed": teacher_seed,
                  "target": lang, "variant": variant,
                  **diagnose(model, reproduce.test_file(work, args.corpus, lang), args.sentences, args.seed)}
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "per_class"}))
    out = RESULTS / (f"diagnose_prototypes_{args.corpus}" + (f"_protocol{args.protocol}" if args.protocol > 1 else "")
                     + (f"_seed{args.training_seed}" if args.training_seed else "") + tag)
    machine = {"platform": platform.platform(), "torch_threads": 1}
    out.with_suffix(".json").write_text(json.dumps({"machine": machine, "runs": results}, indent=2))
    out.with_suffix(".md").write_text(markdown(results, args.corpus, args.protocol, args.training_seed, args.seed,
                                               f", teacher seed {teacher_seed}" if tag else ""))
    print(f"wrote {out}.json and .md")


if __name__ == "__main__":
    main()
