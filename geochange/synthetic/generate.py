"""Writing a synthetic scene: :func:`make_scene`, block by block, optionally in worker processes.

Each block is computed on its own (:mod:`geochange.synthetic.render`), in this process or in
:mod:`geochange.parallel` workers, and written in order into tiled GeoTIFFs that become COGs.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import shapely
from numpy.typing import NDArray
from rasterio.transform import Affine
from rasterio.windows import Window

from geochange._blockwise import BlockGrid
from geochange.classes import BARE_LAND, BUILDING, CHANGE_CLASS_NAMES
from geochange.errors import ConfigurationError
from geochange.io import (
    BAND_DESCRIPTIONS,
    CLASS_NAMES_TAG,
    TILED_GTIFF_OPTIONS,
    Category,
    atomic_output,
    change_categories,
    check_writable_dir,
    class_categories,
    finalize_cog,
    gdal_cache,
    style_change_types,
    write_style_sidecars,
)
from geochange.synthetic.layout import _DEMOLISHED, _NEW, CELL
from geochange.synthetic.realism import Realism, resolve_realism
from geochange.synthetic.render import _HALO, _Renderer
from geochange.synthetic.scene import CLASS_NAMES, LABEL_NODATA, Scene

__all__ = ["make_scene"]

DEFAULT_BLOCK_SIZE = 1024


def _default_origin(
    crs: str, parsed: rasterio.crs.CRS, height: int, width: int, res: float
) -> tuple[float, float]:
    """Upper-left corner centring the scene on the CRS's area of use (snapped to 100 px)."""
    import pyproj

    try:
        pcrs = pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError:
        pcrs = pyproj.CRS.from_user_input(parsed.to_wkt())
    area = pcrs.area_of_use
    if area is None:
        return 0.0, height * res
    lon, lat = (area.west + area.east) / 2, (area.south + area.north) / 2
    if area.west > area.east:  # area crossing the antimeridian
        lon = ((area.west + area.east + 360) / 2 + 180) % 360 - 180
    to_crs = pyproj.Transformer.from_crs("EPSG:4326", pcrs, always_xy=True)
    cx, cy = to_crs.transform(lon, lat)
    if not (math.isfinite(cx) and math.isfinite(cy)):
        return 0.0, height * res
    step = 100 * res
    return (
        math.floor((cx - width * res / 2) / step) * step,
        math.floor((cy + height * res / 2) / step) * step,
    )


def _validate(
    height: int, width: int, crs: str, res: float, bands: int, block_size: int
) -> rasterio.crs.CRS:
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise ConfigurationError(f"scene {name} must be a positive integer, got {value!r}")
    if not (isinstance(res, int | float) and math.isfinite(res) and res > 0):
        raise ConfigurationError(f"res (pixel size in CRS units) must be > 0, got {res!r}")
    if not isinstance(bands, int | np.integer) or not 3 <= bands <= 32:
        raise ConfigurationError(f"bands must be an integer between 3 and 32, got {bands!r}")
    if block_size < CELL or block_size % CELL:
        raise ConfigurationError(
            f"block_size must be a positive multiple of {CELL}, got {block_size}"
        )
    try:
        parsed = rasterio.crs.CRS.from_user_input(crs)
    except (rasterio.errors.CRSError, ValueError, TypeError) as err:
        raise ConfigurationError(f"unknown or invalid CRS {crs!r}: {err}") from err
    if parsed.is_geographic and (height * res > 180 or width * res > 360):
        raise ConfigurationError(
            f"res={res} is in degrees for the geographic CRS {crs!r}: a {height}x{width} scene "
            "would not fit on the globe; use a projected CRS or a smaller res"
        )
    return parsed


def _label_profile(common: dict[str, Any]) -> dict[str, Any]:
    return dict(common, count=1, dtype="uint8", nodata=LABEL_NODATA)


