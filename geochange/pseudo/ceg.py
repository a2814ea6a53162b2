"""Change event generation (CEG) on arrays: change pseudo labels from two per-date class maps.

The pixel, instance and mixed modes of DiffMatch (see :mod:`geochange.pseudo`), for one pair of
``[H, W]`` maps or a ``[B, H, W]`` batch; the block-wise scene tool reuses its phases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import scipy.ndimage as ndi

from geochange._deprecation import renamed_argument
from geochange.classes import IGNORE_INDEX, LSSCD_CLASS_NAMES
from geochange.errors import ConfigurationError, DataError

__all__ = [
    "DEFAULT_CLASS_NAMES",
    "CEGMode",
    "change_event_generation",
    "change_event_generation_batch",
]

CEGMode = Literal["mixed", "instance", "pixel"]
_MODES: tuple[str, ...] = ("mixed", "instance", "pixel")

#: LsSCD class names, used when a class raster carries no ``GEOCHANGE_CLASS_NAMES`` tag.
DEFAULT_CLASS_NAMES: tuple[str, ...] = LSSCD_CLASS_NAMES

DEFAULT_MIN_INSTANCE_PIXELS = 10
#: The pre-glossary name of :data:`DEFAULT_MIN_INSTANCE_PIXELS`.
DEFAULT_MIN_INSTANCE_AREA = DEFAULT_MIN_INSTANCE_PIXELS
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
    min_instance_pixels: int,
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
    if min_instance_pixels < 0:
        raise ConfigurationError(f"min_instance_pixels must be >= 0, got {min_instance_pixels}")
    if not 0.0 <= overlap_threshold < 1.0:
        raise ConfigurationError(f"overlap_threshold must be in [0, 1), got {overlap_threshold}")
    if not 0.0 <= confidence <= 1.0:
        raise ConfigurationError(f"confidence must be in [0, 1], got {confidence}")
    if connectivity not in (4, 8):
        raise ConfigurationError(f"connectivity must be 4 or 8, got {connectivity}")
    return tuple(sorted(set(classes)))


def _resolve_min_instance_pixels(
    min_instance_pixels: int, min_instance_area: int | None, *, stacklevel: int = 3
) -> int:
    """``min_instance_pixels``, or the deprecated ``min_instance_area`` (one release, warns).

    ``stacklevel`` points the warning at the caller of the public function.
    """
    return int(
        renamed_argument(
            min_instance_pixels,
            min_instance_area,
            old="min_instance_area",
            new="min_instance_pixels",
            default=DEFAULT_MIN_INSTANCE_PIXELS,
            reason="it counts pixels, see docs/glossary.md",
            error=ConfigurationError,
            stacklevel=stacklevel,
        )
    )


def _ceg_kwargs(kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keywords of :func:`change_event_generation` under their current names (old ones warn).

    For callers that pass keywords through (the batch helper, the semi-supervised trainer's
    ``ceg_kwargs``): the warning points at their caller.
    """
    out = dict(kwargs or {})
    if "min_instance_area" in out:
        out["min_instance_pixels"] = _resolve_min_instance_pixels(
            out.pop("min_instance_pixels", DEFAULT_MIN_INSTANCE_PIXELS),
            out.pop("min_instance_area"),
            stacklevel=4,
        )
    return out


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
    min_instance_pixels: int,
    overlap_threshold: float,
) -> tuple[BoolArray, BoolArray, BoolArray, BoolArray]:
    """Change-event and too-small flags of every pre and post instance."""
    small_pre = area_pre < min_instance_pixels
    small_post = area_post < min_instance_pixels
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
    min_instance_pixels: int = DEFAULT_MIN_INSTANCE_PIXELS,
    overlap_threshold: float = DEFAULT_OVERLAP_THRESHOLD,
    confidence: float = DEFAULT_CONFIDENCE,
    ignore_index: int = IGNORE_INDEX,
    connectivity: int = 8,
    min_instance_area: int | None = None,
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
        min_instance_pixels: instances smaller than this many pixels are noise (never events).
        overlap_threshold: an instance is a change event when its IoU with every same-class
            instance at the other date is ``<=`` this (``0.0``: no overlap at all).
        confidence: a pixel whose highest class probability is below this at either date is
            set to ``ignore_index`` (used only with probabilities).
        ignore_index: label value of unknown pixels, in the inputs and in the output.
        connectivity: 4 or 8 neighbourhood for instances.
        min_instance_area: deprecated name of ``min_instance_pixels`` (a ``DeprecationWarning``;
            removed in the next release).

    Returns:
        ``[H, W]`` uint8 pseudo labels: 0 no change, 1 change, ``ignore_index`` uncertain.

    Raises:
        DataError: if the maps are not 2-D integer arrays of equal shape, or probabilities do not
            match them.
        ConfigurationError: if a parameter is out of range.
    """
    min_instance_pixels = _resolve_min_instance_pixels(min_instance_pixels, min_instance_area)
    classes = _check_params(
        change_classes, mode, min_instance_pixels, overlap_threshold, confidence, ignore_index,
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
        area_pre, area_post, *pairs, min_instance_pixels, overlap_threshold
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
    kwargs = _ceg_kwargs(kwargs)  # old names resolved once here, not once per item
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
