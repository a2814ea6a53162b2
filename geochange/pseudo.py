"""Change event generation (CEG): change pseudo labels from per-date semantic maps.

Change labels are scarce; per-date semantic maps (e.g. from an open-vocabulary segmenter run
offline on each date) are cheap. Following DiffMatch, :func:`change_event_generation` turns a pair
of class maps (and optional class probabilities) into change pseudo labels for the classes of
interest (typically ``building``):

* ``"pixel"``: a pixel is change when it belongs to a class of interest at one date and to
  another class at the other date.
* ``"instance"``: connected instances of each class of interest are found at both dates; an
  instance is a *change event* when its IoU with every instance of the same class at the other
  date is ``<= overlap_threshold`` (``0.0``: it appeared or vanished as a whole). The union of
  the change events is the change map. Boundary noise and registration shifts of a building
  that exists at both dates never produce change.
* ``"mixed"`` (DiffMatch's default): the pixel-level change kept only inside change events.

In every mode a pixel is ``ignore_index`` where either date is uncertain: its class is
``ignore_index`` (or the raster's nodata), or, with probabilities, no class reaches
``confidence``. Instances smaller than ``min_instance_area`` pixels are treated as segmentation
noise: they are never change events, do not count when matching the other date, and their
pixel-level change is set to ``ignore_index`` in the instance and mixed modes.

:func:`generate_pseudo_labels` runs the same generation over whole georeferenced scenes block by
block with bounded memory. Instances that cross block edges are stitched exactly (labels on both
sides of every seam are linked and merged with a connected-components pass over the block
graph), so the output is identical to processing the whole scene as one array.
:func:`evaluate_pseudo_labels` scores the pseudo labels against a reference change raster
(unsupervised change detection: CEG alone as the detector).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.windows
import scipy.ndimage as ndi

from geochange._blockwise import BlockGrid, EdgeStrips, components, edge_strips, seam_links
from geochange.classes import CHANGE_CLASS_NAMES, IGNORE_INDEX, LSSCD_CLASS_NAMES
from geochange.errors import ConfigurationError, DataError
from geochange.io import (
    CLASS_NAMES_TAG,
    PSEUDO_LABELS_TAG,
    TILED_GTIFF_OPTIONS,
    check_change_mask,
    check_writable_dir,
    finalize_cog,
    gdal_cache,
    grid_mismatch,
    open_raster,
    read_class_names_tag,
)

__all__ = [
    "DEFAULT_CLASS_NAMES",
    "CEGMode",
    "ChangeScore",
    "PseudoLabelSummary",
    "change_event_generation",
    "change_event_generation_batch",
    "degrade_class_map",
    "evaluate_pseudo_labels",
    "generate_pseudo_labels",
    "resolve_change_classes",
    "score_change",
]

CEGMode = Literal["mixed", "instance", "pixel"]
_MODES: tuple[str, ...] = ("mixed", "instance", "pixel")

#: LsSCD class names, used when a class raster carries no ``GEOCHANGE_CLASS_NAMES`` tag.
DEFAULT_CLASS_NAMES: tuple[str, ...] = LSSCD_CLASS_NAMES

DEFAULT_MIN_INSTANCE_AREA = 10
DEFAULT_OVERLAP_THRESHOLD = 0.0
DEFAULT_CONFIDENCE = 0.8

IntArray = npt.NDArray[np.integer[Any]]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.floating[Any]]


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_params(
    change_classes: Sequence[int] | int,
    mode: str,
    min_instance_area: int,
    overlap_threshold: float,
    confidence: float,
    ignore_index: int,
    connectivity: int,
) -> tuple[int, ...]:
    if mode not in _MODES:
        raise ConfigurationError(f"unknown CEG mode {mode!r}; expected one of {', '.join(_MODES)}")
    if isinstance(change_classes, int | np.integer):
        change_classes = [int(change_classes)]
    classes = tuple(int(c) for c in change_classes)
    if not classes:
        raise ConfigurationError("change_classes is empty: name at least one class of interest")
    if ignore_index in classes:
        raise ConfigurationError(
            f"change_classes {list(classes)} contains ignore_index {ignore_index}"
        )
    if min_instance_area < 0:
        raise ConfigurationError(f"min_instance_area must be >= 0, got {min_instance_area}")
    if not 0.0 <= overlap_threshold < 1.0:
        raise ConfigurationError(f"overlap_threshold must be in [0, 1), got {overlap_threshold}")
    if not 0.0 <= confidence <= 1.0:
        raise ConfigurationError(f"confidence must be in [0, 1], got {confidence}")
    if connectivity not in (4, 8):
        raise ConfigurationError(f"connectivity must be 4 or 8, got {connectivity}")
    return tuple(sorted(set(classes)))


def _structure(connectivity: int) -> BoolArray:
    return ndi.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def _confidence_map(value: Any, shape: tuple[int, ...], what: str) -> Any:
    """Max class probability per pixel from ``[K, H, W]`` probabilities or ``[H, W]`` confidence."""
    if value is None:
        return None
    prob: npt.NDArray[Any] = np.asarray(value)
    if prob.ndim == 3 and prob.shape[1:] == shape:
        prob = prob.max(axis=0)
    elif prob.shape != shape:
        raise DataError(
            f"{what} has shape {tuple(prob.shape)}; expected [K, H, W] class probabilities or "
            f"[H, W] confidences matching the class map {tuple(shape)}"
        )
    if prob.dtype == np.uint8:  # probabilities scaled to 0..255
        return prob.astype(np.float32) / 255.0
    return prob


def _uncertain(
    sem_pre: IntArray,
    sem_post: IntArray,
    conf_pre: Any,
    conf_post: Any,
    confidence: float,
    ignore_index: int,
) -> BoolArray:
    uncertain = (sem_pre == ignore_index) | (sem_post == ignore_index)
    # ``~(conf >= t)`` also marks NaN probabilities as uncertain.
    if conf_pre is not None:
        uncertain |= ~(conf_pre >= confidence)
    if conf_post is not None:
        uncertain |= ~(conf_post >= confidence)
    return uncertain


def _pixel_change(sem_pre: IntArray, sem_post: IntArray, classes: tuple[int, ...]) -> BoolArray:
    """Class of interest at one date, another class at the other (union over the classes)."""
    of_interest = np.isin(sem_pre, classes) | np.isin(sem_post, classes)
    return of_interest & (sem_pre != sem_post)


def _label_classes(
    sem: IntArray, classes: tuple[int, ...], structure: BoolArray
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """Connected instances of every class of interest, numbered 1..n across the classes.

    Returns:
        The label image (0 = background) and the class of every label (index ``label - 1``).
    """
    if len(classes) == 1:  # the common case (building): no relabelling needed
        labels, count = ndi.label(sem == classes[0], structure=structure)
        return labels.astype(np.int32, copy=False), np.full(count, classes[0], dtype=np.int64)
    labels = np.zeros(sem.shape, dtype=np.int32)
    label_class: list[npt.NDArray[np.int64]] = []
    offset = 0
    for cls in classes:
        class_labels, count = ndi.label(sem == cls, structure=structure)
        if count:
            nonzero = class_labels > 0
            labels[nonzero] = class_labels[nonzero] + offset
            label_class.append(np.full(count, cls, dtype=np.int64))
            offset += count
    classes_of = np.concatenate(label_class) if label_class else np.zeros(0, dtype=np.int64)
    return labels, classes_of


def _overlap_pairs(
    labels_pre: npt.NDArray[np.int32], labels_post: npt.NDArray[np.int32], same_class: BoolArray
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(pre index, post index, pixel count) of every pair of overlapping same-class instances.

    Labels are 1-based (0 = background); the returned indices are 0-based. Only the
    overlapping pixels are widened to int64, to keep block memory small.
    """
    both = same_class & (labels_pre > 0) & (labels_post > 0)
    pre = labels_pre[both].astype(np.int64) - 1
    post = labels_post[both].astype(np.int64) - 1
    if pre.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    base = int(post.max()) + 1
    keys, counts = np.unique(pre * base + post, return_counts=True)
    return keys // base, keys % base, counts.astype(np.int64)


