"""Class prototypes, class-specific margins and prototype-based pseudo-label
refinement (paper §3.2, eq. 8-11). Plain torch, vectorised over spans."""
from typing import Dict, Optional

import numpy
import torch
from torch.nn import functional as F

PROTOTYPE_UPDATES = ("sequential", "batch_mean")
MARGIN_CRITERIA = ("nearest", "any")
BETA_SCHEDULES = ("constant", "linear")


def ema_sequential(
    prototypes: torch.Tensor, vectors: torch.Tensor, labels: torch.Tensor, alpha: float
) -> torch.Tensor:
    """The published update: for every span i in batch order, phi_{y_i} <- alpha
    phi_{y_i} + (1 - alpha) v_i; then each prototype is normalised once.

    Computed in closed form: with n_c spans of class c and k_i the 1-based position
    of span i among them, phi_c <- alpha^n_c phi_c + (1-alpha) sum_i alpha^(n_c-k_i) v_i.
    Labels < 0 are ignored."""
    keep = labels >= 0
    vectors, labels = vectors[keep], labels[keep]
    n_classes = prototypes.shape[0]
    onehot = F.one_hot(labels, n_classes).to(vectors.dtype)
    counts = onehot.sum(dim=0)
    position = (onehot.cumsum(dim=0) * onehot).sum(dim=1)
    log_alpha = torch.log(torch.tensor(alpha, dtype=vectors.dtype, device=vectors.device))
    weights = (1.0 - alpha) * torch.exp((counts[labels] - position) * log_alpha)
    summed = torch.zeros_like(prototypes).index_add_(0, labels, weights[:, None] * vectors)
    updated = torch.exp(counts * log_alpha)[:, None] * prototypes + summed
    return F.normalize(updated, dim=1)


def ema_batch_mean(
    prototypes: torch.Tensor, vectors: torch.Tensor, labels: torch.Tensor, alpha: float
) -> torch.Tensor:
    """One EMA step per class present in the batch, towards the batch mean of its
    spans: phi_c <- Normalize(alpha phi_c + (1-alpha) mean_{y_i=c} v_i)."""
    keep = labels >= 0
    vectors, labels = vectors[keep], labels[keep]
    n_classes = prototypes.shape[0]
    counts = torch.bincount(labels, minlength=n_classes).to(vectors.dtype)
    sums = torch.zeros_like(prototypes).index_add_(0, labels, vectors)
    present = counts > 0
    means = sums / counts.clamp(min=1)[:, None]
    updated = torch.where(present[:, None], alpha * prototypes + (1 - alpha) * means, prototypes)
    return F.normalize(updated, dim=1)


def refine_pseudo_labels(
    pseudo_labels: torch.Tensor,
    similarities: torch.Tensor,
    beta: float,
    margins: torch.Tensor,
    *,
    criterion: str = "nearest",
    outside: int = 0,
) -> torch.Tensor:
    """Shift soft pseudo labels towards the nearest prototype's class (eq. 9-10).

    similarities: (n, C) phi_c . zeta_i. A span whose nearest prototype is "O"
    always moves towards "O". A span whose nearest prototype is an entity class c
    moves towards c only if it passes the margin test, else it stays (beta = 1):
    "nearest" (paper): phi_c . zeta > r_c; "any" (published code): some entity
    class c' has phi_c' . zeta > r_c'. Rows are re-normalised to sum to 1."""
    if criterion not in MARGIN_CRITERIA:
        raise ValueError(f"criterion must be one of {MARGIN_CRITERIA}, got {criterion!r}")
    if pseudo_labels.shape[0] == 0:
        return pseudo_labels
    nearest = similarities.argmax(dim=1)
    if criterion == "nearest":
        passes = similarities.gather(1, nearest[:, None]).squeeze(1) > margins[nearest]
    else:
        above = similarities > margins[None, :]
        above[:, outside] = False
        passes = above.any(dim=1)
    moves = (nearest == outside) | passes
    target = F.one_hot(nearest, pseudo_labels.shape[1]).to(pseudo_labels.dtype)
    shifted = beta * pseudo_labels + (1.0 - beta) * target
    updated = torch.where(moves[:, None], shifted, pseudo_labels)
    return updated / updated.sum(dim=1, keepdim=True).clamp(min=1e-12)


