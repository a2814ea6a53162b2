"""Augmentation and normalization for bi-temporal batches.

* :class:`ChangeAugmentation`: kornia batch augmentation (shared geometry, per-date photometry,
  optional date swap), taking and returning the batch dict.
* :class:`NormalizeChange`: per-band ``(x - mean) / std`` on both dates.
* :func:`compute_band_statistics`: per-band mean/std (and min/max) from a bounded sample of
  windows.
* :func:`sample_raster_range` / :func:`check_value_range`: a scene's value range from a cheap
  sample, checked against the range a checkpoint was trained on.
* :mod:`~geochange.transforms.views` / :mod:`~geochange.transforms.cutmix`: weak, strong and
  feature-perturbed views and CutMix of semi-supervised training.
"""

from geochange.transforms.augmentation import ChangeAugmentation, NormalizeChange
from geochange.transforms.cutmix import apply_cutmix, cutmix_boxes
from geochange.transforms.stats import (
    check_value_range,
    compute_band_statistics,
    sample_raster_range,
)
from geochange.transforms.views import (
    StrongPhotometric,
    decoder_feature_dropout,
    default_weak_augmentation,
)

__all__ = [
    "ChangeAugmentation",
    "NormalizeChange",
    "StrongPhotometric",
    "apply_cutmix",
    "check_value_range",
    "compute_band_statistics",
    "cutmix_boxes",
    "decoder_feature_dropout",
    "default_weak_augmentation",
    "sample_raster_range",
]