def _match_instances(
    area_pre: npt.NDArray[np.int64],
    area_post: npt.NDArray[np.int64],
    pair_pre: npt.NDArray[np.int64],
    pair_post: npt.NDArray[np.int64],
    pair_count: npt.NDArray[np.int64],
    min_instance_area: int,
    overlap_threshold: float,
) -> tuple[BoolArray, BoolArray, BoolArray, BoolArray]:
    """Change-event and too-small flags of every pre and post instance."""
    small_pre = area_pre < min_instance_area
    small_post = area_post < min_instance_area
    # Small instances are noise: they are not matched against (nor events themselves).
    keep = ~small_pre[pair_pre] & ~small_post[pair_post]
    pair_pre, pair_post, pair_count = pair_pre[keep], pair_post[keep], pair_count[keep]
    iou = pair_count / (area_pre[pair_pre] + area_post[pair_post] - pair_count)
    best_pre = np.zeros(area_pre.shape, dtype=np.float64)
    best_post = np.zeros(area_post.shape, dtype=np.float64)
    np.maximum.at(best_pre, pair_pre, iou)
    np.maximum.at(best_post, pair_post, iou)
    event_pre = ~small_pre & (best_pre <= overlap_threshold)
    event_post = ~small_post & (best_post <= overlap_threshold)
    return event_pre, event_post, small_pre, small_post


def _assemble(
    mode: str,
    pixel_change: BoolArray,
    event: BoolArray,
    small: BoolArray,
    uncertain: BoolArray,
    ignore_index: int,
) -> npt.NDArray[np.uint8]:
    if mode == "pixel":
        out = pixel_change.astype(np.uint8)
    else:
        inside = pixel_change & event
        out = (inside if mode == "mixed" else event).astype(np.uint8)
        # Change that only small (noise) instances support is unknown, not "no change".
        out[small & pixel_change & ~event] = ignore_index
    out[uncertain] = ignore_index
    return out


# --------------------------------------------------------------------------------------------
# In-memory generation
# --------------------------------------------------------------------------------------------


def change_event_generation(
    sem_pre: IntArray,
    sem_post: IntArray,
    *,
    change_classes: Sequence[int] | int,
    mode: CEGMode = "mixed",
    prob_pre: FloatArray | IntArray | None = None,
    prob_post: FloatArray | IntArray | None = None,
    min_instance_area: int = DEFAULT_MIN_INSTANCE_AREA,
    overlap_threshold: float = DEFAULT_OVERLAP_THRESHOLD,
    confidence: float = DEFAULT_CONFIDENCE,
    ignore_index: int = IGNORE_INDEX,
    connectivity: int = 8,
) -> npt.NDArray[np.uint8]:
    """Generate change pseudo labels from two per-date class maps (DiffMatch's CEG).

    Args:
        sem_pre: ``[H, W]`` integer class map of the first date (``ignore_index`` = unknown).
        sem_post: ``[H, W]`` integer class map of the second date.
        change_classes: class id(s) of interest, e.g. ``[0]`` for LsSCD ``building``.
        mode: ``"pixel"``, ``"instance"`` or ``"mixed"`` (see the module docs).
        prob_pre: optional ``[K, H, W]`` class probabilities (float 0..1 or uint8 0..255) or
            ``[H, W]`` confidence of the predicted class, first date.
        prob_post: the same for the second date.
        min_instance_area: instances smaller than this many pixels are noise (never events).
        overlap_threshold: an instance is a change event when its IoU with every same-class
            instance at the other date is ``<=`` this (``0.0``: no overlap at all).
        confidence: a pixel whose highest class probability is below this at either date is
            set to ``ignore_index`` (used only with probabilities).
        ignore_index: label value of unknown pixels, in the inputs and in the output.
        connectivity: 4 or 8 neighbourhood for instances.

    Returns:
        ``[H, W]`` uint8 pseudo labels: 0 no change, 1 change, ``ignore_index`` uncertain.

    Raises:
        DataError: if the maps are not 2-D integer arrays of equal shape, or probabilities do not
            match them.
        ConfigurationError: if a parameter is out of range.
    """
    classes = _check_params(
        change_classes, mode, min_instance_area, overlap_threshold, confidence, ignore_index,
        connectivity,
    )  # fmt: skip
    sem_pre = np.asarray(sem_pre)
    sem_post = np.asarray(sem_post)
    for what, sem in (("sem_pre", sem_pre), ("sem_post", sem_post)):
        if sem.ndim != 2 or not np.issubdtype(sem.dtype, np.integer):
            raise DataError(
                f"{what} must be a 2-D integer class map, got {sem.ndim}-D {sem.dtype} "
                "(use change_event_generation_batch for [B, H, W] batches)"
            )
    if sem_pre.shape != sem_post.shape:
        raise DataError(f"class maps differ in shape: {sem_pre.shape} vs {sem_post.shape}")
    conf_pre = _confidence_map(prob_pre, sem_pre.shape, "prob_pre")
    conf_post = _confidence_map(prob_post, sem_post.shape, "prob_post")
    uncertain = _uncertain(sem_pre, sem_post, conf_pre, conf_post, confidence, ignore_index)
    pixel_change = _pixel_change(sem_pre, sem_post, classes)
    if mode == "pixel":
        empty = np.zeros(sem_pre.shape, dtype=bool)
        return _assemble(mode, pixel_change, empty, empty, uncertain, ignore_index)

    structure = _structure(connectivity)
    labels_pre, class_pre = _label_classes(sem_pre, classes, structure)
    labels_post, class_post = _label_classes(sem_post, classes, structure)
    area_pre = np.bincount(labels_pre.ravel(), minlength=class_pre.size + 1)[1:]
    area_post = np.bincount(labels_post.ravel(), minlength=class_post.size + 1)[1:]
    pairs = _overlap_pairs(labels_pre, labels_post, sem_pre == sem_post)
    event_pre, event_post, small_pre, small_post = _match_instances(
        area_pre, area_post, *pairs, min_instance_area, overlap_threshold
    )
    # Lookup tables indexed by label (0 = background -> False).
    event = np.concatenate([[False], event_pre])[labels_pre]
    event |= np.concatenate([[False], event_post])[labels_post]
    small = np.concatenate([[False], small_pre])[labels_pre]
    small |= np.concatenate([[False], small_post])[labels_post]
    return _assemble(mode, pixel_change, event, small, uncertain, ignore_index)


