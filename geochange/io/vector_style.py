"""Default QGIS styles of GeoPackage layers: a categorized QML (and SLD) in ``layer_styles``.

QGIS keeps the styles of a GeoPackage's layers in a ``layer_styles`` table it creates itself;
the row with ``useAsDefault`` set is applied when the layer is opened. geochange writes that
table with :mod:`sqlite3` into a GeoPackage that OGR has finished writing (and before it is
renamed into place), and registers it in ``gpkg_contents`` as an attributes table so the file
stays a valid GeoPackage that GDAL, pyogrio and Fiona still list layer by layer.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from geochange.classes import CHANGE_TYPE_COLORS, CLASS_COLORS, LSSCD_CLASS_NAMES
from geochange.errors import OutputError

__all__ = [
    "LAYER_STYLES_TABLE",
    "StyleCategory",
    "categorized_qml",
    "categorized_sld",
    "change_type_categories",
    "distinct_values",
    "style_change_types",
    "write_layer_style",
]

#: Name of the table QGIS reads layer styles from.
LAYER_STYLES_TABLE = "layer_styles"

# The table as QGIS creates it (same columns and types), so QGIS adds its own rows to it.
_CREATE_LAYER_STYLES = f"""
CREATE TABLE IF NOT EXISTS {LAYER_STYLES_TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    f_table_catalog TEXT(256),
    f_table_schema TEXT(256),
    f_table_name TEXT(256),
    f_geometry_column TEXT(256),
    styleName TEXT(30),
    styleQML TEXT,
    styleSLD TEXT,
    useAsDefault BOOLEAN,
    description TEXT,
    owner TEXT(30),
    ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


@dataclass(frozen=True)
class StyleCategory:
    """One class of a categorized style: the attribute value, its legend label, its colour.

    Attributes:
        value: the attribute value the category matches (``None`` matches NULL).
        label: the legend label QGIS shows.
        color: fill colour ``(r, g, b)``; the outline is the same colour, opaque.
    """

    value: str | None
    label: str
    color: tuple[int, int, int]


def _rgba(color: tuple[int, int, int], alpha: int) -> str:
    return ",".join(str(int(c)) for c in (*color, alpha))


def _fill_symbol(name: str, color: tuple[int, int, int]) -> str:
    """A QGIS simple-fill symbol: half-transparent fill, opaque outline of the same colour."""
    props = {
        "color": _rgba(color, 128),
        "outline_color": _rgba(color, 255),
        "outline_style": "solid",
        "outline_width": "0.5",
        "outline_width_unit": "MM",
        "style": "solid",
        "joinstyle": "miter",
    }
    # QGIS >= 3.26 reads the <Option> map, older 3.x the <prop> list: write both, as QGIS
    # itself did while the two coexisted.
    options = "".join(
        f'<Option name={quoteattr(k)} type="QString" value={quoteattr(v)}/>'
        for k, v in props.items()
    )
    legacy = "".join(f"<prop k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in props.items())
    return (
        f'<symbol type="fill" name={quoteattr(name)} alpha="1" clip_to_extent="1" '
        'force_rhr="0"><layer class="SimpleFill" enabled="1" locked="0" pass="0">'
        f'<Option type="Map">{options}</Option>{legacy}</layer></symbol>'
    )


def categorized_qml(field: str, categories: Sequence[StyleCategory]) -> str:
    """A QGIS style (QML) colouring polygons by the value of ``field``, one legend entry each.

    Args:
        field: the attribute the categories are read from (e.g. ``"change_type"``).
        categories: the categories, in legend order.

    Returns:
        The QML document (a QGIS ``categorizedSymbol`` renderer for a polygon layer).
    """
    entries = "".join(
        f'<category symbol="{i}" value={quoteattr("" if c.value is None else c.value)} '
        f'label={quoteattr(c.label)} render="true"/>'
        for i, c in enumerate(categories)
    )
    symbols = "".join(_fill_symbol(str(i), c.color) for i, c in enumerate(categories))
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="Symbology">'
        f'<renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" '
        'enableorderby="0" forceraster="0" referencescale="-1">'
        f"<categories>{entries}</categories><symbols>{symbols}</symbols>"
        f"<source-symbol>{_fill_symbol('0', (128, 128, 128))}</source-symbol>"
        "</renderer-v2><blendMode>0</blendMode><featureBlendMode>0</featureBlendMode>"
        "<layerGeometryType>2</layerGeometryType></qgis>\n"
    )


def categorized_sld(layer: str, field: str, categories: Sequence[StyleCategory]) -> str:
    """The same style as :func:`categorized_qml` as an OGC SLD 1.1 document (other clients).

    Args:
        layer: the layer name.
        field: the attribute the categories are read from.
        categories: the categories.

    Returns:
        The SLD document, one rule per category.
    """

    def rule(c: StyleCategory) -> str:
        hex_colour = "#{:02x}{:02x}{:02x}".format(*c.color)
        test = (
            f"<ogc:PropertyIsNull><ogc:PropertyName>{field}</ogc:PropertyName></ogc:PropertyIsNull>"
            if c.value is None
            else f"<ogc:PropertyIsEqualTo><ogc:PropertyName>{field}</ogc:PropertyName>"
            f"<ogc:Literal>{_text(c.value)}</ogc:Literal></ogc:PropertyIsEqualTo>"
        )
        return (
            f"<se:Rule><se:Name>{_text(c.label)}</se:Name><se:Description><se:Title>"
            f"{_text(c.label)}</se:Title></se:Description><ogc:Filter>{test}</ogc:Filter>"
            '<se:PolygonSymbolizer><se:Fill><se:SvgParameter name="fill">'
            f'{hex_colour}</se:SvgParameter><se:SvgParameter name="fill-opacity">0.5'
            '</se:SvgParameter></se:Fill><se:Stroke><se:SvgParameter name="stroke">'
            f"{hex_colour}</se:SvgParameter></se:Stroke></se:PolygonSymbolizer></se:Rule>"
        )

    rules = "".join(rule(c) for c in categories)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<StyledLayerDescriptor version="1.1.0" xmlns="http://www.opengis.net/sld" '
        'xmlns:se="http://www.opengis.net/se" xmlns:ogc="http://www.opengis.net/ogc">'
        f"<NamedLayer><se:Name>{_text(layer)}</se:Name><UserStyle><se:Name>{_text(layer)}"
        f"</se:Name><se:FeatureTypeStyle>{rules}</se:FeatureTypeStyle></UserStyle>"
        "</NamedLayer></StyledLayerDescriptor>\n"
    )


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _quote(name: str) -> str:
    """An SQL identifier in double quotes (layer names may hold any character)."""
    return '"' + name.replace('"', '""') + '"'


