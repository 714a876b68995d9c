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


def supervised_contrastive(
    vectors: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Supervised contrastive loss (eq. 4, Khosla et al. 2020) over L2-normalised vectors.

    For each anchor i: -1/|P(i)| sum_{p in P(i)} log( exp(v_i.v_p/t) / sum_{a != i} exp(v_i.v_a/t) ),
    averaged over the anchors that have at least one positive (an anchor without
    positives has no term). Label -1 marks vectors that take part in no pair."""
    keep = labels >= 0
    vectors, labels = vectors[keep], labels[keep]
    n = vectors.shape[0]
    if n < 2:
        return vectors.sum() * 0.0
    logits = vectors @ vectors.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=vectors.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = positives.sum(dim=1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return vectors.sum() * 0.0
    pos_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
    return -(pos_log_prob[has_pos] / n_pos[has_pos]).mean()


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
