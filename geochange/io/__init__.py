"""File, raster and vector I/O shared by every stage, and the contracts of their products.

- :mod:`geochange.io.files`: atomic outputs, named read/write errors, run locks.
- :mod:`geochange.io.raster`: opening and checking rasters (grids, bands, truncation), the
  change-mask convention, GDAL's block cache, tiled GeoTIFFs and COGs.
- :mod:`geochange.io.vector`: vector formats read and written, polygon layers.
- :mod:`geochange.io.products`: file names, tags and encodings of a prediction's rasters.
- :mod:`geochange.io.memory`: keeping glibc's heap bounded in long-running readers.

Every name is also importable from ``geochange.io`` itself.
"""

from __future__ import annotations

from geochange.io.files import (
    DISK_FULL_FREE_BYTES,
    atomic_output,
    check_not_inputs,
    check_writable_dir,
    describe_window,
    error_detail,
    exclusive_lock,
    file_identity,
    output_error,
    partial_path,
    read_errors,
    write_errors,
)
from geochange.io.memory import (
    bound_malloc_growth,
    model_buffers_on_heap,
    trim_heap,
    worker_init_bound_malloc,
)
from geochange.io.products import (
    CHANGE_FILE,
    CLASS_NAMES_TAG,
    NODATA_U8,
    PREDICTION_FILES,
    PROBABILITY_FILE,
    PROBABILITY_SCALE,
    PROBABILITY_SCALE_TAG,
    PSEUDO_LABELS_TAG,
    SEMANTIC_POST_FILE,
    SEMANTIC_PRE_FILE,
    TRANSITION_FILE,
    TRANSITION_NAMES_TAG,
    WRITER_NAME,
    WRITER_TAG,
    ChangeProducts,
    read_class_names_tag,
)
from geochange.io.raster import (
    DEFAULT_GDAL_CACHE_BYTES,
    MASK_CHANGE,
    MASK_IGNORE,
    MASK_NO_CHANGE,
    MASK_VALUES,
    TILED_GTIFF_OPTIONS,
    ChangeMask,
    band_indexes,
    build_cog,
    check_change_mask,
    check_raster_complete,
    finalize_cog,
    gdal_cache,
    grid_mismatch,
    nonfinite_pixels,
    open_raster,
    overview_factors,
    set_process_gdal_cache,
)
from geochange.io.vector import (
    PARQUET_SUFFIXES,
    VECTOR_EXTENSIONS,
    VECTOR_OUTPUT_DRIVERS,
    is_vector_path,
    list_layers,
    write_polygon_layer,
)

__all__ = [
    "CHANGE_FILE",
    "CLASS_NAMES_TAG",
    "DEFAULT_GDAL_CACHE_BYTES",
    "DISK_FULL_FREE_BYTES",
    "MASK_CHANGE",
    "MASK_IGNORE",
    "MASK_NO_CHANGE",
    "MASK_VALUES",
    "NODATA_U8",
    "PARQUET_SUFFIXES",
    "PREDICTION_FILES",
    "PROBABILITY_FILE",
    "PROBABILITY_SCALE",
    "PROBABILITY_SCALE_TAG",
    "PSEUDO_LABELS_TAG",
    "SEMANTIC_POST_FILE",
    "SEMANTIC_PRE_FILE",
    "TILED_GTIFF_OPTIONS",
    "TRANSITION_FILE",
    "TRANSITION_NAMES_TAG",
    "VECTOR_EXTENSIONS",
    "VECTOR_OUTPUT_DRIVERS",
    "WRITER_NAME",
    "WRITER_TAG",
    "ChangeMask",
    "ChangeProducts",
    "atomic_output",
    "band_indexes",
    "bound_malloc_growth",
    "build_cog",
    "check_change_mask",
    "check_not_inputs",
    "check_raster_complete",
    "check_writable_dir",
    "describe_window",
    "error_detail",
    "exclusive_lock",
    "file_identity",
    "finalize_cog",
    "gdal_cache",
    "grid_mismatch",
    "is_vector_path",
    "list_layers",
    "model_buffers_on_heap",
    "nonfinite_pixels",
    "open_raster",
    "output_error",
    "overview_factors",
    "partial_path",
    "read_class_names_tag",
    "read_errors",
    "set_process_gdal_cache",
    "trim_heap",
    "worker_init_bound_malloc",
    "write_errors",
    "write_polygon_layer",
]
