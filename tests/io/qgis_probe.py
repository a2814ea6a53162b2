"""What QGIS makes of geochange's outputs: a headless PyQGIS probe that prints JSON.

Run with the Python that has PyQGIS (Debian: ``/usr/bin/python3``, package ``python3-qgis``),
not the project's virtual environment; it imports nothing from geochange::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/io/qgis_probe.py out/change.tif \
        out/probability.tif "out/changes.gpkg|layername=changes"

For each raster: the renderer QGIS chose when opening the layer (its default style is the
``.qml`` beside the raster), the paletted classes (value, label, colour, opacity) or the colour
ramp's range, the band's data type, scale and offset, the value QGIS reads at the centre pixel,
and a histogram of the RGBA colours QGIS draws when rendering the layer at its own size. For
each vector layer: the renderer, its attribute and categories. ``tests/io/test_qgis.py`` runs it.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsPointXY,
    QgsRasterBandStats,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor


def _colour(colour: QColor) -> list[int]:
    return [colour.red(), colour.green(), colour.blue(), colour.alpha()]


def _rendered_colours(layer: QgsRasterLayer) -> list[list[Any]]:
    """RGBA colour -> pixel count of the layer drawn alone, one output pixel per raster pixel."""
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(layer.extent())
    settings.setOutputSize(QSize(layer.width(), layer.height()))
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    counts: Counter[tuple[int, ...]] = Counter()
    for y in range(image.height()):
        for x in range(image.width()):
            counts[tuple(_colour(QColor.fromRgba(image.pixel(x, y))))] += 1
    return [[list(rgba), n] for rgba, n in counts.most_common(12)]


def probe_raster(path: str) -> dict[str, Any]:
    """What QGIS shows of a raster opened as a layer (default options: default style loaded)."""
    layer = QgsRasterLayer(path, os.path.basename(path))
    info: dict[str, Any] = {"valid": layer.isValid()}
    if not layer.isValid():
        return info
    provider = layer.dataProvider()
    renderer = layer.renderer()
    centre = layer.extent().center()
    value, ok = provider.sample(QgsPointXY(centre.x(), centre.y()), 1)
    stats = provider.bandStatistics(1, QgsRasterBandStats.Min | QgsRasterBandStats.Max)
    legend = renderer.legendSymbologyItems()
    info.update(
        renderer=renderer.type(),
        data_type=int(provider.dataType(1)),
        scale=provider.bandScale(1),
        offset=provider.bandOffset(1),
        centre_value=value if ok else None,
        min=stats.minimumValue,
        max=stats.maximumValue,
        nodata=provider.sourceNoDataValue(1) if provider.sourceHasNoDataValue(1) else None,
        size=[layer.width(), layer.height()],
        legend=[label for label, _ in legend],
    )
    if renderer.type() == "paletted":
        info["classes"] = [
            {"value": c.value, "label": c.label, "rgba": _colour(c.color)}
            for c in renderer.classes()
        ]
    elif renderer.type() == "singlebandpseudocolor":
        shader = renderer.shader().rasterShaderFunction()
        info["ramp"] = {
            "min": renderer.classificationMin(),
            "max": renderer.classificationMax(),
            "items": [[i.value, _colour(i.color)] for i in shader.colorRampItemList()],
        }
    info["rendered"] = _rendered_colours(layer)
    return info


def probe_vector(uri: str) -> dict[str, Any]:
    """What QGIS shows of a vector layer (``path|layername=name``) opened with its default style."""
    layer = QgsVectorLayer(uri, uri.rsplit("=", 1)[-1], "ogr")
    info: dict[str, Any] = {"valid": layer.isValid()}
    if not layer.isValid():
        return info
    renderer = layer.renderer()
    info.update(renderer=renderer.type(), features=layer.featureCount())
    if renderer.type() == "categorizedSymbol":
        info["attribute"] = renderer.classAttribute()
        info["categories"] = [
            {"value": c.value(), "label": c.label(), "rgba": _colour(c.symbol().color())}
            for c in renderer.categories()
        ]
    return info


def main(paths: list[str]) -> None:
    app = QgsApplication([], False)
    app.initQgis()
    report: dict[str, Any] = {"qgis": Qgis.QGIS_VERSION}
    for path in paths:
        is_raster = path.lower().endswith((".tif", ".tiff"))
        report[path] = probe_raster(path) if is_raster else probe_vector(path)
    print(json.dumps(report))
    app.exitQgis()


if __name__ == "__main__":
    main(sys.argv[1:])
