"""Whole-scene sliding-window change prediction.

:class:`ChangePredictor` turns a change-detection model into seamless, georeferenced
Cloud-Optimized GeoTIFF maps of whole scene pairs with bounded memory; see ``docs/prediction.md``.
The modules, in the order a prediction runs through them: ``predictor`` (the entry point),
``run`` (one file-to-file run), ``reader`` (tiles of a raster pair), ``inference`` (the
model), ``tiles``, ``windows`` (tile grid and weights), ``blend``, ``outputs`` (decoding and
product specs), ``writer`` (COGs), ``distributed`` (Dask and xarray), ``result``.
"""

from __future__ import annotations

from geochange.predict.predictor import ChangePredictor, PredictionResult
from geochange.predict.windows import (
    ColumnStripe,
    TileGrid,
    axis_weights,
    column_stripes,
    tile_starts,
)

__all__ = [
    "ChangePredictor",
    "ColumnStripe",
    "PredictionResult",
    "TileGrid",
    "axis_weights",
    "column_stripes",
    "tile_starts",
]
