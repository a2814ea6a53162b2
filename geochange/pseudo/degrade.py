"""A simulated imperfect segmenter: degraded class maps to measure CEG against segmenter quality."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.ndimage as ndi

from geochange.classes import BARE_LAND, IGNORE_INDEX
from geochange.pseudo.ceg import IntArray, _structure

__all__ = ["DEFAULT_CONFUSIONS", "degrade_class_map"]


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
    drop_probability: float = 0.0,
    dilation_px: int = 0,
    false_target_fraction: float = 0.0,
    false_target_from: Sequence[int] = (BARE_LAND,),
    shift_px: tuple[int, int] = (0, 0),
) -> npt.NDArray[np.int64]:
    """Simulate an imperfect segmenter by degrading a true class map.

    Three error types of real per-date segmenters (e.g. open-vocabulary models) are simulated
    by default: eroded boundaries of the target class, blob-shaped class confusions, and missed
    small instances. Used to measure how CEG pseudo labels degrade with segmenter quality.

    The other arguments (off by default) add *systematic* errors, the kind a segmenter run on
    each date separately makes and a change model trained on both images can see through:
    target instances of any size missed (a roof type the segmenter is blind to), outlines
    grown into their surroundings (shadows and walls segmented as roof), blobs of bare land
    taken for the target (a season's bright soil), and the whole map displaced (a segmenter
    run on a differently orthorectified image). With another seed (or other values) per date
    they make false and missed changes, which CEG's instance matching cannot remove.

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
        drop_probability: probability that a target instance of any size is missed.
        dilation_px: pixels the target class grows into non-target, labelled pixels, after
            the erosion (0: none).
        false_target_fraction: approximate fraction of the pixels of ``false_target_from``
            labelled target, in smooth blobs of ``confusion_blob_px``.
        false_target_from: the classes false target blobs appear on (bare land by default).
        shift_px: ``(rows, cols)`` the whole map is displaced by (edges repeat the border).

    Returns:
        The degraded ``[H, W]`` class map (int64); removed target pixels take the class of the
        nearest non-target pixel.
    """
    rng = np.random.default_rng(seed)
    out = np.asarray(sem).astype(np.int64)
    target = out == target_class
    remove = np.zeros(out.shape, dtype=bool)
    if (drop_probability > 0 or (miss_area > 0 and miss_probability > 0)) and target.any():
        labels, count = ndi.label(target, structure=_structure(8))
        areas = np.bincount(labels.ravel(), minlength=count + 1)
        missed = (areas < miss_area) & (rng.random(count + 1) < miss_probability)
        if drop_probability > 0:
            missed |= rng.random(count + 1) < drop_probability
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
    if dilation_px > 0:
        grown = ndi.binary_dilation(out == target_class, iterations=dilation_px)
        out[grown & (out != ignore_index)] = target_class
    if false_target_fraction > 0:
        # Blobs of the field's top quantile within the source classes (their share, not the map's).
        source = np.isin(out, list(false_target_from))
        if source.any():
            field = ndi.gaussian_filter(rng.standard_normal(out.shape), confusion_blob_px)
            level = np.quantile(field[source], 1.0 - false_target_fraction)
            out[source & (field > level)] = target_class
    if confusion_fraction > 0 and confusions:
        field = ndi.gaussian_filter(rng.standard_normal(out.shape), confusion_blob_px)
        blobs = field > np.quantile(field, 1.0 - confusion_fraction)
        swapped = out.copy()
        for first, second in confusions:
            swapped[blobs & (out == first)] = second
            swapped[blobs & (out == second)] = first
        out = swapped
    if shift_px != (0, 0):
        out = ndi.shift(out, shift_px, order=0, mode="nearest")
    return out
