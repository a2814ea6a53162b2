"""Whole-scene change pseudo labels: :func:`generate_pseudo_labels`, block by block.

Two passes over a block grid with bounded memory (see :mod:`geochange.pseudo.instances`); the
output equals :func:`geochange.pseudo.change_event_generation` on the whole scene as one array.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.windows

from geochange._blockwise import BlockGrid
from geochange.classes import CHANGE_CLASS_NAMES, IGNORE_INDEX
from geochange.errors import ConfigurationError
from geochange.io import (
    BAND_DESCRIPTIONS,
    CLASS_NAMES_TAG,
    PSEUDO_LABELS_TAG,
    TILED_GTIFF_OPTIONS,
    change_categories,
    check_not_inputs,
    check_writable_dir,
    finalize_cog,
    gdal_cache,
    partial_path,
    sidecar_paths,
    write_style_sidecars,
)
from geochange.pseudo.ceg import (
    DEFAULT_CLASS_NAMES,
    DEFAULT_CONFIDENCE,
    DEFAULT_MIN_INSTANCE_PIXELS,
    DEFAULT_OVERLAP_THRESHOLD,
    BoolArray,
    CEGMode,
    _assemble,
    _check_params,
    _pixel_change,
    _resolve_min_instance_pixels,
    _structure,
    _uncertain,
)
from geochange.pseudo.inputs import (
    _read_classes,
    _read_confidence,
    _scene_inputs,
    _SceneInputs,
    resolve_change_classes,
)
from geochange.pseudo.instances import (
    _block_flags,
    _BlockInstances,
    _decide_events,
    _merge_seams,
    _scan_instances,
)

__all__ = ["PseudoLabelSummary", "generate_pseudo_labels"]


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
    min_instance_pixels: int = DEFAULT_MIN_INSTANCE_PIXELS,
    overlap_threshold: float = DEFAULT_OVERLAP_THRESHOLD,
    confidence: float = DEFAULT_CONFIDENCE,
    ignore_index: int = IGNORE_INDEX,
    connectivity: int = 8,
    class_names: Sequence[str] | None = None,
    block_size: int = 2048,
    gdal_cache_mb: int | None = 64,
    progress: bool = False,
    min_instance_area: int | None = None,
) -> PseudoLabelSummary:
    """Generate change pseudo labels for a whole georeferenced scene, block by block.

    The result equals :func:`change_event_generation` applied to the whole scene at once, but
    memory is bounded by ``block_size``: a first pass labels instances per block, records their
    areas, their overlaps with the other date and the labels on the block edges; instances
    touching across block seams are merged into scene-wide instances (connected components of
    the seam graph), whose exact areas and IoUs decide the change events; a second pass
    relabels each block and writes the pseudo labels. The output is a Cloud-Optimized GeoTIFF
    (uint8, nodata ``ignore_index``) on the input grid, written atomically, usable as a change
    label raster; beside it, what GIS clients read (``<out>.aux.xml`` with category names and
    attribute table, a QGIS style ``.qml``: :func:`geochange.io.write_style_sidecars`).

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
        min_instance_pixels: instances smaller than this many pixels are noise.
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
        min_instance_area: deprecated name of ``min_instance_pixels`` (a ``DeprecationWarning``;
            removed in the next release).

    Returns:
        A :class:`PseudoLabelSummary`.

    Raises:
        DataError: unreadable rasters, rasters on different grids, non-integer class rasters.
        ConfigurationError: unknown class names or parameters out of range.
        OutputError: if the output cannot be written, or would overwrite an input.
    """
    start = time.perf_counter()
    min_instance_pixels = _resolve_min_instance_pixels(min_instance_pixels, min_instance_area)
    inputs = _scene_inputs(semantic_pre, semantic_post, prob_pre, prob_post)
    run = _run_options(
        inputs, change_classes, class_names, block_size,
        uses_probabilities=bool(prob_pre or prob_post), mode=mode,
        min_instance_pixels=min_instance_pixels, overlap_threshold=overlap_threshold,
        confidence=confidence, ignore_index=ignore_index, connectivity=connectivity,
    )  # fmt: skip
    out = Path(out)
    written = [out, out.with_name(f".{out.name}.tiled.tif"), *sidecar_paths(out)]
    check_not_inputs(
        [*written, *(partial_path(p) for p in written)],
        {
            "semantic_pre raster": semantic_pre,
            "semantic_post raster": semantic_post,
            "prob_pre raster": prob_pre,
            "prob_post raster": prob_post,
        },
    )
    check_writable_dir(out.parent if str(out.parent) else ".")
    grid = BlockGrid(inputs.height, inputs.width, block_size)
    bar = _progress_bar(len(grid) * (1 if mode == "pixel" else 2), progress)

    # GDAL's block cache defaults to 5% of RAM and would grow with the scene; the passes read
    # and write whole tiles in order, so a small cache keeps memory bounded at no cost.
    with gdal_cache(gdal_cache_mb * 2**20 if gdal_cache_mb else None):
        with (
            rasterio.open(inputs.semantic_pre) as ds_pre,
            rasterio.open(inputs.semantic_post) as ds_post,
        ):
            try:
                events = _decide_scene_events(ds_pre, ds_post, grid, run, bar)
                counts = _write_labels(ds_pre, ds_post, inputs, grid, run, events, out, bar)
            finally:
                bar.close()
    return PseudoLabelSummary(
        path=out,
        mode=mode,
        change_classes=run.classes,
        change_pixels=int(counts[1]),
        no_change_pixels=int(counts[0]),
        ignored_pixels=int(counts[ignore_index]),
        instances_pre=events.instances_pre,
        instances_post=events.instances_post,
        change_events=events.change_events,
        seconds=time.perf_counter() - start,
    )


@dataclass(frozen=True)
class _RunOptions:
    """The validated options of one :func:`generate_pseudo_labels` run."""

    mode: str
    classes: tuple[int, ...]
    class_names: list[str]
    min_instance_pixels: int
    overlap_threshold: float
    confidence: float
    ignore_index: int
    connectivity: int
    uses_probabilities: bool

    @property
    def structure(self) -> BoolArray:
        return _structure(self.connectivity)


def _run_options(
    inputs: _SceneInputs,
    change_classes: Iterable[str | int] | str | int,
    class_names: Sequence[str] | None,
    block_size: int,
    *,
    uses_probabilities: bool,
    **ceg: Any,
) -> _RunOptions:
    """Check the options before any work; class names come from the argument, tag or LsSCD.

    ``ceg`` holds the CEG parameters (``mode`` ... ``connectivity``), checked by
    :func:`~geochange.pseudo.ceg._check_params` as for the array functions.
    """
    names = list(class_names) if class_names is not None else inputs.class_names
    names = names or list(DEFAULT_CLASS_NAMES)
    classes = _check_params(resolve_change_classes(change_classes, names), **ceg)
    ignore_index = ceg["ignore_index"]
    if not 2 <= ignore_index <= 255:
        raise ConfigurationError(f"ignore_index must fit uint8 beside 0 and 1, got {ignore_index}")
    if block_size < 16:
        raise ConfigurationError(f"block_size must be at least 16 pixels, got {block_size}")
    return _RunOptions(
        classes=classes, class_names=names, uses_probabilities=uses_probabilities, **ceg
    )


@dataclass(frozen=True)
class _SceneEvents:
    """Scene-wide change-event decisions of every block-local instance (empty in pixel mode)."""

    blocks: dict[tuple[int, int], _BlockInstances]
    node_event: BoolArray
    node_small: BoolArray
    instances_pre: int = 0
    instances_post: int = 0
    change_events: int = 0


def _decide_scene_events(
    ds_pre: rasterio.DatasetReader,
    ds_post: rasterio.DatasetReader,
    grid: BlockGrid,
    run: _RunOptions,
    bar: Any,
) -> _SceneEvents:
    """First pass and seam merge: which instances are change events, scene-wide."""
    if run.mode == "pixel":
        none = np.zeros(0, dtype=bool)
        return _SceneEvents(blocks={}, node_event=none, node_small=none)
    scene = _scan_instances(
        ds_pre, ds_post, grid, run.classes, run.structure, run.ignore_index, bar
    )
    comp, is_pre = _merge_seams(scene, grid, run.connectivity)
    node_event, node_small, n_pre, n_post, events = _decide_events(
        scene, comp, is_pre, run.min_instance_pixels, run.overlap_threshold
    )
    return _SceneEvents(scene.blocks, node_event, node_small, n_pre, n_post, events)


def _write_labels(
    ds_pre: rasterio.DatasetReader,
    ds_post: rasterio.DatasetReader,
    inputs: _SceneInputs,
    grid: BlockGrid,
    run: _RunOptions,
    events: _SceneEvents,
    out: Path,
    bar: Any,
) -> npt.NDArray[np.int64]:
    """Second pass: label every block into a tiled GeoTIFF, then publish it as a COG at ``out``.

    Returns:
        The count of every output value (0..255).
    """
    counts = np.zeros(256, dtype=np.int64)
    tiled = out.with_name(f".{out.name}.tiled.tif")
    profile = {
        **TILED_GTIFF_OPTIONS,
        "height": inputs.height,
        "width": inputs.width,
        "count": 1,
        "dtype": "uint8",
        "nodata": run.ignore_index,
        "crs": inputs.crs,
        "transform": inputs.transform,
    }
    ds_prob_pre = rasterio.open(inputs.prob_pre) if inputs.prob_pre else None
    ds_prob_post = rasterio.open(inputs.prob_post) if inputs.prob_post else None
    try:
        with rasterio.open(tiled, "w", **profile) as dst:
            for block in grid:
                info = None if run.mode == "pixel" else events.blocks[block.row, block.col]
                labels = _label_block(
                    ds_pre, ds_post, ds_prob_pre, ds_prob_post, block.window, info, run, events
                )
                counts += np.bincount(labels.ravel(), minlength=256)
                dst.write(labels, 1, window=block.window)
                bar.update(1)
            dst.update_tags(**_output_tags(run))
            dst.set_band_description(1, BAND_DESCRIPTIONS["pseudo_labels"])
            # The file keeps RGB; "no change" is transparent in the PAM sidecar.
            dst.write_colormap(1, {c.value: c.rgba for c in _CATEGORIES})
        finalize_cog(tiled, out, resampling="nearest")
        write_style_sidecars(out, _CATEGORIES)
    finally:
        for ds in (ds_prob_pre, ds_prob_post):
            if ds is not None:
                ds.close()
        if tiled.exists():
            tiled.unlink()
    return counts


def _label_block(
    ds_pre: rasterio.DatasetReader,
    ds_post: rasterio.DatasetReader,
    ds_prob_pre: rasterio.DatasetReader | None,
    ds_prob_post: rasterio.DatasetReader | None,
    window: rasterio.windows.Window,
    info: _BlockInstances | None,
    run: _RunOptions,
    events: _SceneEvents,
) -> npt.NDArray[np.uint8]:
    """The pseudo labels of one block, from its classes, confidences and the scene's events."""
    sem_pre = _read_classes(ds_pre, window, run.ignore_index)
    sem_post = _read_classes(ds_post, window, run.ignore_index)
    uncertain = _uncertain(
        sem_pre,
        sem_post,
        _read_confidence(ds_prob_pre, window),
        _read_confidence(ds_prob_post, window),
        run.confidence,
        run.ignore_index,
    )
    pixel_change = _pixel_change(sem_pre, sem_post, run.classes)
    if info is None:  # pixel mode: no instances
        event = small = np.zeros(sem_pre.shape, dtype=bool)
    else:
        event, small = _block_flags(
            sem_pre, sem_post, run.classes, run.structure, info,
            events.node_event, events.node_small,
        )  # fmt: skip
    return _assemble(run.mode, pixel_change, event, small, uncertain, run.ignore_index)


#: The classes of a pseudo-label raster: those of a change raster.
_CATEGORIES = change_categories()


def _output_tags(run: _RunOptions) -> dict[str, str]:
    """The output's tags: the change-mask class names and the generation's parameters."""
    names = run.class_names
    return {
        # geochange's change-mask convention (0/1, nodata = ignore): read as such even where
        # no change was found (geochange.io).
        CLASS_NAMES_TAG: json.dumps(list(CHANGE_CLASS_NAMES)),
        PSEUDO_LABELS_TAG: json.dumps(
            {
                "mode": run.mode,
                "change_classes": list(run.classes),
                "change_class_names": [names[c] if c < len(names) else str(c) for c in run.classes],
                "min_instance_pixels": run.min_instance_pixels,
                # The pre-glossary key, kept for one release for readers of older tags.
                "min_instance_area": run.min_instance_pixels,
                "overlap_threshold": run.overlap_threshold,
                "confidence": run.confidence if run.uses_probabilities else None,
                "connectivity": run.connectivity,
            }
        ),
    }


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
