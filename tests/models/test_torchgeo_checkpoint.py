"""TorchGeo interop: model-name aliases, the stacked layout, ChangeDetection checkpoints."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from einops import rearrange
from torch import nn

from geochange.errors import CheckpointError, ConfigurationError
from geochange.models import (
    MODEL_ALIASES,
    EarlyFusionUNet,
    SiamConc,
    SiamDiff,
    StackedDates,
    build_model,
    list_models,
)
from geochange.models.torchgeo_checkpoint import torchgeo_model_from_checkpoint
from geochange.predict import ChangePredictor
from tests.builders import make_pair, torchgeo_checkpoint

tasks = pytest.importorskip("torchgeo.tasks")


def test_torchgeo_names_build_the_matching_models() -> None:
    assert isinstance(build_model("fcsiamdiff", in_channels=3), SiamDiff)
    assert isinstance(build_model("fcsiamconc", in_channels=3), SiamConc)
    unet = build_model("unet", in_channels=4)
    assert isinstance(unet, EarlyFusionUNet) and unet.model_name == "early_fusion_unet"
    # Canonical names only in the listing; every alias points at a listed model.
    assert "early_fusion_unet" in list_models()
    assert not set(MODEL_ALIASES) & set(list_models())
    assert set(MODEL_ALIASES.values()) <= set(list_models())
    out = unet(torch.rand(2, 2, 4, 40, 56))["change"]  # any size: padded and cropped
    assert out.shape == (2, 1, 40, 56)


def test_early_fusion_unet_is_torchgeos_unet() -> None:
    torch.manual_seed(0)
    task = tasks.ChangeDetection(model="unet", backbone="resnet18", in_channels=3)
    ours = EarlyFusionUNet(backbone="resnet18", in_channels=3)
    ours.load_state_dict(task.model.state_dict())  # same parameter names and shapes
    x = torch.rand(1, 2, 3, 64, 64)
    task.eval(), ours.eval()
    with torch.no_grad():
        expected = task(rearrange(x, "b t c h w -> b (t c) h w"))
        np.testing.assert_allclose(ours(x)["change"], expected, atol=1e-6)


def test_stacked_layout_wraps_and_checks() -> None:
    network = nn.Conv2d(6, 1, 1)
    predictor = ChangePredictor(network, input_layout="stacked", device="cpu", progress=False)
    assert isinstance(predictor.model, StackedDates) and predictor.model.model is network
    x = torch.rand(1, 2, 3, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(predictor.model(x)["change"], network(x.flatten(1, 2)))
    with pytest.raises(ConfigurationError, match="input_layout"):
        ChangePredictor(network, input_layout="channels", device="cpu")


@pytest.mark.parametrize(
    "name", ["unet", "fcsiamdiff", "fcsiamconc", "deeplabv3+", "upernet", "fcn"]
)
def test_torchgeo_checkpoints_rebuild_the_task_network(name: str) -> None:
    torch.manual_seed(0)
    task = tasks.ChangeDetection(model=name, backbone="resnet18", in_channels=3).eval()
    model, metadata = torchgeo_model_from_checkpoint(torchgeo_checkpoint(task), "tg.ckpt")
    x = torch.rand(2, 2, 3, 64, 64)
    stacked = x if name.startswith("fcsiam") else rearrange(x, "b t c h w -> b (t c) h w")
    with torch.no_grad():
        out = model(x)
        out = out["change"] if isinstance(out, dict) else out  # fcsiam*: TorchGeo's tensor
        np.testing.assert_allclose(out, task(stacked), atol=1e-5)
    assert metadata.model == f"torchgeo:{name}" and metadata.in_channels == 3
    layout = "temporal" if name.startswith("fcsiam") else "stacked"
    assert metadata.extra["input_layout"] == layout


def test_unmappable_torchgeo_checkpoints_say_what_to_do() -> None:
    task = tasks.ChangeDetection(
        model="unet", backbone="resnet18", in_channels=3, task="multiclass", num_classes=3
    )
    with pytest.raises(CheckpointError, match="num_classes=2"):
        torchgeo_model_from_checkpoint(torchgeo_checkpoint(task), "tg.ckpt")
    checkpoint = torchgeo_checkpoint(tasks.ChangeDetection(model="unet", backbone="resnet18"))
    checkpoint["hyper_parameters"]["model"] = "btc"
    with pytest.raises(CheckpointError, match="input_layout='stacked'"):
        torchgeo_model_from_checkpoint(checkpoint, "tg.ckpt")


class _RandomPairs(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        return {
            "image": torch.rand(2, 3, 64, 64, generator=generator),
            "mask": (torch.rand(1, 64, 64, generator=generator) > 0.5).long(),
        }


def test_trained_torchgeo_checkpoint_predicts_a_scene(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    torch.manual_seed(0)
    task = tasks.ChangeDetection(model="unet", backbone="resnet18", in_channels=3)
    trainer = pl.Trainer(
        max_steps=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's data loader advice
        loader = torch.utils.data.DataLoader(_RandomPairs(), batch_size=2)
        trainer.fit(task, loader, loader)  # its LR schedule monitors val_loss
    checkpoint = tmp_path / "torchgeo.ckpt"
    trainer.save_checkpoint(checkpoint)
    pair = make_pair(tmp_path / "scene", size=64)
    with pytest.warns(UserWarning, match="records no input normalization"):
        ChangePredictor.from_checkpoint(checkpoint, device="cpu", progress=False)
    predictor = ChangePredictor.from_checkpoint(
        checkpoint,
        normalization={"mean": [0.0] * 3, "std": [255.0] * 3},
        tile_size=64,
        overlap=16,
        device="cpu",
        progress=False,
        precision="fp32",
    )
    result = predictor.predict(pair.pre, pair.post, tmp_path / "out")
    with rasterio.open(result.probability) as ds, rasterio.open(pair.pre) as src:
        assert (ds.width, ds.height, ds.crs, ds.transform) == (64, 64, src.crs, src.transform)
        probability = ds.read(1)
    # One tile: the scene's probabilities are TorchGeo's own predict_step on the stacked pair.
    image = torch.from_numpy(np.stack([pair.pre_array, pair.post_array])).float()[None] / 255
    task.eval()
    with torch.no_grad():
        expected = task.predict_step({"image": image}, 0)[0, 0].numpy()
    assert probability.dtype == np.uint8 and 0 < expected.std()
    np.testing.assert_allclose(probability, np.round(expected * 254), atol=1)
    with pytest.raises(ConfigurationError, match="stacked layout"):
        ChangePredictor.from_checkpoint(checkpoint, input_layout="temporal")
    # The CLI: --mean/--std give the normalization; the same map as from Python.
    from geochange.cli import main as cli_main

    cli = ["predict", "--checkpoint", str(checkpoint), "--pre", str(pair.pre), "--post"]
    cli += [str(pair.post), "--out-dir", str(tmp_path / "cli"), "--precision", "fp32", "--quiet"]
    cli += ["--mean", "0", "0", "0", "--std", "255", "255", "255", "--device", "cpu"]
    assert cli_main(cli) == 0
    with rasterio.open(tmp_path / "cli" / "probability.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), probability)
    assert cli_main([*cli[:-10], "--mean", "0", "--device", "cpu"]) == 1  # --std missing
