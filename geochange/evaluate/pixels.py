"""Pixel-level evaluation: confusion counts over the scene block by block, bounded memory.

Binary (and, with class rasters on both sides, semantic) scores come from
:mod:`geochange.metrics`; the from→to transition confusion and a coarse TP / FP / miss
overview are accumulated in the same pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window

from geochange._blockwise import BlockGrid
from geochange.evaluate.sources import _Grid
from geochange.io import MASK_IGNORE

_IGNORE = MASK_IGNORE


class _BlockSource(Protocol):
    def read(self, window: Window) -> npt.NDArray[np.uint8]: ...


@dataclass
class PixelCounts:
    """What the pixel pass accumulated.

    Attributes:
        scores: the metric's ``compute()`` result (tensors).
        transitions: ``[T, T]`` transition confusion (semantic pass only).
        overview: ``[3, h, w]`` TP / FP / miss pixel counts per overview cell.
        factor: overview cell side in pixels.
    """

    scores: dict[str, Any]
    transitions: npt.NDArray[np.int64] | None
    overview: npt.NDArray[np.int32]
    factor: int


def _overview_factor(grid: _Grid, max_side: int) -> int:
    return max(1, math.ceil(max(grid.height, grid.width) / max_side))


def _reduce_counts(mask: npt.NDArray[np.bool_], factor: int) -> npt.NDArray[np.int32]:
    """Count true pixels in every ``factor`` x ``factor`` cell (block padded with False)."""
    h, w = mask.shape
    hp, wp = math.ceil(h / factor) * factor, math.ceil(w / factor) * factor
    if (hp, wp) != (h, w):
        mask = np.pad(mask, ((0, hp - h), (0, wp - w)))
    return mask.reshape(hp // factor, factor, wp // factor, factor).sum(axis=(1, 3), dtype=np.int32)


def _add_transitions(
    matrix: npt.NDArray[np.int64],
    p: npt.NDArray[np.uint8],
    p_pre: npt.NDArray[np.uint8],
    p_post: npt.NDArray[np.uint8],
    r: npt.NDArray[np.uint8],
    r_pre: npt.NDArray[np.uint8],
    r_post: npt.NDArray[np.uint8],
    k: int,
) -> None:
    """Accumulate the [reference, prediction] transition confusion (0 = no change)."""
    valid = (r != _IGNORE) & ~((r == 1) & ((r_pre == _IGNORE) | (r_post == _IGNORE)))
    ref_t = np.where(r == 1, 1 + r_pre.astype(np.int64) * k + r_post, 0)[valid]
    pred_t = np.where(p == 1, 1 + p_pre.astype(np.int64) * k + p_post, 0)[valid]
    size = matrix.shape[0]
    matrix += np.bincount(ref_t * size + pred_t, minlength=size * size).reshape(size, size)


def _mask_unscorable(
    r_pre: npt.NDArray[np.uint8],
    r_post: npt.NDArray[np.uint8],
    p_pre: npt.NDArray[np.uint8],
    p_post: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.uint8], ...]:
    """Predicted classes outside 0..K-1 (nodata) cannot be scored: ignore them there."""
    bad = (p_pre == _IGNORE) | (p_post == _IGNORE)
    if bad.any():
        r_pre, r_post = r_pre.copy(), r_post.copy()
        r_pre[bad] = _IGNORE
        r_post[bad] = _IGNORE
        p_pre = np.where(bad, 0, p_pre).astype(np.uint8)
        p_post = np.where(bad, 0, p_post).astype(np.uint8)
    return r_pre, r_post, p_pre, p_post


def _add_overview(
    overview: npt.NDArray[np.int32],
    p: npt.NDArray[np.uint8],
    r: npt.NDArray[np.uint8],
    window: Window,
    factor: int,
) -> None:
    """Write the TP / FP / miss counts of one block into its overview cells."""
    pc, rc = p == 1, r == 1
    row0, col0 = int(window.row_off) // factor, int(window.col_off) // factor
    for index, mask in enumerate((pc & rc, pc & (r == 0), ~pc & rc)):
        cells = _reduce_counts(mask, factor)
        overview[index, row0 : row0 + cells.shape[0], col0 : col0 + cells.shape[1]] = cells


def count_pixels(
    grid: _Grid,
    pred_source: _BlockSource,
    ref_source: _BlockSource,
    class_sources: Sequence[_BlockSource],
    num_classes: int,
    *,
    block_size: int,
    overview_size: int,
    progress: bool,
) -> PixelCounts:
    """Score the prediction against the reference over the whole grid, block by block.

    Args:
        grid: the evaluation grid.
        pred_source: predicted change, read per block as 0/1.
        ref_source: reference change, 0/1 with 255 ignored.
        class_sources: reference pre, reference post, predicted pre, predicted post class
            rasters for the semantic scores, or empty for binary scores only.
        num_classes: number of classes (semantic pass).
        block_size: block side in pixels.
        overview_size: longest side of the overview, in cells.
        progress: show a progress bar.

    Returns:
        The :class:`PixelCounts`.
    """
    import torch

    from geochange.metrics import BinaryChangeMetrics, SemanticChangeMetrics

    semantic = bool(class_sources)
    metric: Any = (
        SemanticChangeMetrics(num_classes, ignore_index=_IGNORE)
        if semantic
        else BinaryChangeMetrics(ignore_index=_IGNORE)
    )
    n_transitions = num_classes * num_classes + 1
    transitions = np.zeros((n_transitions, n_transitions), np.int64) if semantic else None
    factor = _overview_factor(grid, overview_size)
    # Blocks aligned on overview cells, so each cell is counted from one block only.
    step = max(factor, block_size // factor * factor)
    overview = np.zeros(
        (3, math.ceil(grid.height / factor), math.ceil(grid.width / factor)), np.int32
    )
    windows = list(BlockGrid(grid.height, grid.width, step).windows())
    iterator: Any = windows
    if progress:
        from tqdm import tqdm

        iterator = tqdm(windows, desc="evaluate", unit="block")
    for window in iterator:
        p = pred_source.read(window)
        r = ref_source.read(window)
        if semantic:
            r_pre, r_post, p_pre, p_post = _mask_unscorable(
                *(s.read(window) for s in class_sources)
            )
            metric.update(*(torch.from_numpy(a) for a in (p_pre, p_post, p, r_pre, r_post, r)))
            assert transitions is not None
            _add_transitions(transitions, p, p_pre, p_post, r, r_pre, r_post, num_classes)
        else:
            metric.update(torch.from_numpy(p), torch.from_numpy(r))
        _add_overview(overview, p, r, window, factor)
    return PixelCounts(metric.compute(), transitions, overview, factor)
