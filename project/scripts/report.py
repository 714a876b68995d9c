"""Markdown table (zero-shot teacher vs ContProto per target language) and plots:
pseudo-label F1 per epoch (paper Fig. 3) and a t-SNE of source and target span
vectors coloured by class (paper Fig. 2)."""
import json
import random
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy  # noqa: E402
import spacy  # noqa: E402
import typer  # noqa: E402
from spacy.tokens import DocBin  # noqa: E402
from wasabi import msg  # noqa: E402

from inputs import require  # noqa: E402
from spacy_contproto.evaluation import same_tokens  # noqa: E402
from spacy_contproto.spans import label_spans  # noqa: E402


def table(metrics: Path, langs) -> str:
    lines = ["| target | zero-shot teacher F1 | ContProto F1 | difference |", "|---|---|---|---|"]
    for lang in langs:
        # rounded first, so that the difference is the one between the numbers shown
        t = round(json.loads((metrics / f"teacher-{lang}.json").read_text())["ents_f"] * 100, 2)
        c = round(json.loads((metrics / f"contproto-{lang}.json").read_text())["ents_f"] * 100, 2)
        lines.append(f"| {lang} | {t:.2f} | {c:.2f} | {c - t:+.2f} |")
    return "\n".join(lines)


def plot_quality(students: Path, langs, out: Path) -> bool:
    plt.figure(figsize=(5, 3.5))
    drawn = False
    for lang in langs:
        path = students / lang / "pseudo_label_quality.jsonl"
        if not path.exists():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        plt.plot([r["epoch"] for r in rows], [100 * r["f1"] for r in rows], marker="o", label=lang)
        drawn = True
    plt.gca().xaxis.set_major_locator(MaxNLocator(integer=True))
    plt.xlabel("epoch (0: teacher labels)")
    plt.ylabel("oracle F1 of pseudo labels")
    plt.legend()
    plt.tight_layout()
    plt.savefig(out, dpi=120)
    plt.close()
    return drawn


def span_vectors(nlp, docs, max_o: int, rng: random.Random):
    """Span vectors z of gold entity spans and a sample of "O" spans."""
    pipe = nlp.get_pipe("span_contproto")
    inputs = [same_tokens(nlp, d) for d in docs]
    work = [nlp.get_pipe("transformer")(doc) for doc in inputs] if "transformer" in nlp.pipe_names else inputs
    pipe.model.attrs["predict_representations"] = True
    outputs = pipe.model.predict(work)
    vectors = pipe.model.ops.to_numpy(outputs.representations)
    labels, offset = [], 0
    index = {label: i + 1 for i, label in enumerate(pipe.labels)}
    for gold, pred, n in zip(docs, work, outputs.spans.lengths):
        spans = outputs.spans.data[offset: offset + n]
        ents = [e for e in gold.ents if e.label_ in index]
        labels.append(label_spans(spans, numpy.array([(e.start, e.end) for e in ents]).reshape(-1, 2),
                                  numpy.array([index[e.label_] for e in ents]), len(pred)))
        offset += n
    labels = numpy.concatenate(labels)
    entity = numpy.nonzero(labels > 0)[0]
    outside = numpy.nonzero(labels == 0)[0]
    outside = numpy.array(rng.sample(list(outside), min(max_o, len(outside))), dtype=int)
    keep = numpy.concatenate([entity, outside])
    return vectors[keep], labels[keep], pipe.class_names


def plot_tsne(model: Path, source: Path, target: Path, out: Path, n_docs: int = 200) -> None:
    from sklearn.manifold import TSNE

    rng = random.Random(0)
    nlp = spacy.load(model)
    parts = []
    for name, path in (("source", source), ("target", target)):
        docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))[:n_docs]
        vectors, labels, classes = span_vectors(nlp, docs, max_o=300, rng=rng)
        parts.append((name, vectors, labels))
    all_vectors = numpy.concatenate([p[1] for p in parts])
    perplexity = max(2, min(30, len(all_vectors) // 4))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(all_vectors)
    plt.figure(figsize=(6, 5))
    offset = 0
    for (name, vectors, labels), marker in zip(parts, ("o", "x")):
        pts = points[offset: offset + len(vectors)]
        offset += len(vectors)
        for c, cls in enumerate(classes):
            sel = labels == c
            if sel.any():
                plt.scatter(pts[sel, 0], pts[sel, 1], s=8, marker=marker, color=f"C{c}",
                            label=f"{cls} ({name})", alpha=0.6)
    plt.legend(fontsize=6, markerscale=2)
    plt.title(f"t-SNE of span vectors: {model.parent.name} student")
    plt.tight_layout()
    plt.savefig(out, dpi=120)
    plt.close()


def main(
    students: Path = typer.Argument(..., help="Folder with a student per target language, {lang}/model-best"),
    metrics: Path = typer.Argument(...),
    corpus: Path = typer.Argument(...),
    source: str = typer.Argument(...),
    targets: str = typer.Argument(...),
    output: Path = typer.Argument(..., help="Report folder"),
) -> None:
    langs = [t for t in targets.split(",") if t]
    require([(corpus / f"{source}_dev.spacy", "corpus")]
            + [(metrics / f"{system}-{lang}.json", "evaluate") for lang in langs for system in ("teacher", "contproto")]
            + [(students / lang / "model-best", "train-contproto") for lang in langs]
            + [(corpus / f"{lang}_test.spacy", "corpus") for lang in langs])
    output.mkdir(parents=True, exist_ok=True)
    lines = ["# ContProto results", "", f"Source language: {source}. Micro-F1 on each target's test set "
             "(spaCy scorer, every gold entity counts; cross-checked with seqeval in metrics/).", "",
             table(metrics, langs), ""]
    if plot_quality(students, langs, output / "pseudo_label_f1.png"):
        lines += ["## Pseudo-label quality per epoch", "", "![pseudo-label F1](pseudo_label_f1.png)", ""]
    lines += ["## Span vectors (t-SNE)", ""]
    for lang in langs:
        png = output / f"tsne_{lang}.png"
        plot_tsne(students / lang / "model-best", corpus / f"{source}_dev.spacy",
                  corpus / f"{lang}_test.spacy", png)
        lines += [f"![t-SNE {lang}]({png.name})", ""]
    (output / "results.md").write_text("\n".join(lines))
    msg.good(f"Report written to {output / 'results.md'}")


if __name__ == "__main__":
    typer.run(main)
