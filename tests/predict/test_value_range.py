"""Checkpoints record the training imagery's value range; prediction checks scenes against it.

The case behind it: a model trained on 8-bit imagery gives garbage on 12-bit imagery of the same
place (the values are about 16x larger) without any error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import rasterio
import torch

from geochange.cli import main as cli_main
from geochange.errors import ConfigurationError, DataError
from geochange.predict import ChangePredictor
from geochange.trainers import ChangeTrainer, read_checkpoint_metadata
from geochange.transforms import check_value_range, sample_raster_range
from geochange.transforms.stats import full_scale

TINY = {"backbone": "resnet18", "model_kwargs": {"encoder_depth": 3,
        "decoder_channels": [32, 16, 16]}}  # fmt: skip
FAST = {"tile_size": 64, "overlap": 16, "precision": "fp32", "probability_dtype": "float32",
        "num_workers": 0, "progress": False}  # fmt: skip


# 8-bit values onto the 12-bit range (full scale 255 -> 4095), rounded to integers.
TO_12BIT = 4095 / 255


def _copy_as(src_path: Path, dst_path: Path, factor: float, dtype: str = "uint16") -> Path:
    """``src`` x ``factor``, rounded, as ``dtype`` (:data:`TO_12BIT`: 8-bit onto 12-bit)."""
    with rasterio.open(src_path) as src:
        profile = src.profile.copy()
        data = src.read().astype(np.float64) * factor
    profile.update(dtype=dtype, driver="GTiff")
    for key in ("blockxsize", "blockysize", "tiled", "compress", "predictor"):
        profile.pop(key, None)
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(np.rint(data).astype(dtype))
    return dst_path


def _probability(path: Path | None) -> np.ndarray:
    assert path is not None
    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.fixture(scope="module")
def trained_8bit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model trained briefly on a uint8 scene, and that scene as 12-bit uint16 copies."""
    from geochange.datamodules import ChangeDataModule
    from geochange.synthetic import make_scene

    root = tmp_path_factory.mktemp("value-range")
    scene = make_scene(root / "scene", 160, 160, seed=5)
    dm = ChangeDataModule(
        str(scene.pre),
        str(scene.post),
        change=str(scene.change),
        patch_size=32,
        batch_size=4,
        samples_per_epoch=8,
        splits=(0.6, 0.2, 0.2),
        stats_samples=8,
    )
    torch.manual_seed(0)
    module = ChangeTrainer(model="fusion_unet", **TINY, lr=0.01)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0,
                         accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(root))  # fmt: skip
    trainer.fit(module, datamodule=dm)
    checkpoint = root / "uint8.ckpt"
    trainer.save_checkpoint(checkpoint)
    return {
        "checkpoint": checkpoint,
        "pre": Path(scene.pre),
        "post": Path(scene.post),
        "pre12": _copy_as(Path(scene.pre), root / "pre12.tif", TO_12BIT),
        "post12": _copy_as(Path(scene.post), root / "post12.tif", TO_12BIT),
        "root": root,
    }


def test_checkpoint_records_the_training_value_range(trained_8bit: dict[str, Path]) -> None:
    record = read_checkpoint_metadata(trained_8bit["checkpoint"])["input_range"]
    assert record["dtype"] == "uint8"
    with rasterio.open(trained_8bit["pre"]) as src:
        data = src.read()
    assert len(record["min"]) == len(record["max"]) == data.shape[0]
    # A sample of the training windows: inside the scene's range, most of it covered.
    for band, (low, high) in enumerate(zip(record["min"], record["max"], strict=True)):
        assert data[band].min() <= low < high <= 255
        assert high - low > 0.5 * (int(data[band].max()) - int(data[band].min()))