def _to_numpy(value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        return value.detach().cpu().numpy()
    return np.asarray(value)


def change_event_generation_batch(
    sem_pre: Any,
    sem_post: Any,
    *,
    change_classes: Sequence[int] | int,
    prob_pre: Any = None,
    prob_post: Any = None,
    **kwargs: Any,
) -> Any:
    """Run :func:`change_event_generation` on every item of a batch.

    Instances never cross items. Accepts NumPy arrays or torch tensors (e.g. per-date pseudo
    semantic maps inside a training step) and returns the same kind: a ``long`` tensor on the
    input's device for tensors (ready as a ``mask`` with ``ignore_index``), a uint8 array for
    arrays.

    Args:
        sem_pre: ``[B, H, W]`` integer class maps, first date.
        sem_post: ``[B, H, W]`` integer class maps, second date.
        change_classes: class id(s) of interest.
        prob_pre: optional ``[B, K, H, W]`` probabilities or ``[B, H, W]`` confidences.
        prob_post: the same for the second date.
        **kwargs: any other keyword of :func:`change_event_generation` (mode, thresholds, ...).

    Returns:
        ``[B, H, W]`` pseudo labels (0, 1, ``ignore_index``).

    Raises:
        DataError: if the batch shapes do not match.
    """
    pre = _to_numpy(sem_pre)
    post = _to_numpy(sem_post)
    if pre.ndim != 3 or pre.shape != post.shape:
        raise DataError(
            f"expected two [B, H, W] class-map batches of equal shape, got {tuple(pre.shape)} "
            f"and {tuple(post.shape)}"
        )
    probs_pre = _to_numpy(prob_pre)
    probs_post = _to_numpy(prob_post)
    for what, prob in (("prob_pre", probs_pre), ("prob_post", probs_post)):
        if prob is not None and prob.shape[0] != pre.shape[0]:
            raise DataError(f"{what} has batch size {prob.shape[0]}, class maps {pre.shape[0]}")
    out = np.stack(
        [
            change_event_generation(
                pre[i],
                post[i],
                change_classes=change_classes,
                prob_pre=None if probs_pre is None else probs_pre[i],
                prob_post=None if probs_post is None else probs_post[i],
                **kwargs,
            )
            for i in range(pre.shape[0])
        ]
    ) if pre.shape[0] else np.zeros(pre.shape, dtype=np.uint8)  # fmt: skip
    if hasattr(sem_pre, "detach"):
        import torch

        return torch.from_numpy(out.astype(np.int64)).to(sem_pre.device)
    return out


# --------------------------------------------------------------------------------------------
# Whole-scene, block-wise generation
# --------------------------------------------------------------------------------------------


def resolve_change_classes(
    change_classes: Iterable[str | int] | str | int, class_names: Sequence[str] | None
) -> tuple[int, ...]:
    """Turn class names or ids (``"building"``, ``0``, ``"0"``) into sorted class ids.

    Args:
        change_classes: names or ids; a single value or a comma-separated string is accepted.
        class_names: class names in class-id order (e.g. the ``GEOCHANGE_CLASS_NAMES`` tag).

    Returns:
        The class ids, sorted and without duplicates.

    Raises:
        ConfigurationError: if a name is unknown or nothing is given.
    """
    if isinstance(change_classes, str):
        items: list[str | int] = [v.strip() for v in change_classes.split(",") if v.strip()]
    elif isinstance(change_classes, int | np.integer):
        items = [int(change_classes)]
    else:
        items = list(change_classes)
    ids: set[int] = set()
    lowered = [name.lower() for name in class_names] if class_names is not None else None
    for item in items:
        if isinstance(item, int | np.integer) or str(item).strip().isdigit():
            ids.add(int(item))
        elif lowered is not None and str(item).strip().lower() in lowered:
            ids.add(lowered.index(str(item).strip().lower()))
        else:
            known = ", ".join(class_names) if class_names is not None else "none"
            raise ConfigurationError(
                f"unknown change class {item!r}; known class names: {known} (or give class ids)"
            )
    if not ids:
        raise ConfigurationError("no change class given: name at least one class of interest")
    return tuple(sorted(ids))


def _read_class_names(ds: rasterio.DatasetReader) -> list[str] | None:
    return read_class_names_tag(ds)


@dataclass(frozen=True)
class _SceneInputs:
    """Validated input rasters sharing one grid."""

    semantic_pre: Path
    semantic_post: Path
    prob_pre: Path | None
    prob_post: Path | None
    height: int
    width: int
    transform: Any
    crs: Any
    class_names: list[str] | None


def _check_grid(ds: rasterio.DatasetReader, ref: rasterio.DatasetReader, what: str) -> None:
    mismatch = grid_mismatch(ds, ref)
    if mismatch == "shape":
        raise DataError(
            f"{what} raster {ds.name!r} is not on the grid of {ref.name!r}: "
            f"{ds.width}x{ds.height} px, transform {tuple(ds.transform)[:6]} vs "
            f"{ref.width}x{ref.height} px, {tuple(ref.transform)[:6]} "
            "(reproject it onto the same grid first, e.g. with rasterio.warp)"
        )
    if mismatch == "crs":
        raise DataError(
            f"{what} raster {ds.name!r} has CRS {ds.crs} but {ref.name!r} has {ref.crs}"
        )


def _scene_inputs(
    semantic_pre: str | os.PathLike[str],
    semantic_post: str | os.PathLike[str],
    prob_pre: str | os.PathLike[str] | None,
    prob_post: str | os.PathLike[str] | None,
) -> _SceneInputs:
    with open_raster(semantic_pre) as ref, open_raster(semantic_post) as post:
        names: list[list[str] | None] = []
        for ds, what in ((ref, "semantic_pre"), (post, "semantic_post")):
            if ds.count != 1 or not np.issubdtype(np.dtype(ds.dtypes[0]), np.integer):
                raise DataError(
                    f"{what} raster {ds.name!r} has {ds.count} band(s) of {ds.dtypes[0]}; "
                    "expected one band of integer class ids"
                )
            names.append(_read_class_names(ds))
        _check_grid(post, ref, "semantic_post")
        if names[0] is not None and names[1] is not None and names[0] != names[1]:
            raise DataError(
                f"the class rasters name their classes differently: {names[0]} in {ref.name!r} "
                f"vs {names[1]} in {post.name!r}"
            )
        for path, what in ((prob_pre, "prob_pre"), (prob_post, "prob_post")):
            if path is None:
                continue
            with open_raster(path) as ds:
                _check_grid(ds, ref, what)
                dtype = np.dtype(ds.dtypes[0])
                if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
                    raise DataError(
                        f"{what} raster {ds.name!r} has data type {dtype}; expected class "
                        "probabilities as float (0..1) or uint8 (0..255) bands"
                    )
        return _SceneInputs(
            semantic_pre=Path(semantic_pre),
            semantic_post=Path(semantic_post),
            prob_pre=None if prob_pre is None else Path(prob_pre),
            prob_post=None if prob_post is None else Path(prob_post),
            height=ref.height,
            width=ref.width,
            transform=ref.transform,
            crs=ref.crs,
            class_names=names[0] if names[0] is not None else names[1],
        )


def _read_classes(
    ds: rasterio.DatasetReader, window: rasterio.windows.Window, ignore_index: int
) -> IntArray:
    sem = ds.read(1, window=window)
    info = np.iinfo(sem.dtype)
    if not info.min <= ignore_index <= info.max:  # keep small dtypes when they hold the value
        sem = sem.astype(np.int32)
    if ds.nodata is not None and ds.nodata != ignore_index:
        sem[sem == int(ds.nodata)] = ignore_index
    return sem


def _read_confidence(
    ds: rasterio.DatasetReader | None, window: rasterio.windows.Window
) -> npt.NDArray[np.float32] | None:
    """Highest class probability per pixel (NaN where nodata, hence uncertain)."""
    if ds is None:
        return None
    bands = ds.read(window=window)
    invalid = np.zeros(bands.shape[1:], dtype=bool)
    if ds.nodata is not None:  # a probability may well equal nodata (0); all bands may not
        invalid = (bands == ds.nodata).all(axis=0)
    conf = bands.max(axis=0).astype(np.float32)
    if bands.dtype == np.uint8:
        conf /= 255.0
    conf[invalid] = np.nan
    return conf


@dataclass
class _BlockInstances:
    """Where a block's local instance labels sit in the global numbering."""

    base_pre: int
    count_pre: int
    base_post: int
    count_post: int


@dataclass(frozen=True)
class PseudoLabelSummary:
    """What :func:`generate_pseudo_labels` wrote.

    Attributes:
        path: the pseudo-label COG (uint8: 0 no change, 1 change, ``ignore_index`` ignore).
        mode: the CEG mode used.
        change_classes: class ids of interest.
        change_pixels: pixels labelled change.
        no_change_pixels: pixels labelled no change.
        ignored_pixels: pixels set to ``ignore_index`` (uncertain or noise).
        instances_pre: instances of the classes of interest at the first date (whole scene).
        instances_post: the same at the second date.
        change_events: instances (both dates) that are change events.
        seconds: wall time.
    """

    path: Path
    mode: str
    change_classes: tuple[int, ...]
    change_pixels: int
    no_change_pixels: int
    ignored_pixels: int
    instances_pre: int
    instances_post: int
    change_events: int
    seconds: float


def generate_pseudo_labels(
    semantic_pre: str | os.PathLike[str],
    semantic_post: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    change_classes: Iterable[str | int] | str | int = "building",
    mode: CEGMode = "mixed",
    prob_pre: str | os.PathLike[str] | None = None,
    prob_post: str | os.PathLike[str] | None = None,
    min_instance_area: int = DEFAULT_MIN_INSTANCE_AREA,
    overlap_threshold: float = DEFAULT_OVERLAP_THRESHOLD,
    confidence: float = DEFAULT_CONFIDENCE,
    ignore_index: int = IGNORE_INDEX,
    connectivity: int = 8,
    class_names: Sequence[str] | None = None,
    block_size: int = 2048,
    gdal_cache_mb: int | None = 64,
    progress: bool = False,
) -> PseudoLabelSummary:
    """Generate change pseudo labels for a whole georeferenced scene, block by block.

    The result equals :func:`change_event_generation` applied to the whole scene at once, but
    memory is bounded by ``block_size``: a first pass labels instances per block, records their
    areas, their overlaps with the other date and the labels on the block edges; instances
    touching across block seams are merged into scene-wide instances (connected components of
    the seam graph), whose exact areas and IoUs decide the change events; a second pass
    relabels each block and writes the pseudo labels. The output is a Cloud-Optimized GeoTIFF
    (uint8, nodata ``ignore_index``) on the input grid, written atomically, usable as a change
    label raster.

    Args:
        semantic_pre: class raster of the first date (one integer band).
        semantic_post: class raster of the second date, on the same grid.
        out: output GeoTIFF path.
        change_classes: classes of interest as names (looked up in ``class_names`` or the
            rasters' ``GEOCHANGE_CLASS_NAMES`` tag, else the LsSCD names) or ids.
        mode: ``"mixed"``, ``"instance"`` or ``"pixel"``.
        prob_pre: optional class-probability raster of the first date (K float bands 0..1 or
            uint8 bands 0..255, or one band with the predicted class's confidence).
        prob_post: the same for the second date.
        min_instance_area: instances smaller than this many pixels are noise.
        overlap_threshold: IoU at or below which an instance counts as a change event.
        confidence: minimum highest-class probability for a pixel to be labelled.
        ignore_index: output value of uncertain pixels (also the output nodata); class pixels
            equal to it or to a class raster's nodata are unknown.
        connectivity: 4 or 8 neighbourhood for instances.
        class_names: class names in id order (overrides the rasters' tag).
        block_size: block side in pixels (memory grows with its square).
        gdal_cache_mb: GDAL block cache during the run, in MiB (``None``: GDAL's setting, by
            default 5% of the RAM).
        progress: show a progress bar.

    Returns:
        A :class:`PseudoLabelSummary`.

    Raises:
        DataError: unreadable rasters, rasters on different grids, non-integer class rasters.
        ConfigurationError: unknown class names or parameters out of range.
        OutputError: if the output cannot be written.
    """
    start = time.perf_counter()
    inputs = _scene_inputs(semantic_pre, semantic_post, prob_pre, prob_post)
    names = list(class_names) if class_names is not None else inputs.class_names
    names = names or list(DEFAULT_CLASS_NAMES)
    classes = resolve_change_classes(change_classes, names)
    classes = _check_params(
        classes, mode, min_instance_area, overlap_threshold, confidence, ignore_index,
        connectivity,
    )  # fmt: skip
    if not 2 <= ignore_index <= 255:
        raise ConfigurationError(f"ignore_index must fit uint8 beside 0 and 1, got {ignore_index}")
    if block_size < 16:
        raise ConfigurationError(f"block_size must be at least 16 pixels, got {block_size}")
    out = Path(out)
    check_writable_dir(out.parent if str(out.parent) else ".")
    grid = BlockGrid(inputs.height, inputs.width, block_size)
    structure = _structure(connectivity)
    total_blocks = len(grid) * (1 if mode == "pixel" else 2)
    bar = _progress_bar(total_blocks, progress)

    # GDAL's block cache defaults to 5% of RAM and would grow with the scene; the passes read
    # and write whole tiles in order, so a small cache keeps memory bounded at no cost.
    with gdal_cache(gdal_cache_mb * 2**20 if gdal_cache_mb else None):
        with (
            rasterio.open(inputs.semantic_pre) as ds_pre,
            rasterio.open(inputs.semantic_post) as ds_post,
        ):
            node_event = node_small = np.zeros(0, dtype=bool)
            blocks: dict[tuple[int, int], _BlockInstances] = {}
            instances_pre = instances_post = events = 0
            if mode != "pixel":
                scene = _scan_instances(
                    ds_pre, ds_post, grid, classes, structure, ignore_index, bar
                )
                blocks = scene.blocks
                comp, is_pre = _merge_seams(scene, grid, connectivity)
                node_event, node_small, n_pre, n_post, events = _decide_events(
                    scene, comp, is_pre, min_instance_area, overlap_threshold
                )
                instances_pre, instances_post = n_pre, n_post
            counts = np.zeros(256, dtype=np.int64)
            tiled = out.with_name(f".{out.name}.tiled.tif")
            profile = {
                **TILED_GTIFF_OPTIONS,
                "height": inputs.height,
                "width": inputs.width,
                "count": 1,
                "dtype": "uint8",
                "nodata": ignore_index,
                "crs": inputs.crs,
                "transform": inputs.transform,
            }
            ds_prob_pre = rasterio.open(inputs.prob_pre) if inputs.prob_pre else None
            ds_prob_post = rasterio.open(inputs.prob_post) if inputs.prob_post else None
            try:
                with rasterio.open(tiled, "w", **profile) as dst:
                    for block in grid:
                        window = block.window
                        sem_pre = _read_classes(ds_pre, window, ignore_index)
                        sem_post = _read_classes(ds_post, window, ignore_index)
                        uncertain = _uncertain(
                            sem_pre,
                            sem_post,
                            _read_confidence(ds_prob_pre, window),
                            _read_confidence(ds_prob_post, window),
                            confidence,
                            ignore_index,
                        )
                        pixel_change = _pixel_change(sem_pre, sem_post, classes)
                        if mode == "pixel":
                            event = small = np.zeros(sem_pre.shape, dtype=bool)
                        else:
                            event, small = _block_flags(
                                sem_pre, sem_post, classes, structure, blocks[block.row, block.col],
                                node_event, node_small,
                            )  # fmt: skip
                        labels = _assemble(
                            mode, pixel_change, event, small, uncertain, ignore_index
                        )
                        counts += np.bincount(labels.ravel(), minlength=256)
                        dst.write(labels, 1, window=window)
                        bar.update(1)
                    dst.update_tags(
                        **{
                            # geochange's change-mask convention (0/1, nodata = ignore): read
                            # as such even where no change was found (geochange.io).
                            CLASS_NAMES_TAG: json.dumps(list(CHANGE_CLASS_NAMES)),
                            PSEUDO_LABELS_TAG: json.dumps(
                                {
                                    "mode": mode,
                                    "change_classes": list(classes),
                                    "change_class_names": [
                                        names[c] if c < len(names) else str(c) for c in classes
                                    ],
                                    "min_instance_area": min_instance_area,
                                    "overlap_threshold": overlap_threshold,
                                    "confidence": confidence if prob_pre or prob_post else None,
                                    "connectivity": connectivity,
                                }
                            ),
                        }
                    )
                finalize_cog(tiled, out, resampling="nearest")
            finally:
                bar.close()
                for ds in (ds_prob_pre, ds_prob_post):
                    if ds is not None:
                        ds.close()
                if tiled.exists():
                    tiled.unlink()
    return PseudoLabelSummary(
        path=out,
        mode=mode,
        change_classes=classes,
        change_pixels=int(counts[1]),
        no_change_pixels=int(counts[0]),
        ignored_pixels=int(counts[ignore_index]),
        instances_pre=instances_pre,
        instances_post=instances_post,
        change_events=events,
        seconds=time.perf_counter() - start,
    )


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="block", desc="pseudo labels")


