import math

import torch

from spacy_contproto.losses import per_group_mean_weights, supervised_contrastive, weighted_cross_entropy


def test_per_group_mean_weights_by_hand():
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    mask = torch.tensor([1, 1, 0, 1, 1, 0])
    # group 0: 2 scored spans, group 1: 2, group 2: none -> N = 2
    expected = [1 / 4, 1 / 4, 0, 1 / 4, 1 / 4, 0]
    assert torch.allclose(per_group_mean_weights(groups, mask), torch.tensor(expected))


def test_weighted_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    targets = torch.tensor([0, 1])
    weights = torch.tensor([0.5, 2.0])
    # -log(1/2) * 0.5 + -log(1/4) * 2
    expected = 0.5 * math.log(2) + 2 * math.log(4)
    assert math.isclose(weighted_cross_entropy(logits, targets, weights).item(), expected, rel_tol=1e-6)


def test_weighted_cross_entropy_empty_is_zero():
    logits = torch.zeros((0, 3), requires_grad=True)
    loss = weighted_cross_entropy(logits, torch.zeros(0, dtype=torch.long), torch.zeros(0))
    assert loss.item() == 0.0


def _supcon_full_matrix(vectors, labels, temperature):
    """Eq. 4 written out over the whole similarity matrix (the reference)."""
    n = vectors.shape[0]
    logits = vectors @ vectors.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool)
    log_prob = logits.masked_fill(self_mask, float("-inf"))
    log_prob = log_prob - torch.logsumexp(log_prob, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = positives.sum(dim=1)
    rows = n_pos > 0
    return -(log_prob.masked_fill(~positives, 0.0).sum(dim=1)[rows] / n_pos[rows]).mean()


def test_supervised_contrastive_in_row_blocks_equals_full_matrix():
    """Blocks recomputed in backward (checkpoint) give the full matrix's loss and gradients;
    a class with a single member is an anchor of no term but sits in every denominator."""
    generator = torch.Generator().manual_seed(0)
    raw = torch.randn(53, 8, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (53,), generator=generator)
    labels[7] = 9  # alone in its class
    labels[11] = -1  # in no pair
    results = []
    for fn in (
        lambda v: _supcon_full_matrix(v[labels >= 0], labels[labels >= 0], 0.07),
        lambda v: supervised_contrastive(v, labels, 0.07),
        lambda v: supervised_contrastive(v, labels, 0.07, block_rows=5),
    ):
        leaf = raw.clone().requires_grad_(True)
        loss = fn(torch.nn.functional.normalize(leaf, dim=1))
        loss.backward()
        results.append((loss.detach(), leaf.grad))
    for loss, grad in results[1:]:
        torch.testing.assert_close(loss, results[0][0])
        torch.testing.assert_close(grad, results[0][1])
