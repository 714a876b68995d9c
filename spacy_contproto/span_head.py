"""The PyTorch span head: span representations, classifier and projection head.

z = [h_start; h_end; width embedding] (paper §2.2). With ``token_features =
"first_last"`` each token row holds [first word-piece; last word-piece] and the
start token contributes its first word-piece half, the end token its last
word-piece half (as the published code does); with ``"pooled"`` both come from
the same pooled token vector.
"""
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

TOKEN_FEATURE_MODES = ("first_last", "pooled")


class SpanHead(nn.Module):
    def __init__(
        self,
        n_in: int,
        n_classes: int,
        *,
        max_span_length: int,
        width_embedding_width: int,
        hidden_width: Optional[int],
        projection_width: int,
        dropout: float,
        token_features: str,
    ):
        super().__init__()
        if token_features not in TOKEN_FEATURE_MODES:
            raise ValueError(
                f"token_features must be one of {TOKEN_FEATURE_MODES}, got {token_features!r}"
            )
        if token_features == "first_last" and n_in % 2:
            raise ValueError(
                "token_features='first_last' needs token vectors of even width "
                f"([first; last] word-piece), got width {n_in}. Use the "
                "spacy_contproto.first_last_pooling.v1 pooling layer."
            )
        self.token_features = token_features
        self.max_span_length = max_span_length
        half = n_in // 2 if token_features == "first_last" else n_in
        self.boundary_width = half
        self.span_width = 2 * half + width_embedding_width
        hidden = hidden_width or self.span_width
        self.width_embedding = nn.Embedding(max_span_length, width_embedding_width)
        self.feature_dropout = nn.Dropout(dropout)
        self.classifier = nn.Sequential(
            nn.Linear(self.span_width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )
        self.projection = nn.Sequential(
            nn.Linear(self.span_width, self.span_width),
            nn.ReLU(),
            nn.Linear(self.span_width, projection_width),
        )

    def _boundary_features(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per token: the part a span starting there uses, and the part a span ending there uses."""
        if self.token_features == "first_last":
            half = self.boundary_width
            return tokens[:, :half], tokens[:, half:]
        return tokens, tokens

    def span_representations(
        self, tokens: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor
    ) -> torch.Tensor:
        """z for spans [starts, ends) over the flat token matrix."""
        start_part, end_part = self._boundary_features(tokens)
        widths = self.width_embedding(ends - starts - 1)
        return torch.cat(
            [start_part.index_select(0, starts), end_part.index_select(0, ends - 1), widths], dim=1
        )

    def _first_layers(
        self, tokens: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, linears: Tuple[nn.Linear, ...]
    ) -> torch.Tensor:
        """linear(z) for several Linear layers on z, computed per token instead of per span:
        W z = W_start h_start + W_end h_end + W_width l_width, and a token starts or ends
        up to max_span_length spans. Same parameters, same result as the concatenation."""
        half = self.boundary_width
        weight = torch.cat([linear.weight for linear in linears], dim=0)
        bias = torch.cat([linear.bias for linear in linears], dim=0)
        start_part, end_part = self._boundary_features(tokens)
        by_start = start_part @ weight[:, :half].T
        by_end = end_part @ weight[:, half : 2 * half].T
        by_width = self.width_embedding.weight @ weight[:, 2 * half :].T
        # index_select: its backward (index_add) is deterministic on CPU, unlike x[idx]'s
        return (
            by_start.index_select(0, starts)
            + by_end.index_select(0, ends - 1)
            + by_width.index_select(0, ends - starts - 1)
            + bias
        )

    def forward(
        self,
        tokens: torch.Tensor,
        starts: torch.Tensor,
        ends: torch.Tensor,
        with_projection: bool = True,
        with_representations: bool = True,
    ) -> Tuple[Optional[torch.Tensor], ...]:
        """Returns (logits, z) or (logits, z, projected and L2-normalised z), z None
        without with_representations (prediction needs the logits only), in float32
        also under autocast: Thinc's grad scaler scales the gradients given for these
        outputs, and in float16 small gradients would round to 0 before the scaling meant
        to keep them (the casts back are part of the graph, after the scaling)."""
        tokens = self.feature_dropout(tokens)
        z = self.span_representations(tokens, starts, ends).float() if with_representations else None
        first = [self.classifier[0]] + ([self.projection[0]] if with_projection else [])
        hidden = self._first_layers(tokens, starts, ends, tuple(first))
        n_class_hidden = self.classifier[0].out_features
        logits = self.classifier[1:](hidden[:, :n_class_hidden])
        if not with_projection:
            return logits.float(), z
        projected = F.normalize(self.projection[1:](hidden[:, n_class_hidden:]).float(), dim=-1)
        return logits.float(), z, projected