@dataclass
class _SceneInstances:
    """Everything the first pass records about the instances of a scene."""

    blocks: dict[tuple[int, int], _BlockInstances]
    node_class: npt.NDArray[np.int64]
    node_area: npt.NDArray[np.int64]
    node_is_pre: BoolArray
    pair_pre: npt.NDArray[np.int64]
    pair_post: npt.NDArray[np.int64]
    pair_count: npt.NDArray[np.int64]
    strips_pre: dict[tuple[int, int], EdgeStrips]
    strips_post: dict[tuple[int, int], EdgeStrips]


def _scan_instances(
    ds_pre: rasterio.DatasetReader,
    ds_post: rasterio.DatasetReader,
    grid: BlockGrid,
    classes: tuple[int, ...],
    structure: BoolArray,
    ignore_index: int,
    bar: Any,
) -> _SceneInstances:
    """First pass: per-block instances, areas, cross-date overlaps and edge labels."""
    blocks: dict[tuple[int, int], _BlockInstances] = {}
    node_class: list[npt.NDArray[np.int64]] = []
    node_area: list[npt.NDArray[np.int64]] = []
    node_is_pre: list[BoolArray] = []
    pairs: list[tuple[npt.NDArray[np.int64], ...]] = []
    strips_pre: dict[tuple[int, int], EdgeStrips] = {}
    strips_post: dict[tuple[int, int], EdgeStrips] = {}
    next_node = 0
    for block in grid:
        window = block.window
        sem_pre = _read_classes(ds_pre, window, ignore_index)
        sem_post = _read_classes(ds_post, window, ignore_index)
        labels_pre, class_pre = _label_classes(sem_pre, classes, structure)
        labels_post, class_post = _label_classes(sem_post, classes, structure)
        info = _BlockInstances(
            base_pre=next_node,
            count_pre=class_pre.size,
            base_post=next_node + class_pre.size,
            count_post=class_post.size,
        )
        next_node += class_pre.size + class_post.size
        blocks[block.row, block.col] = info
        node_class += [class_pre, class_post]
        node_area.append(np.bincount(labels_pre.ravel(), minlength=info.count_pre + 1)[1:])
        node_area.append(np.bincount(labels_post.ravel(), minlength=info.count_post + 1)[1:])
        node_is_pre += [np.ones(info.count_pre, bool), np.zeros(info.count_post, bool)]
        # Overlaps in local numbering, then shifted to global ids.
        pair_pre, pair_post, pair_count = _overlap_pairs(
            labels_pre, labels_post, sem_pre == sem_post
        )
        pairs.append((pair_pre + info.base_pre, pair_post + info.base_post, pair_count))
        strips_pre[block.row, block.col] = edge_strips(labels_pre).to_global(info.base_pre)
        strips_post[block.row, block.col] = edge_strips(labels_post).to_global(info.base_post)
        bar.update(1)
    empty = np.zeros(0, dtype=np.int64)
    return _SceneInstances(
        blocks=blocks,
        node_class=np.concatenate(node_class) if node_class else empty,
        node_area=np.concatenate(node_area).astype(np.int64) if node_area else empty,
        node_is_pre=np.concatenate(node_is_pre) if node_is_pre else np.zeros(0, bool),
        pair_pre=np.concatenate([p[0] for p in pairs]) if pairs else empty,
        pair_post=np.concatenate([p[1] for p in pairs]) if pairs else empty,
        pair_count=np.concatenate([p[2] for p in pairs]) if pairs else empty,
        strips_pre=strips_pre,
        strips_post=strips_post,
    )


