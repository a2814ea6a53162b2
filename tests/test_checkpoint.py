"""geochange.checkpoint: metadata, load_model, old key names, and inference without Lightning."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

import geochange.models.fusion
import geochange.trainers.checkpoint as old_home
from geochange import checkpoint
from geochange.checkpoint import (
    METADATA_KEYS,
    CheckpointMetadata,
    load_model,
    read_checkpoint_metadata,
)
from geochange.errors import CheckpointError, ConfigurationError
from geochange.models import fold_batch_norm
from geochange.models.folding import fold_batch_norm as folding_home
from geochange.trainers import ChangeTrainer

SMALL = {"encoder_depth": 3, "decoder_channels": [32, 16, 16]}
NORM = {"mean": [100.0] * 3, "std": [50.0] * 3}


def _save(module: ChangeTrainer, path: Path, edit: Any = None) -> Path:
    """Save ``module`` as Lightning does (``edit`` may change the dict first)."""
    saved = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    module.on_save_checkpoint(saved)
    if edit is not None:
        edit(saved)
    torch.save(saved, path)
    return path


def _tiny(**kwargs: Any) -> ChangeTrainer:
    options: dict[str, Any] = {
        "model": "fusion_unet",
        "backbone": "resnet18",
        "model_kwargs": SMALL,
        "normalization": NORM,
        "patch_size": 64,
    }
    options.update(kwargs)  # fmt: skip
    return ChangeTrainer(**options)


def _to_old_format(saved: dict[str, Any]) -> None:
    """What a checkpoint written before the glossary holds: the patch as ``tile_size``."""
    saved["geochange"]["tile_size"] = saved["geochange"].pop("patch_size")
    saved["hyper_parameters"]["tile_size"] = saved["hyper_parameters"].pop("patch_size")


def test_old_import_paths_are_the_new_objects() -> None:
    for name in old_home.__all__:
        assert getattr(old_home, name) is getattr(checkpoint, name), name
    assert geochange.models.fusion.fold_batch_norm is folding_home is fold_batch_norm


def test_new_checkpoints_store_patch_size(tmp_path: Path) -> None:
    path = _save(_tiny(), tmp_path / "new.ckpt")
    stored = torch.load(path, weights_only=True)["geochange"]
    assert stored["patch_size"] == 64 and "tile_size" not in stored
    # The trainer's hyper-parameter has the same name (its old name ``tile_size`` is gone).
    hparams = torch.load(path, weights_only=True)["hyper_parameters"]
    assert hparams["patch_size"] == 64 and "tile_size" not in hparams
    metadata = read_checkpoint_metadata(path)
    assert set(METADATA_KEYS) <= set(metadata)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metadata["patch_size"] == 64


@pytest.mark.parametrize("written", ["new", "old"])
def test_both_key_names_read_as_patch_size(tmp_path: Path, written: str) -> None:
    edit = _to_old_format if written == "old" else None
    path = _save(_tiny(), tmp_path / f"{written}.ckpt", edit)
    metadata = read_checkpoint_metadata(path)
    assert metadata["patch_size"] == 64 and "tile_size" not in metadata
    with pytest.warns(DeprecationWarning, match="'tile_size' is now 'patch_size'"):
        assert metadata["tile_size"] == 64
    with pytest.warns(DeprecationWarning, match="'tile_size' is now 'patch_size'"):
        assert metadata.get("tile_size") == 64
    model, record = load_model(path)
    assert record.patch_size == 64 and isinstance(model, nn.Module)


def test_old_checkpoint_predicts_with_its_patch_as_tile(tmp_path: Path) -> None:
    from geochange.predict import ChangePredictor

    path = _save(_tiny(patch_size=96), tmp_path / "old.ckpt", _to_old_format)
    predictor = ChangePredictor.from_checkpoint(path, progress=False, value_range="ignore")
    assert predictor.tile_size == 96 and predictor.overlap == 24


def test_old_and_new_key_that_disagree_are_refused(tmp_path: Path) -> None:
    def both(saved: dict[str, Any]) -> None:
        saved["geochange"]["tile_size"] = 32

    path = _save(_tiny(), tmp_path / "both.ckpt", both)
    with pytest.raises(CheckpointError, match=r"both\.ckpt.*patch_size=64.*tile_size=32"):
        read_checkpoint_metadata(path)


def test_old_checkpoint_patch_is_cross_checked_against_hyper_parameters(tmp_path: Path) -> None:
    def edited(saved: dict[str, Any]) -> None:
        _to_old_format(saved)
        saved["geochange"]["tile_size"] = 128

    path = _save(_tiny(), tmp_path / "edited.ckpt", edited)
    with pytest.raises(
        CheckpointError, match=r"patch_size: geochange metadata 128, hyper_parameters 64"
    ):
        load_model(path)


def test_metadata_dataclass_round_trip() -> None:
    stored = _tiny().checkpoint_metadata()
    metadata = CheckpointMetadata.from_dict(stored)
    assert metadata.to_dict() == stored
    assert metadata.model == "fusion_unet" and metadata.task == "binary"
    assert metadata.normalization == NORM and metadata.patch_size == 64
    old = {**{k: v for k, v in stored.items() if k != "patch_size"}, "tile_size": 64}
    assert CheckpointMetadata.from_dict(old) == metadata
    # Entries of a newer geochange are kept, not dropped.
    assert CheckpointMetadata.from_dict({**stored, "future": 1}).to_dict()["future"] == 1


def test_load_model_returns_the_saved_network_in_eval_mode(tmp_path: Path) -> None:
    module = _tiny()
    path = _save(module, tmp_path / "model.ckpt")
    model, metadata = load_model(path)
    assert not model.training and type(model) is type(module.model)
    assert (
        metadata.in_channels == 3 and metadata.trainer == "geochange.trainers.change.ChangeTrainer"
    )
    for key, value in module.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    x = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)["change"], module.model.eval()(x)["change"])


class _UserModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(6, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"change": self.head(x.flatten(1, 2))}


def test_user_model_checkpoint_needs_the_module(tmp_path: Path) -> None:
    module = ChangeTrainer(model=_UserModel(), loss="bce")
    path = _save(module, tmp_path / "user.ckpt")
    with pytest.raises(
        CheckpointError, match=r"user model \(_UserModel\).*load_model\(path, model="
    ):
        load_model(path)
    model, metadata = load_model(path, model=_UserModel())
    assert metadata.model == "_UserModel"
    assert torch.equal(model.head.weight, module.model.head.weight)


def test_weights_that_do_not_fit_are_summarised(tmp_path: Path) -> None:
    def damage(saved: dict[str, Any]) -> None:
        state = saved["state_dict"]
        first = next(iter(state))
        del state[first]
        state["model.extra_head.weight"] = torch.zeros(1)

    path = _save(_tiny(), tmp_path / "damaged.ckpt", damage)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert "damaged.ckpt" in message and "do not fit" in message
    assert "1 missing key" in message and "1 unexpected key (model.extra_head.weight)" in message
    assert "\n" not in message


def test_unknown_model_name_is_a_checkpoint_error(tmp_path: Path) -> None:
    def rename(saved: dict[str, Any]) -> None:
        saved["geochange"]["model"] = saved["hyper_parameters"]["model"] = "no_such_model"

    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_model(_save(_tiny(), tmp_path / "renamed.ckpt", rename))


def _write_scene(path: Path, values: np.ndarray) -> Path:
    profile = {"driver": "GTiff", "width": values.shape[2], "height": values.shape[1],
               "count": values.shape[0], "dtype": "uint8", "crs": "EPSG:32631",
               "transform": from_origin(500000, 4600000, 0.5, 0.5)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(values)
    return path


def test_inference_never_imports_lightning(tmp_path: Path) -> None:
    """``import geochange.predict``, loading a checkpoint and predicting: no Lightning."""
    _save(_tiny(), tmp_path / "model.ckpt")
    rng = np.random.default_rng(0)
    pre = rng.integers(0, 255, (3, 96, 96), dtype=np.uint8)
    post = pre.copy()
    post[:, 20:50, 30:70] = 255 - post[:, 20:50, 30:70]
    _write_scene(tmp_path / "pre.tif", pre)
    _write_scene(tmp_path / "post.tif", post)
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path

        LIGHTNING = ("lightning", "lightning.pytorch", "pytorch_lightning")

        def check(when):
            found = [name for name in LIGHTNING if name in sys.modules]
            assert not found, f"{{found}} imported {{when}}"

        import geochange.predict
        check("by import geochange.predict")
        from geochange.predict import ChangePredictor

        root = Path({str(tmp_path)!r})
        predictor = ChangePredictor.from_checkpoint(
            root / "model.ckpt", progress=False, num_workers=0, precision="fp32"
        )
        check("by ChangePredictor.from_checkpoint")
        result = predictor.predict(root / "pre.tif", root / "post.tif", root / "out")
        check("by ChangePredictor.predict")
        assert result.change is not None and Path(result.change).is_file()
        print("no lightning")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no lightning" in done.stdout
    with rasterio.open(tmp_path / "out" / "change.tif") as ds:
        assert ds.shape == (96, 96)
        assert set(np.unique(ds.read(1))) <= {0, 1}


# --- the trainers' argument: patch_size (tile_size accepted for one release) -----------------


def test_trainer_takes_patch_size_and_warns_for_tile_size() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = _tiny(patch_size=48)
    with pytest.warns(DeprecationWarning, match=r"tile_size= is now patch_size="):
        old = _tiny(patch_size=None, tile_size=48)
    for module in (new, old):
        assert module.patch_size == 48 and module.hparams["patch_size"] == 48
        assert "tile_size" not in module.hparams
        assert module.checkpoint_metadata()["patch_size"] == 48
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(ConfigurationError, match="patch_size=64 and its old name tile_size=32"),
    ):
        _tiny(patch_size=64, tile_size=32)


def test_semi_supervised_trainer_takes_patch_size_and_warns_for_tile_size() -> None:
    from geochange.trainers import SemiSupervisedChangeTrainer

    new = SemiSupervisedChangeTrainer(model="siam_diff", method="fixmatch", patch_size=48)
    with pytest.warns(DeprecationWarning, match=r"tile_size= is now patch_size="):
        old = SemiSupervisedChangeTrainer(model="siam_diff", method="fixmatch", tile_size=48)
    for module in (new, old):
        assert module.patch_size == 48 and module.hparams["patch_size"] == 48
        assert "tile_size" not in module.hparams


def test_checkpoint_with_old_hyper_parameter_name_still_loads(tmp_path: Path) -> None:
    """A checkpoint saved when the trainer's argument was ``tile_size`` loads both ways."""
    path = _save(_tiny(patch_size=96), tmp_path / "old.ckpt", _to_old_format)
    assert "tile_size" in torch.load(path, weights_only=True)["hyper_parameters"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = ChangeTrainer.load_from_checkpoint(path)
    # The user did nothing deprecated: an old file is not a reason to warn.
    assert not [w for w in caught if "tile_size" in str(w.message)]
    assert module.patch_size == 96 and module.hparams["patch_size"] == 96
    assert "tile_size" not in module.hparams
    model, record = load_model(path)
    assert record.patch_size == 96 and isinstance(model, nn.Module)
