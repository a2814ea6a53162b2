"""ChangePredictor with real models, checkpoints and the CLI (Dask, xarray: test_distributed.py)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning
import numpy as np
import pytest
import rasterio
import torch

from geochange.cli import main as cli_main
from geochange.errors import CheckpointError
from geochange.predict import ChangePredictor, tile_starts
from tests.builders import TinyConvChange, write_raster
from tests.predict.helpers import read

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
LEVIR = DATA / "levircd-samples"


@pytest.fixture
def levir_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A real LEVIR-CD 128 x 256 crop pair written as georeferenced GeoTIFFs."""
    name = "test_2_0000_0000.png"
    if not (LEVIR / "A" / name).exists():
        pytest.skip("shared LEVIR-CD samples not available")
    arrays = []
    for date in ("A", "B"):
        with rasterio.open(LEVIR / date / name) as src:
            arrays.append(src.read()[:, :128, :])
    return write_raster(tmp_path / "A.tif", arrays[0]), write_raster(tmp_path / "B.tif", arrays[1])


def calibrated_fusion_unet(pre: Path, post: Path, norm: dict) -> torch.nn.Module:
    """A randomly initialised smp-based fusion UNet whose BatchNorm statistics are calibrated
    on the scene, so its (untrained) outputs vary spatially like a real model's."""
    from geochange.models import build_model

    torch.manual_seed(0)
    model = build_model("fusion_unet", backbone="resnet18", in_channels=3)
    with rasterio.open(pre) as a, rasterio.open(post) as b:
        x = torch.from_numpy(np.stack([a.read(), b.read()]).astype(np.float32))[None]
    mean = torch.tensor(norm["mean"]).view(1, 1, -1, 1, 1)
    std = torch.tensor(norm["std"]).view(1, 1, -1, 1, 1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model((x - mean) / std)
    return model.eval()


def boundary_vs_inside(prob: np.ndarray, tile: int, stride: int) -> tuple[float, float]:
    """Mean |p(x+1) - p(x)| across the tile grid's vertical edges, and elsewhere."""
    edges = {e for s in tile_starts(prob.shape[1], tile, stride) for e in (s, s + tile)}
    columns = np.array(sorted(e - 1 for e in edges if 0 < e < prob.shape[1]))
    diffs = np.abs(np.diff(prob.astype(np.float64), axis=1))
    at_edge = np.zeros(diffs.shape[1], dtype=bool)
    at_edge[columns] = True
    return float(diffs[:, at_edge].mean()), float(diffs[:, ~at_edge].mean())


@pytest.mark.slow  # ~10-25 s on an idle 2-core CPU (an smp UNet on 5 tiles of 128 px)
def test_no_seams_with_real_model_where_naive_stitching_has_them(levir_pair, tmp_path) -> None:
    pre, post = levir_pair
    norm = {"mean": [110.0, 110.0, 100.0], "std": [50.0, 50.0, 50.0]}
    model = calibrated_fusion_unet(pre, post, norm)
    common = {"precision": "fp32", "probability_dtype": "float32", "normalization": norm}
    common |= {"num_workers": 0, "progress": False, "batch_size": 4}
    # Naive stitching: no overlap, each pixel from exactly one tile.
    naive = ChangePredictor(model, tile_size=128, overlap=0, **common)
    naive_prob = read(naive.predict(pre, post, tmp_path / "naive").probability)
    naive_edge, naive_inside = boundary_vs_inside(naive_prob, 128, 128)
    # Whether naive stitching shows visible seams depends on the random (calibrated) weights;
    # the blended mosaic must be seamless either way, and never worse than naive stitching.
    blended = ChangePredictor(model, tile_size=128, overlap=32, **common)
    prob = read(blended.predict(pre, post, tmp_path / "blend").probability)
    edge, inside = boundary_vs_inside(prob, 128, 96)
    assert prob.std() > 0.02  # the model's output is not flat
    assert edge <= inside * 1.02
    assert edge / inside <= max(naive_edge / naive_inside, 1.02)


def write_checkpoint(path: Path, *, tile_size: int = 64) -> Path:
    from geochange.trainers import ChangeTrainer

    module = ChangeTrainer(
        model="fusion_unet",
        backbone="resnet18",
        in_channels=3,
        normalization={"mean": [100.0, 100.0, 100.0], "std": [50.0, 50.0, 50.0]},
        patch_size=tile_size,
    )
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_from_checkpoint_and_cli(levir_pair, tmp_path: Path) -> None:
    pytest.importorskip("geochange.trainers")
    pre, post = levir_pair
    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    predictor = ChangePredictor.from_checkpoint(ckpt, progress=False, num_workers=0)
    assert predictor.tile_size == 64 and predictor.overlap == 16
    assert predictor.normalization == {"mean": [100.0] * 3, "std": [50.0] * 3}
    assert predictor.in_channels == 3
    out = tmp_path / "cli"
    code = cli_main(
        [
            "predict",
            "--checkpoint",
            str(ckpt),
            "--pre",
            str(pre),
            "--post",
            str(post),
            "--out-dir",
            str(out),
            "--tile-size",
            "128",
            "--bounds",
            "500000",
            "4598720",
            "501280",
            "4600000",
            "--precision",
            "fp32",
            "--num-workers",
            "1",
            "--semantic-blend",
            "center",
            "--quiet",
            "--vector",
            str(tmp_path / "changes.gpkg"),
        ]
    )
    assert code == 0
    import pyogrio

    info = pyogrio.read_info(tmp_path / "changes.gpkg")
    assert info["crs"].endswith("32631")
    with rasterio.open(out / "change.tif") as ds, rasterio.open(pre) as src:
        assert ds.shape == (128, 128) and ds.transform == src.transform
        assert json.loads(ds.tags()["GEOCHANGE_CLASS_NAMES"]) == ["no change", "change"]
        assert set(np.unique(ds.read(1))) <= {0, 1}


def test_foreign_checkpoints_are_rejected(levir_pair, tmp_path: Path, capsys) -> None:
    pytest.importorskip("geochange.trainers")
    bare = tmp_path / "bare.ckpt"
    torch.save(TinyConvChange().state_dict(), bare)
    with pytest.raises(CheckpointError):
        ChangePredictor.from_checkpoint(bare)
    with pytest.raises(CheckpointError, match="not"):
        ChangePredictor.from_checkpoint(tmp_path / "missing.ckpt")
    pre, post = levir_pair
    args = ["--checkpoint", str(bare), "--pre", str(pre), "--post", str(post)]
    code = cli_main(["predict", *args, "--out-dir", str(tmp_path / "o")])
    assert code == 1
    assert "geochange predict: error" in capsys.readouterr().err


def test_from_checkpoint_reads_the_file_once(tmp_path: Path, monkeypatch) -> None:
    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    reads: list[object] = []
    load = torch.load

    def counting_load(source, *args, **kwargs):
        reads.append(source)
        return load(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    predictor = ChangePredictor.from_checkpoint(ckpt, progress=False)
    assert len(reads) == 1
    assert predictor.normalization == {"mean": [100.0] * 3, "std": [50.0] * 3}
    # The weights are the checkpoint's.
    saved = load(ckpt, weights_only=True)["state_dict"]
    for key, value in predictor.model.state_dict().items():
        assert torch.equal(value, saved[f"model.{key}"]), key
