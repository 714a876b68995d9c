"""spaCy-native ContProto: contrastive self-training with prototype-based
pseudo-labelling for cross-lingual span-based NER (Zhou et al., ACL 2023)."""
from .component import SpanContProto, make_span_contproto
from .model import build_span_contproto_model, first_last_pooling
from .settings import ContProtoSettings, contproto_settings, supervised_settings
from .training import create_self_training_corpus, create_training_schedule

__version__ = "0.1.0"
__all__ = [
    "SpanContProto",
    "make_span_contproto",
    "build_span_contproto_model",
    "first_last_pooling",
    "ContProtoSettings",
    "contproto_settings",
    "supervised_settings",
    "create_self_training_corpus",
    "create_training_schedule",
]
