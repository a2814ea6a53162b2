"""``evaluate_scene``: the whole-scene evaluation as a short sequence of named phases.

Resolve the inputs, open the change rasters (the evaluation grid), read or vectorize the
polygons, count pixels block by block, then match objects; see :mod:`geochange.evaluate`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geochange.errors import ConfigurationError, DataError
from geochange.evaluate.matching import MatchMethod, score_objects
from geochange.evaluate.pixels import count_pixels
from geochange.evaluate.report import EvaluationReport
from geochange.evaluate.sources import (
    _check_grid,
    _check_polygons_overlap,
    _ClassRaster,
    _filter_types,
    _Grid,
    _inside_grid,
    _is_frame,
    _is_vector,
    _PolygonChange,
    _Prediction,
    _RasterChange,
    _read_polygons,
    _resolve_prediction,
    _to_crs,
)
from geochange.io import (
    CLASS_NAMES_TAG,
    DEFAULT_GDAL_CACHE_BYTES,
    MASK_IGNORE,
    ChangeProducts,
    gdal_cache,
)

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["evaluate_scene"]

_IGNORE = MASK_IGNORE
_GDAL_CACHE_BYTES = DEFAULT_GDAL_CACHE_BYTES


@dataclass(frozen=True)
class _Options:
    """The settings of one evaluation, as given to :func:`evaluate_scene`."""

    semantic_pre: str | os.PathLike[str] | None
    semantic_post: str | os.PathLike[str] | None
    reference_polygons: Any
    class_names: Sequence[str] | None
    iou_threshold: float
    matching: MatchMethod
    min_area: float
    change_types: Sequence[str] | None
    objects: bool
    block_size: int
    vectorize_block_size: int
    overview_size: int
    workers: int | None
    progress: bool
    mask_values: str
    prediction_mask_values: str


@dataclass
class _Scene:
    """What the phases find out and hand on: inputs, grid, block sources, polygons."""

    pred: _Prediction
    ref_raster: Path | None
    ref_vector: Any
    grid: _Grid | None = None
    pred_source: Any = None
    ref_source: Any = None
    names: list[str] | None = None
    semantic_ref: bool = False
    semantic_pred: bool = False
    pred_frame: Any = None
    ref_frame: Any = None
    sources: list[Any] = field(default_factory=list)  # opened rasters, closed at the end
    timings: dict[str, float] = field(default_factory=dict)


def evaluate_scene(
    prediction: ChangeProducts | str | os.PathLike[str] | gpd.GeoDataFrame,
    reference: Any = None,
    *,
    semantic_pre: str | os.PathLike[str] | None = None,
    semantic_post: str | os.PathLike[str] | None = None,
    reference_polygons: Any = None,
    prediction_semantic_pre: str | os.PathLike[str] | None = None,
    prediction_semantic_post: str | os.PathLike[str] | None = None,
    prediction_probability: str | os.PathLike[str] | None = None,
    class_names: Sequence[str] | None = None,
    iou_threshold: float = 0.5,
    matching: MatchMethod = "hungarian",
    min_area: float = 0.0,
    change_types: Sequence[str] | None = None,
    objects: bool = True,
    block_size: int = 1024,
    vectorize_block_size: int = 4096,
    overview_size: int = 1500,
    workers: int | None = None,
    progress: bool = False,
    mask_values: str = "auto",
    prediction_mask_values: str = "auto",
) -> EvaluationReport:
    """Evaluate a whole-scene change map against a reference, per pixel and per object.

    Pixel scores are accumulated block by block with :mod:`geochange.metrics`; predicted and
    reference polygons come from :func:`geochange.vectorize.vectorize_changes` (block-wise)
    unless given as polygon files, and are matched one to one with :func:`match_objects`.

    Args:
        prediction: a ``geochange.predict.PredictionResult`` (duck-typed: ``change``,
            ``probability``, ``semantic_pre``, ``semantic_post``, ``class_names``), a
            prediction directory holding ``change.tif`` (and ``probability.tif``,
            ``semantic_pre.tif`` / ``semantic_post.tif``), a change
            raster (uint8 0/1, nodata 255 counted as no change) or a polygon file /
            GeoDataFrame of predicted changes (rasterized block-wise for the pixel scores).
        reference: reference change raster (0/1, nodata or 255 ignored) or polygon file.
            Change rasters follow the change-mask convention (see ``mask_values``); polygons
            entirely outside the evaluation grid are left out with a warning, and polygons
            none of which overlaps it raise a ``DataError``.
        semantic_pre: reference class raster before (for SCD scores and change types).
        semantic_post: reference class raster after.
        reference_polygons: reference change polygons (file or GeoDataFrame, e.g. the
            synthetic scene's ``changed_buildings`` or a surveyed GeoPackage); a
            ``change_type`` column gives the per-type scores. Default: vectorize the
            reference raster.
        prediction_semantic_pre: predicted class raster before (default: from ``prediction``).
        prediction_semantic_post: predicted class raster after.
        prediction_probability: change probability raster of the prediction, for the
            ``mean_prob`` / ``max_prob`` of the predicted polygons (default: the
            prediction's: ``probability.tif`` of a prediction directory or beside a
            ``change.tif``, or a ``PredictionResult``'s ``probability``).
        class_names: class names in id order (default: the rasters' ``GEOCHANGE_CLASS_NAMES``).
        iou_threshold: minimum IoU of an object match.
        matching: ``"hungarian"`` or ``"greedy"`` (see :func:`match_objects`).
        min_area: ignore vectorized objects smaller than this (square map units) on both sides.
        change_types: evaluate only objects of these change types (e.g. ``["new building",
            "demolished building"]`` against a building survey); applied to each side that
            has a ``change_type`` column. Pixel scores are unaffected.
        objects: compute the object-level scores (vectorizing as needed).
        block_size: block side of the pixel pass (memory grows with its square).
        vectorize_block_size: block side of the vectorizer.
        overview_size: longest side, in cells, of the overview accumulated during the pass.
        workers: vectorizer processes (default: all cores).
        progress: show progress bars.
        mask_values: how the reference change raster stores change (see
            :func:`geochange.io.check_change_mask`): ``"auto"`` (0/1, 255 = ignore; a 0/255
            raster is refused with a message naming this option), ``"0,1"`` or ``"0,255"``
            (255 = change, e.g. LEVIR-CD labels).
        prediction_mask_values: the same for the predicted change raster (a geochange
            ``change.tif`` is always read as 0/1 with nodata 255 under ``"auto"``).

    Returns:
        The :class:`EvaluationReport`.

    Raises:
        ConfigurationError: inconsistent arguments (no reference, half a semantic pair, ...).
        DataError: unreadable inputs, rasters not on one grid, invalid values (outside the
            change-mask convention, or a 0/255 mask under ``"auto"``), polygons that do not
            overlap the evaluation grid (or, without a grid, each other).
    """
    opts = _Options(
        semantic_pre=semantic_pre,
        semantic_post=semantic_post,
        reference_polygons=reference_polygons,
        class_names=class_names,
        iou_threshold=iou_threshold,
        matching=matching,
        min_area=min_area,
        change_types=change_types,
        objects=objects,
        block_size=block_size,
        vectorize_block_size=vectorize_block_size,
        overview_size=overview_size,
        workers=workers,
        progress=progress,
        mask_values=mask_values,
        prediction_mask_values=prediction_mask_values,
    )
    # Validate and resolve every input before the long work.
    _check_options(opts, reference)
    scene = _resolve_inputs(
        opts, prediction, reference, prediction_semantic_pre, prediction_semantic_post
    )
    _set_probability(scene.pred, prediction_probability)
    # GDAL's block cache defaults to 5 % of the RAM; every block is read once, so keep it small.
    with gdal_cache(_GDAL_CACHE_BYTES):
        try:
            _open_change_rasters(scene, opts)
            _resolve_class_names(scene, opts)
            _read_polygon_inputs(scene)
            started = time.perf_counter()
            if opts.objects:
                _vectorize_missing(scene, opts)
            scene.timings["vectorize"] = time.perf_counter() - started
            report = EvaluationReport(settings=_settings(scene, opts))
            if None not in (scene.grid, scene.pred_source, scene.ref_source):
                _pixel_phase(scene, opts, report)
        finally:
            for source in scene.sources:
                source.close()
    if opts.objects:
        _object_phase(scene, opts, report)
    report.settings["timings_s"] = {k: round(v, 3) for k, v in scene.timings.items()}
    return report


def _check_options(opts: _Options, reference: Any) -> None:
    """Refuse inconsistent arguments before anything is opened."""
    if opts.block_size < 16:
        raise ConfigurationError(f"block_size must be at least 16 pixels, got {opts.block_size}")
    if not 0 < opts.iou_threshold <= 1:
        raise ConfigurationError(f"iou_threshold must be in (0, 1], got {opts.iou_threshold}")
    if opts.matching not in ("hungarian", "greedy"):
        raise ConfigurationError(f"matching must be 'hungarian' or 'greedy', not {opts.matching!r}")
    if reference is None and opts.reference_polygons is None:
        raise ConfigurationError("give a reference change raster and/or reference_polygons")
    if (opts.semantic_pre is None) != (opts.semantic_post is None):
        raise ConfigurationError("semantic_pre and semantic_post must be given together")


def _resolve_inputs(
    opts: _Options,
    prediction: Any,
    reference: Any,
    prediction_semantic_pre: str | os.PathLike[str] | None,
    prediction_semantic_post: str | os.PathLike[str] | None,
) -> _Scene:
    """Say what each side is: change raster, class rasters or polygons."""
    pred = _resolve_prediction(prediction)
    if prediction_semantic_pre is not None or prediction_semantic_post is not None:
        if (prediction_semantic_pre is None) != (prediction_semantic_post is None):
            raise ConfigurationError(
                "prediction_semantic_pre and prediction_semantic_post must be given together"
            )
        pred.semantic_pre = Path(prediction_semantic_pre)  # type: ignore[arg-type]
        pred.semantic_post = Path(prediction_semantic_post)  # type: ignore[arg-type]
    ref_raster: Path | None = None
    ref_vector: Any = opts.reference_polygons
    if reference is not None:
        if _is_frame(reference) or _is_vector(reference):
            if ref_vector is not None:
                raise ConfigurationError(
                    "reference is a polygon file and reference_polygons is also given"
                )
            ref_vector = reference
        else:
            ref_raster = Path(reference)
    return _Scene(pred=pred, ref_raster=ref_raster, ref_vector=ref_vector)


def _set_probability(pred: _Prediction, probability: str | os.PathLike[str] | None) -> None:
    """Use the given probability raster for the predicted polygons (checked when vectorized)."""
    if probability is None:
        return
    if pred.change is None:
        raise ConfigurationError(
            "prediction_probability needs a predicted change raster: the prediction is polygons"
        )
    path = Path(probability)
    if not path.exists():
        raise DataError(f"prediction probability raster not found: {str(path)!r}")
    pred.probability = path


def _open_change_rasters(scene: _Scene, opts: _Options) -> None:
    """Open the change rasters; the evaluation grid is the prediction's, else the reference's."""
    pred = scene.pred
    if pred.change is not None:
        scene.pred_source = _RasterChange(
            pred.change, "predicted", 0, opts.prediction_mask_values, "prediction_mask_values"
        )
        scene.sources.append(scene.pred_source)
        ds = scene.pred_source.dataset
        scene.grid = _Grid(ds.height, ds.width, ds.transform, ds.crs)
    if scene.ref_raster is not None:
        scene.ref_source = _RasterChange(
            scene.ref_raster, "reference", _IGNORE, opts.mask_values, "mask_values"
        )
        scene.sources.append(scene.ref_source)
        ds = scene.ref_source.dataset
        if scene.grid is None:
            scene.grid = _Grid(ds.height, ds.width, ds.transform, ds.crs)
        else:
            _check_grid(ds, scene.grid, f"reference change raster {str(scene.ref_raster)!r}")


def _resolve_class_names(scene: _Scene, opts: _Options) -> None:
    """Class names from the arguments, the prediction or the rasters' tags; needed if semantic."""
    from geochange.vectorize import read_class_names

    pred = scene.pred
    names = list(opts.class_names) if opts.class_names is not None else pred.class_names
    for path in (opts.semantic_pre, opts.semantic_post, pred.semantic_pre, pred.semantic_post):
        if names is None and path is not None:
            names = read_class_names(path)
    scene.names = names
    scene.semantic_ref = opts.semantic_pre is not None
    scene.semantic_pred = pred.semantic_pre is not None and pred.semantic_post is not None
    if (scene.semantic_ref or scene.semantic_pred) and names is None:
        raise ConfigurationError(
            "class names are needed with semantic rasters: none of them carries the "
            f"{CLASS_NAMES_TAG} tag; pass class_names"
        )
    if scene.semantic_ref and scene.grid is None:
        raise ConfigurationError("reference semantic rasters need a change raster on one side")


def _read_polygon_inputs(scene: _Scene) -> None:
    """Read the given polygon layers; on a grid, keep those on it and rasterize them there."""
    pred, grid = scene.pred, scene.grid
    if pred.polygons is not None:
        scene.pred_frame = _read_polygons(pred.polygons, "predicted polygons")
    if scene.ref_vector is not None:
        scene.ref_frame = _read_polygons(scene.ref_vector, "reference polygons")
    if grid is None:
        return  # polygons only: no pixel grid, object scores only
    if scene.pred_frame is not None:
        frame = _to_crs(scene.pred_frame, grid.crs, "predicted polygons")
        scene.pred_frame = _inside_grid(frame, grid, "predicted polygons", pred.polygons)
        scene.pred_source = _PolygonChange(scene.pred_frame, grid)
    if scene.ref_frame is not None:
        frame = _to_crs(scene.ref_frame, grid.crs, "reference polygons")
        scene.ref_frame = _inside_grid(frame, grid, "reference polygons", scene.ref_vector)
    if scene.ref_source is None and scene.ref_frame is not None:
        scene.ref_source = _PolygonChange(scene.ref_frame, grid)


def _vectorize_missing(scene: _Scene, opts: _Options) -> None:
    """Vectorize (block-wise) each side given only as a raster; filter types; one CRS."""
    pred, names = scene.pred, scene.names
    if scene.pred_frame is None:
        assert pred.change is not None
        semantic = scene.semantic_pred
        scene.pred_frame = _vectorize(
            opts,
            pred.change,
            pred.probability,
            pred.semantic_pre if semantic else None,
            pred.semantic_post if semantic else None,
            names if semantic else None,
            opts.prediction_mask_values,
        )
    if scene.ref_frame is None:
        assert scene.ref_raster is not None
        scene.ref_frame = _vectorize(
            opts,
            scene.ref_raster,
            None,
            opts.semantic_pre,
            opts.semantic_post,
            names if scene.semantic_ref else None,
            opts.mask_values,
        )
    if opts.change_types is not None:
        scene.pred_frame = _filter_types(scene.pred_frame, opts.change_types)
        scene.ref_frame = _filter_types(scene.ref_frame, opts.change_types)
    if scene.pred_frame.crs is not None and scene.ref_frame.crs is not None:
        scene.ref_frame = _to_crs(scene.ref_frame, scene.pred_frame.crs, "reference polygons")
    if scene.grid is None:
        _check_polygons_overlap(scene.pred_frame, scene.ref_frame, pred.polygons, scene.ref_vector)


def _vectorize(
    opts: _Options,
    change: str | os.PathLike[str],
    probability: str | os.PathLike[str] | None,
    semantic_pre: str | os.PathLike[str] | None,
    semantic_post: str | os.PathLike[str] | None,
    class_names: list[str] | None,
    mask_values: str,
) -> Any:
    """One side's change polygons with :func:`geochange.vectorize.vectorize_changes`."""
    from geochange.vectorize import vectorize_changes

    return vectorize_changes(
        change,
        probability=probability,
        semantic_pre=semantic_pre,
        semantic_post=semantic_post,
        class_names=class_names,
        min_area=opts.min_area,
        block_size=opts.vectorize_block_size,
        workers=opts.workers,
        progress=opts.progress,
        mask_values=mask_values,
    )


def _settings(scene: _Scene, opts: _Options) -> dict[str, Any]:
    """The inputs and parameters recorded in the report."""
    pred, ref_vector = scene.pred, scene.ref_vector
    reference_polygons = opts.reference_polygons
    return {
        "prediction": str(
            pred.change or (pred.polygons if not _is_frame(pred.polygons) else "<GeoDataFrame>")
        ),
        "prediction_probability": str(pred.probability) if pred.probability else None,
        "reference": str(
            scene.ref_raster or (ref_vector if not _is_frame(ref_vector) else "<GeoDataFrame>")
        ),
        "reference_polygons": None
        if reference_polygons is None or _is_frame(reference_polygons)
        else str(reference_polygons),
        "iou_threshold": opts.iou_threshold,
        "matching": opts.matching,
        "min_area": opts.min_area,
        "change_types": list(opts.change_types) if opts.change_types is not None else None,
        "class_names": scene.names,
    }


def _open_class_rasters(scene: _Scene, opts: _Options, num_classes: int) -> list[_ClassRaster]:
    """Reference pre/post then predicted pre/post class rasters, checked on the grid."""
    assert opts.semantic_pre is not None and opts.semantic_post is not None
    assert scene.pred.semantic_pre is not None and scene.pred.semantic_post is not None
    assert scene.grid is not None
    class_sources: list[_ClassRaster] = []
    for path, what in (
        (Path(opts.semantic_pre), "reference semantic_pre"),
        (Path(opts.semantic_post), "reference semantic_post"),
        (scene.pred.semantic_pre, "predicted semantic_pre"),
        (scene.pred.semantic_post, "predicted semantic_post"),
    ):
        class_sources.append(_ClassRaster(path, what, scene.grid, num_classes))
        scene.sources.append(class_sources[-1])
    return class_sources


def _pixel_phase(scene: _Scene, opts: _Options, report: EvaluationReport) -> None:
    """Count pixels over the grid and put the pixel scores and overview into ``report``."""
    started = time.perf_counter()
    grid, names = scene.grid, scene.names
    assert grid is not None
    num_classes = len(names) if names is not None else 0
    semantic = scene.semantic_ref and scene.semantic_pred
    class_sources = _open_class_rasters(scene, opts, num_classes) if semantic else []
    counts = count_pixels(
        grid,
        scene.pred_source,
        scene.ref_source,
        class_sources,
        num_classes,
        block_size=opts.block_size,
        overview_size=opts.overview_size,
        progress=opts.progress,
    )
    scene.timings["pixel_pass"] = time.perf_counter() - started
    scores = counts.scores
    report.pixel = {k: float(v) for k, v in scores.items() if k != "semantic_iou" and v.ndim == 0}
    if semantic and names is not None:
        report.semantic_iou = {
            name: float(v) for name, v in zip(names, scores["semantic_iou"], strict=True)
        }
        report.transition_confusion = counts.transitions
        report.transition_labels = ["no change"] + [f"{a} → {b}" for a in names for b in names]
    report.overview = counts.overview
    left, top = grid.transform.c, grid.transform.f
    right = left + grid.transform.a * grid.width
    bottom = top + grid.transform.e * grid.height
    report.overview_extent = (left, right, bottom, top)
    report.settings["overview_factor"] = counts.factor
    report.settings.update(
        height=grid.height, width=grid.width, crs=str(grid.crs) if grid.crs else None
    )
    rasters: dict[str, str] = {}
    if isinstance(scene.pred_source, _RasterChange):
        rasters["prediction"] = str(scene.pred_source.path)
    if isinstance(scene.ref_source, _RasterChange):
        rasters["reference"] = str(scene.ref_source.path)
    report.settings["rasters"] = rasters


def _object_phase(scene: _Scene, opts: _Options, report: EvaluationReport) -> None:
    """Match the polygons one to one and put the object scores and layers into ``report``."""
    started = time.perf_counter()
    assert scene.pred_frame is not None and scene.ref_frame is not None
    outcome = score_objects(
        scene.pred_frame,
        scene.ref_frame,
        iou_threshold=opts.iou_threshold,
        method=opts.matching,
    )
    report.objects, report.objects_by_type = outcome.scores, outcome.by_type
    report.predictions, report.references = outcome.predictions, outcome.references
    scene.timings["matching"] = time.perf_counter() - started