def make_scene(
    out_dir: str | os.PathLike[str],
    height: int,
    width: int,
    *,
    seed: int = 0,
    crs: str = "EPSG:32650",
    res: float = 0.6,
    bands: int = 3,
    progress: bool = False,
    origin: tuple[float, float] | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    workers: int = 1,
    realism: Realism | str | dict[str, Any] | None = None,
) -> Scene:
    """Generate a synthetic bi-temporal scene of ``height`` x ``width`` pixels per date.

    Files written in ``out_dir`` (Cloud-Optimized GeoTIFFs: 512-pixel tiles, ZSTD with
    predictor 2, BigTIFF when needed, overviews; every file written atomically):

    * ``pre.tif``, ``post.tif``: uint8 images with ``bands`` bands (RGB, then a NIR-like band,
      then bands mixing red and NIR). The post image differs by season, sun, haze, noise and a
      sub-pixel to 1-pixel misregistration (:attr:`Scene.shift`), none of which is change.
    * ``semantic_pre.tif``, ``semantic_post.tif``: uint8 LsSCD classes (0 building, 1 road,
      2 water, 3 bare land, 4 tree, 5 cropland, 6 others), nodata 255, colour table and the
      ``GEOCHANGE_CLASS_NAMES`` tag (JSON list of class names).
    * ``change.tif``: uint8, exactly ``semantic_pre != semantic_post`` (nodata 255), except
      on the pixels of a water-level distractor (``realism``), which are 0.
    * Beside each of these three label rasters, what GIS clients read
      (:func:`geochange.io.write_style_sidecars`): ``<name>.tif.aux.xml`` (category names,
      raster attribute table, colours with opacity) and a QGIS style ``<name>.qml``, in the
      colours of predicted maps. Every band has a description (``red``, ..., ``class, first
      date``).
    * ``changed_buildings.gpkg``: layer ``changed_buildings``, one polygon per new or demolished
      building with ``change_type`` ("new building" / "demolished building"), ``building_id``,
      ``from_class``, ``to_class`` and ``area_m2`` (area in square CRS units), and a
      default QGIS style in its ``layer_styles`` table, categorized by ``change_type`` like
      the changes a prediction vectorizes to (:func:`geochange.io.style_change_types`).
    * ``scene.json``: the manifest read by :meth:`Scene.load`.

    The content depends only on ``seed`` (and on the pixel position), not on ``block_size``;
    memory stays bounded (well under 1 GB) whatever the size.

    Args:
        out_dir: output directory (created if needed).
        height: rows per date.
        width: columns per date.
        seed: random seed; the same seed gives identical files.
        crs: CRS of the outputs (anything rasterio understands).
        res: pixel size in CRS units.
        bands: number of image bands (>= 3).
        progress: show a tqdm progress bar.
        origin: map coordinates ``(left, top)`` of the upper-left corner; default centres the
            scene on the CRS's area of use.
        block_size: side of the blocks generated at once (a multiple of 256).
        workers: processes computing blocks in parallel (1: in this process). Each worker
            holds one or two blocks (about 250 MiB RSS); the files are identical for any value.
        realism: perturbations that make the pair harder (see
            :mod:`geochange.synthetic.realism`): None or ``"none"`` (off), a preset name
            (``"levir"``), the name of one perturbation (the ``"levir"`` setting of it alone,
            e.g. ``"lean"``), a dict such as ``{"lean": {"strength": 0.3}}``, or a
            :class:`~geochange.synthetic.Realism`. Labels stay on the pre-date grid.

    Returns:
        The :class:`Scene` describing the files.

    Raises:
        ConfigurationError: on invalid size, CRS, resolution, band count or realism.
        OutputError: if ``out_dir`` is not writable.
    """
    import time

    start = time.perf_counter()
    parsed_crs = _validate(height, width, crs, res, bands, block_size)
    if not isinstance(workers, int | np.integer) or workers < 1:
        raise ConfigurationError(f"workers must be a positive integer, got {workers!r}")
    height, width, bands, seed = int(height), int(width), int(bands), int(seed)
    options = resolve_realism(realism)
    root = check_writable_dir(out_dir)
    left, top = (
        origin if origin is not None else _default_origin(crs, parsed_crs, height, width, res)
    )
    transform = Affine(res, 0.0, left, 0.0, -res, top)
    renderer = _Renderer(seed, bands, options)
    shift = renderer.shift
    scene = Scene(
        root=root,
        height=height,
        width=width,
        crs=str(crs),
        res=float(res),
        transform=transform,
        bands=bands,
        seed=seed,
        shift=(float(shift[0]), float(shift[1])),
        realism=options.to_dict(),
    )
    job = _Job(scene, parsed_crs, renderer, block_size, workers, progress)
    records, changed_pixels = _write_rasters(job)
    _write_changed_buildings(job, records)
    stats = _stats(scene, records, changed_pixels, time.perf_counter() - start)
    scene = Scene(**{**scene.__dict__, "stats": stats})
    with atomic_output(scene.manifest) as tmp:
        tmp.write_text(json.dumps(scene.to_dict(), indent=2))
    return scene


