"""Loss functions on span logits and span vectors (torch, no spaCy)."""
import torch
from torch.utils.checkpoint import checkpoint
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


def soft_cross_entropy(
    logits: torch.Tensor, soft_targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """sum_i weights_i * -sum_c y_ic log softmax(logits_i)_c  (eq. 2).

    Takes logits, so softmax is applied once (the published code applies it to
    probabilities, i.e. twice)."""
    if logits.shape[0] == 0:
        return logits.sum()
    log_probs = F.log_softmax(logits, dim=-1)
    return -((soft_targets * log_probs).sum(dim=-1) * weights).sum()


# Rows of the similarity matrix computed at once. The loss needs each anchor's logsumexp over
# all other vectors; computing it in row blocks, recomputed in backward (checkpoint), keeps
# memory at O(block x n) instead of O(n^2): a batch of long sentences has tens of thousands
# of spans (two views), and the full matrix with its intermediates took over 20 GB.
CONTRASTIVE_BLOCK_ROWS = 2048


def _masked_row_logsumexp(anchors: torch.Tensor, vectors: torch.Tensor, self_index: torch.Tensor,
                          temperature: float) -> torch.Tensor:
    logits = anchors @ vectors.T / temperature
    is_self = torch.arange(vectors.shape[0], device=vectors.device)[None, :] == self_index[:, None]
    return torch.logsumexp(logits.masked_fill(is_self, float("-inf")), dim=1)


def supervised_contrastive(
    vectors: torch.Tensor, labels: torch.Tensor, temperature: float, block_rows: int = CONTRASTIVE_BLOCK_ROWS
) -> torch.Tensor:
    """Supervised contrastive loss (eq. 4, Khosla et al. 2020) over L2-normalised vectors.

    For each anchor i: -1/|P(i)| sum_{p in P(i)} log( exp(v_i.v_p/t) / sum_{a != i} exp(v_i.v_a/t) ),
    averaged over the anchors that have at least one positive (an anchor without
    positives has no term). Label -1 marks vectors that take part in no pair.

    The positives' logits sum to v_i.(S_{y_i} - v_i)/t with S_c the sum of class c's vectors,
    so only the denominators need the similarity matrix, taken block_rows rows at a time."""
    keep = labels >= 0
    vectors, labels = vectors[keep], labels[keep]
    n = vectors.shape[0]
    if n < 2:
        return vectors.sum() * 0.0
    n_pos = torch.bincount(labels)[labels] - 1
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return vectors.sum() * 0.0
    class_sums = torch.zeros(int(labels.max()) + 1, vectors.shape[1], dtype=vectors.dtype, device=vectors.device)
    class_sums = class_sums.index_add(0, labels, vectors)
    anchor_index = has_pos.nonzero().squeeze(1)
    # index_select, not x[idx]: the latter's backward accumulates in a nondeterministic order on CPU
    anchors = vectors.index_select(0, anchor_index)
    own_class_sums = class_sums.index_select(0, labels.index_select(0, anchor_index))
    pos_logits = (anchors * (own_class_sums - anchors)).sum(dim=1) / temperature
    blocks = []
    for start in range(0, anchors.shape[0], block_rows):
        args = (anchors[start:start + block_rows], vectors, anchor_index[start:start + block_rows], temperature)
        if n > block_rows and torch.is_grad_enabled():
            blocks.append(checkpoint(_masked_row_logsumexp, *args, use_reentrant=False))
        else:
            blocks.append(_masked_row_logsumexp(*args))
    log_denominator = torch.cat(blocks)
    n_pos = n_pos[anchor_index].to(vectors.dtype)
    return -(pos_logits / n_pos - log_denominator).mean()


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Consistency between two dropout views (eq. 6, R-Drop):
    sum_i weights_i * (KL(P_i || P'_i) + KL(P'_i || P_i)) / 2."""
    if logits_a.shape[0] == 0:
        return logits_a.sum()
    log_p = F.log_softmax(logits_a, dim=-1)
    log_q = F.log_softmax(logits_b, dim=-1)
    kl_pq = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    kl_qp = (log_q.exp() * (log_q - log_p)).sum(dim=-1)
    return ((kl_pq + kl_qp) / 2 * weights).sum()
