"""``vectorize_changes``: the block-wise vectorization as named phases, rasters to polygons."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import shapely

from geochange._blockwise import BlockGrid
from geochange.errors import ConfigurationError
from geochange.io import ChangeProducts, layer_creation_options
from geochange.vectorize.blocks import _BlockJob, _run_blocks
from geochange.vectorize.geometry import regularize_polygon
from geochange.vectorize.inputs import _class_id, _Inputs, _resolve_inputs
from geochange.vectorize.merge import _merge_blocks, _Objects
from geochange.vectorize.schema import (
    _CODE_CHANGE,
    _CODE_DEMOLISHED,
    BINARY_CHANGE_TYPE,
    BUILDING_CLASS,
    GroupBy,
    Parallel,
    Regularize,
    WriteMode,
    _metric_measures,
    change_type_name,
)
from geochange.vectorize.writer import (
    _WRITE_CHUNK,
    _build_frame,
    _check_write_options,
    _Table,
    _WkbSpill,
    _write_table,
    write_changes,
)

__all__ = ["vectorize_changes"]


def vectorize_changes(
    change: ChangeProducts | str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    probability: str | os.PathLike[str] | None = None,
    semantic_pre: str | os.PathLike[str] | None = None,
    semantic_post: str | os.PathLike[str] | None = None,
    class_names: Sequence[str] | None = None,
    change_classes: Iterable[str | int] | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    regularize: Regularize | None = None,
    block_size: int = 4096,
    layer: str = "changes",
    connectivity: Literal[4, 8] = 4,
    group_by: GroupBy = "change_type",
    layer_per_type: bool = False,
    mode: WriteMode = "create",
    workers: int | None = None,
    progress: bool = False,
    return_frame: bool = True,
    parallel: Parallel = "processes",
    mask_values: str = "auto",
) -> Any:
    """Vectorize a change raster into change polygons, block by block, at any raster size.

    The polygons are identical to polygonizing the whole raster at once with
    :func:`rasterio.features.shapes` (same objects, vertices, holes; area = pixel count x pixel
    area), in the raster's CRS, while memory stays bounded by ``block_size``. Under
    8-connectivity, pixels joined only through a corner are returned as a valid
    (multi)polygon instead of GDAL's invalid self-touching ring.

    Args:
        change: change raster path (0 no change, 1 change, 255 or nodata = no data, no
            polygon; other values raise, see ``mask_values``), or
            a ``geochange.predict.PredictionResult`` (any object with ``change``,
            ``probability``, ``semantic_pre``, ``semantic_post`` and ``class_names``
            attributes).
        out: optional output path; format from the extension (``.gpkg``, ``.parquet``,
            ``.geojson``, ``.fgb``). GeoJSON is written in WGS84 longitude/latitude as RFC
            7946 requires (reprojected on write); the other formats keep the raster's CRS. A
            GeoPackage layer gets a default QGIS style, categorized by ``change_type``.
        probability: change probability raster (uint8 0..255 scaled, or float 0..1) for
            ``mean_prob`` / ``max_prob``.
        semantic_pre: class raster before (uint8 class ids, nodata 255); with
            ``semantic_post``, gives every polygon its majority class per date
            (``from_class``, ``to_class``) and its change type, also for the polygons of a
            binary change model (``group_by="change"`` keeps its polygons whole).
        semantic_post: class raster after.
        class_names: class names in id order; default from the semantic rasters'
            ``GEOCHANGE_CLASS_NAMES`` tag.
        change_classes: keep only changes whose from- or to-class is one of these (names or
            ids), e.g. ``["building"]``.
        min_area: drop polygons smaller than this (square map units, counted in pixels before
            simplification).
        simplify: simplification tolerance in map units (0: none); topology is preserved:
            no self-intersections, no new overlaps, shared edges stay shared.
        regularize: ``"rectangle"`` or ``"orthogonal"`` squares up building outlines (see
            :func:`regularize_polygon`); applied to building change types only, or to every
            polygon of a binary change raster (binary building-change models).
        block_size: block side in pixels (memory per worker grows with its square).
        layer: output layer name.
        connectivity: 4 (edge neighbours) or 8 (also corner neighbours) pixel connectivity.
        group_by: with semantic rasters, ``"change_type"`` (default) makes one polygon per
            connected region of one change type, so a new building next to a new road stays a
            separate polygon; ``"change"`` makes one polygon per connected changed region, with
            majority from/to classes.
        layer_per_type: write one layer per change type (GeoPackage only).
        mode: ``"create"``, ``"overwrite"`` (replace these layers, keep others) or
            ``"append"``; see :func:`write_changes`.
        workers: processes polygonizing blocks (default: all cores; 1: in this process).
        progress: show a progress bar.
        return_frame: build and return the GeoDataFrame. With ``False`` (used by the command
            line) the polygons go from the workers' WKB straight to ``out`` in chunks and
            ``None`` is returned, which keeps memory far lower for very large outputs.
        parallel: how ``workers > 1`` run: ``"processes"`` (default; fresh worker
            interpreters that never re-run the calling script, so no ``__main__`` guard is
            needed, and that exit when the caller dies) or ``"threads"`` (threads of this
            process: no worker start-up or per-worker memory, for interpreters that cannot
            start subprocesses; the polygonization holds the GIL most of the time, so they
            run at about the speed of ``workers=1``).
        mask_values: how the change raster stores change (see
            :func:`geochange.io.check_change_mask`): ``"auto"`` (0/1 with 255 = no data; a
            0/255 mask is refused with a message naming this option, unless it is a
            geochange ``change.tif``), ``"0,1"`` or ``"0,255"`` (255 = change).

    Returns:
        A ``geopandas.GeoDataFrame`` with columns ``change_id``, ``area_m2``, ``perimeter_m``,
        ``pixel_count``, ``mean_prob``, ``max_prob``, ``from_class``, ``to_class``,
        ``change_type`` and the geometry, in the raster's CRS, ordered top to bottom, left to
        right. Without semantic rasters ``from_class`` and ``to_class`` are null and
        ``change_type`` is ``"change"``; probability fields are null without a probability
        raster. ``None`` when ``return_frame=False``.

    Raises:
        DataError: bad input rasters (multi-band or float change raster, grid mismatch, change
            values outside the change-mask convention or a 0/255 mask under ``"auto"``).
        ConfigurationError: inconsistent arguments.
        OutputError: unknown output extension or unwritable output, GeoJSON output of a
            raster without a CRS.
    """
    _check_arguments(connectivity, regularize, group_by, block_size, parallel, min_area, simplify)
    out_path = Path(out) if out is not None else None
    if out_path is None and not return_frame:
        raise ConfigurationError("return_frame=False needs an output path: nothing to return")
    driver = None
    if out_path is not None:
        driver = _check_write_options(out_path, mode, layer_per_type)
    inputs = _resolve_inputs(
        change, probability, semantic_pre, semantic_post, class_names, mask_values
    )
    if out_path is not None and driver is not None:
        layer_creation_options(driver, inputs.crs, out_path)  # GeoJSON needs a CRS: fail now
    names = inputs.class_names
    semantic = inputs.semantic_pre is not None
    wanted = {_class_id(c, names) for c in change_classes} if change_classes is not None else None
    if wanted is not None and not semantic:
        raise ConfigurationError("change_classes needs semantic_pre and semantic_post rasters")
    options = _Options(
        out=out_path,
        names=names,
        building=names.index(BUILDING_CLASS) if names and BUILDING_CLASS in names else None,
        wanted=wanted,
        semantic=semantic,
        min_area=min_area,
        simplify=simplify,
        regularize=regularize,
        layer=layer,
        group_by=group_by,
        layer_per_type=layer_per_type,
        mode=mode,
        return_frame=return_frame,
    )

    grid = BlockGrid(inputs.height, inputs.width, block_size)
    jobs = _block_jobs(grid, inputs, options, connectivity)
    n_workers = min(workers or os.cpu_count() or 1, len(jobs))
    spill = _WkbSpill()
    try:
        results = _run_blocks(jobs, n_workers, progress, spill, parallel)
        objects = _merge_blocks(results, grid, connectivity, inputs.transform, inputs.crs)
        del results
        return _finish(objects, spill, inputs, options)
    finally:
        spill.close()


@dataclass(frozen=True)
class _Options:
    """The checked options of one :func:`vectorize_changes` call that shape its output."""

    out: Path | None
    names: list[str] | None
    # Id of the building class in ``names`` (None: no new/demolished building types).
    building: int | None
    # Class ids of ``change_classes`` (None: keep every change).
    wanted: set[int] | None
    semantic: bool
    min_area: float
    simplify: float
    regularize: Regularize | None
    layer: str
    group_by: GroupBy
    layer_per_type: bool
    mode: WriteMode
    return_frame: bool

    def layer_options(self) -> dict[str, Any]:
        """The keywords of :func:`write_changes` (and its table twin) these options fix."""
        return {"layer": self.layer, "mode": self.mode, "layer_per_type": self.layer_per_type}


def _check_arguments(
    connectivity: int,
    regularize: Regularize | None,
    group_by: GroupBy,
    block_size: int,
    parallel: Parallel,
    min_area: float,
    simplify: float,
) -> None:
    """Refuse bad option values before any long work."""
    if connectivity not in (4, 8):
        raise ConfigurationError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if regularize not in (None, "rectangle", "orthogonal"):
        raise ConfigurationError(
            f"regularize must be None, 'rectangle' or 'orthogonal', got {regularize!r}"
        )
    if group_by not in ("change_type", "change"):
        raise ConfigurationError(f"group_by must be 'change_type' or 'change', got {group_by!r}")
    if block_size < 2:
        raise ConfigurationError(f"block_size must be at least 2 pixels, got {block_size}")
    if parallel not in ("processes", "threads"):
        raise ConfigurationError(f"parallel must be 'processes' or 'threads', got {parallel!r}")
    if min_area < 0 or simplify < 0:
        raise ConfigurationError("min_area and simplify must be non-negative")


def _block_jobs(
    grid: BlockGrid, inputs: _Inputs, options: _Options, connectivity: int
) -> list[_BlockJob]:
    """One worker job per block of the grid."""
    semantic = options.semantic
    return [
        _BlockJob(
            index=block.index,
            row_off=block.row_off,
            col_off=block.col_off,
            height=block.height,
            width=block.width,
            change=str(inputs.change),
            change_mask=inputs.change_mask,
            probability=str(inputs.probability) if inputs.probability else None,
            probability_scale=inputs.probability_scale,
            probability_nodata=inputs.probability_nodata,
            semantic_pre=str(inputs.semantic_pre) if semantic else None,
            semantic_post=str(inputs.semantic_post) if semantic else None,
            num_classes=len(options.names) if options.names is not None else 255,
            building=options.building,
            group_by=options.group_by,
            connectivity=connectivity,
            transform=tuple(inputs.transform)[:6],
            crs_wkt=inputs.crs.to_wkt() if inputs.crs is not None else None,
        )
        for block in grid
    ]


def _finish(objects: _Objects, spill: _WkbSpill, inputs: _Inputs, options: _Options) -> Any:
    """Filter, name, post-process and write the merged objects (see vectorize_changes)."""
    pixel_area = abs(inputs.transform.determinant)
    order = _output_order(objects, pixel_area, options)
    geometry = objects.wkb[order]
    del objects.wkb
    from_class, to_class, change_type = _class_fields(
        objects.codes[order], objects.pre_major[order], objects.post_major[order], options
    )
    area, perimeter = objects.area[order], objects.perimeter[order]
    if (options.simplify > 0 or options.regularize is not None) and geometry.size:
        geometry = _postprocess(geometry, change_type, spill, pixel_area, options)
        area, perimeter = _metric_measures(geometry, inputs.crs)

    columns = {
        "change_id": np.arange(1, geometry.size + 1, dtype=np.int64),
        "area_m2": area,
        "perimeter_m": perimeter,
        "pixel_count": objects.pixel_count[order],
        "mean_prob": objects.prob_mean[order],
        "max_prob": objects.prob_max[order],
        "from_class": from_class,
        "to_class": to_class,
        "change_type": change_type,
    }
    # "EPSG:xxxx" when the raster's CRS has an authority code, its WKT otherwise.
    crs = inputs.crs.to_string() if inputs.crs is not None else None
    return _output(columns, geometry, spill, crs, options)


def _output_order(objects: _Objects, pixel_area: float, options: _Options) -> npt.NDArray[np.intp]:
    """Indexes of the objects kept by the filters, in output order."""
    keep = objects.pixel_count * pixel_area >= options.min_area
    if options.wanted is not None:
        wanted = list(options.wanted)
        keep &= np.isin(objects.pre_major, wanted) | np.isin(objects.post_major, wanted)
    # Deterministic order, independent of the block size: north to south, then west to east.
    bounds = objects.bounds
    order = np.lexsort((objects.codes, bounds[:, 2], -bounds[:, 1], bounds[:, 0], -bounds[:, 3]))
    return order[keep[order]]


def _class_fields(
    codes: npt.NDArray[np.int32],
    pre_major: npt.NDArray[np.int32],
    post_major: npt.NDArray[np.int32],
    options: _Options,
) -> tuple[list[str | None], list[str | None], list[str | None]]:
    """``from_class``, ``to_class`` and ``change_type`` of every object.

    Without semantic rasters the classes are unknown (null) and every object is a
    :data:`BINARY_CHANGE_TYPE`; so is an object whose pixels have no class on either date.
    """
    names = options.names
    if not options.semantic:
        empty: list[str | None] = [None] * codes.size
        return empty, empty, [BINARY_CHANGE_TYPE] * codes.size

    def class_name(index: int) -> str | None:
        if index < 0:
            return None
        return names[index] if names is not None and index < len(names) else str(index)

    from_class = [class_name(int(i)) for i in pre_major]
    to_class = [class_name(int(i)) for i in post_major]
    change_type: list[str | None]
    if options.group_by == "change_type" and options.building is not None:
        # The region's code fixes its type (from/to majority could disagree at edges).
        bname = BUILDING_CLASS
        change_type = [
            f"new {bname}"
            if code == _CODE_CHANGE
            else f"demolished {bname}"
            if code == _CODE_DEMOLISHED
            else change_type_name(f, t)
            for code, f, t in zip(codes, from_class, to_class, strict=True)
        ]
    else:
        change_type = [change_type_name(f, t) for f, t in zip(from_class, to_class, strict=True)]
    return from_class, to_class, [t or BINARY_CHANGE_TYPE for t in change_type]


def _postprocess(
    geometry: npt.NDArray[np.object_],
    change_type: list[str | None],
    spill: _WkbSpill,
    pixel_area: float,
    options: _Options,
) -> npt.NDArray[np.object_]:
    """Simplify and regularize the outlines (as shapely geometries)."""
    geometry = shapely.from_wkb(spill.resolve(geometry))
    if options.simplify > 0:
        simplified = shapely.coverage_simplify(geometry, options.simplify)
        bad = ~shapely.is_valid(simplified) | shapely.is_empty(simplified)
        simplified[bad] = shapely.simplify(geometry[bad], options.simplify, preserve_topology=True)
        geometry = simplified
    if options.regularize is not None:
        pixel_size = math.sqrt(pixel_area)
        for i, ctype in enumerate(change_type):
            if not options.semantic or (ctype is not None and BUILDING_CLASS in ctype):
                geometry[i] = regularize_polygon(
                    geometry[i], options.regularize, pixel_size=pixel_size
                )
    return geometry


def _output(
    columns: dict[str, Any],
    geometry: npt.NDArray[np.object_],
    spill: _WkbSpill,
    crs: str | None,
    options: _Options,
) -> Any:
    """Write the polygons to ``options.out`` and/or return them as a GeoDataFrame."""
    if not options.return_frame:
        if options.out is not None:
            table = _Table(crs=crs, columns=columns, geometry=geometry, spill=spill)
            _write_table(table, options.out, **options.layer_options())
        return None
    if geometry.size and not isinstance(geometry[0], shapely.Geometry):
        # Parse chunk by chunk, freeing the WKB as we go, so both never coexist in full.
        parsed = np.empty(geometry.size, dtype=object)
        for first in range(0, geometry.size, _WRITE_CHUNK):
            chunk = slice(first, first + _WRITE_CHUNK)
            parsed[chunk] = shapely.from_wkb(spill.resolve(geometry[chunk]))
            geometry[chunk] = None
        geometry = parsed
    frame = _build_frame(columns, geometry, crs)
    if options.out is not None:
        write_changes(frame, options.out, **options.layer_options())
    return frame
