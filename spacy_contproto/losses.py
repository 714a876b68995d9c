"""Loss functions on span logits and span vectors (torch, no spaCy)."""
import torch
from torch.nn import functional as F


def per_group_mean_weights(groups: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weights that turn a weighted sum over spans into the paper's
    1/N sum_X 1/|S(X)| sum_{s in S(X)}: each unmasked span of group (sentence) X
    gets 1 / (|S(X)| * N), where |S(X)| counts X's unmasked spans and N the groups
    that have any."""
    mask = mask.to(torch.float32)
    if groups.numel() == 0:
        return mask
    counts = torch.zeros(int(groups.max()) + 1, dtype=mask.dtype, device=mask.device)
    counts.index_add_(0, groups, mask)
    n_groups = (counts > 0).sum().clamp(min=1)
    return mask / counts[groups].clamp(min=1) / n_groups


def weighted_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """sum_i weights_i * -log softmax(logits_i)[targets_i]  (eq. 1 with span weights)."""
    if logits.shape[0] == 0:
        return logits.sum()
    return (F.cross_entropy(logits, targets, reduction="none") * weights).sum()
