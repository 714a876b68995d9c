"""Tiny offline encoders and synthetic NER data for tests, smoke runs and demos.

Everything here is generated: a random BERT of a few layers with a WordPiece
tokenizer trained on the fly, and template sentences with PER/ORG/LOC/MISC
entities. No download, no research corpus.
"""
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple, Union

from spacy.tokens import Doc
from spacy.vocab import Vocab

from .demo import demo_sentences
from .evaluation import iob_tags

def synthetic_sentences(n: int, seed: int = 0) -> List[Tuple[List[str], List[Tuple[int, int, str]]]]:
    """n English demo sentences as (words, [(start, end, label), ...]) token offsets."""
    sentences = []
    for words, tags in demo_sentences("en", n, seed):
        ents = [
            (i, next((j for j in range(i + 1, len(tags)) if not tags[j].startswith("I-")), len(tags)), tag[2:])
            for i, tag in enumerate(tags)
            if tag.startswith("B-")
        ]
        sentences.append((words, ents))
    return sentences


def synthetic_docs(vocab: Vocab, n: int, seed: int = 0, with_entities: bool = True) -> List[Doc]:
    """n Docs with gold doc.ents (or no entity annotation at all)."""
    docs = []
    for words, ents in synthetic_sentences(n, seed):
        if with_entities:
            tags = ["O"] * len(words)
            for start, end, label in ents:
                tags[start] = f"B-{label}"
                for i in range(start + 1, end):
                    tags[i] = f"I-{label}"
            docs.append(Doc(vocab, words=words, ents=tags))
        else:
            docs.append(Doc(vocab, words=words))
    return docs


def make_tiny_encoder(
    path: Union[str, Path],
    texts: Iterable[str] = (),
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    vocab_size: int = 400,
    seed: int = 0,
) -> Path:
    """Write a random BERT encoder and a trained WordPiece tokenizer to path
    (a HuggingFace model folder that spacy-transformers loads offline)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    texts = list(texts) or [" ".join(words) for words, _ in synthetic_sentences(400, seed)]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    )
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = BertTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
        mask_token="[MASK]", do_lower_case=False, model_max_length=128,
    )
    fast.save_pretrained(path)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    return path


def as_seqeval(docs: Sequence[Doc]) -> List[List[str]]:
    return [iob_tags(doc) for doc in docs]
