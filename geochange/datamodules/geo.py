"""GeoTIFF scenes for :class:`~geochange.datamodules.ChangeDataModule`: open, split, sample.

One scene pair is opened once, cut into leak-free train/val/test regions (plus a labeled and an
unlabeled share for semi-supervised training) and sampled inside those regions.
"""

from __future__ import annotations

import copy as _copy
from collections.abc import Sequence
from typing import Any

import shapely
import torch
from torch.utils.data import Sampler

from geochange.datasets import BiTemporalRasterDataset, region_boxes, spatial_split
from geochange.datasets.splits import largest_block
from geochange.errors import ConfigurationError
from geochange.samplers import ChangeBalancedGeoSampler, InsideGridGeoSampler

#: Region names of a scene, in the order of ``splits``.
SPLIT_NAMES = ("train", "val", "test")


def open_scene(
    pre: Any,
    post: Any,
    change: Any = None,
    semantic_pre: Any = None,
    semantic_post: Any = None,
    *,
    mask_values: str = "auto",
    dataset_kwargs: dict[str, Any] | None = None,
) -> BiTemporalRasterDataset:
    """Open a scene pair, reading headers and a bounded sample of its labels.

    Args:
        pre: pre-date image(s) (file, directory, list, or TorchGeo RasterDataset).
        post: post-date image(s).
        change: change label (raster or vector), optional.
        semantic_pre: pre-date semantic label, optional.
        semantic_post: post-date semantic label, optional.
        mask_values: how the change-label raster stores change (see
            :func:`geochange.io.check_change_mask`); ``"auto"`` defers to ``dataset_kwargs``.
        dataset_kwargs: extra arguments for :class:`BiTemporalRasterDataset`.

    Returns:
        The dataset.

    Raises:
        ConfigurationError: ``mask_values`` disagrees with ``dataset_kwargs["mask_values"]``.
        DataError: unusable input data (see :class:`BiTemporalRasterDataset`).
    """
    kwargs = dict(dataset_kwargs or {})
    if mask_values != "auto":
        if kwargs.get("mask_values", mask_values) != mask_values:
            raise ConfigurationError(
                f"mask_values={mask_values!r} and dataset_kwargs mask_values="
                f"{kwargs['mask_values']!r} disagree"
            )
        kwargs["mask_values"] = mask_values
    return BiTemporalRasterDataset(
        pre,
        post,
        change=change,
        semantic_pre=semantic_pre,
        semantic_post=semantic_post,
        **kwargs,
    )


