"""File, raster and vector I/O shared by every stage, and the contracts of their products.

- :mod:`geochange.io.files`: atomic outputs, named read/write errors, run locks.
- :mod:`geochange.io.raster`: opening and checking rasters (grids, bands, truncation), the
  change-mask convention, GDAL's block cache, tiled GeoTIFFs and COGs.
- :mod:`geochange.io.vector`: vector formats read and written, polygon layers.
- :mod:`geochange.io.vector_style`: default QGIS styles of GeoPackage layers (``layer_styles``).
- :mod:`geochange.io.products`: file names, tags and encodings of a prediction's rasters.
- :mod:`geochange.io.gis`: what GIS clients read beside a raster (category names, attribute
  table, colours with opacity, QGIS style).
- :mod:`geochange.io.memory`: keeping glibc's heap bounded in long-running readers.

Every name is also importable from ``geochange.io`` itself.
"""

from __future__ import annotations

from geochange.io import files, gis, memory, products, raster, vector, vector_style
from geochange.io.files import *  # noqa: F403
from geochange.io.gis import *  # noqa: F403
from geochange.io.memory import *  # noqa: F403
from geochange.io.products import *  # noqa: F403
from geochange.io.raster import *  # noqa: F403
from geochange.io.vector import *  # noqa: F403
from geochange.io.vector_style import *  # noqa: F403

# Each module lists its public names once; the package re-exports them all.
__all__ = [
    *files.__all__,
    *gis.__all__,
    *memory.__all__,
    *products.__all__,
    *raster.__all__,
    *vector.__all__,
    *vector_style.__all__,
]