def test_12bit_scene_on_8bit_model_fails_before_the_first_tile(
    trained_8bit: dict[str, Path], tmp_path: Path
) -> None:
    record = read_checkpoint_metadata(trained_8bit["checkpoint"])["input_range"]
    predictor = ChangePredictor.from_checkpoint(trained_8bit["checkpoint"], **FAST)
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        predictor.predict(trained_8bit["pre12"], trained_8bit["post12"], out)
    message = str(info.value)
    low, high = min(record["min"]), max(record["max"])
    assert f"trained on uint8 imagery with values {low:g}..{high:g}" in message
    assert f"{trained_8bit['pre12']} is uint16 with values up to" in message
    top = float(message.split("values up to ")[1].split(",")[0])
    assert 0.9 * TO_12BIT * high <= top <= 4095
    assert "value_range='rescale'" in message and "--value-range rescale" in message
    assert not out.exists() or not any(out.iterdir())  # nothing was predicted


def test_rescale_maps_12bit_onto_the_training_range(
    trained_8bit: dict[str, Path], tmp_path: Path
) -> None:
    reference = ChangePredictor.from_checkpoint(trained_8bit["checkpoint"], **FAST).predict(
        trained_8bit["pre"], trained_8bit["post"], tmp_path / "u8"
    )
    expected = _probability(reference.probability)
    rescaling = ChangePredictor.from_checkpoint(
        trained_8bit["checkpoint"], value_range="rescale", **FAST
    )
    result = rescaling.predict(trained_8bit["pre12"], trained_8bit["post12"], tmp_path / "u12")
    # 12-bit full scale 4095 maps onto 255: x * 255 / 4095 undoes the copy up to its rounding
    # (at most 0.03 of an 8-bit step), so the map is the 8-bit one (a random-like model's
    # sensitivity to a 0.4 % brightness change made the old x16 copies a loose comparison).
    np.testing.assert_allclose(_probability(result.probability), expected, atol=0.02)
    # Only the post date at 12 bits: each date gets its own factor.
    mixed = rescaling.predict(trained_8bit["pre"], trained_8bit["post12"], tmp_path / "mixed")
    np.testing.assert_allclose(_probability(mixed.probability), expected, atol=0.02)
    # The check matters: the same 12-bit scene as it is gives another map.
    ignoring = ChangePredictor.from_checkpoint(
        trained_8bit["checkpoint"], value_range="ignore", **FAST
    )
    raw = ignoring.predict(trained_8bit["pre12"], trained_8bit["post12"], tmp_path / "raw")
    assert np.abs(_probability(raw.probability) - expected).max() > 0.1
    # The predictor itself is unchanged: the 8-bit scene still gives the reference.
    again = rescaling.predict(trained_8bit["pre"], trained_8bit["post"], tmp_path / "again")
    np.testing.assert_array_equal(_probability(again.probability), expected)