@dataclass(frozen=True)
class _Job:
    """What every phase of :func:`make_scene` needs: the scene and how to compute its blocks."""

    scene: Scene
    crs: rasterio.crs.CRS
    renderer: _Renderer
    block_size: int
    workers: int
    progress: bool


def _raster_outputs(job: _Job) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Final path and profile of every raster, by name."""
    scene = job.scene
    # The intermediate tiled files are rewritten by the COG conversion: compress them fast.
    common = dict(
        TILED_GTIFF_OPTIONS,
        zstd_level=1,
        height=scene.height,
        width=scene.width,
        crs=job.crs,
        transform=scene.transform,
    )
    image_profile = dict(
        common, count=scene.bands, dtype="uint8", photometric="RGB" if scene.bands == 3 else None
    )
    image_profile = {k: v for k, v in image_profile.items() if v is not None}
    return {
        "pre": (scene.pre, image_profile),
        "post": (scene.post, image_profile),
        "semantic_pre": (scene.semantic_pre, _label_profile(common)),
        "semantic_post": (scene.semantic_post, _label_profile(common)),
        "change": (scene.change, _label_profile(common)),
    }


def _write_rasters(job: _Job) -> tuple[list[dict[str, Any]], int]:
    """Write the five rasters block by block, then as COGs; returns building records, pixels."""
    from tqdm.auto import tqdm

    outputs = _raster_outputs(job)
    tiled = {
        name: job.scene.root / f".{path.name}.tiled.tif" for name, (path, _) in outputs.items()
    }
    # A small GDAL cache: blocks are written once, so caching more only grows the RSS.
    with gdal_cache():
        datasets = {
            name: rasterio.open(tiled[name], "w", **prof) for name, (_, prof) in outputs.items()
        }
        try:
            _tag_rasters(datasets, job.scene.seed)
            records, changed_pixels = _write_blocks(job, datasets)
        except BaseException:
            for ds in datasets.values():
                ds.close()
            for path in tiled.values():
                path.unlink(missing_ok=True)
            raise
        for ds in datasets.values():
            ds.close()
        # Overviews + COG conversion: a noticeable share of the time at large sizes.
        for name, (path, _) in tqdm(
            outputs.items(), desc="overviews+COG", unit="file", disable=not job.progress
        ):
            finalize_cog(
                tiled[name], path, resampling="average" if name in ("pre", "post") else "nearest"
            )
            if name in _LABEL_CATEGORIES:
                write_style_sidecars(path, _LABEL_CATEGORIES[name])
    return records, changed_pixels


#: The classes of each label raster: the palettes of predicted maps (geochange.io.gis).
_LABEL_CATEGORIES: dict[str, list[Category]] = {
    "semantic_pre": class_categories(CLASS_NAMES),
    "semantic_post": class_categories(CLASS_NAMES),
    "change": change_categories(),
}


def _image_band_descriptions(bands: int) -> list[str]:
    """Band descriptions of a synthetic image: ``red, green, blue, nir``, then red-NIR mixes."""
    named = ["red", "green", "blue", "nir"]
    return [named[i] if i < 4 else f"red-nir mix {i - 3}" for i in range(bands)]


def _tag_rasters(datasets: dict[str, Any], seed: int) -> None:
    """Colour tables, class-name tags and band descriptions; seed and date of the images."""
    class_tag = json.dumps(list(CLASS_NAMES))
    for name, categories in _LABEL_CATEGORIES.items():
        # The file keeps RGB; the opacity ("no change" transparent) is in the PAM sidecar.
        datasets[name].write_colormap(1, {c.value: c.rgba for c in categories})
        datasets[name].set_band_description(1, BAND_DESCRIPTIONS[name])
    for name in ("semantic_pre", "semantic_post"):
        datasets[name].update_tags(**{CLASS_NAMES_TAG: class_tag})
    datasets["change"].update_tags(**{CLASS_NAMES_TAG: json.dumps(list(CHANGE_CLASS_NAMES))})
    for name in ("pre", "post"):
        datasets[name].update_tags(
            GEOCHANGE_SYNTHETIC_SEED=str(seed),
            GEOCHANGE_DATE="pre" if name == "pre" else "post",
        )
        for band, description in enumerate(_image_band_descriptions(datasets[name].count), 1):
            datasets[name].set_band_description(band, description)


def _write_blocks(job: _Job, datasets: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """Compute every block (in order) and write it; returns building records, changed pixels."""
    from tqdm.auto import tqdm

    scene = job.scene
    blocks = [
        (b.row_off, b.col_off, b.height, b.width)
        for b in BlockGrid(scene.height, scene.width, job.block_size)
    ]
    records: list[dict[str, Any]] = []
    changed_pixels = 0
    for row0, col0, block in tqdm(
        _blocks_in_order(job.renderer, scene, blocks, job.workers),
        total=len(blocks),
        desc="synth",
        unit="block",
        disable=not job.progress,
        dynamic_ncols=True,
    ):
        h, w = block["change"].shape
        window = Window(col0, row0, w, h)
        changed_pixels += int(block["change"].sum())
        for name in ("semantic_pre", "semantic_post", "change"):
            datasets[name].write(block[name], 1, window=window)
        for name in ("pre", "post"):
            datasets[name].write(block[name], window=window)
        records.extend(block["records"])
    return records, changed_pixels


def _write_changed_buildings(job: _Job, records: list[dict[str, Any]]) -> None:
    """The GeoPackage of new and demolished buildings (an empty layer when there are none)."""
    import geopandas as gpd

    frame = gpd.GeoDataFrame(
        {
            "change_type": [r["change_type"] for r in records],
            "building_id": np.array([r["building_id"] for r in records], dtype=np.int64),
            "from_class": [r["from_class"] for r in records],
            "to_class": [r["to_class"] for r in records],
            "area_m2": np.array([r["geometry"].area for r in records], dtype=np.float64),
        },
        geometry=[r["geometry"] for r in records],
        crs=job.crs.to_wkt(),
    )
    with atomic_output(job.scene.changed_buildings) as tmp:
        with warnings.catch_warnings():
            # The temporary name ends in ".partial"; the final name is a proper ".gpkg".
            warnings.filterwarnings("ignore", message=".*extension should be.*")
            frame.to_file(
                tmp,
                driver="GPKG",
                layer="changed_buildings",
                engine="pyogrio",
                geometry_type="Polygon",  # declared even when the layer is empty
            )
        # Both types in the legend, also when a small scene has one or none.
        style_change_types(tmp, "changed_buildings", _BUILDING_CHANGE_TYPES)


_BUILDING_CHANGE_TYPES = ("new building", "demolished building")


def _stats(
    scene: Scene, records: list[dict[str, Any]], changed_pixels: int, seconds: float
) -> dict[str, Any]:
    """Summary figures stored in the manifest (:attr:`Scene.stats`)."""
    return {
        "changed_pixels": changed_pixels,
        "changed_fraction": changed_pixels / (scene.height * scene.width),
        "new_buildings": int(sum(r["change_type"] == _BUILDING_CHANGE_TYPES[0] for r in records)),
        "demolished_buildings": int(
            sum(r["change_type"] == _BUILDING_CHANGE_TYPES[1] for r in records)
        ),
        "seconds": round(seconds, 3),
    }


_WORKER_RENDERER: _Renderer | None = None


def _init_worker(seed: int, bands: int, realism: dict[str, Any]) -> None:
    global _WORKER_RENDERER
    _WORKER_RENDERER = _Renderer(seed, bands, Realism.from_dict(realism))


def _compute_block(
    renderer: _Renderer, scene: Scene, row0: int, col0: int, h: int, w: int
) -> dict[str, Any]:
    """Labels, images and changed-building records of one block."""
    grid0 = renderer.grid(row0, col0, h, w, (0.0, 0.0), _HALO)
    inner = (slice(_HALO, _HALO + h), slice(_HALO, _HALO + w))
    sem_pre = grid0.classes(0)[inner]
    sem_post = grid0.classes(1)[inner]
    change = sem_pre != sem_post
    # Water-level change is a distractor: true classes in the semantic maps, 0 in the binary map.
    change &= ~(grid0.water_changed()[inner] & (sem_pre != BUILDING) & (sem_post != BUILDING))
    block: dict[str, Any] = {
        "semantic_pre": sem_pre,
        "semantic_post": sem_post,
        "change": change.astype(np.uint8),
        "pre": renderer.image(grid0, 0, _HALO, row0, col0),
        "records": _changed_building_records(grid0.buildings, row0, col0, h, w, scene),
    }
    del grid0
    halo = renderer.post_halo
    grid1 = renderer.grid(row0, col0, h, w, renderer.shift, halo)
    block["post"] = renderer.image(grid1, 1, halo, row0, col0)
    return block


def _worker_block(task: tuple[Scene, int, int, int, int]) -> tuple[int, int, dict[str, Any]]:
    scene, row0, col0, h, w = task
    assert _WORKER_RENDERER is not None
    return row0, col0, _compute_block(_WORKER_RENDERER, scene, row0, col0, h, w)


def _blocks_in_order(
    renderer: _Renderer, scene: Scene, blocks: list[tuple[int, int, int, int]], workers: int
) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Yield computed blocks in order, in this process or in ``workers`` worker processes.

    With workers, at most ``2 * workers`` blocks are in flight, so memory stays bounded. The
    workers are fresh interpreters that never re-run the caller's script and exit when this
    process dies (see :mod:`geochange.parallel`).
    """
    if workers <= 1:
        for row0, col0, h, w in blocks:
            yield row0, col0, _compute_block(renderer, scene, row0, col0, h, w)
        return
    import collections
    from concurrent.futures import Future

    from geochange.parallel import WorkerPool

    with WorkerPool(
        workers, initializer=_init_worker, initargs=(scene.seed, scene.bands, scene.realism)
    ) as pool:
        pending: collections.deque[Future[tuple[int, int, dict[str, Any]]]] = collections.deque()
        tasks = iter(blocks)

        def submit_next() -> None:
            task = next(tasks, None)
            if task is not None:
                pending.append(pool.submit(_worker_block, (scene, *task)))

        for _ in range(2 * workers):
            submit_next()
        while pending:
            result = pending.popleft().result()
            submit_next()
            yield result


