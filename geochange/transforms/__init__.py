"""Augmentation and normalization for bi-temporal batches.

* :class:`ChangeAugmentation`: kornia batch augmentation (shared geometry, per-date photometry,
  optional date swap), taking and returning the batch dict.
* :class:`NormalizeChange`: per-band ``(x - mean) / std`` on both dates.
* :func:`compute_band_statistics`: per-band mean/std (and min/max) from a bounded sample of
  windows.
* :func:`sample_raster_range` / :func:`check_value_range`: a scene's value range from a cheap
  sample, checked against the range a checkpoint was trained on.
"""

from geochange.transforms.augmentation import ChangeAugmentation, NormalizeChange
from geochange.transforms.stats import (
    check_value_range,
    compute_band_statistics,
    sample_raster_range,
)

__all__ = [
    "ChangeAugmentation",
    "NormalizeChange",
    "check_value_range",
    "compute_band_statistics",
    "sample_raster_range",
]
