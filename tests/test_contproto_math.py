import math

import pytest
import torch
from torch.nn import functional as F

from spacy_contproto.losses import soft_cross_entropy, supervised_contrastive, symmetric_kl
from spacy_contproto.prototypes import (
    PrototypeMemory,
    beta_for_epoch,
    ema_batch_mean,
    ema_sequential,
    refine_pseudo_labels,
)


def test_soft_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # probabilities 1/4, 3/4
    targets = torch.tensor([[0.5, 0.5]])
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75)) * 2.0
    assert soft_cross_entropy(logits, targets, torch.tensor([2.0])).item() == pytest.approx(expected)


def test_soft_cross_entropy_applies_softmax_once():
    # with one-hot targets it equals the hard cross-entropy on logits
    logits = torch.randn(5, 3)
    targets = torch.tensor([0, 2, 1, 1, 0])
    w = torch.ones(5)
    hard = F.cross_entropy(logits, targets, reduction="sum")
    assert soft_cross_entropy(logits, F.one_hot(targets, 3).float(), w).item() == pytest.approx(hard.item())


def test_supervised_contrastive_by_hand():
    s = 1 / math.sqrt(2)
    v = torch.tensor([[1.0, 0.0], [s, s], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    t = 0.5
    dot = lambda i, j: float(v[i] @ v[j]) / t  # noqa: E731
    # anchor 0: positive 1, others {1, 2}; anchor 1: positive 0, others {0, 2}; anchor 2: none
    l0 = -(dot(0, 1) - math.log(math.exp(dot(0, 1)) + math.exp(dot(0, 2))))
    l1 = -(dot(1, 0) - math.log(math.exp(dot(1, 0)) + math.exp(dot(1, 2))))
    expected = (l0 + l1) / 2
    assert supervised_contrastive(v, labels, t).item() == pytest.approx(expected, rel=1e-5)


def test_supervised_contrastive_averages_over_positives_and_ignores_minus_one():
    v = F.normalize(torch.randn(6, 4), dim=1)
    labels = torch.tensor([0, 0, 0, 1, -1, 1])
    full = supervised_contrastive(v, labels, 0.07)
    dropped = supervised_contrastive(v[[0, 1, 2, 3, 5]], labels[[0, 1, 2, 3, 5]], 0.07)
    assert full.item() == pytest.approx(dropped.item())
    # no positive anywhere: zero loss that still has a gradient path
    lonely = torch.randn(3, 4, requires_grad=True)
    loss = supervised_contrastive(lonely, torch.tensor([0, 1, 2]), 0.07)
    assert loss.item() == 0.0
    loss.backward()


def test_supervised_contrastive_is_finite_for_identical_vectors():
    v = F.normalize(torch.ones(4, 3), dim=1)
    assert torch.isfinite(supervised_contrastive(v, torch.tensor([0, 0, 1, 1]), 0.07))


def test_symmetric_kl_by_hand():
    a = torch.tensor([[0.0, 0.0]])  # p = (1/2, 1/2)
    b = torch.tensor([[0.0, math.log(3.0)]])  # q = (1/4, 3/4)
    p, q = [0.5, 0.5], [0.25, 0.75]
    kl_pq = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    kl_qp = sum(qi * math.log(qi / pi) for pi, qi in zip(p, q))
    assert symmetric_kl(a, b, torch.tensor([1.0])).item() == pytest.approx((kl_pq + kl_qp) / 2)
    assert symmetric_kl(a, a, torch.tensor([1.0])).item() == pytest.approx(0.0)


def sequential_loop(prototypes, vectors, labels, alpha):
    """The published code's loop, one span at a time, normalising once at the end."""
    protos = prototypes.clone()
    for v, y in zip(vectors, labels.tolist()):
        if y >= 0:
            protos[y] = alpha * protos[y] + (1 - alpha) * v
    return F.normalize(protos, dim=1)


@pytest.mark.parametrize("alpha", [0.99, 0.5])
def test_ema_closed_form_equals_sequential_loop(alpha):
    torch.manual_seed(0)
    prototypes = F.normalize(torch.randn(4, 8, dtype=torch.float64), dim=1)
    prototypes[3] = 0  # a class never seen so far
    vectors = F.normalize(torch.randn(300, 8, dtype=torch.float64), dim=1)
    labels = torch.randint(-1, 3, (300,))  # class 3 absent, some ignored spans
    got = ema_sequential(prototypes, vectors, labels, alpha)
    assert torch.allclose(got, sequential_loop(prototypes, vectors, labels, alpha), atol=1e-12)
    assert torch.all(got[3] == 0)


def test_ema_starting_from_zero_by_hand():
    prototypes = torch.zeros(2, 2)
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    got = ema_sequential(prototypes, vectors, torch.tensor([0, 0]), 0.9)
    # 0.9 * (0.1 * e1) + 0.1 * e2 = (0.09, 0.1), normalised
    expected = torch.tensor([0.09, 0.1]) / math.hypot(0.09, 0.1)
    assert torch.allclose(got[0], expected)
    assert torch.all(got[1] == 0)


def test_ema_batch_mean_by_hand():
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    vectors = torch.tensor([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0]])
    got = ema_batch_mean(prototypes, vectors, torch.tensor([0, 0, 0]), 0.5)
    mean = torch.tensor([1 / 3, 0.0])
    expected = F.normalize(0.5 * prototypes[0] + 0.5 * mean, dim=0)
    assert torch.allclose(got[0], expected)
    assert torch.equal(got[1], prototypes[1])


def test_refine_nearest_margin_rule_by_hand():
    pseudo = torch.tensor([[0.6, 0.3, 0.1]] * 3)
    sims = torch.tensor(
        [
            [0.9, 0.2, 0.1],  # nearest O: always moves to O
            [0.1, 0.8, 0.7],  # nearest class 1, 0.8 > margin 0.5: moves to 1
            [0.1, 0.4, 0.3],  # nearest class 1, 0.4 < 0.5: stays
        ]
    )
    margins = torch.tensor([0.0, 0.5, 0.2])
    got = refine_pseudo_labels(pseudo, sims, 0.9, margins, criterion="nearest")
    assert torch.allclose(got[0], torch.tensor([0.64, 0.27, 0.09]))
    assert torch.allclose(got[1], torch.tensor([0.54, 0.37, 0.09]))
    assert torch.allclose(got[2], pseudo[2])


def test_refine_any_margin_rule_differs_from_nearest():
    pseudo = torch.tensor([[0.6, 0.3, 0.1]])
    sims = torch.tensor([[0.1, 0.4, 0.3]])  # nearest entity 1 fails its margin, class 2 passes its own
    margins = torch.tensor([0.0, 0.5, 0.2])
    nearest = refine_pseudo_labels(pseudo, sims, 0.9, margins, criterion="nearest")
    any_rule = refine_pseudo_labels(pseudo, sims, 0.9, margins, criterion="any")
    assert torch.allclose(nearest, pseudo)
    assert torch.allclose(any_rule, torch.tensor([[0.54, 0.37, 0.09]]))  # moves to the nearest, 1


def test_refine_keeps_distributions_under_repeated_updates():
    torch.manual_seed(1)
    pseudo = torch.softmax(torch.randn(50, 5), dim=1)
    for _ in range(30):
        sims = F.normalize(torch.randn(50, 5), dim=1)
        pseudo = refine_pseudo_labels(pseudo, sims, 0.8, torch.zeros(5), criterion="nearest")
        assert torch.all(pseudo >= 0)
        assert torch.allclose(pseudo.sum(1), torch.ones(50))


def test_beta_schedules():
    assert beta_for_epoch(3, 10, start=0.95, end=0.8, schedule="constant") == 0.95
    assert beta_for_epoch(1, 10, start=0.95, end=0.8, schedule="linear") == pytest.approx(0.95)
    assert beta_for_epoch(9, 10, start=0.95, end=0.8, schedule="linear") == pytest.approx(0.8)
    assert beta_for_epoch(5, 10, start=0.95, end=0.8, schedule="linear") == pytest.approx(0.875)
    with pytest.raises(ValueError):
        beta_for_epoch(1, 10, start=0.95, end=0.8, schedule="cosine")


def test_prototype_memory_margins_per_epoch_and_absent_classes():
    memory = PrototypeMemory(3, 2, alpha=0.9)
    sims = torch.tensor([[0.9, 0.1, 0.0], [0.7, 0.2, 0.1], [0.0, 0.6, 0.2]])
    memory.add_margin_statistics(sims, torch.tensor([0, 0, 1]))
    assert torch.all(memory.margins == 0)  # margins change only at the epoch end
    memory.end_epoch()
    assert torch.allclose(memory.margins, torch.tensor([0.8, 0.6, 0.0]))  # class 2 absent: 0, no NaN
    memory.end_epoch()
    assert torch.all(memory.margins == 0)


def test_prototype_memory_update_with_absent_class_and_round_trip():
    memory = PrototypeMemory(3, 2, alpha=0.9, update="batch_mean")
    memory.update(torch.tensor([[3.0, 4.0]]), torch.tensor([1]))
    assert torch.all(torch.isfinite(memory.prototypes))
    assert torch.allclose(memory.prototypes[1], torch.tensor([0.6, 0.8]))
    assert torch.all(memory.prototypes[[0, 2]] == 0)
    other = PrototypeMemory(3, 2, alpha=0.9).load_dict(memory.to_dict())
    assert torch.equal(other.prototypes, memory.prototypes)
    with pytest.raises(ValueError, match="shape"):
        PrototypeMemory(4, 2, alpha=0.9).load_dict(memory.to_dict())
