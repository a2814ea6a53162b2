"""Consistency losses of semi-supervised change training (FixMatch / UniMatch / DiffMatch).

Pure functions of tensors, and the options of the objective (:class:`ConsistencyOptions`): the
trainer (:mod:`geochange.trainers.semi`) makes the views and runs the model, these score them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from geochange.classes import IGNORE_INDEX
from geochange.errors import ConfigurationError, DataError
from geochange.losses.binary import masked_cross_entropy

__all__ = [
    "ConsistencyOptions",
    "aux_semantic_loss",
    "confidence_weighted_bce",
    "confident_labels",
    "generated_label_bce",
    "pseudo_label_thresholds",
    "weak_pseudo_labels",
]


@dataclass(frozen=True)
class ConsistencyOptions:
    """The hyper-parameters one semi-supervised step reads, checked once, in one place.

    Built from the trainer's ``hparams`` at every step (:meth:`from_hparams`), so a changed
    hyper-parameter takes effect as before; the field meanings are those of
    :class:`~geochange.trainers.SemiSupervisedChangeTrainer`.
    """

    confidence_threshold: float = 0.95
    change_confidence_threshold: float | None = None
    balance_pseudo_labels: bool = False
    unsupervised_weight: float = 1.0
    contrastive_weight: float = 0.1
    generated_weight_start: float = 1.0
    generated_weight_end: float = 0.0
    feature_dropout: float = 0.0
    feature_perturbation_share: float = 0.5
    cutmix_probability: float = 0.5
    cutmix_area: tuple[float, float] = (0.02, 0.4)

    def __post_init__(self) -> None:
        """Check the ranges.

        Raises:
            ConfigurationError: For a value out of its range (named in the message).
        """
        threshold, dropout = self.confidence_threshold, self.feature_dropout
        if not 0.5 <= threshold < 1.0:
            raise ConfigurationError(f"confidence_threshold must be in [0.5, 1), got {threshold}")
        change = self.change_confidence_threshold
        if change is not None and not 0.5 <= change < 1.0:
            raise ConfigurationError(
                f"change_confidence_threshold must be in [0.5, 1) or None, got {change}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigurationError(f"feature_dropout must be in [0, 1), got {dropout}")
        share = self.feature_perturbation_share
        if not 0.0 <= share <= 1.0:
            raise ConfigurationError(f"feature_perturbation_share must be in [0, 1], got {share}")
        if not 0.0 <= self.cutmix_probability <= 1.0:
            raise ConfigurationError(
                f"cutmix_probability must be in [0, 1], got {self.cutmix_probability}"
            )
        area = self.cutmix_area
        if not 0.0 < area[0] <= area[1] <= 1.0:
            raise ConfigurationError(f"cutmix_area must be 0 < min <= max <= 1, got {area}")
        for name in (
            "unsupervised_weight",
            "contrastive_weight",
            "generated_weight_start",
            "generated_weight_end",
        ):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> ConsistencyOptions:
        """Read the options from a trainer's hyper-parameters.

        Args:
            hparams: ``SemiSupervisedChangeTrainer.hparams``.

        Returns:
            The checked options.
        """
        area = hparams["cutmix_area"]
        # Checkpoints from before the class-aware options read as the old behaviour.
        change = hparams.get("change_confidence_threshold")
        return cls(
            confidence_threshold=float(hparams["confidence_threshold"]),
            change_confidence_threshold=None if change is None else float(change),
            balance_pseudo_labels=bool(hparams.get("balance_pseudo_labels", False)),
            unsupervised_weight=float(hparams["unsupervised_weight"]),
            contrastive_weight=float(hparams["contrastive_weight"]),
            generated_weight_start=float(hparams["generated_weight_start"]),
            generated_weight_end=float(hparams["generated_weight_end"]),
            feature_dropout=float(hparams["feature_dropout"]),
            feature_perturbation_share=float(hparams["feature_perturbation_share"]),
            cutmix_probability=float(hparams["cutmix_probability"]),
            cutmix_area=(area[0], area[1]),
        )


@torch.no_grad()
def weak_pseudo_labels(change_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Pseudo labels and their confidence from the weak view's change logits (no gradient).

    Args:
        change_logits: ``[B, 1, H, W]`` change logits of the weak view.

    Returns:
        ``(pseudo, confidence)``: ``[B, H, W]`` 0/1 labels (change where ``p > 0.5``) and
        ``max(p, 1 - p)``.
    """
    probability = change_logits[:, 0].detach().float().sigmoid()
    pseudo = (probability > 0.5).long()
    return pseudo, torch.maximum(probability, 1 - probability)


def pseudo_label_thresholds(
    pseudo: Tensor, threshold: float, change_threshold: float | None = None
) -> Tensor:
    """Class-aware confidence thresholds: one per pixel, by the class of its pseudo label.

    Change pixels are rare and their probabilities rise slowly early in training, so one
    threshold for both classes keeps nearly only "no change" labels; a lower threshold for
    the change class lets the confident change pixels in.

    Args:
        pseudo: ``[B, H, W]`` 0/1 pseudo labels.
        threshold: Threshold of "no change" pixels (and of change pixels when
            ``change_threshold`` is ``None``).
        change_threshold: Threshold of pixels pseudo-labelled change.

    Returns:
        ``[B, H, W]`` float thresholds.
    """
    base = torch.full(pseudo.shape, float(threshold), device=pseudo.device)
    if change_threshold is None:
        return base
    return torch.where(pseudo == 1, torch.full_like(base, float(change_threshold)), base)


