"""Vector files: which formats geochange reads and writes, and writing polygon layers.

Inputs (reference polygons, vector labels) may be any of :data:`VECTOR_EXTENSIONS`; outputs
(vectorized changes, evaluation objects) any of :data:`VECTOR_OUTPUT_DRIVERS`, a subset:
Shapefiles are read but never written (10-character field names, 2 GB limit).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from geochange.errors import OutputError

__all__ = [
    "PARQUET_SUFFIXES",
    "VECTOR_EXTENSIONS",
    "VECTOR_OUTPUT_DRIVERS",
    "is_vector_path",
    "layer_creation_options",
    "list_layers",
    "polygon_layer",
    "write_polygon_layer",
]

#: Output file extension -> OGR driver (``None``: GeoParquet written through GeoPandas/pyarrow).
VECTOR_OUTPUT_DRIVERS: dict[str, str | None] = {
    ".gpkg": "GPKG",
    ".parquet": None,
    ".geoparquet": None,
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
}
#: Extensions of GeoParquet files (read with GeoPandas/pyarrow rather than OGR).
PARQUET_SUFFIXES: tuple[str, ...] = (".parquet", ".geoparquet")
#: Extensions read as vector inputs (anything else is taken for a raster).
VECTOR_EXTENSIONS: tuple[str, ...] = (*VECTOR_OUTPUT_DRIVERS, ".shp")


def is_vector_path(value: Any) -> bool:
    """Whether ``value`` is a path whose extension is one of :data:`VECTOR_EXTENSIONS`."""
    return isinstance(value, str | os.PathLike) and Path(value).suffix.lower() in VECTOR_EXTENSIONS


def list_layers(path: Path) -> set[str]:
    """Names of the layers of a vector file (empty when it does not exist or cannot be read)."""
    import pyogrio

    try:
        return {str(row[0]) for row in pyogrio.list_layers(path)}
    except Exception:
        return set()


def polygon_layer(path: Path) -> str | None:
    """The layer to read polygons from when none is named: the file's first feature layer.

    GeoPackages styled for QGIS (by geochange or by QGIS itself) also hold the non-spatial
    ``layer_styles`` table; reading "the" layer of such a file means its feature layer.

    Args:
        path: a vector file.

    Returns:
        The name of its first layer with a geometry when it also has non-spatial tables, else
        ``None`` (let the reader pick, as OGR does).
    """
    import pyogrio

    try:
        rows = pyogrio.list_layers(path)
    except Exception:
        return None
    spatial = [str(name) for name, geometry in rows if geometry is not None]
    return spatial[0] if spatial and len(spatial) < len(rows) else None


def layer_creation_options(driver: str, crs: Any, path: Path) -> dict[str, str]:
    """The OGR creation options geochange writes a polygon layer with.

    A spatial index for GeoPackage and FlatGeobuf; for GeoJSON, RFC 7946 (WGS84 longitude /
    latitude, no ``crs`` member: OGR reprojects on write), which needs a known CRS.

    Args:
        driver: OGR driver.
        crs: CRS of the polygons (``None``: unknown).
        path: the output, named in errors.

    Raises:
        OutputError: GeoJSON output of polygons without a CRS (they cannot be reprojected).
    """
    if driver in ("GPKG", "FlatGeobuf"):
        return {"SPATIAL_INDEX": "YES"}
    if driver == "GeoJSON":
        if crs is None:
            raise OutputError(
                f"cannot write {str(path)!r}: GeoJSON is WGS84 longitude/latitude (RFC 7946) "
                "and these polygons have no CRS to reproject from; give the raster a CRS or "
                "write .gpkg, .fgb or .parquet, which keep the input's coordinates"
            )
        return {"RFC7946": "YES"}
    return {}


def write_polygon_layer(
    frame: Any, path: Path, layer: str, driver: str, *, multi: bool, append: bool = False
) -> None:
    """Write a polygon GeoDataFrame as one layer of an OGR file, with a spatial index.

    Args:
        frame: the polygons.
        path: the file (created, or appended to).
        layer: layer name.
        driver: OGR driver (``"GPKG"``, ``"GeoJSON"``, ``"FlatGeobuf"``). GeoJSON is
            written in WGS84 (RFC 7946); the other formats keep the frame's CRS.
        multi: declare the layer MultiPolygon and promote polygons (any multipolygon in the
            frame needs it); otherwise plain polygons stay polygons.
        append: add to an existing layer of that name.

    Raises:
        OutputError: GeoJSON output of a frame without a CRS.
    """
    import pyogrio

    options = layer_creation_options(driver, frame.crs, path)
    pyogrio.write_dataframe(
        frame,
        path,
        layer=layer,
        driver=driver,
        geometry_type="MultiPolygon" if multi else "Polygon",
        promote_to_multi=multi,
        append=append,
        **options,
    )
