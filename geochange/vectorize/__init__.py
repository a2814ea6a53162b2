"""Block-wise vectorization of change rasters into change polygons (GeoPackage, GeoParquet, ...).

A 48000 x 32500 change mask cannot be polygonized in one piece without holding several GB of
labels and geometries, so :func:`vectorize_changes` works block by block:

1. Every block (``block_size`` pixels square) is read on its own, its changed pixels are given a
   *change code* (1 for binary change; with semantic rasters, one code per change type) and
   connected regions of equal code are labelled. GDAL's polygonizer
   (:func:`rasterio.features.shapes`) turns the labels into polygons in integer pixel
   coordinates, and per-label statistics (pixel count, probability sum/max, class histograms)
   are computed with ``numpy.bincount``. Blocks run in a process pool (both cores).
2. Labels on the two sides of every block seam are linked where the pixels are neighbours
   (4- or 8-connectivity) and carry the same code; ``scipy.sparse.csgraph.connected_components``
   groups the pieces of every object that crosses seams.
3. Pieces of the same object are unioned. Because all coordinates are integer pixel corners
   the union is exact, so the result is identical to polygonizing the whole raster at once:
   same polygons, holes and areas (pixel count x pixel area). Objects that touch no seam are
   used as they come out of their block.
4. Geometries are mapped to the raster's CRS with its affine transform, filtered, optionally
   simplified/regularized, given attributes and written atomically with pyogrio (GeoPackage,
   FlatGeobuf, GeoJSON) or GeoParquet.

Memory is bounded by the block size (each worker holds one block) plus the output polygons.

Where each step lives: :mod:`~geochange.vectorize.inputs` (1, checks), :mod:`~.blocks` (1),
:mod:`~.merge` (2, 3), :mod:`~.geometry` and :mod:`~.schema` (4), :mod:`~.writer` (4, output)
and :mod:`~.vectorizer` (the phases in order).
"""

from __future__ import annotations

# CLASS_NAMES_TAG is re-exported: the tag name was defined here before geochange.io.products.
from geochange.io.products import CLASS_NAMES_TAG as CLASS_NAMES_TAG
from geochange.vectorize.geometry import regularize_polygon
from geochange.vectorize.inputs import read_class_names
from geochange.vectorize.schema import BUILDING_CLASS, change_type_name

# Public before the split (not in __all__): the output table's columns and the option types.
from geochange.vectorize.schema import SCHEMA as SCHEMA
from geochange.vectorize.schema import GroupBy as GroupBy
from geochange.vectorize.schema import Parallel as Parallel
from geochange.vectorize.schema import Regularize as Regularize
from geochange.vectorize.schema import WriteMode as WriteMode
from geochange.vectorize.vectorizer import vectorize_changes
from geochange.vectorize.writer import OUTPUT_DRIVERS, check_vector_output, write_changes

__all__ = [
    "BUILDING_CLASS",
    "OUTPUT_DRIVERS",
    "change_type_name",
    "check_vector_output",
    "read_class_names",
    "regularize_polygon",
    "vectorize_changes",
    "write_changes",
]
