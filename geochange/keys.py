"""Keys of the dicts that flow between stages: dataset samples and model outputs.

Datasets, transforms, losses, trainers and the predictor compare against these names; import
them from here rather than spelling the strings again.
"""

from __future__ import annotations

__all__ = [
    "AUX_SEMANTIC_POST",
    "AUX_SEMANTIC_PRE",
    "CHANGE",
    "CHANGE_GENERATED",
    "DIAGNOSTIC_CHANGE",
    "EMBEDDING_POST",
    "EMBEDDING_PRE",
    "FEATURE_DISTANCE",
    "IMAGE",
    "MASK",
    "MASK_KEYS",
    "MASK_POST",
    "MASK_PRE",
    "PSEUDO_CHANGE",
    "PSEUDO_POST",
    "PSEUDO_PRE",
    "SEMANTIC_FEATURES_POST",
    "SEMANTIC_FEATURES_PRE",
    "SEMANTIC_POST",
    "SEMANTIC_PRE",
    "VALID",
]

# Sample keys (datasets -> transforms -> trainers).
#: Both dates' pixels, ``[2, C, H, W]`` (``[B, 2, C, H, W]`` in a batch).
IMAGE = "image"
#: Bool ``[H, W]`` of pixels holding data in both dates (raw dataset arrays).
VALID = "valid"
#: Change label, ``[H, W]`` long: 0 no change, 1 change, 255 ignore.
MASK = "mask"
#: Semantic label of the first date, ``[H, W]`` long class ids, 255 ignore.
MASK_PRE = "mask_pre"
#: Semantic label of the second date.
MASK_POST = "mask_post"
#: Every label key of a sample (what geometric transforms move along with the image).
MASK_KEYS: tuple[str, ...] = (MASK, MASK_PRE, MASK_POST)
#: Pseudo semantic labels of the first date, as the semi-supervised trainer reads them.
PSEUDO_PRE = "pseudo_pre"
#: Pseudo semantic labels of the second date.
PSEUDO_POST = "pseudo_post"
#: Optional precomputed change-event labels (e.g. ``geochange pseudo-labels``).
PSEUDO_CHANGE = "pseudo_change"
#: Change label kept on unlabeled batches for diagnostics only (pseudo-label precision and
#: recall on generated scenes); no loss reads it.
DIAGNOSTIC_CHANGE = "diagnostic_change"

# Model-output keys (models -> losses, trainers, predictor; see ``docs/models.md``).
#: Change logits ``[B, 1, H, W]``.
CHANGE = "change"
CHANGE_GENERATED = "change_generated"
#: Class logits of the first date ``[B, K, H, W]``.
SEMANTIC_PRE = "semantic_pre"
#: Class logits of the second date.
SEMANTIC_POST = "semantic_post"
SEMANTIC_FEATURES_PRE = "semantic_features_pre"
SEMANTIC_FEATURES_POST = "semantic_features_post"
EMBEDDING_PRE = "embedding_pre"
EMBEDDING_POST = "embedding_post"
AUX_SEMANTIC_PRE = "aux_semantic_pre"
AUX_SEMANTIC_POST = "aux_semantic_post"
FEATURE_DISTANCE = "feature_distance"
