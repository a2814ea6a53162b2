"""geochange's outputs as a real QGIS opens and draws them (headless PyQGIS, when installed).

``tests/io/qgis_probe.py`` runs under the Python that has PyQGIS (Debian's ``python3-qgis``
puts it in ``/usr/bin/python3``, not in the project's environment) and reports, per layer, the
renderer QGIS chose, its classes or colour ramp, the values it reads and the colours it draws.
The module is skipped where no PyQGIS is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from geochange import ChangePredictor, evaluate_scene, vectorize_changes
from geochange.classes import CHANGE_TYPE_COLORS, LSSCD_CLASS_NAMES, PROBABILITY_RAMP
from geochange.io import PROBABILITY_SCALE
from geochange.synthetic import make_scene
from tests.builders import DifferenceModel, TinyConvChange, make_pair

SYSTEM_PYTHON = os.environ.get("GEOCHANGE_QGIS_PYTHON", "/usr/bin/python3")
PROBE = Path(__file__).with_name("qgis_probe.py")


def _has_pyqgis() -> bool:
    try:
        done = subprocess.run(
            [SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


pytestmark = pytest.mark.skipif(not _has_pyqgis(), reason=f"no PyQGIS in {SYSTEM_PYTHON}")
MAGENTA = [255, 0, 255, 255]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A binary and a semantic prediction (pre nodata on the left 32 columns), their changes,
    an evaluation's objects and a synthetic scene's changed buildings."""
    root = tmp_path_factory.mktemp("qgis")
    pair = make_pair(root / "pair", 256)
    with rasterio.open(pair.pre) as ds:
        profile, pre = ds.profile, ds.read()
    pre[:, :, :32] = 0
    profile.update(nodata=0)
    with rasterio.open(root / "pre.tif", "w", **profile) as ds:
        ds.write(pre)
    common: dict[str, Any] = {
        "tile_size": 128, "overlap": 32, "precision": "fp32", "size_divisor": 1,
        "normalization": {"mean": [0.0] * 3, "std": [1.0] * 3}, "num_workers": 0,
        "progress": False,
    }  # fmt: skip
    binary = ChangePredictor(DifferenceModel(), **common).predict(
        root / "pre.tif", pair.post, root / "binary"
    )
    vectorize_changes(binary, root / "binary" / "changes.gpkg")
    evaluate_scene(binary, pair.change, workers=1).save(root / "report")
    semantic = ChangePredictor(
        TinyConvChange(semantic_classes=7), class_names=list(LSSCD_CLASS_NAMES), **common
    ).predict(pair.pre, pair.post, root / "semantic")
    scene = make_scene(root / "scene", 512, 512, seed=4)
    return {
        "change": binary.change,
        "probability": binary.probability,
        "changes": root / "binary" / "changes.gpkg",
        "objects": root / "report" / "objects.gpkg",
        "transition": semantic.transition,
        "semantic_post": semantic.semantic_post,
        "changed_buildings": scene.changed_buildings,
    }


@pytest.fixture(scope="module")
def qgis(outputs: dict[str, Path]) -> dict[str, Any]:
    """The probe's report, by output name."""
    uris = {
        "changes": f"{outputs['changes']}|layername=changes",
        "predictions": f"{outputs['objects']}|layername=predictions",
        "references": f"{outputs['objects']}|layername=references",
        "changed_buildings": f"{outputs['changed_buildings']}|layername=changed_buildings",
    }
    uris |= {k: str(outputs[k]) for k in ("change", "probability", "transition", "semantic_post")}
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run(
        [SYSTEM_PYTHON, str(PROBE), *uris.values()],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report.pop("qgis").startswith("3.")
    return {name: report[uri] for name, uri in uris.items()}


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def _drawn(info: dict[str, Any]) -> dict[tuple[int, ...], int]:
    return {tuple(rgba): n for rgba, n in info["rendered"]}


def test_change_raster_opens_paletted_with_transparent_no_change(qgis, outputs) -> None:
    info = qgis["change"]
    assert info["valid"] and info["renderer"] == "paletted"  # from change.qml
    assert info["classes"] == [
        {"value": 0.0, "label": "no change", "rgba": [255, 255, 255, 0]},
        {"value": 1.0, "label": "change", "rgba": MAGENTA},
    ]
    assert info["legend"] == ["no change", "change"] and info["nodata"] == 255.0
    values = _read(outputs["change"])
    assert (values == 255).sum() == 256 * 32 and (values == 1).sum() > 0
    # What QGIS draws: changes in magenta, everything else (no change, nodata) see-through.
    assert _drawn(info) == {tuple(MAGENTA): (values == 1).sum(), (0, 0, 0, 0): (values != 1).sum()}


def test_probability_reads_zero_to_one(qgis, outputs) -> None:
    info = qgis["probability"]
    raw = _read(outputs["probability"])
    assert info["renderer"] == "singlebandpseudocolor"
    assert info["scale"] == pytest.approx(1 / PROBABILITY_SCALE) and info["offset"] == 0.0
    assert info["nodata"] == 255.0
    # QGIS applies the scale: statistics (nodata left out) in 0..1, not 0..254.
    assert info["min"] == pytest.approx(raw[raw != 255].min() / PROBABILITY_SCALE)
    assert info["max"] == pytest.approx(raw[raw != 255].max() / PROBABILITY_SCALE)
    assert 0.9 < info["max"] <= 1.0
    assert info["ramp"]["min"] == 0.0 and info["ramp"]["max"] == 1.0
    assert [v for v, _ in info["ramp"]["items"]] == [p for p, _ in PROBABILITY_RAMP]
    drawn = _drawn(info)
    assert drawn[(0, 0, 0, 0)] >= 256 * 32  # nodata and p = 0 show the imagery beneath


def test_class_and_transition_rasters_show_class_names(qgis, outputs) -> None:
    post = qgis["semantic_post"]
    assert post["renderer"] == "paletted"
    assert [c["label"] for c in post["classes"]] == list(LSSCD_CLASS_NAMES)
    assert post["classes"][0]["rgba"] == [230, 50, 50, 255]
    transition = qgis["transition"]
    labels = [c["label"] for c in transition["classes"]]
    assert labels[1] == "building -> road" and labels[-1] == "no change"
    assert transition["classes"][-1]["rgba"] == [255, 255, 255, 0]
    unchanged = (_read(outputs["transition"]) == transition["classes"][-1]["value"]).sum()
    assert _drawn(transition)[(0, 0, 0, 0)] >= unchanged > 0


def test_geopackages_open_with_their_default_style(qgis) -> None:
    changes = qgis["changes"]
    assert changes["renderer"] == "categorizedSymbol" and changes["attribute"] == "change_type"
    assert changes["categories"] == [
        {"value": "change", "label": "change", "rgba": [255, 0, 255, 128]}
    ]
    assert changes["features"] == 2
    buildings = qgis["changed_buildings"]
    assert buildings["renderer"] == "categorizedSymbol" and buildings["attribute"] == "change_type"
    assert [(c["label"], c["rgba"]) for c in buildings["categories"]] == [
        (t, [*CHANGE_TYPE_COLORS[t], 128]) for t in ("new building", "demolished building")
    ]
    for layer in ("predictions", "references"):
        assert qgis[layer]["renderer"] == "categorizedSymbol"
        assert qgis[layer]["attribute"] == "status"
        assert len(qgis[layer]["categories"]) == 2
