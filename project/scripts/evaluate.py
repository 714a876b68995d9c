"""Evaluate the teacher and each target's student on that target's test set:
spaCy's NER scores plus a seqeval cross-check, one JSON per model and language."""
import json
from pathlib import Path

import spacy
import typer
from seqeval.metrics import f1_score, precision_score, recall_score
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from wasabi import msg


def iob(doc: Doc):
    return [f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ in ("B", "I") else "O" for t in doc]


def evaluate(model: Path, test: Path, gpu_id: int) -> dict:
    nlp = spacy.load(model)
    gold = list(DocBin().from_disk(test).get_docs(nlp.vocab))
    # the gold tokenisation, so that seqeval compares token by token
    inputs = [Doc(nlp.vocab, words=[t.text for t in d], spaces=[bool(t.whitespace_) for t in d]) for d in gold]
    predicted = list(nlp.pipe(inputs, batch_size=64))
    scores = get_ner_prf([Example(p, g) for p, g in zip(predicted, gold)])
    y_true, y_pred = [iob(d) for d in gold], [iob(d) for d in predicted]
    return {
        "model": str(model), "test": str(test), "n_docs": len(gold),
        "ents_p": scores["ents_p"], "ents_r": scores["ents_r"], "ents_f": scores["ents_f"],
        "ents_per_type": scores["ents_per_type"],
        "seqeval": {"precision": precision_score(y_true, y_pred), "recall": recall_score(y_true, y_pred),
                    "f1": f1_score(y_true, y_pred)},
    }


def main(
    training: Path = typer.Argument(..., help="Folder with teacher/ and contproto-{lang}/"),
    corpus: Path = typer.Argument(..., help="Folder with {lang}_test.spacy"),
    targets: str = typer.Argument(...),
    metrics: Path = typer.Argument(..., help="Output folder"),
    gpu_id: int = typer.Option(-1),
) -> None:
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    metrics.mkdir(parents=True, exist_ok=True)
    for lang in [t for t in targets.split(",") if t]:
        for name, model in (("teacher", training / "teacher" / "model-best"),
                            ("contproto", training / f"contproto-{lang}" / "model-best")):
            result = {"system": name, "lang": lang, **evaluate(model, corpus / f"{lang}_test.spacy", gpu_id)}
            if abs(result["ents_f"] - result["seqeval"]["f1"]) > 1e-6:
                msg.warn(f"{name} {lang}: spaCy F1 {result['ents_f']:.4f} != seqeval {result['seqeval']['f1']:.4f}")
            (metrics / f"{name}-{lang}.json").write_text(json.dumps(result, indent=2))
            msg.good(f"{name} on {lang} test: F1 {100 * result['ents_f']:.2f}")


if __name__ == "__main__":
    typer.run(main)
