"""The ContProto training settings of span_contproto: one registered, typed
config block with the paper's values as defaults."""
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from spacy.util import registry

from .prototypes import BETA_SCHEDULES, MARGIN_CRITERIA, PROTOTYPE_UPDATES

CHOICES = {
    "contrastive_target_labels": ("prediction", "pseudo_label"),
    "consistency_spans": ("all", "source"),
    "views": ("auto", "head", "encoder"),
    "prototype_space": ("projection", "representation"),
    "prototype_update": PROTOTYPE_UPDATES,
    "beta_schedule": BETA_SCHEDULES,
    "margin": ("class", "fixed"),
    "margin_criterion": MARGIN_CRITERIA,
    "margin_labels": ("prediction", "pseudo_label"),
    "first_margin": ("previous_epoch", "zero"),
}


@dataclass(frozen=True)
class ContProtoSettings:
    source_loss: bool = True
    source_weight: float = 1.0
    target_loss: bool = True
    target_weight: float = 1.0
    contrastive_loss: bool = True
    contrastive_weight: float = 1.0
    temperature: float = 0.07
    contrastive_target_labels: str = "prediction"
    consistency_loss: bool = True
    consistency_weight: float = 1.0
    consistency_spans: str = "all"
    views: str = "auto"
    prototypes: bool = True
    prototype_space: str = "projection"
    prototype_alpha: float = 0.99
    prototype_update: str = "sequential"
    beta: float = 0.95
    beta_schedule: str = "constant"
    beta_end: float = 0.8
    margin: str = "class"
    fixed_margin: float = 1.0
    margin_criterion: str = "nearest"
    margin_labels: str = "prediction"
    first_margin: str = "previous_epoch"
    warmup_epochs: int = 1
    max_epochs: int = 10
    store_dir: Optional[str] = None
    store_max_ram_mb: int = 1024
    quality_log: Optional[str] = None

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"contproto setting {name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("beta", "beta_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        # alpha is the weight kept by the EMA: at 0 the closed-form sequential update takes log(0),
        # at 1 the prototypes never leave their zero start and refinement pulls every label to "O"
        if not 0.0 < self.prototype_alpha < 1.0:
            raise ValueError(f"prototype_alpha must be in (0, 1), got {self.prototype_alpha}")
        for name in ("source_weight", "target_weight", "contrastive_weight", "consistency_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        # paths: caught here, by setting name, rather than as a bare OSError at the first write
        if self.store_dir is not None and Path(self.store_dir).exists() and not Path(self.store_dir).is_dir():
            raise ValueError(f"store_dir must be a folder (or not exist yet), got the file {self.store_dir}")
        if self.quality_log is not None and Path(self.quality_log).is_dir():
            raise ValueError(f"quality_log must be a file path (JSONL), got the folder {self.quality_log}")
        # max_epochs: [training] max_epochs = -1 (streaming) is refused at initialize, with why
        for name in ("warmup_epochs", "store_max_ram_mb"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def warn_about_training(self) -> None:
        """Settings that train without error but cannot do what they are meant to (warned
        when the component is initialized for training, not each time a model loads)."""
        if self.prototypes and self.margin == "fixed" and self.fixed_margin >= 1.0:
            warnings.warn(
                f"contproto fixed_margin = {self.fixed_margin}: a cosine similarity never exceeds 1, so "
                'no span can pass the margin and refinement only moves pseudo labels towards "O". '
                "Use a margin below 1 (the paper's r = 1.0 reads as this degenerate case)."
            )
        if self.prototypes and self.prototype_space == "projection" and not self.contrastive_loss:
            warnings.warn(
                "contproto prototypes live in the projection space, which only the contrastive loss "
                "trains; with contrastive_loss = false it stays at its random initialisation. Use "
                'prototype_space = "representation" (the paper\'s ablation proto w/o cl).'
            )
        if self.prototypes and self.beta_schedule == "linear" and self.max_epochs <= self.warmup_epochs + 1:
            # beta_for_epoch needs the last epoch to run from beta to beta_end
            warnings.warn(
                f"contproto beta_schedule = \"linear\" with max_epochs = {self.max_epochs} (from [training] "
                f"max_epochs; 0 when training is bounded by max_steps) and warmup_epochs = {self.warmup_epochs}: "
                f"beta stays at {self.beta}. The schedule needs at least warmup_epochs + 2 epochs."
            )

    @property
    def n_views(self) -> int:
        """Two dropout views when a loss compares them (contrastive, consistency)."""
        return 2 if (self.contrastive_loss or self.consistency_loss) else 1

    def to_dict(self) -> dict:
        return asdict(self)


@registry.misc("spacy_contproto.ContProto.v1")
def contproto_settings(
    source_loss: bool = True,
    source_weight: float = 1.0,
    target_loss: bool = True,
    target_weight: float = 1.0,
    contrastive_loss: bool = True,
    contrastive_weight: float = 1.0,
    temperature: float = 0.07,
    contrastive_target_labels: str = "prediction",
    consistency_loss: bool = True,
    consistency_weight: float = 1.0,
    consistency_spans: str = "all",
    views: str = "auto",
    prototypes: bool = True,
    prototype_space: str = "projection",
    prototype_alpha: float = 0.99,
    prototype_update: str = "sequential",
    beta: float = 0.95,
    beta_schedule: str = "constant",
    beta_end: float = 0.8,
    margin: str = "class",
    fixed_margin: float = 1.0,
    margin_criterion: str = "nearest",
    margin_labels: str = "prediction",
    first_margin: str = "previous_epoch",
    warmup_epochs: int = 1,
    max_epochs: int = 10,
    store_dir: Optional[str] = None,
    store_max_ram_mb: int = 1024,
    quality_log: Optional[str] = None,
) -> ContProtoSettings:
    """ContProto training settings (paper values as defaults; see README).

    Losses (each a switch and a weight): source_loss (eq. 1), target_loss (eq. 2,
    soft CE against the current pseudo labels), contrastive_loss (eq. 4 with
    temperature; target positives from the current prediction, eq. 5, or from the
    stored pseudo label), consistency_loss (eq. 6, KL between two dropout views,
    symmetric as published, where the paper prints KL(P || P'); over all spans, or
    source spans only as published).
    views: where the two dropout views come from: "encoder" (two transformer passes,
        embedded transformer only), "head" (one transformer pass, two dropout passes
        of the span head; the only option with a shared transformer), "auto".
    prototypes: prototype-based pseudo-label refinement (eq. 8-11) on the projected
        ("projection") or unprojected ("representation", ablation proto w/o cl) span vectors;
        prototype_update "sequential" (published per-span EMA, in closed form) or "batch_mean".
    beta / beta_schedule / beta_end: pseudo-label EMA, "constant" (paper) or "linear"
        from beta to beta_end (published code) over max_epochs.
    margin "class" (eq. 11, from the previous epoch; margin_labels: spans predicted as c,
        as in eq. 11, or pseudo-labelled c as published) or "fixed" (fixed_margin);
        margin_criterion "nearest" (paper) or "any" (published code); first_margin: the
        margins of the first refinement epoch, from the warm-up epoch's statistics
        ("previous_epoch", eq. 11 read literally) or 0 (published code).
    warmup_epochs: epochs without refinement. store_dir: folder for the refined labels
        (null: memory, or a temporary folder past store_max_ram_mb), written from the
        first update on. quality_log: JSONL file for the oracle P/R/F1 of the pseudo
        labels per epoch (needs target gold), started afresh at the first update."""
    return ContProtoSettings(**{k: v for k, v in locals().items()})


@registry.misc("spacy_contproto.Supervised.v1")
def supervised_settings() -> ContProtoSettings:
    """Plain supervised span NER: source cross-entropy only (the teacher)."""
    return ContProtoSettings(
        target_loss=False, contrastive_loss=False, consistency_loss=False, prototypes=False
    )
