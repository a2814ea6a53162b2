"""Fast windowed readers for one raster date (one or more files) and one vector label layer.

Every reader describes its data on a *target grid* (CRS, resolution and pixel origin of the
pre image). Files are opened lazily once per process and the handles are keyed by process id,
so a copy of the reader pickled into a DataLoader worker (or inherited through ``fork``) opens
its own handles instead of sharing GDAL state across processes. Windows are read directly with
``DatasetReader.read`` (no ``rasterio.merge``): a window partly outside a file is clipped to the
file, read, and pasted into a pre-filled output ("boundless" without GDAL's slow VRT path).
Files whose CRS, resolution or pixel origin differ from the target grid are read through a
:class:`~rasterio.vrt.WarpedVRT` aligned with the target grid.
"""

from __future__ import annotations

import atexit
import math
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.features
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geochange.errors import DataError
from geochange.io import (
    PARQUET_SUFFIXES,
    band_indexes,
    nonfinite_pixels,
    polygon_layer,
    set_process_gdal_cache,
)

#: Extensions accepted when a directory is given instead of files.
RASTER_EXTENSIONS = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".png")
# VECTOR_EXTENSIONS (vector labels) comes from geochange.io.vector, the one list of formats.


#: Raster layers holding open GDAL handles in this process, closed at interpreter exit.
_OPEN_LAYERS: dict[int, weakref.ref[RasterLayer]] = {}


@atexit.register
def _close_open_layers() -> None:
    """Close the handles still open before the interpreter tears itself down.

    A rasterio dataset still open then is closed by its ``__del__`` while modules are being
    torn down, which prints an empty ``Error in sys.excepthook`` block per file after the
    program's own output (e.g. at the end of every ``geochange fit``).
    """
    for ref in list(_OPEN_LAYERS.values()):
        layer = ref()
        if layer is not None:
            layer.close()
    _OPEN_LAYERS.clear()


def expand_paths(paths: Any, extensions: Sequence[str], what: str) -> list[Path]:
    """Turn a file, a directory or a list of them into a sorted list of files.

    Args:
        paths: a path, a directory (searched recursively) or a list of paths.
        extensions: file extensions searched for in directories.
        what: name of the input, for error messages.

    Returns:
        The files.

    Raises:
        DataError: a path does not exist or a directory holds no matching file.
    """
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in extensions)
            if not found:
                raise DataError(f"{what}: directory {str(path)!r} holds no {'/'.join(extensions)}")
            files.extend(found)
        elif path.exists() or str(path).startswith("/vsi"):
            files.append(path)
        else:
            raise DataError(f"{what}: file {str(path)!r} does not exist")
    if not files:
        raise DataError(f"{what}: no file given")
    return files