def confident_labels(
    pseudo: Tensor,
    confidence: Tensor,
    threshold: float | Tensor,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Pseudo labels with the unconfident pixels set to ``ignore_index``.

    Args:
        pseudo: ``[B, H, W]`` 0/1 pseudo labels.
        confidence: ``[B, H, W]`` their confidence.
        threshold: Confidence needed to keep a label (a number, or ``[B, H, W]`` per pixel).
        ignore_index: Value given to the other pixels.

    Returns:
        The labels, same shape.
    """
    return torch.where(confidence >= threshold, pseudo, torch.full_like(pseudo, ignore_index))


def aux_semantic_loss(
    logits_pre: Tensor,
    logits_post: Tensor,
    target_pre: Tensor,
    target_post: Tensor,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """DiffMatch auxiliary semantic term ``(CE(pre) + CE(post)) / 2`` against pseudo maps.

    Args:
        logits_pre: ``[B, K, H, W]`` auxiliary class logits of the first date.
        logits_post: The same for the second date.
        target_pre: ``[B, H, W]`` pseudo semantic map of the first date.
        target_post: The same for the second date.
        ignore_index: Label value excluded from the loss.

    Returns:
        Scalar loss.
    """
    return (
        masked_cross_entropy(logits_pre, target_pre, ignore_index)
        + masked_cross_entropy(logits_post, target_post, ignore_index)
    ) / 2


def confidence_weighted_bce(
    logits: Tensor,
    pseudo_labels: Tensor,
    confidence: Tensor,
    threshold: float | Tensor,
    ignore_index: int = IGNORE_INDEX,
    *,
    balance: bool = False,
) -> Tensor:
    """FixMatch/UniMatch unsupervised loss: BCE on confident pixels, averaged over valid ones.

    Unconfident pixels contribute zero but still count in the denominator, so the loss is the
    mean BCE over confident pixels times the confident fraction (a batch with few confident
    pixels pulls little). With ``balance=True`` the mean BCE over confident pixels is replaced
    by the average of the two classes' means (change-balanced): a few hundred confident change
    pixels are no longer outvoted by a hundred thousand "no change" ones.

    Args:
        logits: Change logits ``[B, 1, H, W]`` or ``[B, H, W]`` of the strong view.
        pseudo_labels: ``[B, H, W]`` 0/1 pseudo labels (``ignore_index`` where invalid).
        confidence: ``[B, H, W]`` confidence ``max(p, 1 - p)`` of the weak prediction.
        threshold: Confidence needed to use a pixel (0.95 in FixMatch/UniMatch), a number or
            ``[B, H, W]`` per pixel (:func:`pseudo_label_thresholds`).
        ignore_index: Label value of invalid pixels (excluded from numerator and denominator).
        balance: Average the per-class mean BCE of the confident pixels (see above).

    Returns:
        Scalar loss (0 when no pixel is valid).

    Raises:
        DataError: If the shapes disagree.
    """
    if logits.dim() == 4:
        logits = logits[:, 0]
    if logits.shape != pseudo_labels.shape or confidence.shape != pseudo_labels.shape:
        raise DataError(
            f"logits {tuple(logits.shape)}, pseudo labels {tuple(pseudo_labels.shape)} and "
            f"confidence {tuple(confidence.shape)} must have the same [B, H, W] shape"
        )
    valid = pseudo_labels != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    confident = valid & (confidence >= threshold)
    target = torch.where(valid, pseudo_labels, torch.zeros_like(pseudo_labels)).float()
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    if not balance:
        return (per_pixel * confident.float()).sum() / valid.sum()
    fraction = confident.sum() / valid.sum()
    means = []
    for label in (0, 1):
        chosen = confident & (pseudo_labels == label)
        if bool(chosen.any()):
            means.append((per_pixel * chosen.float()).sum() / chosen.sum())
    if not means:
        return logits.sum() * 0.0
    return fraction * torch.stack(means).mean()


def generated_label_bce(
    logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX, *, over_all: bool = False
) -> Tensor:
    """BCE of the generated-label head against CEG labels (DiffMatch's cross-entropy term).

    Args:
        logits: ``[B, 1, H, W]`` or ``[B, H, W]`` logits of the generated-label head.
        labels: ``[B, H, W]`` CEG labels (0, 1, ``ignore_index`` uncertain).
        ignore_index: Label value left out of the numerator.
        over_all: Divide by every pixel, not only the decided ones (DiffMatch's reduction on
            unlabeled views: a view CEG is unsure about pulls less).

    Returns:
        Scalar loss (0 when no pixel is decided).
    """
    if logits.dim() == 4:
        logits = logits[:, 0]
    valid = labels != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    target = torch.where(valid, labels, torch.zeros_like(labels)).float()
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    total = (per_pixel * valid.float()).sum()
    return total / (labels.numel() if over_all else valid.sum())
