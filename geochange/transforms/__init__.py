"""Augmentation and normalization for bi-temporal batches.

* :class:`ChangeAugmentation`: kornia batch augmentation (shared geometry, per-date photometry,
  optional date swap), taking and returning the batch dict.
* :class:`NormalizeChange`: per-band ``(x - mean) / std`` on both dates.
* :func:`compute_band_statistics`: per-band mean/std from a bounded sample of windows.
"""

from geochange.transforms.augmentation import ChangeAugmentation, NormalizeChange
from geochange.transforms.stats import compute_band_statistics

__all__ = ["ChangeAugmentation", "NormalizeChange", "compute_band_statistics"]
