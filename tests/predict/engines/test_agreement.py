"""The issue's bar: engine="openvino" agrees with engine="torch" on >= 99.9 % of binary pixels.

On a generated pair with a random-weight resnet18 ``fusion_unet`` whose BatchNorm statistics
are calibrated on one tile of the scene (with the default statistics its output is an almost
constant 0.506, which any engine "agrees" on). Both engines run fp32: they compute the same
function there. At bf16 the bar cannot hold for random weights whatever the engine: on the
256 px pair torch bf16 vs torch fp32 and OpenVINO bf16 vs fp32 both keep only 91.9 % of binary
pixels (half of the probabilities lie within 0.08 of the threshold), OpenVINO bf16 vs torch
bf16 97.2 %; bf16 agreement is measured on a trained checkpoint (docs/prediction.md). The
1536 px version is the done-when check (slow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geochange.models import build_model
from geochange.predict import ChangePredictor
from geochange.synthetic import make_scene
from tests.predict.engines.conftest import _installed

pytestmark = pytest.mark.skipif(not _installed("openvino", "onnx"), reason="no openvino")
NORM = {"mean": [110.0, 110.0, 100.0], "std": [50.0, 50.0, 50.0]}


def calibrated_fusion_unet(pre: Path, post: Path, tile: int) -> torch.nn.Module:
    """Random resnet18 fusion_unet, BatchNorm statistics of one scene tile (outputs vary)."""
    torch.manual_seed(0)
    model = build_model("fusion_unet", backbone="resnet18", in_channels=3)
    with rasterio.open(pre) as a, rasterio.open(post) as b:
        window = rasterio.windows.Window(0, 0, tile, tile)
        x = torch.from_numpy(np.stack([a.read(window=window), b.read(window=window)]))
    mean = torch.tensor(NORM["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(NORM["std"]).view(1, -1, 1, 1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batch
    model.train()
    with torch.no_grad():
        model(((x.float() - mean) / std)[None])
    return model.eval()


def engine_agreement(root: Path, size: int, tile: int) -> tuple[float, np.ndarray]:
    scene = make_scene(root / "scene", size, size, seed=0, progress=False)
    model = calibrated_fusion_unet(scene.pre, scene.post, tile)
    changes = {}
    for engine in ("torch", "openvino"):
        predictor = ChangePredictor(
            model,
            engine=engine,
            precision="fp32",
            normalization=NORM,
            tile_size=tile,
            overlap=tile // 4,
            progress=False,
        )
        result = predictor.predict(scene.pre, scene.post, root / engine)
        with rasterio.open(result.change) as ds:
            changes[engine] = ds.read(1)
    same = float(np.mean(changes["torch"] == changes["openvino"]))
    return same, changes["torch"]


def test_openvino_agrees_with_torch_on_a_small_pair(tmp_path: Path) -> None:
    same, change = engine_agreement(tmp_path, 256, 128)
    assert change.shape == (256, 256)
    assert 0.01 < np.mean(change == 1) < 0.99  # the map is not constant: the check means something
    assert same >= 0.999


@pytest.mark.slow
def test_openvino_agrees_with_torch_on_a_1536_pair(tmp_path: Path) -> None:
    same, change = engine_agreement(tmp_path, 1536, 512)
    assert change.shape == (1536, 1536)
    assert 0.01 < np.mean(change == 1) < 0.99
    assert same >= 0.999