def _merge_seams(
    scene: _SceneInstances, grid: BlockGrid, connectivity: int
) -> tuple[npt.NDArray[np.int64], BoolArray]:
    """Scene-wide instance id of every block-local instance (connected components over seams).

    Returns:
        The component of every node and whether each component is a first-date instance.
    """
    links = [
        seam_links(strips, grid.rows, grid.cols, scene.node_class, connectivity)
        for strips in (scene.strips_pre, scene.strips_post)
    ]
    n = scene.node_class.size
    comp = components(
        n, np.concatenate([src for src, _ in links]), np.concatenate([dst for _, dst in links])
    )
    is_pre = np.zeros(int(comp.max()) + 1 if n else 0, dtype=bool)
    is_pre[comp] = scene.node_is_pre
    return comp, is_pre


def _decide_events(
    scene: _SceneInstances,
    comp: npt.NDArray[np.int64],
    is_pre: BoolArray,
    min_instance_area: int,
    overlap_threshold: float,
) -> tuple[BoolArray, BoolArray, int, int, int]:
    """Per-node event/small flags from exact scene-wide areas and overlaps."""
    n_comp = is_pre.size
    area = np.bincount(comp, weights=scene.node_area, minlength=n_comp).astype(np.int64)
    pair_pre = comp[scene.pair_pre]
    pair_post = comp[scene.pair_post]
    # Pieces of the same scene-wide pair found in different blocks add up.
    keys, inverse = np.unique(pair_pre * max(n_comp, 1) + pair_post, return_inverse=True)
    counts = np.bincount(inverse.ravel(), weights=scene.pair_count).astype(np.int64)
    event_pre, event_post, small_pre, small_post = _match_instances(
        area, area, keys // max(n_comp, 1), keys % max(n_comp, 1), counts,
        min_instance_area, overlap_threshold,
    )  # fmt: skip
    event = np.where(is_pre, event_pre, event_post)
    small = np.where(is_pre, small_pre, small_post)
    return (
        event[comp],
        small[comp],
        int(is_pre.sum()),
        int((~is_pre).sum()),
        int(event.sum()),
    )


