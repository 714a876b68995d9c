import math

import torch

from spacy_contproto.losses import per_group_mean_weights, weighted_cross_entropy


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
