"""A small multilingual NER demo corpus that the project writes itself.

Template sentences in English, German and Spanish with PER/ORG/LOC/MISC entities,
written as CoNLL files (word TAG, IOB2, -DOCSTART- lines) laid out like the real
corpora: ``{folder}/{lang}/{train,dev,test}.txt``. No research corpus is copied.
"""
import random
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

NAMES = {
    "PER": ["Anna Berg", "John Smith", "Maria Lopez", "Kofi Mensah", "Li Wei", "Olga Petrova",
            "Peter Brandt", "Sofia Romero", "Ahmed Hassan", "Jan de Vries", "Carlos Ruiz",
            "Yuki Tanaka", "Lena Vogel", "Miguel Torres", "Emma Clarke", "Hans Keller"],
    "ORG": ["Acme Corp", "Globex", "United Nations", "Red Cross", "Nordbank", "Vetra Labs",
            "Siemens", "Telefonica", "Real Madrid", "Bayern Munich", "Reuters", "Airbus",
            "City Council", "Orion Media Group", "European Union", "Helix"],
    "LOC": ["Paris", "Berlin", "Madrid", "Amsterdam", "New York", "Cairo", "Beijing", "Lagos",
            "Hamburg", "Sevilla", "London", "Vienna", "Buenos Aires", "Lisbon", "Munich", "Oslo"],
    "MISC": ["Olympics", "Nobel Prize", "World Cup", "Eurovision", "Tour de France", "Linux",
             "Champions League", "Oscar", "Grammy", "Bundesliga", "La Liga", "Euro"],
}

TEMPLATES: Dict[str, List[str]] = {
    "en": [
        "{PER} works for {ORG} in {LOC} .",
        "{PER} visited {LOC} last year .",
        "{ORG} opened a new office in {LOC} .",
        "The {MISC} was held in {LOC} .",
        "{PER} won the {MISC} .",
        "Yesterday {PER} met {PER} at {ORG} .",
        "{ORG} said the {MISC} will start soon .",
        "{PER} left {ORG} and moved to {LOC} .",
        "Shares of {ORG} fell sharply on Monday .",
        "Nothing happened here today .",
        "It was a quiet and rainy morning .",
    ],
    "de": [
        "{PER} arbeitet für {ORG} in {LOC} .",
        "{PER} besuchte letztes Jahr {LOC} .",
        "{ORG} eröffnete ein neues Büro in {LOC} .",
        "Die {MISC} fand in {LOC} statt .",
        "{PER} gewann den {MISC} .",
        "Gestern traf {PER} {PER} bei {ORG} .",
        "{ORG} sagte , die {MISC} beginne bald .",
        "{PER} verließ {ORG} und zog nach {LOC} .",
        "Die Aktien von {ORG} fielen am Montag stark .",
        "Heute ist hier nichts passiert .",
        "Es war ein ruhiger und regnerischer Morgen .",
    ],
    "es": [
        "{PER} trabaja para {ORG} en {LOC} .",
        "{PER} visitó {LOC} el año pasado .",
        "{ORG} abrió una nueva oficina en {LOC} .",
        "La {MISC} se celebró en {LOC} .",
        "{PER} ganó el {MISC} .",
        "Ayer {PER} se reunió con {PER} en {ORG} .",
        "{ORG} dijo que la {MISC} empezará pronto .",
        "{PER} dejó {ORG} y se mudó a {LOC} .",
        "Las acciones de {ORG} cayeron con fuerza el lunes .",
        "Hoy no pasó nada aquí .",
        "Fue una mañana tranquila y lluviosa .",
    ],
}

DEFAULT_SIZES = {"train": 600, "dev": 150, "test": 200}


def demo_sentences(lang: str, n: int, seed: int) -> List[Tuple[List[str], List[str]]]:
    """n (words, IOB2 tags) sentences of one language."""
    if lang not in TEMPLATES:
        raise ValueError(f"no demo templates for {lang!r}; available: {sorted(TEMPLATES)}")
    rng = random.Random(f"{lang}-{seed}")
    sentences = []
    for _ in range(n):
        words: List[str] = []
        tags: List[str] = []
        for piece in rng.choice(TEMPLATES[lang]).split():
            if piece.startswith("{") and piece.endswith("}"):
                label = piece[1:-1]
                name = rng.choice(NAMES[label]).split()
                words.extend(name)
                tags.extend([f"B-{label}"] + [f"I-{label}"] * (len(name) - 1))
            else:
                words.append(piece)
                tags.append("O")
        sentences.append((words, tags))
    return sentences


def write_conll(path: Path, sentences: Sequence[Tuple[List[str], List[str]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["-DOCSTART- O", ""]
    for words, tags in sentences:
        lines.extend(f"{w} {t}" for w, t in zip(words, tags))
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf8")


def write_demo_corpus(
    folder: Path, langs: Sequence[str] = ("en", "de", "es"), sizes: Dict[str, int] = DEFAULT_SIZES, seed: int = 0
) -> List[Path]:
    """Write {folder}/{lang}/{split}.txt for every language and split."""
    written = []
    for lang in langs:
        for i, (split, n) in enumerate(sizes.items()):
            path = Path(folder) / lang / f"{split}.txt"
            write_conll(path, demo_sentences(lang, n, seed * 10 + i))
            written.append(path)
    return written