def distinct_values(path: Path, layer: str, field: str) -> list[str | None]:
    """The distinct values of ``field`` in a GeoPackage layer, sorted (``None`` last).

    Args:
        path: the GeoPackage.
        layer: the layer (table) name.
        field: the attribute.

    Returns:
        The values present in the layer.
    """
    with sqlite3.connect(path) as db:
        rows = db.execute(f"SELECT DISTINCT {_quote(field)} FROM {_quote(layer)}").fetchall()
    db.close()
    values = [r[0] for r in rows]
    return sorted(v for v in values if v is not None) + ([None] if None in values else [])


def write_layer_style(
    path: Path,
    layer: str,
    field: str,
    categories: Sequence[StyleCategory],
    *,
    description: str,
) -> None:
    """Make a categorized style the default QGIS style of a GeoPackage layer.

    Creates ``layer_styles`` if needed (registered in ``gpkg_contents`` as an attributes
    table) and replaces the layer's default style; other styles, e.g. ones saved from QGIS,
    stay but are no longer the default.

    Args:
        path: a GeoPackage that OGR has finished writing (not yet renamed into place).
        layer: the feature layer to style.
        field: the attribute the categories are read from.
        categories: the categories, in legend order.
        description: the style's description (shown in QGIS's style manager).

    Raises:
        OutputError: ``path`` has no such feature layer.
    """
    qml = categorized_qml(field, categories)
    sld = categorized_sld(layer, field, categories)
    with sqlite3.connect(path) as db:
        row = db.execute(
            "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)
        ).fetchone()
        if row is None:
            raise OutputError(f"GeoPackage {str(path)!r} has no feature layer {layer!r} to style")
        db.execute(_CREATE_LAYER_STYLES)
        db.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, "
            f"description, last_change) VALUES (?, 'attributes', ?, ?, {_NOW})",
            (LAYER_STYLES_TABLE, LAYER_STYLES_TABLE, "QGIS layer styles"),
        )
        db.execute(
            f"UPDATE {LAYER_STYLES_TABLE} SET useAsDefault = 0 WHERE f_table_name = ?", (layer,)
        )
        # A rerun replaces its own style (same name) instead of piling up copies.
        db.execute(
            f"DELETE FROM {LAYER_STYLES_TABLE} WHERE f_table_name = ? AND styleName = ?",
            (layer, layer),
        )
        db.execute(
            f"INSERT INTO {LAYER_STYLES_TABLE} (f_table_catalog, f_table_schema, f_table_name, "
            "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
            f"owner, ui, update_time) VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, '', NULL, {_NOW})",
            (layer, row[0], layer, qml, sld, description),
        )
    db.close()  # the context manager commits; it does not close


def change_type_categories(values: Sequence[str | None]) -> list[StyleCategory]:
    """The categories of the default QGIS style of a changes layer, one per change type.

    Args:
        values: the ``change_type`` values present in the layer (``None``: null).

    Returns:
        One :class:`~geochange.io.StyleCategory` per value, labelled with the change type,
        coloured by :data:`geochange.classes.CHANGE_TYPE_COLORS`, by the to-class of a
        ``"from → to"`` type, or else by a fixed colour derived from the name.
    """
    categories = []
    for value in values:
        if value is None:
            categories.append(StyleCategory(None, "unknown", (128, 128, 128)))
            continue
        to_class = value.rsplit(" → ", 1)[-1]
        if value in CHANGE_TYPE_COLORS:
            colour = CHANGE_TYPE_COLORS[value]
        elif " → " in value and to_class in LSSCD_CLASS_NAMES:
            colour = CLASS_COLORS[LSSCD_CLASS_NAMES.index(to_class)]
        else:  # a class set of its own: the same name always gets the same colour
            seed = zlib.crc32(value.encode())
            colour = (64 + seed % 192, 64 + (seed >> 8) % 192, 64 + (seed >> 16) % 192)
        categories.append(StyleCategory(value, value, colour))
    return categories


def style_change_types(
    path: Path, layer: str, change_types: Sequence[str | None] | None = None
) -> None:
    """Give a changes layer of a GeoPackage its default QGIS style: one category per type.

    Args:
        path: the GeoPackage, written completely by OGR (not yet renamed into place).
        layer: the layer with a ``change_type`` attribute.
        change_types: the legend's change types, in order; None: the values the layer holds
            (appended features included).

    Raises:
        OutputError: ``path`` has no such feature layer.
    """
    values = distinct_values(path, layer, "change_type") if change_types is None else change_types
    write_layer_style(
        path,
        layer,
        "change_type",
        change_type_categories(values),
        description="geochange: change polygons categorized by change_type",
    )
