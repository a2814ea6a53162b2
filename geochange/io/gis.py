"""What GIS clients read beside a raster: category names, attribute table, colours, QGIS style.

Inside a COG, GDAL keeps a band's description, its scale and offset (the ``GDAL_METADATA``
TIFF tag) and an RGB colour table; it keeps no category names, no raster attribute table
(RAT) and no opacity in the colour table. Those go to the raster's PAM sidecar
``<name>.tif.aux.xml``, which GDAL reads whenever it opens the raster, and with it QGIS,
ArcGIS, rasterio and ``gdalinfo``. A QGIS style ``<name>.qml`` beside the raster is the layer's
default style in QGIS (a paletted renderer with the class names and colours, or a colour ramp
for a probability). Both are written atomically, once the raster itself is complete.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from geochange.classes import (
    CHANGE_CLASS_NAMES,
    CHANGE_PALETTE,
    PROBABILITY_RAMP,
    RGBA,
    class_palette,
)
from geochange.io.files import atomic_output, write_errors
from geochange.io.products import transition_codes

__all__ = [
    "PAM_SUFFIX",
    "QML_SUFFIX",
    "Category",
    "change_categories",
    "class_categories",
    "paletted_qml",
    "pam_xml",
    "probability_qml",
    "sidecar_paths",
    "transition_categories",
    "write_style_sidecars",
]

#: Suffix GDAL appends to a raster's name for its PAM sidecar (``change.tif.aux.xml``).
PAM_SUFFIX = ".aux.xml"
#: Suffix that replaces a raster's extension for its QGIS style (``change.qml``).
QML_SUFFIX = ".qml"
#: The QGIS version whose style format the ``.qml`` files follow (QGIS 3 reads it).
_QGIS_VERSION = "3.28.0-Firenze"
# GDAL's RAT field types and usages (GDALRATFieldType, GDALRATFieldUsage).
_GFT_INTEGER, _GFT_STRING = 0, 2
_GFU_NAME, _GFU_MINMAX, _GFU_RED, _GFU_GREEN, _GFU_BLUE, _GFU_ALPHA = 2, 5, 6, 7, 8, 9


@dataclass(frozen=True)
class Category:
    """One value of a class raster as GIS clients show it.

    Attributes:
        value: the pixel value.
        name: the class name.
        rgba: its colour and opacity.
    """

    value: int
    name: str
    rgba: RGBA


def change_categories() -> list[Category]:
    """The categories of a binary change raster (0 no change, transparent; 1 change)."""
    return [Category(v, CHANGE_CLASS_NAMES[v], CHANGE_PALETTE[v]) for v in sorted(CHANGE_PALETTE)]


def class_categories(names: Sequence[str]) -> list[Category]:
    """The categories of a class raster with ``names`` in id order (colours of classes.py)."""
    palette = class_palette(len(names))
    return [Category(i, name, palette[i]) for i, name in enumerate(names)]


def transition_categories(names: Sequence[str]) -> list[Category]:
    """The categories of a transition raster: ``"from -> to"`` per code, and "no change".

    A transition takes the colour of its destination class; unchanged pixels are transparent,
    as in a change raster.
    """
    classes = len(names)
    palette = class_palette(classes)
    _, unchanged, _ = transition_codes(classes)
    categories = [
        Category(a * classes + b, f"{names[a]} -> {names[b]}", palette[b])
        for a in range(classes)
        for b in range(classes)
    ]
    categories.append(Category(unchanged, CHANGE_CLASS_NAMES[0], CHANGE_PALETTE[0]))
    return categories


def sidecar_paths(raster: str | os.PathLike[str]) -> list[Path]:
    """The PAM sidecar and the QGIS style of ``raster`` (``x.tif.aux.xml``, ``x.qml``)."""
    path = Path(raster)
    return [path.with_name(path.name + PAM_SUFFIX), path.with_suffix(QML_SUFFIX)]


def _hex(rgba: RGBA) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgba[:3])


def pam_xml(categories: Sequence[Category]) -> str:
    """The PAM sidecar of a one-band class raster: category names, colour table and RAT.

    Category names and the colour table are indexed by pixel value, so they are written only
    when every value is below 256 (uint8 rasters); the RAT lists the categories alone and is
    always written.

    Args:
        categories: the raster's values with their names and colours.

    Returns:
        The XML text of ``<raster>.aux.xml``.
    """
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    by_value = {c.value: c for c in categories}
    if by_value and max(by_value) < 256:
        names = ET.SubElement(band, "CategoryNames")
        for value in range(max(by_value) + 1):
            known = by_value.get(value)
            ET.SubElement(names, "Category").text = known.name if known is not None else ""
        ET.SubElement(band, "ColorInterp").text = "Palette"
        table = ET.SubElement(band, "ColorTable")
        for value in range(256):  # values without a class (nodata) are transparent
            r, g, b, a = by_value[value].rgba if value in by_value else (0, 0, 0, 0)
            ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    fields = [
        ("value", _GFT_INTEGER, _GFU_MINMAX),
        ("class", _GFT_STRING, _GFU_NAME),
        ("red", _GFT_INTEGER, _GFU_RED),
        ("green", _GFT_INTEGER, _GFU_GREEN),
        ("blue", _GFT_INTEGER, _GFU_BLUE),
        ("alpha", _GFT_INTEGER, _GFU_ALPHA),
    ]
    for index, (name, kind, usage) in enumerate(fields):
        field = ET.SubElement(rat, "FieldDefn", index=str(index))
        ET.SubElement(field, "Name").text = name
        ET.SubElement(field, "Type").text = str(kind)
        ET.SubElement(field, "Usage").text = str(usage)
    for row_index, category in enumerate(sorted(categories, key=lambda c: c.value)):
        row = ET.SubElement(rat, "Row", index=str(row_index))
        for cell in (category.value, category.name, *category.rgba):
            ET.SubElement(row, "F").text = str(cell)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _qgis_document(renderer: ET.Element) -> str:
    """A QGIS 3 raster style (``<qgis>`` root, ``<pipe>``) around ``renderer``."""
    root = ET.Element(
        "qgis",
        version=_QGIS_VERSION,
        styleCategories="AllStyleCategories",
        hasScaleBasedVisibilityFlag="0",
        minScale="1e+08",
        maxScale="0",
    )
    pipe = ET.SubElement(root, "pipe")
    provider = ET.SubElement(pipe, "provider")
    # Class ids must not be interpolated when zooming.
    ET.SubElement(
        provider,
        "resampling",
        enabled="false",
        maxOversampling="2",
        zoomedInResamplingMethod="nearestNeighbour",
        zoomedOutResamplingMethod="nearestNeighbour",
    )
    pipe.append(renderer)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(
        pipe, "huesaturation", saturation="0", grayscaleMode="0", invertColors="0",
        colorizeOn="0", colorizeRed="255", colorizeGreen="128", colorizeBlue="128",
        colorizeStrength="100",
    )  # fmt: skip
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    doctype = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
    return doctype + "\n" + ET.tostring(root, encoding="unicode") + "\n"


def _renderer(kind: str, **attributes: str) -> ET.Element:
    renderer = ET.Element("rasterrenderer")
    renderer.attrib.update(
        type=kind, band="1", opacity="1", alphaBand="-1", nodataColor="", **attributes
    )
    ET.SubElement(renderer, "rasterTransparency")
    origin = ET.SubElement(renderer, "minMaxOrigin")
    for tag, text in (
        ("limits", "None"),
        ("extent", "WholeRaster"),
        ("statAccuracy", "Estimated"),
        ("cumulativeCutLower", "0.02"),
        ("cumulativeCutUpper", "0.98"),
        ("stdDevFactor", "2"),
    ):
        ET.SubElement(origin, tag).text = text
    return renderer


def paletted_qml(categories: Sequence[Category]) -> str:
    """A QGIS style of a class raster: a paletted renderer with the class names and colours.

    Args:
        categories: the raster's values with their names and colours.

    Returns:
        The XML text of ``<raster>.qml``.
    """
    renderer = _renderer("paletted")
    palette = ET.SubElement(renderer, "colorPalette")
    for c in sorted(categories, key=lambda c: c.value):
        ET.SubElement(
            palette,
            "paletteEntry",
            value=str(c.value),
            color=_hex(c.rgba),
            alpha=str(c.rgba[3]),
            label=c.name,
        )
    return _qgis_document(renderer)


def probability_qml() -> str:
    """A QGIS style of a change probability raster: the colour ramp of classes.py over 0..1.

    QGIS applies the raster's scale and offset, so the ramp spans p = 0..1 for uint8 and
    float32 probability rasters alike.
    """
    renderer = _renderer("singlebandpseudocolor", classificationMin="0", classificationMax="1")
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader")
    shader.attrib.update(
        colorRampType="INTERPOLATED", classificationMode="1", clip="0",
        minimumValue="0", maximumValue="1", labelPrecision="2",
    )  # fmt: skip
    ramp = ET.SubElement(shader, "colorramp", type="gradient", name="[source]")
    options = ET.SubElement(ramp, "Option", type="Map")
    (_, first), *middle, (_, last) = PROBABILITY_RAMP
    stops = ":".join(f"{p:g};{','.join(map(str, rgba))}" for p, rgba in middle)
    for name, value in (
        ("color1", ",".join(map(str, first))),
        ("color2", ",".join(map(str, last))),
        ("discrete", "0"),
        ("rampType", "gradient"),
        ("stops", stops),
    ):
        ET.SubElement(options, "Option", type="QString", name=name, value=value)
    for p, rgba in PROBABILITY_RAMP:
        ET.SubElement(
            shader, "item", value=f"{p:g}", color=_hex(rgba), alpha=str(rgba[3]), label=f"{p:.2f}"
        )
    return _qgis_document(renderer)


def _write_text(path: Path, text: str) -> None:
    with write_errors(path), atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_style_sidecars(
    raster: str | os.PathLike[str], categories: Sequence[Category] | None = None
) -> list[Path]:
    """Write what GIS clients read beside ``raster``, each file atomically.

    A class raster (``categories`` given) gets its PAM sidecar (:func:`pam_xml`) and a paletted
    QGIS style; a probability raster (``categories=None``) gets the colour-ramp style, and a
    PAM sidecar left from the raster it replaced (its statistics, say) is removed.

    Args:
        raster: the raster, already complete at its final path.
        categories: the raster's classes; None for a change probability raster.

    Returns:
        The files written.

    Raises:
        OutputError: a file cannot be written.
    """
    pam, qml = sidecar_paths(raster)
    if categories is None:
        with write_errors(pam):
            pam.unlink(missing_ok=True)
        _write_text(qml, probability_qml())
        return [qml]
    _write_text(pam, pam_xml(categories))
    _write_text(qml, paletted_qml(categories))
    return [pam, qml]
