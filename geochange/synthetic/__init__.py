"""Deterministic synthetic georeferenced bi-temporal scenes (:func:`make_scene`, :class:`Scene`).

The package is split by concept: :mod:`~geochange.synthetic.noise` (hash-based randomness and
noise fields), :mod:`~geochange.synthetic.layout` (the scene model: parcels, water, roads,
buildings), :mod:`~geochange.synthetic.render` (labels and images of one block),
:mod:`~geochange.synthetic.scene` (the :class:`Scene` on disk) and
:mod:`~geochange.synthetic.generate` (:func:`make_scene`, block by block, in worker processes).
"""

from geochange.synthetic.generate import (
    BARE_LAND,
    BUILDING,
    CELL,
    CHANGE_CLASS_NAMES,
    CLASS_COLORS,
    CLASS_NAMES,
    CROPLAND,
    DEFAULT_BLOCK_SIZE,
    FORMAT_VERSION,
    IGNORE_INDEX,
    LABEL_NODATA,
    LSSCD_CLASS_NAMES,
    MANIFEST_NAME,
    OTHERS,
    ROAD,
    TREE,
    WATER,
    Scene,
    make_scene,
)

# Every public name of the old geochange/synthetic.py module, class constants included.
__all__ = [
    "BARE_LAND",
    "BUILDING",
    "CELL",
    "CHANGE_CLASS_NAMES",
    "CLASS_COLORS",
    "CLASS_NAMES",
    "CROPLAND",
    "DEFAULT_BLOCK_SIZE",
    "FORMAT_VERSION",
    "IGNORE_INDEX",
    "LABEL_NODATA",
    "LSSCD_CLASS_NAMES",
    "MANIFEST_NAME",
    "OTHERS",
    "ROAD",
    "TREE",
    "WATER",
    "Scene",
    "make_scene",
]
