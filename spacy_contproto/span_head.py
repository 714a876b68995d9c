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

    def span_representations(
        self, tokens: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor
    ) -> torch.Tensor:
        """z for spans [starts, ends) over the flat token matrix."""
        half = self.boundary_width
        if self.token_features == "first_last":
            h_start = tokens[starts, :half]
            h_end = tokens[ends - 1, half:]
        else:
            h_start = tokens[starts]
            h_end = tokens[ends - 1]
        widths = self.width_embedding(ends - starts - 1)
        return torch.cat([h_start, h_end, widths], dim=1)

    def forward(
        self,
        tokens: torch.Tensor,
        starts: torch.Tensor,
        ends: torch.Tensor,
        with_projection: bool = True,
    ) -> Tuple[torch.Tensor, ...]:
        """Returns (logits, z) or (logits, z, projected and L2-normalised z)."""
        tokens = self.feature_dropout(tokens)
        z = self.span_representations(tokens, starts, ends)
        logits = self.classifier(z)
        if not with_projection:
            return logits, z
        projected = F.normalize(self.projection(z), dim=-1)
        return logits, z, projected