def _block_flags(
    sem_pre: IntArray,
    sem_post: IntArray,
    classes: tuple[int, ...],
    structure: BoolArray,
    info: _BlockInstances,
    node_event: BoolArray,
    node_small: BoolArray,
) -> tuple[BoolArray, BoolArray]:
    """Second pass: relabel a block and look its instances' scene-wide decisions up."""
    labels_pre, class_pre = _label_classes(sem_pre, classes, structure)
    labels_post, class_post = _label_classes(sem_post, classes, structure)
    if (class_pre.size, class_post.size) != (info.count_pre, info.count_post):
        raise DataError("the class rasters changed while pseudo labels were being generated")
    pre_nodes = slice(info.base_pre, info.base_pre + info.count_pre)
    post_nodes = slice(info.base_post, info.base_post + info.count_post)
    # One lookup per date: bit 0 = change event, bit 1 = too small.
    code_pre = node_event[pre_nodes].astype(np.uint8) | (node_small[pre_nodes] << 1)
    code_post = node_event[post_nodes].astype(np.uint8) | (node_small[post_nodes] << 1)
    codes = np.concatenate([[0], code_pre]).astype(np.uint8)[labels_pre]
    codes |= np.concatenate([[0], code_post]).astype(np.uint8)[labels_post]
    return (codes & 1).astype(bool), (codes & 2).astype(bool)