def split_scene(
    dataset: BiTemporalRasterDataset,
    splits: Sequence[float],
    patch_size: int,
    labeled_fraction: float | None = None,
) -> dict[str, Any]:
    """Cut a scene into its non-empty train/val/test regions (and labeled/unlabeled shares).

    Args:
        dataset: the scene.
        splits: train/val/test shares of the scene.
        patch_size: window side in pixels; every region holds at least one window.
        labeled_fraction: share of the training region that keeps labels (None: all); the
            labeled share is cut from the largest rectangle of the training region, the rest
            of the region is the ``"unlabeled"`` share.

    Returns:
        Shapely regions by name (``train``, ``val``, ``test``, ``labeled``, ``unlabeled``).

    Raises:
        ConfigurationError: bad splits, a scene with fewer windows than non-empty splits, or a
            labeled share larger than the largest rectangle of the training region.
    """
    xres, yres = dataset.res
    if len(splits) != 3:
        raise ConfigurationError(f"splits must be 3 fractions (train, val, test), got {splits}")
    window = patch_size * max(xres, yres)
    _check_splittable(dataset, splits, window, patch_size)
    regions = spatial_split(dataset, splits, min_size=window)
    rois = {n: s for n, s in zip(SPLIT_NAMES, regions, strict=True) if not s.is_empty}
    if "train" in rois and labeled_fraction is not None:
        train = rois["train"]
        # The labeled share is cut from the largest rectangle of the training region (the
        # whole region when it is a stripe), the rest of the region stays unlabeled.
        box = max(region_boxes(train), key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        share = labeled_fraction * train.area / ((box[2] - box[0]) * (box[3] - box[1]))
        if share >= 1:
            raise ConfigurationError(
                f"labeled_fraction {labeled_fraction} is larger than the biggest rectangle "
                "of the training region; use a smaller labeled_fraction"
            )
        labeled = spatial_split(
            shapely.box(*box),
            (share, 1 - share),
            min_size=window,
            pixel_size=(xres, yres),
        )[0]
        rois["labeled"], rois["unlabeled"] = labeled, train.difference(labeled)
    return rois


def _check_splittable(
    dataset: BiTemporalRasterDataset, splits: Sequence[float], window: float, patch_size: int
) -> None:
    """Raise a helpful error when the scene cannot hold one window per non-empty split."""
    needed = sum(1 for f in splits if f > 0)
    if any(f < 0 for f in splits) or needed == 0:
        return  # spatial_split reports bad fractions
    x, y, _ = dataset.bounds
    bounds = (float(x.start), float(y.start), float(x.stop), float(y.stop))
    xres, yres = dataset.res
    cols = int((bounds[2] - bounds[0]) / window + 1e-9)
    rows = int((bounds[3] - bounds[1]) / window + 1e-9)
    if cols * rows >= needed:
        return
    width = round((bounds[2] - bounds[0]) / xres)
    height = round((bounds[3] - bounds[1]) / yres)
    best = int(largest_block(bounds, needed, (xres, yres)) / max(xres, yres) + 1e-9)
    fits = cols * rows
    if fits == 0:
        hint = f"the scene is smaller than one window: use patch_size <= {min(width, height)}"
    else:
        fewer = "(0.8, 0.2, 0.0)" if fits >= 2 else "(1.0, 0.0, 0.0)"
        hint = f"use patch_size <= {best} or splits with fewer non-zero shares, e.g. {fewer}"
    raise ConfigurationError(
        f"the scene {str(dataset.pre.files[0].path)!r} is {width} x {height} pixels, "
        f"{cols} x {rows} windows of patch_size {patch_size}; the {needed} non-empty "
        f"splits {tuple(splits)} need at least one window each: {hint}"
    )


def region_sampler(
    dataset: BiTemporalRasterDataset,
    roi: Any,
    patch_size: int,
    *,
    train: bool,
    samples_per_epoch: int | None = None,
    change_fraction: float = 0.0,
) -> Sampler[Any]:
    """The sampler of one region: random windows for training, a covering grid otherwise.

    Training samplers are built without a generator: each loader of the datamodule gets a
    copy with a freshly seeded one (:func:`seeded`), so every loader draws the same windows
    however often it is made, and the costly part (the change-density scan) runs once.

    Args:
        dataset: the scene.
        roi: the region (from :func:`split_scene`).
        patch_size: window side in pixels.
        train: random windows (:class:`~geochange.samplers.ChangeBalancedGeoSampler`) instead
            of a grid (:class:`~geochange.samplers.InsideGridGeoSampler`).
        samples_per_epoch: random windows per epoch (default: the non-overlapping windows of
            the region).
        change_fraction: share of change-centred training windows.

    Returns:
        The sampler.
    """
    if not train:
        return InsideGridGeoSampler(dataset, patch_size, roi=roi)
    return ChangeBalancedGeoSampler(
        dataset, patch_size, samples_per_epoch, change_fraction=change_fraction, roi=roi
    )


def seeded(sampler: Sampler[Any], seed: int) -> Sampler[Any]:
    """A copy of a random sampler drawing from a generator seeded with ``seed``.

    The copy shares the sampler's read-only regions and change cells; grid samplers, which
    draw nothing, are returned as they are.
    """
    if not isinstance(sampler, ChangeBalancedGeoSampler):
        return sampler
    copy = _copy.copy(sampler)
    copy.generator = torch.Generator().manual_seed(seed)
    return copy
