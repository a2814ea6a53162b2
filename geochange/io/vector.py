"""Vector files: which formats geochange reads and writes, and writing polygon layers.

Inputs (reference polygons, vector labels) may be any of :data:`VECTOR_EXTENSIONS`; outputs
(vectorized changes, evaluation objects) any of :data:`VECTOR_OUTPUT_DRIVERS`, a subset:
Shapefiles are read but never written (10-character field names, 2 GB limit).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = [
    "PARQUET_SUFFIXES",
    "VECTOR_EXTENSIONS",
    "VECTOR_OUTPUT_DRIVERS",
    "is_vector_path",
    "list_layers",
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


def write_polygon_layer(
    frame: Any, path: Path, layer: str, driver: str, *, multi: bool, append: bool = False
) -> None:
    """Write a polygon GeoDataFrame as one layer of an OGR file, with a spatial index.

    Args:
        frame: the polygons.
        path: the file (created, or appended to).
        layer: layer name.
        driver: OGR driver (``"GPKG"``, ``"GeoJSON"``, ``"FlatGeobuf"``).
        multi: declare the layer MultiPolygon and promote polygons (any multipolygon in the
            frame needs it); otherwise plain polygons stay polygons.
        append: add to an existing layer of that name.
    """
    import pyogrio

    options = {"SPATIAL_INDEX": "YES"} if driver in ("GPKG", "FlatGeobuf") else {}
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
