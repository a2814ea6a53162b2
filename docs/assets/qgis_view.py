"""Draw docs/assets/qgis-view.png: geochange's outputs as QGIS draws them with their own styles.

Three map panels of one QGIS print layout, each with its QGIS legend: the post image; the
change raster over it (``change.qml``: "no change" transparent); the changes GeoPackage over
it (its default style from ``layer_styles``: categorized by ``change_type``). Nothing is styled
here: every layer is opened as QGIS opens a file dragged into it.

Run from the repository root with the Python that has PyQGIS (Debian: ``apt-get install
python3-qgis qgis-providers``, then ``/usr/bin/python3``), not the project's environment::

    /usr/bin/python3 docs/assets/qgis_view.py [DATA_DIR] [--out docs/assets/qgis-view.png]

``DATA_DIR`` needs ``post.tif``, ``change.tif`` (with its sidecars) and ``changes.gpkg``;
when it lacks them, the script makes them with the project's environment (``--python``,
default ``.venv/bin/python``): ``geochange synth`` (a 768 x 768 synthetic scene, seed 4), and
``geochange vectorize`` of its building changes into ``changes.gpkg`` (change types from its
class rasters, as for a semantic model's prediction).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (
    QgsApplication,
    QgsLayoutExporter,
    QgsLayoutItemLabel,
    QgsLayoutItemLegend,
    QgsLayoutItemMap,
    QgsLayoutPoint,
    QgsLayoutSize,
    QgsMapLayer,
    QgsPrintLayout,
    QgsProject,
    QgsRasterLayer,
    QgsUnitTypes,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QFont

PANEL_MM = 80.0  # width and height of one map
GAP_MM = 4.0
LEGEND_MM = 34.0


def make_data(directory: Path, python: str) -> None:
    """A synthetic scene and its vectorized changes, written by geochange itself."""
    run = [python, "-m", "geochange"]
    subprocess.run(
        [*run, "synth", str(directory), "--size", "768x768", "--seed", "4"], check=True
    )
    subprocess.run(
        [*run, "vectorize", str(directory / "change.tif"), "--out",
         str(directory / "changes.gpkg"), "--semantic-pre", str(directory / "semantic_pre.tif"),
         "--semantic-post", str(directory / "semantic_post.tif"), "--change-classes", "building",
         "--min-area", "4"],
        check=True,
    )  # fmt: skip


def open_layers(directory: Path) -> dict[str, QgsMapLayer]:
    """The layers as QGIS opens the files: each with its default style (.qml, layer_styles)."""
    layers: dict[str, QgsMapLayer] = {
        "post": QgsRasterLayer(str(directory / "post.tif"), "post image"),
        "change": QgsRasterLayer(str(directory / "change.tif"), "change.tif"),
        "changes": QgsVectorLayer(
            f"{directory / 'changes.gpkg'}|layername=changes", "changes.gpkg", "ogr"
        ),
    }
    for name, layer in layers.items():
        if not layer.isValid():
            sys.exit(f"QGIS cannot open the {name} layer of {directory}")
        QgsProject.instance().addMapLayer(layer)
    return layers


def add_panel(
    layout: QgsPrintLayout, column: int, title: str, layers: list[QgsMapLayer]
) -> None:
    """One map (``layers``, top first) with its title and, below, the legend of its top layer."""
    x = GAP_MM + column * (PANEL_MM + GAP_MM)
    label = QgsLayoutItemLabel(layout)
    label.setText(title)
    label.setFont(QFont("DejaVu Sans", 10))
    label.attemptMove(QgsLayoutPoint(x, 1.0, QgsUnitTypes.LayoutMillimeters))
    label.attemptResize(QgsLayoutSize(PANEL_MM, 6.0, QgsUnitTypes.LayoutMillimeters))
    layout.addLayoutItem(label)
    item = QgsLayoutItemMap(layout)
    item.attemptMove(QgsLayoutPoint(x, 7.0, QgsUnitTypes.LayoutMillimeters))
    item.attemptResize(QgsLayoutSize(PANEL_MM, PANEL_MM, QgsUnitTypes.LayoutMillimeters))
    item.setLayers(layers)
    item.setKeepLayerSet(True)
    item.setExtent(layers[-1].extent())
    item.setFrameEnabled(True)
    layout.addLayoutItem(item)
    if len(layers) < 2:
        return
    legend = QgsLayoutItemLegend(layout)
    legend.setAutoUpdateModel(False)
    root = legend.model().rootGroup()
    root.removeAllChildren()
    root.addLayer(layers[0])
    legend.setTitle("")
    legend.setLinkedMap(item)
    legend.attemptMove(QgsLayoutPoint(x, 9.0 + PANEL_MM, QgsUnitTypes.LayoutMillimeters))
    layout.addLayoutItem(legend)


def render(directory: Path, out: Path) -> None:
    """Lay out the three panels and export them as one PNG, palette-quantized to stay small."""
    layers = open_layers(directory)
    QgsProject.instance().setCrs(layers["post"].crs())
    layout = QgsPrintLayout(QgsProject.instance())
    layout.initializeDefaults()
    width = 3 * PANEL_MM + 4 * GAP_MM
    page = layout.pageCollection().page(0)
    page.setPageSize(
        QgsLayoutSize(width, 9.0 + PANEL_MM + LEGEND_MM, QgsUnitTypes.LayoutMillimeters)
    )
    add_panel(layout, 0, "post image", [layers["post"]])
    add_panel(layout, 1, "change.tif (its change.qml)", [layers["change"], layers["post"]])
    add_panel(
        layout, 2, "changes.gpkg (its layer_styles)", [layers["changes"], layers["post"]]
    )
    settings = QgsLayoutExporter.ImageExportSettings()
    settings.dpi = 110
    with tempfile.TemporaryDirectory() as tmp:
        # A TIFF: QGIS georeferences the image it exports with GDAL, which can update a TIFF in
        # place but not a PNG.
        raw = Path(tmp) / "view.tif"
        result = QgsLayoutExporter(layout).exportToImage(str(raw), settings)
        if result != QgsLayoutExporter.Success:
            sys.exit(f"QGIS could not export the layout (code {result})")
        data = raw.read_bytes()
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGBA").quantize(192).save(buffer, "PNG", optimize=True)
    out.write_bytes(buffer.getvalue())


def main() -> None:
    """Make the data when needed, then draw it with QGIS."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="?", help="directory of the outputs")
    parser.add_argument("--out", type=Path, default=Path("docs/assets/qgis-view.png"))
    parser.add_argument("--python", default=".venv/bin/python", help="geochange's Python")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.data or Path(tmp) / "scene"
        if not (directory / "changes.gpkg").exists():
            make_data(directory, args.python)
        app = QgsApplication([], False)
        app.initQgis()
        render(directory, args.out)
        QgsProject.instance().clear()
        app.exitQgis()
    print(f"{args.out}: {args.out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
