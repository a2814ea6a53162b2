"""The products of a prediction: file names, metadata tags, value encodings, and their protocol.

``geochange predict`` writes these rasters; the vectorizer, the evaluator, change-event
generation and the synthetic scenes read or write the same names and tags, so they are
defined here once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from geochange.classes import IGNORE_INDEX
from geochange.errors import DataError

__all__ = [
    "BAND_DESCRIPTIONS",
    "CHANGE_FILE",
    "CLASS_NAMES_TAG",
    "NODATA_U8",
    "PREDICTION_FILES",
    "PROBABILITY_FILE",
    "PROBABILITY_GDAL_OFFSET",
    "PROBABILITY_GDAL_SCALE",
    "PROBABILITY_SCALE",
    "PROBABILITY_SCALE_TAG",
    "PSEUDO_LABELS_TAG",
    "SEMANTIC_POST_FILE",
    "SEMANTIC_PRE_FILE",
    "TRANSITION_FILE",
    "TRANSITION_NAMES_TAG",
    "WRITER_NAME",
    "WRITER_TAG",
    "ChangeProducts",
    "read_class_names_tag",
    "transition_codes",
]

#: Change probability raster (uint8 ``round(p * 254)``, 255 nodata; or float32, NaN nodata).
PROBABILITY_FILE = "probability.tif"
#: Binary change raster (uint8 0 no change, 1 change, 255 nodata).
CHANGE_FILE = "change.tif"
#: Class ids of the first date (uint8, 255 nodata).
SEMANTIC_PRE_FILE = "semantic_pre.tif"
#: Class ids of the second date.
SEMANTIC_POST_FILE = "semantic_post.tif"
#: ``from * K + to`` class transitions of changed pixels.
TRANSITION_FILE = "transition.tif"
#: Product name -> file name of the rasters a prediction directory holds.
PREDICTION_FILES: dict[str, str] = {
    "probability": PROBABILITY_FILE,
    "change": CHANGE_FILE,
    "semantic_pre": SEMANTIC_PRE_FILE,
    "semantic_post": SEMANTIC_POST_FILE,
    "transition": TRANSITION_FILE,
}

#: Tag holding the JSON list of class names of a class raster, in id order
#: (``["no change", "change"]`` on a change raster).
CLASS_NAMES_TAG = "GEOCHANGE_CLASS_NAMES"
#: Tag of a transition raster: JSON object code -> ``"from -> to"``.
TRANSITION_NAMES_TAG = "GEOCHANGE_TRANSITION_NAMES"
#: Tag of a probability raster: the value that stands for p = 1 (``"254"`` in uint8, ``"1"``
#: in float32).
PROBABILITY_SCALE_TAG = "GEOCHANGE_PROBABILITY_SCALE"
#: uint8 probability rasters store ``round(p * 254)``; 255 is nodata.
PROBABILITY_SCALE = 254
#: GDAL scale of a uint8 probability raster: clients that apply scale and offset (QGIS, GDAL's
#: ``-unscale``, rioxarray's ``mask_and_scale``) read p in 0..1. geochange's own readers use
#: the raw values and :data:`PROBABILITY_SCALE_TAG`, never both.
PROBABILITY_GDAL_SCALE = 1.0 / PROBABILITY_SCALE
#: GDAL offset of a uint8 probability raster.
PROBABILITY_GDAL_OFFSET = 0.0
#: Tag naming the program that wrote an output; only such files are replaced without
#: ``overwrite``.
WRITER_TAG = "GEOCHANGE_WRITER"
#: Value of :data:`WRITER_TAG` on the rasters of ``geochange predict``.
WRITER_NAME = "geochange predict"
#: Tag marking the rasters written by change-event generation (pseudo labels).
PSEUDO_LABELS_TAG = "GEOCHANGE_PSEUDO_LABELS"
#: Nodata of the uint8 products (the ignore value).
NODATA_U8 = IGNORE_INDEX

#: Band description of each product, and of the synthetic label rasters and pseudo labels of
#: the same kind: the band name GIS clients show (GDAL's band description).
BAND_DESCRIPTIONS: dict[str, str] = {
    "probability": "change probability",
    "change": "change",
    "semantic_pre": "class, first date",
    "semantic_post": "class, second date",
    "transition": "class transition (from * K + to)",
    "pseudo_labels": "change (pseudo labels)",
}


def transition_codes(classes: int) -> tuple[int, int, str]:
    """``(nodata, unchanged, dtype)`` of the transition raster of ``classes`` classes.

    A changed pixel stores ``from * classes + to``; uint8 holds up to 15 classes (225 codes,
    254 unchanged, 255 nodata), more classes need uint16 (65534 unchanged, 65535 nodata).

    Args:
        classes: number of classes.

    Returns:
        The nodata value, the value of unchanged pixels and the numpy dtype name.
    """
    if classes * classes <= 253:
        return 255, 254, "uint8"
    return 65535, 65534, "uint16"


@runtime_checkable
class ChangeProducts(Protocol):
    """What the vectorizer and the evaluator read from a prediction.

    :class:`geochange.predict.PredictionResult` is one; any object with these attributes is
    accepted (missing rasters are None).
    """

    @property
    def change(self) -> Path | None:
        """The binary change raster."""

    @property
    def probability(self) -> Path | None:
        """The change probability raster, if written."""

    @property
    def semantic_pre(self) -> Path | None:
        """Class ids of the first date (semantic models)."""

    @property
    def semantic_post(self) -> Path | None:
        """Class ids of the second date (semantic models)."""

    @property
    def class_names(self) -> Sequence[str] | None:
        """Class names in id order (semantic models)."""


def read_class_names_tag(ds: Any, name: str | None = None) -> list[str] | None:
    """The :data:`CLASS_NAMES_TAG` of an open raster (on the dataset or its first band).

    Args:
        ds: an open rasterio dataset.
        name: the file named in messages (default ``ds.name``).

    Returns:
        The class names in id order, or None when the raster has no such tag.

    Raises:
        DataError: the tag is present but is not a JSON list of strings.
    """
    value = ds.tags().get(CLASS_NAMES_TAG) or ds.tags(1).get(CLASS_NAMES_TAG)
    if value is None:
        return None
    where = ds.name if name is None else name
    try:
        names = json.loads(value)
    except json.JSONDecodeError as err:
        raise DataError(f"{CLASS_NAMES_TAG} tag of {where!r} is not valid JSON: {err}") from err
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{CLASS_NAMES_TAG} tag of {where!r} is not a JSON list of names")
    return names
