"""Writing change polygons: WKB spill file, tables, layers, GeoPackage and the other formats."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import shapely
import shapely.affinity

from geochange.errors import ConfigurationError, OutputError
from geochange.io import (
    VECTOR_OUTPUT_DRIVERS,
    atomic_output,
    check_writable_dir,
    layer_creation_options,
    list_layers,
    style_change_types,
    write_polygon_layer,
)
from geochange.vectorize.schema import SCHEMA, WriteMode

#: Output file extension -> OGR driver (``None``: GeoParquet written through GeoPandas/pyarrow);
#: the one list is :data:`geochange.io.VECTOR_OUTPUT_DRIVERS`.
OUTPUT_DRIVERS: dict[str, str | None] = VECTOR_OUTPUT_DRIVERS


def _output_driver(out: Path) -> str | None:
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_DRIVERS:
        raise OutputError(
            f"unknown output format {suffix or '(no extension)'!r} for {str(out)!r}; use one of "
            + ", ".join(sorted(OUTPUT_DRIVERS))
        )
    return OUTPUT_DRIVERS[suffix]


def _layer_slug(name: str) -> str:
    text = name.replace("→", " to ").lower()
    return re.sub(r"[^0-9a-z]+", "_", text).strip("_") or "unknown"


def check_vector_output(
    out: str | os.PathLike[str], *, mode: WriteMode = "create", layer_per_type: bool = False
) -> None:
    """Check, before any work, that change polygons can be written to ``out``.

    Args:
        out: output path; the format comes from the extension (``.gpkg``, ``.parquet``,
            ``.geojson``, ``.fgb``).
        mode: ``"create"``, ``"overwrite"`` or ``"append"`` (see :func:`vectorize_changes`).
        layer_per_type: one layer per change type (GeoPackage only).

    Raises:
        ConfigurationError: options the format cannot hold.
        OutputError: unknown format, or the folder is not writable.
    """
    _check_write_options(Path(out), mode, layer_per_type)


def _check_write_options(out: Path, mode: WriteMode, layer_per_type: bool) -> str | None:
    driver = _output_driver(out)
    if mode not in ("create", "overwrite", "append"):
        raise ConfigurationError(f"mode must be 'create', 'overwrite' or 'append', got {mode!r}")
    if driver != "GPKG" and (layer_per_type or mode != "create"):
        raise ConfigurationError(
            f"{out.suffix} files hold a single layer: layer_per_type and mode={mode!r} need a "
            ".gpkg output"
        )
    check_writable_dir(out.parent if str(out.parent) else ".")
    return driver


#: Features per pyogrio call when writing GeoPackages (bounds the memory of the WKB buffers).
_WRITE_CHUNK = 65_536


class _WkbSpill:
    """Append-only temporary file of WKB blobs, so polygons do not pile up in memory.

    Interior polygons (most of them) are final as soon as their block is done: their WKB goes
    to disk and the object arrays keep a Python ``int`` handle instead. Building-like outlines
    polygonized at pixel level carry ~100 vertices (~2 KB of WKB), so on a 500k-object scene
    this is the difference between ~1 GB and a few tens of MB held by the main process.
    """

    def __init__(self) -> None:
        import tempfile

        self._file = tempfile.TemporaryFile(prefix="geochange-wkb-")
        self._lengths: list[npt.NDArray[np.int64]] = []
        self._count = 0
        self._offsets: npt.NDArray[np.int64] | None = None
        self._view: Any = None

    def add(self, blobs: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
        """Store WKB blobs; return an object array of their integer handles."""
        self._release_view()
        self._file.seek(0, os.SEEK_END)
        self._file.write(b"".join(blobs))
        self._lengths.append(np.fromiter((len(b) for b in blobs), np.int64, count=blobs.size))
        self._offsets = None
        handles = np.empty(blobs.size, dtype=object)
        handles[:] = range(self._count, self._count + blobs.size)
        self._count += blobs.size
        return handles

    def resolve(self, geometry: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
        """Copy of ``geometry`` with every handle replaced by its WKB bytes."""
        import mmap

        if self._offsets is None:
            lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
            self._offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if self._view is None and self._offsets[-1] > 0:
            self._file.flush()
            self._view = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        offsets, view = self._offsets, self._view
        out = np.empty(geometry.size, dtype=object)
        out[:] = [view[offsets[v] : offsets[v + 1]] if isinstance(v, int) else v for v in geometry]
        return out

    def _release_view(self) -> None:
        if self._view is not None:
            self._view.close()
            self._view = None

    def close(self) -> None:
        """Delete the temporary file."""
        self._release_view()
        self._file.close()


def _as_wkb(geometry: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """WKB bytes for every element of an array holding WKB and/or shapely geometries."""
    parsed = np.fromiter(
        (isinstance(g, shapely.Geometry) for g in geometry), np.bool_, count=geometry.size
    )
    if not parsed.any():
        return geometry
    out = geometry.copy()  # may be a view of the table's own array
    out[parsed] = shapely.to_wkb(geometry[parsed])
    return out


@dataclass
class _Table:
    """Change polygons to write: a GeoDataFrame, or attribute columns plus geometries.

    The column form lets :func:`vectorize_changes` write hundreds of thousands of polygons chunk
    by chunk without ever holding all of them as shapely objects. Its ``geometry`` may mix spill
    handles, WKB and shapely geometries (simplified/regularized outlines);
    :meth:`wkb` is the one place where they are normalised for the writers.
    """

    crs: Any
    frame: Any = None
    columns: dict[str, Any] | None = None
    geometry: npt.NDArray[np.object_] | None = None
    # Where WKB handles (ints) in ``geometry`` are stored, if any.
    spill: _WkbSpill | None = None

    def wkb(self, index: npt.NDArray[np.intp] | slice) -> npt.NDArray[np.object_]:
        """WKB bytes of rows ``index``, whatever form the geometries are held in."""
        assert self.geometry is not None
        geoms = self.geometry[index]
        if self.spill is not None:
            geoms = self.spill.resolve(geoms)
        return _as_wkb(geoms)

    def __len__(self) -> int:
        if self.frame is not None:
            return len(self.frame)
        assert self.geometry is not None
        return int(self.geometry.size)

    def change_types(self) -> npt.NDArray[np.object_]:
        values = self.frame["change_type"] if self.frame is not None else None
        if values is None:
            assert self.columns is not None
            values = self.columns["change_type"]
        return np.asarray(values, dtype=object)

    def is_multi(self, index: npt.NDArray[np.intp]) -> bool:
        if self.frame is not None:
            geoms = np.asarray(self.frame.geometry.values, dtype=object)[index]
            return bool(np.any(shapely.get_type_id(geoms) == 6))
        for first in range(0, index.size, _WRITE_CHUNK):  # chunks: bounded memory
            for w in self.wkb(index[first : first + _WRITE_CHUNK]):
                # WKB type code after the byte-order byte: 6 = MultiPolygon.
                order: Literal["little", "big"] = "little" if w[0] == 1 else "big"
                if int.from_bytes(w[1:5], order) == 6:
                    return True
        return False

    def to_frame(self, index: npt.NDArray[np.intp] | None = None) -> Any:
        if self.frame is not None:
            return self.frame if index is None else self.frame.iloc[index]
        assert self.columns is not None and self.geometry is not None
        select = slice(None) if index is None else index
        return _build_frame(
            {name: np.asarray(values)[select] for name, values in self.columns.items()},
            self.wkb(select),
            self.crs,
        )


def _build_frame(columns: dict[str, Any], geometry: npt.NDArray[np.object_], crs: Any) -> Any:
    """GeoDataFrame with the output schema (nullable floats/strings) from arrays."""
    import geopandas as gpd
    import pandas as pd

    if geometry.size and not isinstance(geometry[0], shapely.Geometry):
        geometry = shapely.from_wkb(geometry)
    data = {}
    for name, dtype in SCHEMA.items():
        values = columns[name]
        if dtype == "Float64":
            # NaN (no probability raster) becomes a null, written as NULL, not NaN.
            array = np.asarray(values, dtype=np.float64)
            data[name] = pd.array(np.where(np.isnan(array), 0.0, array), dtype="Float64").copy()
            data[name][np.isnan(array)] = pd.NA
        elif dtype == "object":
            data[name] = pd.Series(np.asarray(values, dtype=object), dtype="object")
        else:
            data[name] = pd.array(np.asarray(values), dtype=dtype)
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geometry, crs=crs), crs=crs)


def write_changes(
    frame: Any,
    out: str | os.PathLike[str],
    *,
    layer: str = "changes",
    mode: WriteMode = "create",
    layer_per_type: bool = False,
) -> Path:
    """Write change polygons atomically, with CRS, field types and a spatial index.

    Formats by extension: ``.gpkg`` (GeoPackage, R-tree index, a default QGIS style per layer
    categorized by ``change_type`` in its ``layer_styles`` table), ``.parquet`` (GeoParquet
    with a bbox covering column), ``.geojson`` (RFC 7946: reprojected to WGS84 longitude /
    latitude, no ``crs`` member) and ``.fgb`` (FlatGeobuf, packed R-tree); all but GeoJSON
    keep the frame's CRS. The file is
    written under a temporary name and renamed when complete; with ``mode="overwrite"`` or
    ``"append"`` the existing GeoPackage is copied first, so a failure leaves it untouched.

    Args:
        frame: a GeoDataFrame as returned by :func:`vectorize_changes` (may be empty).
        out: output path.
        layer: layer name (prefix of the per-type layer names with ``layer_per_type``).
        mode: ``"create"`` replaces the file; ``"overwrite"`` replaces only the written layers
            of an existing GeoPackage and keeps its other layers; ``"append"`` adds features
            to existing layers (creating them if needed).
        layer_per_type: one layer per ``change_type`` (``"<layer>_new_building"``, ...);
            polygons without a change type go to ``layer``.

    Returns:
        The output path.

    Raises:
        OutputError: unknown extension or unwritable location; GeoJSON output of a frame
            without a CRS.
        ConfigurationError: layer options a single-layer format cannot honour.
    """
    return _write_table(
        _Table(crs=frame.crs, frame=frame),
        out,
        layer=layer,
        mode=mode,
        layer_per_type=layer_per_type,
    )


def _write_table(
    table: _Table, out: str | os.PathLike[str], *, layer: str, mode: WriteMode, layer_per_type: bool
) -> Path:
    out = Path(out)
    driver = _check_write_options(out, mode, layer_per_type)
    everything = np.arange(len(table))
    parts: list[tuple[str, npt.NDArray[np.intp]]] = []
    types = table.change_types() if len(table) else np.zeros(0, object)
    if layer_per_type and any(t is not None for t in types):
        keys = np.array(["" if t is None else str(t) for t in types], dtype=object)
        for name in sorted(set(keys)):
            parts.append(
                (f"{layer}_{_layer_slug(name)}" if name else layer, np.flatnonzero(keys == name))
            )
    else:
        parts.append((layer, everything))

    with atomic_output(out) as tmp:
        # GDAL picks behaviour from the extension, so work on a file that keeps it and move it
        # onto atomic_output's temporary name once complete. It lives in a hidden directory
        # unique to this run: with a fixed name, the next run after a kill would reuse the
        # killed run's file and GDAL would add layers to it instead of starting a new one.
        scratch = Path(tempfile.mkdtemp(dir=tmp.parent, prefix=f".{out.name}."))
        work = scratch / f"partial{out.suffix}"
        try:
            if driver is None:
                table.to_frame().to_parquet(work, index=False, write_covering_bbox=True)
            else:
                if mode != "create" and out.exists():
                    shutil.copy2(out, work)
                for name, index in parts:
                    multi = table.is_multi(index)
                    if table.frame is not None:
                        append = mode == "append"
                        _write_layer(table.to_frame(index), work, name, driver, append, multi)
                        continue
                    # WKB tables: GeoPackage layers are written in chunks appended one after
                    # the other (bounded memory); single-layer formats in one call.
                    step = _WRITE_CHUNK if driver == "GPKG" else max(index.size, 1)
                    for first in range(0, max(index.size, 1), step):
                        rows = index[first : first + step]
                        append = mode == "append" if first == 0 else True
                        _write_wkb_layer(table, rows, work, name, driver, append, multi)
                if driver == "GPKG":
                    for name, _ in parts:
                        style_change_layer(work, name)
            os.replace(work, tmp)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return out


def style_change_layer(path: Path, layer: str) -> None:
    """Give a changes layer of a GeoPackage its default QGIS style: one category per type.

    The categories are the ``change_type`` values the layer holds once written (appended
    features included), each labelled with its type
    (:func:`geochange.io.style_change_types`).

    Args:
        path: the GeoPackage, written completely by OGR.
        layer: the changes layer.
    """
    style_change_types(path, layer)


def _write_wkb_layer(
    table: _Table,
    rows: npt.NDArray[np.intp],
    path: Path,
    name: str,
    driver: str,
    append: bool,
    multi: bool,
) -> None:
    """Write rows of a WKB table with pyogrio's raw writer (no shapely round trip)."""
    import pyogrio.raw
    import pyproj

    assert table.columns is not None and table.geometry is not None
    fields: list[str] = []
    data: list[Any] = []
    masks: list[Any] = []
    for column, dtype in SCHEMA.items():
        values = table.columns[column]
        if dtype == "object":
            array = np.empty(rows.size, dtype=object)
            array[:] = [values[i] for i in rows]
            masks.append(np.fromiter((v is None for v in array), dtype=np.bool_, count=rows.size))
        else:
            array = np.asarray(values)[rows]
            masks.append(np.isnan(array) if dtype == "Float64" else None)
            if dtype == "Float64":
                array = np.where(np.isnan(array), 0.0, array)
        fields.append(column)
        data.append(array)
    options = layer_creation_options(driver, table.crs, path)
    geometry = table.wkb(rows)
    pyogrio.raw.write(
        path,
        geometry,
        data,
        fields,
        field_mask=masks,
        layer=name,
        driver=driver,
        geometry_type="MultiPolygon" if multi else "Polygon",
        crs=pyproj.CRS.from_user_input(table.crs).to_wkt() if table.crs else None,
        promote_to_multi=multi,
        append=append and path.exists() and name in list_layers(path),
        **options,
    )


def _write_layer(frame: Any, path: Path, name: str, driver: str, append: bool, multi: bool) -> None:
    # Plain polygons stay polygons; any multipolygon (8-connectivity) promotes the layer.
    append = append and path.exists() and name in list_layers(path)
    write_polygon_layer(frame, path, name, driver, multi=multi, append=append)
