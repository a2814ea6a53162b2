"""Class names, ids and colours, and the ignore value: the one source every stage imports.

The LsSCD land-cover classes are what the synthetic scenes are drawn in and what semantic
models predict by default; one palette colours them in synthetic and predicted class rasters
alike, so the same class looks the same in a GIS.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BARE_LAND",
    "BUILDING",
    "CHANGE_CLASS_NAMES",
    "CHANGE_COLORS",
    "CHANGE_PALETTE",
    "CHANGE_TYPE_COLORS",
    "CLASS_COLORS",
    "CROPLAND",
    "IGNORE_INDEX",
    "LSSCD_CLASS_NAMES",
    "LSSCD_NUM_CLASSES",
    "OTHERS",
    "PROBABILITY_RAMP",
    "RGBA",
    "ROAD",
    "TREE",
    "WATER",
    "class_colours",
    "class_palette",
]

#: A colour with its opacity, ``(r, g, b, alpha)``, each 0..255 (alpha 0 is transparent).
RGBA = tuple[int, int, int, int]

#: The ignore value of every label and output raster: unlabeled, nodata or masked; neither
#: trained on nor scored.
IGNORE_INDEX = 255

#: LsSCD land-cover classes, in class-id order.
LSSCD_CLASS_NAMES: tuple[str, ...] = (
    "building",
    "road",
    "water",
    "bare land",
    "tree",
    "cropland",
    "others",
)
#: Number of LsSCD classes (the default of semantic change models).
LSSCD_NUM_CLASSES = len(LSSCD_CLASS_NAMES)
BUILDING, ROAD, WATER, BARE_LAND, TREE, CROPLAND, OTHERS = range(LSSCD_NUM_CLASSES)

#: Display colours of the LsSCD classes (id -> RGB): the colour table of synthetic and predicted
#: class rasters, and the colours of plotted class maps.
CLASS_COLORS: dict[int, tuple[int, int, int]] = {
    BUILDING: (230, 50, 50),
    ROAD: (140, 140, 140),
    WATER: (40, 100, 230),
    BARE_LAND: (205, 175, 120),
    TREE: (20, 120, 40),
    CROPLAND: (170, 225, 90),
    OTHERS: (235, 235, 200),
}

#: Class names of a binary change raster (0 no change, 1 change), as in its class-names tag.
CHANGE_CLASS_NAMES: tuple[str, str] = ("no change", "change")
#: Display colours of a binary change raster (value -> RGBA): "no change" is transparent, so a
#: change map laid over the imagery shows only the changes, in a magenta that no land-cover
#: class uses. Its RGB is white because QGIS draws a legend swatch at the layer's opacity, not
#: the entry's alpha: the swatch of "no change" then reads as empty instead of black.
CHANGE_PALETTE: dict[int, RGBA] = {0: (255, 255, 255, 0), 1: (255, 0, 255, 255)}
#: :data:`CHANGE_PALETTE` without the opacity (value -> RGB).
CHANGE_COLORS: dict[int, tuple[int, int, int]] = {
    value: (r, g, b) for value, (r, g, b, _) in CHANGE_PALETTE.items()
}
#: Colour ramp of a change probability raster: ``(p, RGBA)`` stops from p = 0 to p = 1
#: (matplotlib's "magma"), transparent at p = 0 so that low probabilities fade into the imagery.
PROBABILITY_RAMP: tuple[tuple[float, RGBA], ...] = (
    (0.0, (0, 0, 4, 0)),
    (0.25, (81, 18, 124, 255)),
    (0.5, (183, 55, 121, 255)),
    (0.75, (252, 137, 97, 255)),
    (1.0, (252, 253, 191, 255)),
)


def class_colours(count: int) -> list[tuple[int, int, int]]:
    """Distinct RGB colours for ``count`` classes: :data:`CLASS_COLORS` first, then generated.

    Args:
        count: number of classes.

    Returns:
        One ``(r, g, b)`` per class id; ids beyond the LsSCD set get fixed pseudo-random colours.
    """
    colours = [CLASS_COLORS[i] for i in range(min(count, len(CLASS_COLORS)))]
    rng = np.random.default_rng(0)
    while len(colours) < count:
        r, g, b = (int(v) for v in rng.integers(0, 256, size=3))
        colours.append((r, g, b))
    return colours


def class_palette(count: int) -> dict[int, RGBA]:
    """The colour table of a class raster of ``count`` classes (id -> opaque RGBA).

    Synthetic, predicted and plotted class maps all take their colours from here (through
    :func:`class_colours`), so one class has one colour everywhere.

    Args:
        count: number of classes.

    Returns:
        Class id -> ``(r, g, b, 255)``.
    """
    return {i: (r, g, b, 255) for i, (r, g, b) in enumerate(class_colours(count))}


#: Colours of change polygons by change type (RGB), used by the default QGIS style of a changes
#: GeoPackage: binary ``"change"`` as in the change raster, new buildings in the building
#: colour, demolished buildings in a colour of their own; a ``"from → to"`` type takes the
#: colour of its to-class (:data:`CLASS_COLORS`).
CHANGE_TYPE_COLORS: dict[str, tuple[int, int, int]] = {
    CHANGE_CLASS_NAMES[1]: CHANGE_COLORS[1],
    "new building": CLASS_COLORS[BUILDING],
    "demolished building": (150, 60, 200),
}