def _changed_building_records(
    buildings: dict[str, NDArray[Any]], row0: int, col0: int, h: int, w: int, scene: Scene
) -> list[dict[str, Any]]:
    """Map polygons of the new/demolished buildings whose cell lies in this block."""
    cell = buildings["cell"]
    changed = (buildings["state"] == _NEW) | (buildings["state"] == _DEMOLISHED)
    # Blocks are aligned on cells, so each cell (and its buildings) belongs to exactly one block.
    own = (
        changed
        & (cell[:, 0] * CELL >= row0)
        & (cell[:, 0] * CELL < row0 + h)
        & (cell[:, 1] * CELL >= col0)
        & (cell[:, 1] * CELL < col0 + w)
    )
    if not np.any(own):
        return []
    extent = shapely.box(0, 0, scene.width, scene.height)
    pixel_polygons = shapely.intersection(buildings["polygons"][own], extent)
    t = scene.transform
    records = []
    for polygon, state, building_id, from_class in zip(
        pixel_polygons,
        buildings["state"][own],
        buildings["id"][own],
        buildings["from_class"][own],
        strict=True,
    ):
        if polygon.is_empty or polygon.area <= 0:
            continue
        geometry = shapely.transform(
            polygon, lambda xy: np.column_stack([t.a * xy[:, 0] + t.c, t.e * xy[:, 1] + t.f])
        )
        new = state == _NEW
        records.append(
            {
                "change_type": _BUILDING_CHANGE_TYPES[0 if new else 1],
                "building_id": int(building_id),
                "from_class": CLASS_NAMES[int(from_class)] if new else "building",
                "to_class": "building" if new else CLASS_NAMES[BARE_LAND],
                "geometry": geometry,
            }
        )
    return records
