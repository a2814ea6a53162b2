"""Loading pretrained weights: local checkpoints (whole model / encoder) and offline smp weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import save_file

from geochange.errors import CheckpointError
from geochange.models import build_model

SMALL = {"encoder_depth": 3, "decoder_channels": (64, 32, 16)}


def _outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)["change"]


def test_whole_model_from_lightning_style_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model("fusion_unet", in_channels=4, **SMALL)
    path = tmp_path / "trained.ckpt"
    state = {f"model.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state, "geochange": {"model": "fusion_unet"}}, path)
    torch.manual_seed(1)
    loaded = build_model("fusion_unet", in_channels=4, weights=path, **SMALL)
    x = torch.randn(1, 2, 4, 40, 40)
    torch.testing.assert_close(_outputs(loaded, x), _outputs(source, x))


def test_encoder_only_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = smp.encoders.get_encoder("resnet18", in_channels=3, depth=3)
    path = tmp_path / "encoder.pth"
    torch.save(encoder.state_dict(), path)
    torch.manual_seed(1)
    model = build_model("siam_diff", weights=str(path), **SMALL)
    for key, value in encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value), key
    # Encoder weights of another geochange model (prefix "encoder.") also load.
    path2 = tmp_path / "other.pt"
    torch.save(build_model("semantic_change", **SMALL).state_dict(), path2)
    model2 = build_model("fusion_unet", weights=path2, **SMALL)
    assert isinstance(model2, torch.nn.Module)


def test_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        build_model("siam_diff", weights=tmp_path / "missing.ckpt")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"corrupt\.ckpt"):
        build_model("siam_diff", weights=corrupt)
    other_bands = tmp_path / "13bands.pt"
    torch.save(build_model("siam_diff", in_channels=13, **SMALL).state_dict(), other_bands)
    with pytest.raises(CheckpointError, match="match neither"):
        build_model("siam_diff", in_channels=4, weights=other_bands, **SMALL)


def test_imagenet_offline_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> str:
        raise LocalEntryNotFoundError("cannot reach the Hub")

    monkeypatch.setattr("segmentation_models_pytorch.encoders.hf_hub_download", offline)
    with pytest.raises(CheckpointError, match=r"'imagenet'.*offline"):
        build_model("fusion_unet", weights="imagenet")


def test_imagenet_weights_from_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Stand-in for a Hugging Face cache hit: smp gets a local safetensors file.
    torch.manual_seed(0)
    reference = smp.encoders.get_encoder("resnet18", depth=5)
    weights_file = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, weights_file)
    (tmp_path / "config.json").write_text("{}")

    def cached(repo_id: str, filename: str, **kwargs: object) -> str:
        return str(tmp_path / filename)

    monkeypatch.setattr("segmentation_models_pytorch.encoders.hf_hub_download", cached)
    model = build_model("siam_conc", weights="imagenet", in_channels=3)
    conv = model.encoder.state_dict()["conv1.weight"]
    assert torch.equal(conv, reference.state_dict()["conv1.weight"])
    assert "weights" not in model.config  # a rebuilt model loads the trained state instead


def test_legacy_non_zip_state_dict_still_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model("siam_diff", **SMALL)
    path = tmp_path / "legacy.pth"
    torch.save(source.state_dict(), path, _use_new_zipfile_serialization=False)
    loaded = build_model("siam_diff", weights=path, **SMALL)
    x = torch.randn(1, 2, 3, 32, 32)
    torch.testing.assert_close(_outputs(loaded, x), _outputs(source, x))


class _Config:
    """A plain class a legacy training script may have pickled next to the weights."""


def test_legacy_checkpoint_with_objects_says_how_to_convert(tmp_path: Path) -> None:
    state = build_model("siam_diff", **SMALL).state_dict()
    path = tmp_path / "old.pth"
    torch.save(
        {"state_dict": state, "config": _Config()}, path, _use_new_zipfile_serialization=False
    )
    with pytest.raises(CheckpointError) as info:
        build_model("siam_diff", weights=path, **SMALL)
    message = str(info.value)
    assert "old.pth" in message and "legacy" in message
    assert "_Config" in message  # the object that blocks a safe load
    assert "weights_only=False" in message and "torch.save(model.state_dict()" in message


@pytest.mark.parametrize(
    "content",
    [bytes(range(256)) * 4, b"not a checkpoint", b"", b"\x80\x04\x95 a pickle, not torch"],
    ids=["random", "text", "empty", "plain-pickle"],
)
def test_random_bytes_are_not_reported_as_python_objects(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        build_model("siam_diff", weights=path, **SMALL)
    message = str(info.value)
    assert "junk.pth" in message
    assert "not a PyTorch checkpoint" in message and "corrupt or of another format" in message
    assert "Python objects" not in message


def test_torchscript_archive_is_named(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 1)), path)
    with pytest.raises(CheckpointError, match=r"scripted\.pt is a TorchScript archive"):
        build_model("siam_diff", weights=path, **SMALL)
