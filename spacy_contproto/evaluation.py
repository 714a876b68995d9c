"""NER evaluation on the gold tokenisation, with spaCy's scorer and IOB tags for seqeval."""
from typing import Dict, List, Sequence, Tuple

from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc
from spacy.training import Example


def iob_tags(doc: Doc) -> List[str]:
    return [f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ in ("B", "I") else "O" for t in doc]


def same_tokens(nlp: Language, doc: Doc) -> Doc:
    """A Doc with doc's words and spaces and no annotation: the input that keeps every
    gold span on its tokens (nlp.make_doc(doc.text) may split them differently)."""
    return Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])


def predict_and_score(nlp: Language, gold: Sequence[Doc], batch_size: int = 64) -> Tuple[List[Doc], Dict]:
    """Run nlp on the gold Docs' own tokens (so that predictions and gold compare token
    by token, e.g. with seqeval) and score with spaCy's NER scorer (every gold entity counts)."""
    predicted = list(nlp.pipe((same_tokens(nlp, d) for d in gold), batch_size=batch_size))
    return predicted, get_ner_prf([Example(p, g) for p, g in zip(predicted, gold)])
