"""What a change polygon carries: output fields, change codes and change-type names, measures."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import shapely
import shapely.affinity

from geochange.classes import CHANGE_CLASS_NAMES

# Moved to geochange.io (synthetic scenes style their GeoPackages too); re-exported.
from geochange.io.vector_style import change_type_categories as change_type_categories

#: Name of the class whose appearance/disappearance gets the "new/demolished building" types.
BUILDING_CLASS = "building"
#: ``change_type`` of a change polygon whose classes are unknown (a binary change model).
BINARY_CHANGE_TYPE = CHANGE_CLASS_NAMES[1]
#: The area field of predicted and reference polygons alike (square metres, or square map
#: units in a CRS without linear units). Reference files written before it was unified called
#: it ``area``; evaluation layers write it as ``area_m2``.
AREA_FIELD = "area_m2"
#: Former names of :data:`AREA_FIELD`, renamed on reading.
AREA_FIELD_OLD_NAMES: tuple[str, ...] = ("area",)

# Change codes used in the per-pixel code raster (0 = no change).
_CODE_CHANGE = 1  # binary change, or "new building" in change-type mode
_CODE_DEMOLISHED = 2
_FIRST_TRANSITION_CODE = 3

Regularize = Literal["rectangle", "orthogonal"]
GroupBy = Literal["change_type", "change"]
WriteMode = Literal["create", "overwrite", "append"]
Parallel = Literal["processes", "threads"]

#: Columns of the output table, in order, with their pandas dtypes.
SCHEMA: dict[str, str] = {
    "change_id": "int64",
    AREA_FIELD: "float64",
    "perimeter_m": "float64",
    "pixel_count": "int64",
    "mean_prob": "Float64",
    "max_prob": "Float64",
    "from_class": "object",
    "to_class": "object",
    "change_type": "object",
}


def change_type_name(
    from_class: str | None, to_class: str | None, building: str = BUILDING_CLASS
) -> str | None:
    """Name a change: "new building", "demolished building", otherwise "from → to".

    Args:
        from_class: class before (``None`` when unknown).
        to_class: class after (``None`` when unknown).
        building: name of the building class.

    Returns:
        The change type, or ``None`` when both classes are unknown (the vectorizer then
        writes :data:`BINARY_CHANGE_TYPE`).
    """
    if from_class is None and to_class is None:
        return None
    if to_class == building and from_class != building:
        return f"new {building}"
    if from_class == building and to_class != building:
        return f"demolished {building}"
    return f"{from_class or 'unknown'} → {to_class or 'unknown'}"


def _metric_measures(
    geometry: npt.NDArray[np.object_], crs: Any
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Area (m²) and perimeter (m): geodesic for geographic CRSs, scaled planar otherwise."""
    if crs is not None and crs.is_geographic:
        import pyproj

        geod = pyproj.CRS.from_user_input(crs.to_wkt()).get_geod()
        assert geod is not None
        measures = [geod.geometry_area_perimeter(g) for g in geometry]
        area = np.array([abs(m[0]) for m in measures], np.float64)
        perimeter = np.array([m[1] for m in measures], np.float64)
        return area, perimeter
    factor = 1.0
    if crs is not None:
        try:
            factor = float(crs.linear_units_factor[1])
        except Exception:  # CRS without linear units: keep map units
            factor = 1.0
    area = shapely.area(geometry) * factor * factor
    perimeter = shapely.length(geometry) * factor
    return np.asarray(area, np.float64), np.asarray(perimeter, np.float64)
