"""Per-band statistics computed in bounded memory from a sample of windows.

Normalization statistics and the value range of the training imagery (recorded in checkpoints)
come from random training windows; before prediction a cheap sample of the scene is checked
against that range (:func:`check_value_range`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window

from geochange.errors import ConfigurationError, DataError
from geochange.io import open_raster
from geochange.regions import region_boxes


def compute_band_statistics(
    dataset: Any,
    *,
    num_samples: int = 64,
    patch_size: int = 256,
    seed: int = 0,
    roi: Any = None,
    with_range: bool = False,
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
        with_range: also return the per-band ``"min"`` and ``"max"`` of the sampled pixels
            (the training value range a checkpoint records, see :func:`check_value_range`).

    Returns:
        ``{"mean": [...], "std": [...]}`` with one value per band (plus ``"min"`` and ``"max"``
        with ``with_range``).

    Raises:
        DataError: when no valid pixel was found.
    """
    rng = np.random.default_rng(seed)
    total = count = None
    total_sq = None
    low: Any = None
    high: Any = None
    for image, valid in _windows(dataset, num_samples, patch_size, rng, roi):
        pixels = image[:, :, valid] if valid is not None else image.reshape(*image.shape[:2], -1)
        pixels = pixels.astype(np.float64)
        if total is None:
            total = np.zeros(image.shape[1])
            total_sq = np.zeros(image.shape[1])
            low = np.full(image.shape[1], np.inf)
            high = np.full(image.shape[1], -np.inf)
            count = 0
        total += pixels.sum(axis=(0, 2))
        total_sq += (pixels**2).sum(axis=(0, 2))
        if pixels.size:
            low = np.minimum(low, pixels.min(axis=(0, 2)))
            high = np.maximum(high, pixels.max(axis=(0, 2)))
        count += pixels.shape[0] * pixels.shape[2]
    if total is None or not count:
        raise DataError("no valid pixels found to compute band statistics")
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0)  # type: ignore[operator]
    std = np.sqrt(var)
    stats = {"mean": [float(v) for v in mean], "std": [float(v) if v > 0 else 1.0 for v in std]}
    if with_range:
        assert low is not None and high is not None
        stats["min"] = [float(v) for v in low]
        stats["max"] = [float(v) for v in high]
    return stats


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


# -- value range of the imagery: recorded at training, checked before prediction ------------

#: Modes of :func:`check_value_range` (``ChangePredictor(value_range=...)``).
VALUE_RANGE_MODES = ("check", "rescale", "ignore")

#: Percentile of a scene's sampled values taken as its top (a few hot pixels do not count).
SCENE_TOP_PERCENTILE = 99.9


def input_range_record(dtype: Any, stats: dict[str, list[float]]) -> dict[str, Any]:
    """The checkpoint record of the training imagery's value range.

    Args:
        dtype: dtype of the source rasters (``"uint8"``, ...), None when unknown.
        stats: :func:`compute_band_statistics` output with ``with_range=True``.

    Returns:
        ``{"dtype": ..., "min": [...], "max": [...]}`` (per band, raw pixel units).
    """
    return {
        "dtype": str(np.dtype(dtype)) if dtype is not None else None,
        "min": [float(v) for v in stats["min"]],
        "max": [float(v) for v in stats["max"]],
    }


def sample_raster_range(
    path: str | os.PathLike[str],
    bands: Sequence[int] | None = None,
    *,
    windows: int = 3,
    window_size: int = 256,
) -> dict[str, Any]:
    """Per-band value range of a raster from a cheap sample (overview or a grid of windows).

    Reads the coarsest overview at least ``window_size`` pixels on its short side when the file
    has overviews, else ``windows x windows`` windows of ``window_size`` spread over the image.
    Nodata, masked and non-finite pixels are left out.

    Args:
        path: The raster.
        bands: 1-based band indexes (default all).
        windows: Windows per axis without overviews.
        window_size: Window side (and smallest overview side) in pixels.

    Returns:
        ``{"dtype", "nbits", "min", "max", "top"}``: dtype name, the ``NBITS`` the file declares
        (or None), and per band the sampled min, max and 99.9th percentile.

    Raises:
        DataError: When the file is unreadable or the sample holds no valid pixel.
    """
    with open_raster(path) as src:
        indexes = list(bands) if bands is not None else list(range(1, src.count + 1))
        arrays = []
        factors = src.overviews(indexes[0])
        if factors:
            usable = [f for f in factors if min(src.height, src.width) / f >= window_size]
            factor = max(usable) if usable else min(factors)
            shape = (len(indexes), math.ceil(src.height / factor), math.ceil(src.width / factor))
            arrays.append(src.read(indexes, out_shape=shape, masked=True))
        else:
            size_y, size_x = min(window_size, src.height), min(window_size, src.width)
            rows = np.linspace(0, src.height - size_y, windows).round().astype(int)
            cols = np.linspace(0, src.width - size_x, windows).round().astype(int)
            for row in sorted(set(rows.tolist())):
                for col in sorted(set(cols.tolist())):
                    window = Window(col, row, size_x, size_y)
                    arrays.append(src.read(indexes, window=window, masked=True))
        nbits = src.tags(indexes[0], ns="IMAGE_STRUCTURE").get("NBITS")
        dtype = src.dtypes[indexes[0] - 1]
    values = np.ma.concatenate([a.reshape(len(indexes), -1) for a in arrays], axis=1)
    low, high, top = [], [], []
    for band in values:
        valid = band.compressed()
        valid = valid[np.isfinite(valid)]
        if valid.size == 0:
            raise DataError(f"no valid pixel in a sample of {str(path)!r} to check its values")
        low.append(float(valid.min()))
        high.append(float(valid.max()))
        top.append(float(np.percentile(valid, SCENE_TOP_PERCENTILE)))
    return {
        "dtype": dtype,
        "nbits": int(nbits) if nbits else None,
        "min": low,
        "max": high,
        "top": top,
    }