def test_cli_value_range_flag(
    trained_8bit: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["predict", "--checkpoint", str(trained_8bit["checkpoint"]), "--pre",
            str(trained_8bit["pre12"]), "--post", str(trained_8bit["post12"]), "--tile-size",
            "64", "--quiet", "--precision", "fp32"]  # fmt: skip
    assert cli_main([*args, "--out-dir", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "geochange predict: error: the checkpoint was trained on uint8 imagery" in err
    assert "Traceback" not in err
    assert cli_main([*args, "--out-dir", str(tmp_path / "b"), "--value-range", "rescale"]) == 0
    assert (tmp_path / "b" / "change.tif").exists()


def test_old_checkpoint_without_record_warns_and_predicts(
    trained_8bit: dict[str, Path], tmp_path: Path
) -> None:
    checkpoint: dict[str, Any] = torch.load(trained_8bit["checkpoint"], weights_only=True)
    del checkpoint["geochange"]["input_range"], checkpoint["hyper_parameters"]["input_range"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    with pytest.warns(UserWarning, match="no record of its training imagery's value range"):
        predictor = ChangePredictor.from_checkpoint(old, **FAST)
    result = predictor.predict(trained_8bit["pre12"], trained_8bit["post12"], tmp_path / "out")
    assert result.tiles > 0


def _raster(path: Path, data: np.ndarray, **profile: Any) -> Path:
    options = {"driver": "GTiff", "count": data.shape[0], "height": data.shape[1],
               "width": data.shape[2], "dtype": data.dtype.name, **profile}  # fmt: skip
    with rasterio.open(path, "w", **options) as dst:
        dst.write(data)
    return path


def test_sample_raster_range_skips_nodata_and_reads_overviews(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4096, (2, 600, 700)).astype(np.uint16)
    data[:, :50] = 65535  # nodata stripe
    data[1, 100:110, 100:110] = 5000  # a few hot pixels: not the top of the range
    path = _raster(tmp_path / "a.tif", data, nodata=65535)
    sample = sample_raster_range(path)
    assert sample["dtype"] == "uint16" and sample["nbits"] is None
    assert max(sample["max"]) <= 5000 and min(sample["min"]) >= 0
    assert 3900 < sample["top"][0] <= 4095 and 3900 < sample["top"][1] <= 4095
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2])
        ds.update_tags(1, ns="IMAGE_STRUCTURE", NBITS="12")
    with_overview = sample_raster_range(path, [2])
    assert len(with_overview["top"]) == 1 and 3900 < with_overview["top"][0] <= 4095
    _raster(tmp_path / "empty.tif", np.full((1, 8, 8), 7, np.uint8), nodata=7)
    with pytest.raises(DataError, match=r"empty\.tif"):
        sample_raster_range(tmp_path / "empty.tif")


def test_value_range_rules() -> None:
    trained_8bit = {"dtype": "uint8", "min": [0.0, 3.0], "max": [250.0, 255.0]}
    scene = {"dtype": "uint16", "nbits": None, "min": [0.0, 0.0], "max": [4080.0, 4000.0],
             "top": [4000.0, 3900.0]}  # fmt: skip
    with pytest.raises(DataError, match=r"uint8 imagery with values 0\.\.255; 12bit\.tif"):
        check_value_range(trained_8bit, scene, name="12bit.tif")
    assert check_value_range(trained_8bit, scene, name="x", mode="ignore") == 1.0
    assert check_value_range(trained_8bit, scene, name="x", mode="rescale") == 255 / 4095
    # 8-bit values stored as uint16, or a somewhat dark / bright scene: no mismatch.
    for top in (200.0, 60.0, 300.0):
        same = {**scene, "max": [top], "top": [top]}
        assert check_value_range(trained_8bit, same, name="x") == 1.0
    # The reverse: an 8-bit scene for a model trained on 12-bit imagery.
    trained_12bit = {"dtype": "uint16", "min": [0.0], "max": [4095.0]}
    scene_8bit = {"dtype": "uint8", "nbits": None, "min": [0.0], "max": [255.0], "top": [250.0]}
    with pytest.raises(DataError, match=r"uint16 imagery with values 0\.\.4095"):
        check_value_range(trained_12bit, scene_8bit, name="x")
    assert check_value_range(trained_12bit, scene_8bit, name="x", mode="rescale") == 4095 / 255
    with pytest.raises(ConfigurationError, match="value_range"):
        check_value_range(trained_8bit, scene, name="x", mode="clip")
    with pytest.raises(ConfigurationError, match="value_range"):
        ChangePredictor(torch.nn.Identity(), value_range="clip")  # type: ignore[arg-type]


def test_full_scale() -> None:
    assert full_scale("uint8", 17) == 255
    assert full_scale("uint16", 4080) == 4095
    assert full_scale("uint16", 200) == 255
    assert full_scale("uint16", 1000, nbits=12) == 4095
    assert full_scale("int16", 10000) == 16383
    assert full_scale("float32", 0.8) == 0.8


def test_band_mismatch_is_reported_before_the_value_range(
    trained_8bit: dict[str, Path], tmp_path: Path
) -> None:
    with rasterio.open(trained_8bit["pre12"]) as src:
        data, profile = src.read(), src.profile.copy()
    profile.update(count=4)
    four = tmp_path / "four.tif"
    with rasterio.open(four, "w", **profile) as dst:
        dst.write(np.concatenate([data, data[:1]]))
    predictor = ChangePredictor.from_checkpoint(trained_8bit["checkpoint"], **FAST)
    with pytest.raises(DataError, match="expects 3 bands"):
        predictor.predict(four, four, tmp_path / "out")
