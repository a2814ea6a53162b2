"""Scene-wide instances of the block-wise generation: the first pass, seam merging, event decisions.

A first pass records each block's instances (areas, cross-date overlaps, edge labels); instances
joined across seams become scene-wide instances whose exact areas and IoUs decide the change
events; the second pass looks each block's decisions up (:func:`_block_flags`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio

from geochange._blockwise import BlockGrid, EdgeStrips, components, edge_strips, seam_links
from geochange.errors import DataError
from geochange.pseudo.ceg import (
    BoolArray,
    IntArray,
    _label_classes,
    _match_instances,
    _overlap_pairs,
)
from geochange.pseudo.inputs import _read_classes


@dataclass
class _BlockInstances:
    """Where a block's local instance labels sit in the global numbering."""

    base_pre: int
    count_pre: int
    base_post: int
    count_post: int


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
    min_instance_pixels: int,
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
        min_instance_pixels, overlap_threshold,
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