def full_scale(dtype: str | None, maximum: float, nbits: int | None = None) -> float:
    """Full-scale value of imagery: what its brightest possible pixel reads.

    ``2**nbits - 1`` when the bit depth is declared; 255 for 8-bit integers; for wider
    integers the smallest ``2**k - 1`` (k >= 8) holding ``maximum`` (12-bit data in uint16:
    4095); for floats (or an unknown dtype), ``maximum`` itself.

    Args:
        dtype: Pixel dtype name, or None.
        maximum: Largest observed value.
        nbits: Declared bit depth (GDAL ``NBITS``), if any.

    Returns:
        The full-scale value (> 0).
    """
    if nbits:
        return float(2**nbits - 1)
    if dtype is not None and np.issubdtype(np.dtype(dtype), np.integer):
        if np.dtype(dtype).itemsize == 1:
            return float(np.iinfo(np.dtype(dtype)).max)
        bits = max(8, math.ceil(math.log2(max(maximum, 0.0) + 1)))
        return float(2**bits - 1)
    return float(maximum) if maximum > 0 else 1.0


def check_value_range(
    trained: dict[str, Any], scene: dict[str, Any], *, name: str, mode: str = "check"
) -> float:
    """Compare a scene's sampled values with the training range; the factor to rescale it by.

    The scene does not match when the top of its values (99.9th percentile, brightest band)
    lies more than half the training span above the training maximum, or in the lowest eighth
    of the training range: e.g. 12-bit imagery (up to 4095) for a model trained on 8-bit
    imagery (0..255), or the reverse. A different dtype alone (8-bit values stored as uint16)
    is no mismatch.

    Args:
        trained: The checkpoint record (:func:`input_range_record`).
        scene: :func:`sample_raster_range` of the scene file.
        name: The file, for messages.
        mode: ``"check"`` raises on a mismatch, ``"rescale"`` returns the factor mapping the
            scene's full scale onto the training one (:func:`full_scale`; 255 / 4095 for 12-bit
            imagery on an 8-bit model), ``"ignore"`` returns 1.

    Returns:
        1.0 when the values match (or ``mode="ignore"``), else the rescaling factor.

    Raises:
        DataError: On a mismatch with ``mode="check"``.
        ConfigurationError: For an unknown mode.
    """
    if mode not in VALUE_RANGE_MODES:
        raise ConfigurationError(f"value_range must be one of {VALUE_RANGE_MODES}, got {mode!r}")
    low, high = min(trained["min"]), max(trained["max"])
    span = max(high - low, 1e-12)
    top = max(scene["top"])
    if mode == "ignore" or low + span / 8 <= top <= high + span / 2:
        return 1.0
    if mode == "rescale":
        target = full_scale(trained.get("dtype"), high)
        source = full_scale(scene["dtype"], max(scene["max"]), scene.get("nbits"))
        return target / source
    dtype = trained.get("dtype")
    kind = f"{dtype} imagery" if dtype else "imagery"
    raise DataError(
        f"the checkpoint was trained on {kind} with values {low:g}..{high:g}; {name} is "
        f"{scene['dtype']} with values up to {top:g}, so the model's output would be "
        "meaningless. Convert the imagery to the training range, or predict with "
        "value_range='rescale' (CLI: --value-range rescale) to map it linearly onto that "
        "range, or value_range='ignore'"
    )
