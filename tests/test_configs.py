import shutil
import subprocess
import sys

import pytest
import spacy
import torch
from spacy.util import registry

from .conftest import CONFIGS


@pytest.mark.parametrize("name", ["teacher_cpu.cfg", "contproto_cpu.cfg", "contproto_gpu.cfg"])
def test_configs_build_pipelines(name, tiny_encoder):
    config = spacy.util.load_config(CONFIGS / name, overrides={"paths.encoder": str(tiny_encoder)})
    nlp = spacy.util.load_model_from_config(config, auto_fill=True, validate=True)
    assert nlp.pipe_names == ["transformer", "span_contproto"]
    pipe = nlp.get_pipe("span_contproto")
    assert pipe.max_span_length == 4 and pipe.cfg["neg_span_weight"] == 0.5
    if name == "teacher_cpu.cfg":
        assert pipe.loss_names == ["span_contproto", "span_contproto:src"]
    else:
        s = pipe.settings
        assert (s.temperature, s.prototype_alpha, s.beta, s.warmup_epochs) == (0.07, 0.99, 0.95, 1)
        assert len(pipe.loss_names) == 5


def test_gpu_config_is_the_paper_setting():
    config = spacy.util.load_config(CONFIGS / "contproto_gpu.cfg")
    assert config["paths"]["encoder"] == "xlm-roberta-large"
    assert config["system"]["gpu_allocator"] == "pytorch"
    assert config["components"]["transformer"]["model"]["mixed_precision"] is True
    assert config["components"]["span_contproto"]["model"]["mixed_precision"] is True
    assert config["training"]["optimizer"]["learn_rate"]["initial_rate"] == 1e-5


