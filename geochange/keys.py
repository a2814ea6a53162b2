"""Keys of the dicts that flow between stages: dataset samples and model outputs.

Datasets, transforms, losses, trainers and the predictor compare against these names; import
them from here rather than spelling the strings again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from geochange.errors import ConfigurationError

__all__ = [
    "AUX_SEMANTIC_POST",
    "AUX_SEMANTIC_PRE",
    "CHANGE",
    "CHANGE_GENERATED",
    "DIAGNOSTIC_CHANGE",
    "EMBEDDING_POST",
    "EMBEDDING_PRE",
    "EXTRA_IMAGE",
    "EXTRA_MASK",
    "FEATURE_DISTANCE",
    "IMAGE",
    "MASK",
    "MASK_KEYS",
    "MASK_LAYOUTS",
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
    "check_mask_layout",
    "squeeze_mask",
    "to_mask_layout",
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
#: An image layer joined with ``&`` (``BiTemporalRasterDataset & RasterDataset``): float
#: ``[C', H, W]`` when the layer has one date (a DEM, a land-cover image), ``[2, C', H, W]`` when
#: it is a time series of the two dates (``RasterDataset(time_series=True)``). Several image
#: layers of the same form are concatenated along ``C'``, as TorchGeo joins image layers.
EXTRA_IMAGE = "extra_image"
#: A label layer joined with ``&`` (``RasterDataset(is_image=False)``) when the dataset has
#: labels of its own: ``[H, W]`` (``[2, H, W]`` per date). Without labels of its own, the
#: joined label fills ``mask`` (the change label given as a TorchGeo dataset).
EXTRA_MASK = "extra_mask"
#: Every label key of a sample (what geometric transforms move along with the image).
MASK_KEYS: tuple[str, ...] = (MASK, MASK_PRE, MASK_POST, EXTRA_MASK)
#: Layouts of the label keys: ``"geochange"`` ``[H, W]`` per sample (``[B, H, W]`` batched),
#: ``"torchgeo"`` ``[1, H, W]`` (``[B, 1, H, W]``) as TorchGeo's LEVIRCD / OSCD datasets and its
#: ``ChangeDetection`` task use them.
MASK_LAYOUTS: tuple[str, ...] = ("geochange", "torchgeo")
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


def check_mask_layout(layout: str) -> str:
    """Return ``layout`` if it is one of :data:`MASK_LAYOUTS`.

    Raises:
        ConfigurationError: on another value.
    """
    if layout not in MASK_LAYOUTS:
        raise ConfigurationError(f"mask_layout must be one of {MASK_LAYOUTS}, got {layout!r}")
    return layout


def squeeze_mask(mask: Any, *, batched: bool = True) -> Any:
    """A label tensor in geochange's layout: ``[B, 1, H, W]`` -> ``[B, H, W]``.

    Args:
        mask: a label tensor in either layout (other shapes are returned unchanged).
        batched: whether ``mask`` has a batch dimension (a sample's ``[1, H, W]`` otherwise).

    Returns:
        The tensor without its singleton channel dimension.
    """
    channel_dims = 4 if batched else 3
    if getattr(mask, "ndim", 0) == channel_dims and mask.shape[-3] == 1:
        return mask.squeeze(-3)
    return mask


def to_mask_layout(
    batch: Mapping[str, Any], layout: str, *, batched: bool = True
) -> dict[str, Any]:
    """A copy of a sample or batch dict with its single-date label keys in ``layout``.

    ``mask``, ``mask_pre``, ``mask_post`` and a single-date ``extra_mask`` get (``"torchgeo"``)
    or lose (``"geochange"``) their singleton channel dimension; other keys are left as they are.

    Args:
        batch: a sample or batch dict in either layout.
        layout: one of :data:`MASK_LAYOUTS`.
        batched: whether the tensors have a batch dimension.

    Returns:
        The converted dict (the input is not modified).

    Raises:
        ConfigurationError: on an unknown layout.
    """
    check_mask_layout(layout)
    out = dict(batch)
    plain_dims = 3 if batched else 2
    for key in MASK_KEYS:
        value = out.get(key)
        if value is None or not hasattr(value, "ndim"):
            continue
        value = squeeze_mask(value, batched=batched)
        if layout == "torchgeo" and value.ndim == plain_dims:
            value = value.unsqueeze(-3)
        out[key] = value
    return out
