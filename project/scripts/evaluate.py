"""Evaluate the teacher and each target's student on that target's test set:
spaCy's NER scores plus a seqeval cross-check, one JSON per model and language."""
import json
from pathlib import Path

import spacy
import typer
from seqeval.metrics import f1_score, precision_score, recall_score
from spacy.tokens import DocBin
from wasabi import msg

from inputs import require
from spacy_contproto.evaluation import iob_tags, predict_and_score


def evaluate(model: Path, test: Path) -> dict:
    nlp = spacy.load(model)
    gold = list(DocBin().from_disk(test).get_docs(nlp.vocab))
    predicted, scores = predict_and_score(nlp, gold)
    y_true, y_pred = [iob_tags(d) for d in gold], [iob_tags(d) for d in predicted]
    return {
        "model": str(model), "test": str(test), "n_docs": len(gold),
        "ents_p": scores["ents_p"], "ents_r": scores["ents_r"], "ents_f": scores["ents_f"],
        "ents_per_type": scores["ents_per_type"],
        "seqeval": {"precision": precision_score(y_true, y_pred), "recall": recall_score(y_true, y_pred),
                    "f1": f1_score(y_true, y_pred)},
    }


def main(
    teacher: Path = typer.Argument(..., help="Teacher pipeline (zero-shot)"),
    students: Path = typer.Argument(..., help="Folder with a student per target language, {lang}/model-best"),
    corpus: Path = typer.Argument(..., help="Folder with {lang}_test.spacy"),
    targets: str = typer.Argument(...),
    metrics: Path = typer.Argument(..., help="Output folder"),
    gpu_id: int = typer.Option(-1),
) -> None:
    langs = [t for t in targets.split(",") if t]
    require([(teacher, "train-teacher"), *((students / lang / "model-best", "train-contproto") for lang in langs),
             *((corpus / f"{lang}_test.spacy", "corpus") for lang in langs)])
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    metrics.mkdir(parents=True, exist_ok=True)
    for lang in langs:
        for name, model in (("teacher", teacher), ("contproto", students / lang / "model-best")):
            result = {"system": name, "lang": lang, **evaluate(model, corpus / f"{lang}_test.spacy")}
            if abs(result["ents_f"] - result["seqeval"]["f1"]) > 1e-6:
                msg.warn(f"{name} {lang}: spaCy F1 {result['ents_f']:.4f} != seqeval {result['seqeval']['f1']:.4f}")
            (metrics / f"{name}-{lang}.json").write_text(json.dumps(result, indent=2))
            msg.good(f"{name} on {lang} test: F1 {100 * result['ents_f']:.2f}")
        # for `spacy package --meta-path`: the package states the student's target test scores,
        # not the source dev scores that model-best's meta.json holds from training
        student = json.loads((metrics / f"contproto-{lang}.json").read_text())
        package_meta = {"description": f"ContProto student for {lang}; performance: its {lang} test set "
                                       f"({student['n_docs']} sentences, every gold entity counts)",
                        "performance": {key: student[key] for key in ("ents_f", "ents_p", "ents_r", "ents_per_type")}}
        (metrics / f"package-meta-{lang}.json").write_text(json.dumps(package_meta, indent=2))


if __name__ == "__main__":
    typer.run(main)