# --------------------------------------------------------------------------------------------
# Unsupervised change detection: scoring the pseudo labels against a reference
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeScore:
    """Confusion counts of change pseudo labels against a reference change map.

    Pixels where the reference is unknown are left out. Pseudo labels set to ignore are
    *undecided*: counted apart, and as "no change" when CEG is used as a change detector.

    Attributes:
        tp: change in both.
        fp: change in the pseudo labels only.
        fn: change in the reference only (pseudo label decided "no change").
        tn: no change in both.
        undecided_change: reference change where the pseudo labels are ignore.
        undecided_no_change: reference no change where the pseudo labels are ignore.
    """

    tp: int
    fp: int
    fn: int
    tn: int
    undecided_change: int
    undecided_no_change: int

    def _detector(self) -> dict[str, float]:
        # As a change detector: undecided reference change is missed change. NaN where a
        # ratio is undefined (see geochange.metrics.scores_from_counts).
        from geochange.metrics import scores_from_counts  # torch: imported on first use

        missed = self.fn + self.undecided_change
        return scores_from_counts(self.tp, self.fp, missed, empty=float("nan"))

    @property
    def iou_change(self) -> float:
        """IoU of the change class (IoU^c), ignored pixels counted as "no change"."""
        return float(self._detector()["iou"])

    @property
    def iou_change_decided(self) -> float:
        """IoU^c over the pixels the pseudo labels decide (the quality of the labels used)."""
        from geochange.metrics import scores_from_counts

        return float(scores_from_counts(self.tp, self.fp, self.fn, empty=float("nan"))["iou"])

    @property
    def precision(self) -> float:
        """Precision of the change class."""
        return float(self._detector()["precision"])

    @property
    def recall(self) -> float:
        """Recall of the change class, ignored pixels counted as "no change"."""
        return float(self._detector()["recall"])

    @property
    def f1(self) -> float:
        """F1 of the change class, ignored pixels counted as "no change" (NaN when empty)."""
        return float(self._detector()["f1"])

    @property
    def coverage(self) -> float:
        """Fraction of the reference's known pixels the pseudo labels decide (0 or 1)."""
        known = self.tp + self.fp + self.fn + self.tn
        total = known + self.undecided_change + self.undecided_no_change
        return known / total if total else float("nan")

    def __add__(self, other: ChangeScore) -> ChangeScore:
        return ChangeScore(*(a + b for a, b in zip(_fields(self), _fields(other), strict=True)))

    def as_dict(self) -> dict[str, float]:
        """Counts and derived metrics as a flat dictionary (for printing or logging)."""
        return {
            **{k: float(v) for k, v in asdict(self).items()},
            "iou_change": self.iou_change,
            "iou_change_decided": self.iou_change_decided,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "coverage": self.coverage,
        }


def _fields(score: ChangeScore) -> tuple[int, ...]:
    return (
        score.tp, score.fp, score.fn, score.tn, score.undecided_change, score.undecided_no_change
    )  # fmt: skip


def score_change(
    pseudo: IntArray,
    reference: IntArray,
    *,
    ignore_index: int = IGNORE_INDEX,
    reference_ignore: int | None = None,
) -> ChangeScore:
    """Compare change pseudo labels (0/1/``ignore_index``) with a reference change map.

    Args:
        pseudo: pseudo labels from :func:`change_event_generation`.
        reference: reference change labels (0/1; other values are unknown and left out).
        ignore_index: the pseudo labels' ignore value.
        reference_ignore: the reference's unknown value (default ``ignore_index``).

    Returns:
        The :class:`ChangeScore`.

    Raises:
        DataError: if the shapes differ.
    """
    pseudo = np.asarray(pseudo)
    reference = np.asarray(reference)
    if pseudo.shape != reference.shape:
        raise DataError(f"pseudo labels {pseudo.shape} and reference {reference.shape} differ")
    unknown = ignore_index if reference_ignore is None else reference_ignore
    known = (reference != unknown) & ((reference == 0) | (reference == 1))
    ref_change = known & (reference == 1)
    ref_stable = known & (reference == 0)
    decided = pseudo != ignore_index
    change = decided & (pseudo == 1)
    stable = decided & (pseudo == 0)
    return ChangeScore(
        tp=int(np.count_nonzero(change & ref_change)),
        fp=int(np.count_nonzero(change & ref_stable)),
        fn=int(np.count_nonzero(stable & ref_change)),
        tn=int(np.count_nonzero(stable & ref_stable)),
        undecided_change=int(np.count_nonzero(~decided & ref_change)),
        undecided_no_change=int(np.count_nonzero(~decided & ref_stable)),
    )


