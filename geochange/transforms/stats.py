"""Per-band normalization statistics computed in bounded memory from a sample of windows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from geochange.datasets.splits import region_boxes
from geochange.errors import DataError


def compute_band_statistics(
    dataset: Any,
    *,
    num_samples: int = 64,
    patch_size: int = 256,
    seed: int = 0,
    roi: Any = None,
) -> dict[str, list[float]]:
    """Estimate per-band mean and std (raw pixel units) over both dates.

    Only ``num_samples`` windows are read and running sums are kept in float64, so memory is
    bounded by one window whatever the scene size. Invalid pixels (nodata in either date) are
    left out.

    Args:
        dataset: a :class:`~geochange.datasets.BiTemporalRasterDataset` (random windows of
            ``patch_size`` are read inside ``roi`` or the pre/post overlap), or any map-style
            dataset of samples with ``image`` ``[2, C, H, W]`` (random items are used).
        num_samples: windows/items to read.
        patch_size: window side in pixels (geo datasets).
        seed: seed of the window draw (the statistics are reproducible).
        roi: region to draw windows from (geo datasets); windows lie inside its rectangles
            (:func:`~geochange.datasets.region_boxes`), so an L-shaped block split is honoured.

    Returns:
        ``{"mean": [...], "std": [...]}`` with one value per band.

    Raises:
        DataError: when no valid pixel was found.
    """
    rng = np.random.default_rng(seed)
    total = count = None
    total_sq = None
    for image, valid in _windows(dataset, num_samples, patch_size, rng, roi):
        pixels = image[:, :, valid] if valid is not None else image.reshape(*image.shape[:2], -1)
        pixels = pixels.astype(np.float64)
        if total is None:
            total = np.zeros(image.shape[1])
            total_sq = np.zeros(image.shape[1])
            count = 0
        total += pixels.sum(axis=(0, 2))
        total_sq += (pixels**2).sum(axis=(0, 2))
        count += pixels.shape[0] * pixels.shape[2]
    if total is None or not count:
        raise DataError("no valid pixels found to compute band statistics")
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0)  # type: ignore[operator]
    std = np.sqrt(var)
    return {"mean": [float(v) for v in mean], "std": [float(v) if v > 0 else 1.0 for v in std]}


def _windows(
    dataset: Any, num_samples: int, patch_size: int, rng: np.random.Generator, roi: Any
) -> Any:
    if hasattr(dataset, "read_window") and hasattr(dataset, "overlap"):
        xres, yres = dataset.res
        if roi is None:
            boxes = [tuple(dataset.overlap.bounds)]
        else:
            # An L-shaped or multi-part roi (block splits): draw inside its rectangles only,
            # so the statistics never read another split's pixels.
            boxes = region_boxes(roi) or [tuple(roi.bounds)]
            window = (patch_size * xres, patch_size * yres)
            fits = [b for b in boxes if b[2] - b[0] >= window[0] and b[3] - b[1] >= window[1]]
            boxes = fits or boxes
        areas = np.array([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes], dtype=np.float64)
        for _ in range(num_samples):
            pick = int(rng.choice(len(boxes), p=areas / areas.sum())) if len(boxes) > 1 else 0
            left, bottom, right, top = dataset.grid.snap(boxes[pick])
            width = max(1, min(patch_size, round((right - left) / xres)))
            height = max(1, min(patch_size, round((top - bottom) / yres)))
            cols = max(1, round((right - left) / xres) - width + 1)
            rows = max(1, round((top - bottom) / yres) - height + 1)
            x0 = left + int(rng.integers(cols)) * xres
            y1 = top - int(rng.integers(rows)) * yres
            arrays = dataset.read_window((x0, y1 - height * yres, x0 + width * xres, y1))
            if arrays["valid"].any():
                yield arrays["image"], arrays["valid"]
        return
    n = len(dataset)
    if n == 0:
        return
    picks = rng.choice(n, size=min(num_samples, n), replace=False)
    for i in picks:
        image = dataset[int(i)]["image"]
        if isinstance(image, torch.Tensor):
            image = image.numpy()
        if math.prod(image.shape) == 0:
            continue
        yield np.asarray(image), None