@dataclass(frozen=True)
class TargetGrid:
    """The grid every layer is read on.

    Attributes:
        crs: coordinate reference system.
        res: ``(xres, yres)`` pixel size, both positive, in CRS units.
        origin: ``(x, y)`` of a pixel corner of the grid (top-left of the pre image).
    """

    crs: CRS | None
    res: tuple[float, float]
    origin: tuple[float, float]

    def snap(self, bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Expand ``(left, bottom, right, top)`` outwards onto the grid's pixel edges."""
        xres, yres = self.res
        x0, y0 = self.origin
        left = x0 + math.floor((bounds[0] - x0) / xres + 1e-9) * xres
        right = x0 + math.ceil((bounds[2] - x0) / xres - 1e-9) * xres
        top = y0 - math.floor((y0 - bounds[3]) / yres + 1e-9) * yres
        bottom = y0 - math.ceil((y0 - bounds[1]) / yres - 1e-9) * yres
        return left, bottom, right, top


def target_grid(
    pre_file: Path, crs: CRS | str | None = None, res: float | tuple[float, float] | None = None
) -> TargetGrid:
    """The grid a dataset reads on: the pre image's, optionally in ``crs`` and at ``res``.

    In another CRS the origin is the corner of the pre image's transformed bounds and, without
    ``res``, the resolution keeps roughly the pre image's pixel count across the extent.
    """
    with rasterio.open(pre_file) as first:
        t = first.transform
        target_crs = first.crs
        origin = (t.c, t.f)
        target_res = (abs(t.a), abs(t.e))
        bounds = tuple(first.bounds)
        shape = (first.height, first.width)
    if crs is not None:
        new_crs = CRS.from_user_input(crs)
        if target_crs is not None and new_crs != target_crs:
            bounds = transform_bounds(target_crs, new_crs, *bounds)
            origin = (bounds[0], bounds[3])
            if res is None:
                target_res = (
                    (bounds[2] - bounds[0]) / shape[1],
                    (bounds[3] - bounds[1]) / shape[0],
                )
        target_crs = new_crs
    if res is not None:
        target_res = (float(res), float(res)) if isinstance(res, int | float) else res
    return TargetGrid(crs=target_crs, res=(float(target_res[0]), float(target_res[1])),
                      origin=origin)  # fmt: skip


def _aligned(src: Any, grid: TargetGrid) -> bool:
    """Whether ``src`` can be read without warping: same CRS, resolution and pixel phase."""
    t = src.transform
    if grid.crs is not None and src.crs != grid.crs:
        return False
    if t.b != 0 or t.d != 0:
        return False
    xres, yres = grid.res
    if not (math.isclose(t.a, xres, rel_tol=1e-9) and math.isclose(-t.e, yres, rel_tol=1e-9)):
        return False
    phase_x = (t.c - grid.origin[0]) / xres
    phase_y = (grid.origin[1] - t.f) / yres
    return abs(phase_x - round(phase_x)) < 1e-6 and abs(phase_y - round(phase_y)) < 1e-6


@dataclass
class RasterFile:
    """One raster file of a layer, with its footprint on the target grid.

    ``nodata`` is the value read as "no data" (the file's nodata tag, unless the layer's owner
    disregards it, e.g. the 255 of a 0/255 change mask read with ``mask_values="0,255"``).
    """

    path: Path
    indexes: list[int]
    nodata: float | None
    warp: bool
    bounds: tuple[float, float, float, float]
    dtype: str
    #: Decoded size of the whole file (every band), for sizing the block cache.
    nbytes: int = 0


def _track_open(layer: RasterLayer) -> None:
    key = id(layer)
    if key not in _OPEN_LAYERS:
        _OPEN_LAYERS[key] = weakref.ref(layer, lambda _: _OPEN_LAYERS.pop(key, None))


@dataclass
class RasterLayer:
    """A raster layer (one date, or one label) made of one or more files, read on a target grid.

    Build it with :meth:`open`. Reading a window mosaics the files that intersect it (first file
    wins where they overlap) and reports which pixels hold valid data.
    """

    name: str
    files: list[RasterFile]
    grid: TargetGrid
    resampling: Resampling
    gdal_cache_mb: int = 256
    _handles: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def open(
        cls,
        name: str,
        paths: Sequence[Path],
        *,
        grid: TargetGrid | None,
        bands: Sequence[int | str] | None,
        resampling: Resampling,
        gdal_cache_mb: int = 256,
    ) -> tuple[RasterLayer, TargetGrid]:
        """Validate the files of a layer and describe them on ``grid``.

        Args:
            name: the layer's role (``"pre"``, ``"change"``, ...), for messages.
            paths: its files.
            grid: the target grid, or None to take the first file's grid.
            bands: bands to read (1-based indexes or descriptions); None for all.
            resampling: resampling used when a file must be warped.
            gdal_cache_mb: GDAL block cache per process, in MB.

        Returns:
            The layer and the target grid (created from the first file when ``grid`` is None).

        Raises:
            DataError: unreadable file, files with different band counts.
        """
        files: list[RasterFile] = []
        for path in paths:
            try:
                src = rasterio.open(path)
            except (rasterio.errors.RasterioIOError, OSError) as err:
                raise DataError(f"{name} raster {str(path)!r} cannot be read: {err}") from err
            with src:
                if grid is None:
                    t = src.transform
                    if t.b != 0 or t.d != 0:
                        raise DataError(f"{name} raster {str(path)!r} is rotated; not supported")
                    grid = TargetGrid(crs=src.crs, res=(t.a, -t.e), origin=(t.c, t.f))
                if (src.crs is None) != (grid.crs is None):
                    raise DataError(
                        f"{name} raster {str(path)!r} is "
                        f"{'not ' if src.crs is None else ''}georeferenced, unlike the pre image"
                    )
                indexes = band_indexes(src, bands, path)
                if files and len(indexes) != len(files[0].indexes):
                    raise DataError(
                        f"{name} raster {str(path)!r} has {len(indexes)} bands but "
                        f"{str(files[0].path)!r} has {len(files[0].indexes)}"
                    )
                bounds = tuple(src.bounds)
                if grid.crs is not None and src.crs != grid.crs:
                    bounds = transform_bounds(src.crs, grid.crs, *bounds, densify_pts=21)
                try:
                    # Touch the first block so that a truncated/corrupt file fails now.
                    src.read(indexes[:1], window=Window(0, 0, 1, 1))
                except rasterio.errors.RasterioIOError as err:
                    raise DataError(f"{name} raster {str(path)!r} is corrupt: {err}") from err
                files.append(
                    RasterFile(
                        path=Path(path),
                        indexes=indexes,
                        nodata=src.nodata,
                        warp=not _aligned(src, grid),
                        bounds=grid.snap(bounds),
                        dtype=src.dtypes[indexes[0] - 1],
                        nbytes=src.width
                        * src.height
                        * sum(np.dtype(t).itemsize for t in src.dtypes),
                    )
                )
        if grid is None:
            raise DataError(f"{name}: no raster file given")
        return cls(name, files, grid, resampling, gdal_cache_mb), grid

    @property
    def count(self) -> int:
        """Number of bands read from each file."""
        return len(self.files[0].indexes)

    @property
    def dtype(self) -> str:
        """Data type of the first file."""
        return self.files[0].dtype

    def footprints(self) -> list[shapely.Polygon]:
        """Bounding boxes of the files on the target grid."""
        return [shapely.box(*f.bounds) for f in self.files]

    def __getstate__(self) -> dict[str, Any]:
        # File handles belong to one process: never pickle them.
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def close(self) -> None:
        """Close the handles opened by this process."""
        for handle in self._handles.get("open", []):
            handle.close()
        self._handles.clear()

    def _handle(self, i: int) -> Any:
        pid = os.getpid()
        if self._handles.get("pid") != pid:
            # A fresh process (or a fork): forget handles opened elsewhere.
            self._handles.clear()
            self._handles["pid"] = pid
            self._handles["open"] = []
            set_process_gdal_cache(self.gdal_cache_mb)
        key = f"file{i}"
        handle = self._handles.get(key)
        if handle is None:
            info = self.files[i]
            src = rasterio.open(info.path)
            self._handles["open"].append(src)
            _track_open(self)
            handle = src
            if info.warp:
                left, bottom, right, top = info.bounds
                xres, yres = self.grid.res
                width = max(1, round((right - left) / xres))
                height = max(1, round((top - bottom) / yres))
                # A nodata tag the layer disregards (the 255 of a 0/255 change mask) must not
                # make GDAL drop those pixels while warping.
                disregard: dict[str, Any] = {}
                if info.nodata is None and src.nodata is not None:
                    disregard["src_nodata"] = None
                handle = WarpedVRT(
                    src,
                    crs=self.grid.crs or src.crs,
                    transform=Affine(xres, 0, left, 0, -yres, top),
                    width=width,
                    height=height,
                    resampling=self.resampling,
                    # Without a nodata value, an alpha band marks the warped footprint.
                    add_alpha=info.nodata is None,
                    **disregard,
                )
                self._handles["open"].insert(0, handle)
            self._handles[key] = handle
        return handle

    def read(
        self,
        bounds: tuple[float, float, float, float],
        res: tuple[float, float],
        fill: float,
        dtype: Any = np.float32,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read ``(left, bottom, right, top)`` at ``res`` as ``[C, h, w]`` plus a validity mask.

        Args:
            bounds: window bounds in the target CRS.
            res: output pixel size ``(xres, yres)``.
            fill: value written where no file has valid data.
            dtype: output array type.

        Returns:
            ``(data, valid)``; ``valid`` is False outside every file, where a file holds its
            nodata value in all bands, and where any band is NaN or +-inf.
        """
        left, bottom, right, top = bounds
        xres, yres = res
        width = round((right - left) / xres)
        height = round((top - bottom) / yres)
        out = np.full((self.count, height, width), fill, dtype=dtype)
        valid = np.zeros((height, width), dtype=bool)
        for i, info in enumerate(self.files):
            fb = info.bounds
            if fb[0] >= right or fb[2] <= left or fb[1] >= top or fb[3] <= bottom:
                continue
            part = self._read_file(i, info, left, top, width, height, xres, yres)
            if part is None:
                continue
            (r0, r1, c0, c1), data, file_valid = part
            if len(self.files) == 1:
                out[:, r0:r1, c0:c1] = data
                valid[r0:r1, c0:c1] = file_valid
                if not file_valid.all():
                    out[:, r0:r1, c0:c1][:, ~file_valid] = fill
                break
            # Mosaic: fill only pixels no earlier file covered.
            target_valid = valid[r0:r1, c0:c1]
            take = file_valid & ~target_valid
            out[:, r0:r1, c0:c1][:, take] = data[:, take]
            target_valid |= take
        return out, valid

    def _read_file(
        self,
        i: int,
        info: RasterFile,
        left: float,
        top: float,
        width: int,
        height: int,
        xres: float,
        yres: float,
    ) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray] | None:
        handle = self._handle(i)
        t = handle.transform
        # Source pixels per output pixel, and the window in source pixel coordinates.
        sx, sy = xres / t.a, yres / -t.e
        col0 = (left - t.c) / t.a
        row0 = (t.f - top) / -t.e
        col1, row1 = col0 + width * sx, row0 + height * sy
        cc0, cc1 = max(col0, 0.0), min(col1, float(handle.width))
        rr0, rr1 = max(row0, 0.0), min(row1, float(handle.height))
        if cc1 <= cc0 or rr1 <= rr0:
            return None
        d_c0, d_c1 = round((cc0 - col0) / sx), round((cc1 - col0) / sx)
        d_r0, d_r1 = round((rr0 - row0) / sy), round((rr1 - row0) / sy)
        if d_c1 <= d_c0 or d_r1 <= d_r0:
            return None
        window = Window(*(_snap_int(v) for v in (cc0, rr0, cc1 - cc0, rr1 - rr0)))
        shape = (d_r1 - d_r0, d_c1 - d_c0)
        resample = not (math.isclose(sx, 1.0) and math.isclose(sy, 1.0))
        kwargs: dict[str, Any] = {"window": window}
        if resample or (window.width, window.height) != (shape[1], shape[0]):
            kwargs.update(out_shape=(len(info.indexes), *shape), resampling=self.resampling)
        data = handle.read(info.indexes, **kwargs)
        if info.warp and info.nodata is None:
            alpha_kwargs = dict(kwargs)
            if "out_shape" in alpha_kwargs:
                alpha_kwargs["out_shape"] = shape
            file_valid = handle.read(handle.count, **alpha_kwargs) > 0
        elif info.nodata is not None:
            if isinstance(info.nodata, float) and math.isnan(info.nodata):
                file_valid = ~np.isnan(data).all(axis=0)
            else:
                file_valid = (data != info.nodata).any(axis=0)
        else:
            file_valid = np.ones(shape, dtype=bool)
        nonfinite = nonfinite_pixels(data)
        if nonfinite.any():
            file_valid &= ~nonfinite
        return (d_r0, d_r1, d_c0, d_c1), data, file_valid


def _snap_int(value: float) -> float:
    """Round values within 1e-6 of an integer so rasterio reads without resampling."""
    nearest = round(value)
    return float(nearest) if abs(value - nearest) < 1e-6 else value


@dataclass
class VectorLayer:
    """Label polygons rasterized on the fly on the target grid.

    Attributes:
        name: the layer's role, for messages.
        path: the vector file.
        frame: the polygons (GeoDataFrame) in the target CRS.
        values: burn value of each polygon.
        background: value of pixels no polygon covers.
        all_touched: burn every pixel a polygon touches (else pixel centres).
    """

    name: str
    path: Path
    frame: Any
    values: np.ndarray
    background: int
    all_touched: bool = False

    @classmethod
    def open(
        cls,
        name: str,
        path: Path,
        *,
        grid: TargetGrid,
        class_attribute: str | None,
        class_names: Sequence[str] | None,
        background: int,
        all_touched: bool = False,
    ) -> VectorLayer:
        """Load a vector label file and prepare it for rasterization.

        Args:
            name: the layer's role, for messages.
            path: GeoPackage / Shapefile / GeoJSON / FlatGeobuf / GeoParquet file.
            grid: target grid (its CRS is the one polygons are reprojected to).
            class_attribute: attribute holding each polygon's class (None: every polygon is 1).
            class_names: names used to turn string class attributes into class ids.
            background: value of uncovered pixels.
            all_touched: burn every pixel a polygon touches.

        Returns:
            The layer.

        Raises:
            DataError: unreadable file, missing class attribute, unknown class names.
        """
        import geopandas as gpd

        try:
            if path.suffix.lower() in PARQUET_SUFFIXES:
                frame = gpd.read_parquet(path)
            else:
                # A GeoPackage styled for QGIS also holds layer_styles: read its feature layer.
                frame = gpd.read_file(path, layer=polygon_layer(path))
        except Exception as err:  # pyogrio raises several types for unreadable files
            raise DataError(f"{name} vector file {str(path)!r} cannot be read: {err}") from err
        frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
        if grid.crs is not None and frame.crs is not None and frame.crs != grid.crs:
            frame = frame.to_crs(grid.crs.to_wkt())
        if class_attribute is None:
            values = np.ones(len(frame), dtype=np.int64)
        else:
            if class_attribute not in frame.columns:
                columns = [c for c in frame.columns if c != frame.geometry.name]
                raise DataError(
                    f"{name} vector file {str(path)!r} has no class attribute "
                    f"{class_attribute!r} (attributes: {columns})"
                )
            column = frame[class_attribute]
            if column.dtype.kind in "iuf":
                values = column.to_numpy().astype(np.int64)
            else:
                if class_names is None:
                    raise DataError(
                        f"{name} vector file {str(path)!r}: attribute {class_attribute!r} holds "
                        "names; pass class_names to map them to class ids"
                    )
                lookup = {n: i for i, n in enumerate(class_names)}
                unknown = sorted(set(column.astype(str)) - set(lookup))
                if unknown:
                    raise DataError(
                        f"{name} vector file {str(path)!r}: unknown classes {unknown} "
                        f"(known: {list(class_names)})"
                    )
                values = column.astype(str).map(lookup).to_numpy().astype(np.int64)
        frame = frame.reset_index(drop=True)
        return cls(name, path, frame, values, background, all_touched)

    def total_bounds(self) -> tuple[float, float, float, float]:
        """Bounds of all polygons."""
        if len(self.frame) == 0:
            return (math.nan, math.nan, math.nan, math.nan)
        return tuple(float(v) for v in self.frame.total_bounds)  # type: ignore[return-value]

    def read(self, bounds: tuple[float, float, float, float], res: tuple[float, float]) -> Any:
        """Rasterize the polygons in ``(left, bottom, right, top)`` at ``res`` as ``[h, w]``."""
        left, bottom, right, top = bounds
        width = round((right - left) / res[0])
        height = round((top - bottom) / res[1])
        out = np.full((height, width), self.background, dtype=np.uint8)
        hits = self.frame.sindex.query(shapely.box(left, bottom, right, top))
        if len(hits):
            rasterio.features.rasterize(
                zip(self.frame.geometry.to_numpy()[hits], self.values[hits], strict=True),
                out=out,
                transform=Affine(res[0], 0, left, 0, -res[1], top),
                all_touched=self.all_touched,
            )
        return out
