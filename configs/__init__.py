"""The training configs of this folder, installed with the package as spacy_contproto.configs
(`python -m spacy_contproto init-configs DIR` writes them out, e.g. into a cloned spaCy project)."""