def evaluate_pseudo_labels(
    pseudo: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    *,
    block_size: int = 4096,
    mask_values: str = "auto",
) -> ChangeScore:
    """Score a pseudo-label raster against a reference change raster, block by block.

    This is the unsupervised mode: CEG used alone as a change detector, its IoU^c is
    :attr:`ChangeScore.iou_change`.

    Args:
        pseudo: pseudo-label raster from :func:`generate_pseudo_labels` (nodata = ignore).
        reference: reference change raster on the same grid (0/1, nodata or 255 unknown;
            the change-mask convention of :func:`geochange.io.check_change_mask`).
        block_size: block side in pixels.
        mask_values: how the reference stores change: ``"auto"`` (0/1; a 0/255 reference is
            refused with a message naming this option), ``"0,1"`` or ``"0,255"`` (255 =
            change).

    Returns:
        The accumulated :class:`ChangeScore`.

    Raises:
        DataError: unreadable rasters, rasters on different grids, or a reference holding
            values other than 0, 1, 255 and its nodata (or a 0/255 one under ``"auto"``).
    """
    import torch

    from geochange.metrics import BinaryChangeMetrics

    # The detector view (ignore -> "no change") goes through the project's metric, which also
    # rejects references holding values other than 0/1/nodata; the undecided pixels are counted
    # beside it.
    metric = BinaryChangeMetrics(ignore_index=IGNORE_INDEX)
    undecided_change = undecided_no_change = 0
    with open_raster(pseudo) as ds_pseudo, open_raster(reference) as ds_ref:
        _check_grid(ds_ref, ds_pseudo, "reference")
        if ds_ref.count != 1 or not np.issubdtype(np.dtype(ds_ref.dtypes[0]), np.integer):
            raise DataError(
                f"reference raster {ds_ref.name!r} must be one integer band of 0/1 change labels"
            )
        pseudo_ignore = int(ds_pseudo.nodata) if ds_pseudo.nodata is not None else 255
        ref_mask = check_change_mask(
            reference, mask_values=mask_values, what="reference change raster"
        )
        for window in BlockGrid(ds_pseudo.height, ds_pseudo.width, block_size).windows():
            labels = ds_pseudo.read(1, window=window)
            ref = ref_mask.decode(ds_ref.read(1, window=window)).astype(np.int64)
            metric.update(torch.from_numpy((labels == 1).astype(np.int64)), torch.from_numpy(ref))
            undecided = labels == pseudo_ignore
            undecided_change += int(np.count_nonzero(undecided & (ref == 1)))
            undecided_no_change += int(np.count_nonzero(undecided & (ref == 0)))
    confusion = metric.confusion.cpu().numpy()  # rows: reference, columns: prediction
    return ChangeScore(
        tp=int(confusion[1, 1]),
        fp=int(confusion[0, 1]),
        fn=int(confusion[1, 0]) - undecided_change,
        tn=int(confusion[0, 0]) - undecided_no_change,
        undecided_change=undecided_change,
        undecided_no_change=undecided_no_change,
    )


# --------------------------------------------------------------------------------------------
# Simulated segmenter (for benchmarks and tests)
# --------------------------------------------------------------------------------------------

#: Pairs of LsSCD classes a segmenter plausibly confuses (building <-> bare land, ...).
DEFAULT_CONFUSIONS: tuple[tuple[int, int], ...] = ((0, 3), (1, 3), (4, 5), (2, 4), (6, 3))


def degrade_class_map(
    sem: IntArray,
    *,
    target_class: int = 0,
    erosion_px: int = 1,
    confusion_fraction: float = 0.03,
    confusion_blob_px: float = 6.0,
    confusions: Sequence[tuple[int, int]] = DEFAULT_CONFUSIONS,
    miss_area: int = 80,
    miss_probability: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
    seed: int = 0,
) -> npt.NDArray[np.int64]:
    """Simulate an imperfect segmenter by degrading a true class map.

    Three error types of real per-date segmenters (e.g. open-vocabulary models) are simulated:
    eroded boundaries of the target class, blob-shaped class confusions, and missed small
    instances. Used to measure how CEG pseudo labels degrade with segmenter quality.

    Args:
        sem: ``[H, W]`` true class map.
        target_class: the class whose boundaries are eroded and small instances missed.
        erosion_px: pixels removed from the target class's boundaries (0: none).
        confusion_fraction: approximate fraction of pixels swapped to a confused class, in
            smooth blobs.
        confusion_blob_px: blob scale of the confusions (Gaussian sigma in pixels).
        confusions: class pairs confused in both directions.
        miss_area: target instances smaller than this many pixels may be missed.
        miss_probability: probability that such a small instance is missed.
        ignore_index: unknown pixels, left as they are.
        seed: random seed (use different seeds for the two dates).

    Returns:
        The degraded ``[H, W]`` class map (int64); removed target pixels take the class of the
        nearest non-target pixel.
    """
    rng = np.random.default_rng(seed)
    out = np.asarray(sem).astype(np.int64)
    target = out == target_class
    remove = np.zeros(out.shape, dtype=bool)
    if miss_area > 0 and miss_probability > 0 and target.any():
        labels, count = ndi.label(target, structure=_structure(8))
        areas = np.bincount(labels.ravel(), minlength=count + 1)
        missed = (areas < miss_area) & (rng.random(count + 1) < miss_probability)
        missed[0] = False
        remove |= missed[labels]
    if erosion_px > 0:
        remove |= target & ~ndi.binary_erosion(target, iterations=erosion_px, border_value=1)
    if remove.any():
        # Fill with the nearest non-target class, as a segmenter would label the surroundings.
        keep = ~(target | (out == ignore_index))
        if keep.any():
            _, (rows, cols) = ndi.distance_transform_edt(~keep, return_indices=True)
            out[remove] = out[rows[remove], cols[remove]]
    if confusion_fraction > 0 and confusions:
        field = ndi.gaussian_filter(rng.standard_normal(out.shape), confusion_blob_px)
        blobs = field > np.quantile(field, 1.0 - confusion_fraction)
        swapped = out.copy()
        for first, second in confusions:
            swapped[blobs & (out == first)] = second
            swapped[blobs & (out == second)] = first
        out = swapped
    return out
