"""Losses for binary and semantic change detection.

All losses honour ``ignore_index`` (default 255: nodata/unlabeled) and take the model outputs
of :mod:`geochange.models` (change logits ``[B, 1, H, W]``, class logits ``[B, K, H, W]``).
"""

from __future__ import annotations

from geochange.classes import IGNORE_INDEX
from geochange.losses.binary import (
    BCEDiceLoss,
    CombinedIoULoss,
    DiceLoss,
    FocalLoss,
    MaskedBCEWithLogitsLoss,
    SoftIoULoss,
    build_change_loss,
    masked_cross_entropy,
)
from geochange.losses.consistency import (
    ConsistencyOptions,
    aux_semantic_loss,
    confidence_weighted_bce,
    confident_labels,
    weak_pseudo_labels,
)
from geochange.losses.contrastive import (
    BatchBalancedContrastiveLoss,
    BSCCLoss,
    SACLLoss,
    feature_distance,
    supervised_info_nce,
)
from geochange.losses.multitask import SCDMultitaskLoss

__all__ = [
    "IGNORE_INDEX",
    "BCEDiceLoss",
    "BSCCLoss",
    "BatchBalancedContrastiveLoss",
    "CombinedIoULoss",
    "ConsistencyOptions",
    "DiceLoss",
    "FocalLoss",
    "MaskedBCEWithLogitsLoss",
    "SACLLoss",
    "SCDMultitaskLoss",
    "SoftIoULoss",
    "aux_semantic_loss",
    "build_change_loss",
    "confidence_weighted_bce",
    "confident_labels",
    "feature_distance",
    "masked_cross_entropy",
    "supervised_info_nce",
    "weak_pseudo_labels",
]