def test_contproto_training_without_target_is_a_clear_error(tmp_path, tiny_encoder, synthetic_corpus):
    result = subprocess.run(
        [sys.executable, "-m", "spacy", "train", str(CONFIGS / "contproto_cpu.cfg"),
         "--paths.train", str(synthetic_corpus["train"]), "--paths.dev", str(synthetic_corpus["dev"]),
         "--paths.encoder", str(tiny_encoder)],
        capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "needs a target corpus" in result.stdout + result.stderr


def test_freeze_word_embeddings_callback(tiny_encoder, synthetic_corpus):
    """[initialize.after_init] freezes the word-piece embeddings; the rest still trains."""
    from spacy.tokens import DocBin
    from spacy.training import Example

    config = spacy.util.load_config(CONFIGS / "teacher_cpu.cfg", overrides={"paths.encoder": str(tiny_encoder)})
    config["initialize"]["after_init"] = {"@callbacks": "spacy_contproto.freeze_word_embeddings.v1"}
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    docs = list(DocBin().from_disk(synthetic_corpus["train"]).get_docs(nlp.vocab))[:16]
    examples = [Example(nlp.make_doc(d.text), d) for d in docs]
    optimizer = nlp.initialize(lambda: examples)
    optimizer.learn_rate = 1e-3  # the config's schedule starts at 0
    hf_model = nlp.get_pipe("transformer").model.layers[0].shims[0]._model
    embeddings = hf_model.get_input_embeddings().weight
    layer = next(p for n, p in hf_model.named_parameters() if "encoder.layer.0" in n and n.endswith("weight"))
    before_embeddings, before_layer = embeddings.detach().clone(), layer.detach().clone()
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    assert torch.equal(hf_model.get_input_embeddings().weight, before_embeddings)
    layer = next(p for n, p in hf_model.named_parameters() if "encoder.layer.0" in n and n.endswith("weight"))
    assert not torch.equal(layer, before_layer)

    # spaCy disables sourced components during initialize; they are frozen all the same
    fresh = spacy.util.load_model_from_config(config, auto_fill=True)
    fresh.initialize(lambda: examples)
    fresh_embeddings = fresh.get_pipe("transformer").model.layers[0].shims[0]._model.get_input_embeddings().weight
    fresh_embeddings.requires_grad_(True)
    with fresh.select_pipes(disable=["transformer"]):
        registry.callbacks.get("spacy_contproto.freeze_word_embeddings.v1")()(fresh)
    assert not fresh_embeddings.requires_grad

    blank = spacy.blank("en")
    blank.add_pipe("sentencizer")
    with pytest.raises(ValueError, match="no HuggingFace transformer"):
        registry.callbacks.get("spacy_contproto.freeze_word_embeddings.v1")()(blank)


def test_learn_rate_schedule_ending_early_is_found():
    from spacy_contproto.training import learn_rate_ends_early

    training = {"max_epochs": 10, "max_steps": 0,
                "optimizer": {"learn_rate": {"@schedules": "warmup_linear.v1", "total_steps": 5000}}}
    # full CoNLL English with the CPU config: 880 steps per epoch, lr 0 from step 5000 of 8800
    assert "training runs about 8800 steps" in learn_rate_ends_early(training, 880)
    assert "last 3800 steps" in learn_rate_ends_early(training, 880)
    assert learn_rate_ends_early(training, 500) is None  # ends with the schedule
    assert learn_rate_ends_early({**training, "max_steps": 5000}, 880) is None  # max_steps stops it in time
    assert "about 6000 steps" in learn_rate_ends_early({**training, "max_steps": 6000}, 880)
    assert learn_rate_ends_early({**training, "max_epochs": 0}, 880) is None  # until patience: unknown
    assert learn_rate_ends_early({**training, "optimizer": {"learn_rate": 0.001}}, 880) is None  # constant rate


@pytest.mark.parametrize("name", ["teacher_cpu.cfg", "contproto_cpu.cfg"])
def test_schedule_callback_warns_once_after_the_first_epoch(name, tiny_encoder, recwarn):
    config = spacy.util.load_config(CONFIGS / name, overrides={
        "paths.encoder": str(tiny_encoder), "training.max_epochs": 4,
        "training.optimizer.learn_rate.total_steps": 100})
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    callback = registry.resolve(nlp.config.interpolate()["training"])["before_update"]
    for epoch, step in [(0, 0), (0, 39), (1, 40), (2, 80)]:
        callback(nlp, {"epoch": epoch, "step": step})
    messages = [str(w.message) for w in recwarn if "learning-rate schedule ends at step 100" in str(w.message)]
    assert len(messages) == 1 and "about 160 steps (40 steps per epoch" in messages[0]


def run_init_configs(*args):
    from typer.testing import CliRunner

    from spacy_contproto.cli import contproto_app

    result = CliRunner().invoke(contproto_app, ["init-configs", *map(str, args)], env={"COLUMNS": "500"})
    result.said = " ".join(result.output.split())  # wasabi wraps long lines
    return result


def test_init_configs_writes_the_packaged_configs_and_keeps_edited_ones(tmp_path):
    out = tmp_path / "project" / "configs"
    result = run_init_configs(out)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in CONFIGS.glob("*.cfg"))
    assert sorted(p.name for p in out.iterdir()) == names == ["contproto_cpu.cfg", "contproto_gpu.cfg", "teacher_cpu.cfg"]
    for name in names:
        assert (out / name).read_text() == (CONFIGS / name).read_text()
    # a user's edit survives a second run (the project runs this step again when a config changed)
    edited = (out / "teacher_cpu.cfg").read_text().replace("max_epochs = ", "max_epochs = 9 #")
    (out / "teacher_cpu.cfg").write_text(edited)
    (out / "contproto_gpu.cfg").unlink()
    result = run_init_configs(out)
    assert result.exit_code == 0, result.output
    assert "Kept contproto_cpu.cfg, teacher_cpu.cfg, already in" in result.said
    assert f"teacher_cpu.cfg in {out} differ" in result.said and "contproto_cpu.cfg in" not in result.said
    assert "Wrote contproto_gpu.cfg" in result.said
    assert (out / "teacher_cpu.cfg").read_text() == edited
    # a folder in a config's place: nothing is written, the edit stays
    (out / "contproto_gpu.cfg").unlink()
    (out / "contproto_gpu.cfg").mkdir()
    result = run_init_configs(out, "--force")
    assert result.exit_code == 1 and "contproto_gpu.cfg is not a file: nothing written" in result.said
    assert (out / "teacher_cpu.cfg").read_text() == edited
    (out / "contproto_gpu.cfg").rmdir()
    assert run_init_configs(out, "--force").exit_code == 0
    assert (out / "teacher_cpu.cfg").read_text() == (CONFIGS / "teacher_cpu.cfg").read_text()
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    result = run_init_configs(a_file)
    assert result.exit_code == 2 and "is a file" in result.output


def test_init_configs_without_the_packaged_configs(tmp_path, monkeypatch):
    import importlib.resources

    def develop_install(package):  # `setup.py develop` cannot import spacy_contproto.configs
        raise ModuleNotFoundError(f"No module named {package!r}")

    monkeypatch.setattr(importlib.resources, "files", develop_install)
    result = run_init_configs(tmp_path / "from-checkout")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "from-checkout").iterdir()) == sorted(p.name for p in CONFIGS.glob("*.cfg"))
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path / "empty")
    result = run_init_configs(tmp_path / "configs")
    assert result.exit_code == 1 and "No training configs were installed" in result.said
    assert not (tmp_path / "configs").exists()


def test_wheel_ships_the_configs(tmp_path):
    import zipfile

    from .conftest import REPO

    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("spacy_contproto", "configs"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(source)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with zipfile.ZipFile(next((tmp_path / "dist").glob("*.whl"))) as wheel:
        shipped = {name: wheel.read(name) for name in wheel.namelist() if name.endswith(".cfg")}
    assert shipped == {f"spacy_contproto/configs/{p.name}": p.read_bytes() for p in CONFIGS.glob("*.cfg")}