def beta_for_epoch(
    epoch: int, n_epochs: int, *, start: float, end: float, schedule: str, warmup_epochs: int = 1
) -> float:
    """Pseudo-label EMA coefficient in a refinement epoch (0-based epochs).

    "constant" (paper): start. "linear" (published code): from start in the first
    refinement epoch to end in the last epoch."""
    if schedule not in BETA_SCHEDULES:
        raise ValueError(f"beta schedule must be one of {BETA_SCHEDULES}, got {schedule!r}")
    if schedule == "constant":
        return start
    span = n_epochs - 1 - warmup_epochs
    if span <= 0:
        return start
    progress = min(max((epoch - warmup_epochs) / span, 0.0), 1.0)
    return start + (end - start) * progress


class PrototypeShapeError(ValueError):
    """Saved prototypes whose shape (classes, width) is not the memory's."""


class PrototypeMemory:
    """One normalised prototype per class (including "O"), updated by EMA, and
    the class-specific margins r_c (eq. 11) gathered over an epoch."""

    def __init__(self, n_classes: int, width: int, alpha: float, update: str = "sequential"):
        if update not in PROTOTYPE_UPDATES:
            raise ValueError(f"prototype update must be one of {PROTOTYPE_UPDATES}, got {update!r}")
        self.alpha = alpha
        self.update_rule = update
        self.prototypes = torch.zeros(n_classes, width)
        self.margins = torch.zeros(n_classes)
        self._margin_sums = torch.zeros(n_classes, dtype=torch.float64)
        self._margin_counts = torch.zeros(n_classes, dtype=torch.float64)

    @property
    def n_classes(self) -> int:
        return self.prototypes.shape[0]

    def update(self, vectors: torch.Tensor, labels: torch.Tensor) -> None:
        vectors = vectors.detach().to(self.prototypes)
        labels = labels.to(device=self.prototypes.device, dtype=torch.long)
        rule = ema_sequential if self.update_rule == "sequential" else ema_batch_mean
        self.prototypes = rule(self.prototypes, vectors, labels, self.alpha)

    def similarities(self, vectors: torch.Tensor) -> torch.Tensor:
        return vectors.detach().to(self.prototypes) @ self.prototypes.T

    def add_margin_statistics(self, similarities: torch.Tensor, labels: torch.Tensor) -> None:
        """Collect phi_c . zeta_i for spans labelled c, for the next epoch's margins."""
        labels = labels.to(device=self._margin_sums.device, dtype=torch.long)
        own = similarities.detach().to(self._margin_sums).gather(1, labels[:, None]).squeeze(1)
        self._margin_sums.index_add_(0, labels, own)
        self._margin_counts.index_add_(0, labels, torch.ones_like(own))

    def end_epoch(self) -> None:
        """Margins for the next epoch: mean similarity per class over this epoch
        (0 for a class no span was assigned to). Resets the statistics."""
        counts = self._margin_counts
        means = self._margin_sums / counts.clamp(min=1)
        self.margins = torch.where(counts > 0, means, torch.zeros_like(means)).to(self.prototypes.dtype)
        self._margin_sums.zero_()
        self._margin_counts.zero_()

    def to_dict(self) -> Dict[str, numpy.ndarray]:
        return {
            "prototypes": self.prototypes.cpu().numpy(),
            "margins": self.margins.cpu().numpy(),
            "margin_sums": self._margin_sums.cpu().numpy(),
            "margin_counts": self._margin_counts.cpu().numpy(),
        }

    def load_dict(self, state: Dict[str, numpy.ndarray]) -> "PrototypeMemory":
        prototypes = torch.as_tensor(numpy.asarray(state["prototypes"]))
        if prototypes.shape != self.prototypes.shape:
            raise PrototypeShapeError(
                f"saved prototypes have shape {tuple(prototypes.shape)}, expected "
                f"{tuple(self.prototypes.shape)} (different labels or projection width)"
            )
        self.prototypes = prototypes.to(self.prototypes)
        self.margins = torch.as_tensor(numpy.asarray(state["margins"])).to(self.margins)
        self._margin_sums = torch.as_tensor(numpy.asarray(state["margin_sums"])).to(self._margin_sums)
        self._margin_counts = torch.as_tensor(numpy.asarray(state["margin_counts"])).to(self._margin_counts)
        return self


def fixed_margins(n_classes: int, margin: Optional[float]) -> torch.Tensor:
    return torch.full((n_classes,), float(margin))
