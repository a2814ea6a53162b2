"""Rebuilding a trainer from a checkpoint (geochange.trainers.loading).

Corrupt, truncated, foreign and mismatched checkpoints are refused with errors that name the
problem; the saved metadata is cross-checked against the hyper-parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from geochange.errors import CheckpointError, ConfigurationError
from geochange.trainers import ChangeTrainer, read_checkpoint_metadata
from tests.trainers.conftest import TINY_MODEL, TinyUserModel


def test_corrupt_and_foreign_checkpoints(tmp_path: Path) -> None:
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint_metadata(missing)

    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint_metadata(corrupt)
    with pytest.raises(CheckpointError, match="corrupt"):
        ChangeTrainer.load_from_checkpoint(corrupt)

    bare = tmp_path / "bare.pt"
    torch.save(TinyUserModel().state_dict(), bare)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        read_checkpoint_metadata(bare)

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": TinyUserModel().state_dict(), "epoch": 3}, foreign)
    with pytest.raises(CheckpointError, match="not a geochange one"):
        ChangeTrainer.load_from_checkpoint(foreign)


def test_truncated_checkpoint(tmp_path: Path, make_trainer: Any, make_dm: Any) -> None:
    module = ChangeTrainer(model=TinyUserModel(), loss="bce")
    trainer = make_trainer(limit_train_batches=1)
    trainer.fit(module, datamodule=make_dm())
    path = tmp_path / "full.ckpt"
    trainer.save_checkpoint(path)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint_metadata(truncated)


def test_weights_that_do_not_fit(tmp_path: Path, make_trainer: Any, make_dm: Any) -> None:
    module = ChangeTrainer(model="fusion_unet", **TINY_MODEL)
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    trainer.fit(module, datamodule=make_dm())
    path = tmp_path / "binary.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(CheckpointError, match="do not fit"):
        ChangeTrainer.load_from_checkpoint(path, model="siam_conc")


class _Opaque:
    pass


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "geochange": {}, "extra": _Opaque()}, path)
    with pytest.raises(CheckpointError, match="other than tensors"):
        read_checkpoint_metadata(path)


def test_random_bytes_checkpoint_is_not_reported_as_python_objects(tmp_path: Path) -> None:
    path = tmp_path / "random.ckpt"
    path.write_bytes(bytes((7 * i + 3) % 256 for i in range(4096)))
    for read in (read_checkpoint_metadata, ChangeTrainer.load_from_checkpoint):
        with pytest.raises(CheckpointError) as info:
            read(path)
        message = str(info.value)
        assert "random.ckpt" in message and "not a PyTorch checkpoint" in message
        assert "Python objects" not in message


def _saved(module: ChangeTrainer, path: Path, edit: Any = None) -> Path:
    """Save ``module`` as Lightning does (``edit`` may change the dict first)."""
    import lightning

    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    module.on_save_checkpoint(checkpoint)
    if edit is not None:
        edit(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_architecture_mismatch_message_lists_every_kind_of_problem(tmp_path: Path) -> None:
    module = ChangeTrainer(model="fusion_unet", **TINY_MODEL)
    keys = list(module.state_dict())
    dropped, reshaped = keys[0], keys[1]

    def damage(checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        del state[dropped]
        state[reshaped] = torch.zeros(2, 2)
        state["model.extra_head.weight"] = torch.zeros(1)

    path = _saved(module, tmp_path / "damaged.ckpt", damage)
    with pytest.raises(CheckpointError) as info:
        ChangeTrainer.load_from_checkpoint(path)
    message = str(info.value)
    assert "damaged.ckpt" in message and "do not fit" in message
    assert "1 missing" in message and dropped in message
    assert "1 unexpected" in message and "model.extra_head.weight" in message
    expected_shape = list(module.state_dict()[reshaped].shape)
    assert "1 key with another shape" in message and reshaped in message
    assert f"checkpoint [2, 2] vs model {expected_shape}" in message

    # Another architecture: every problem is counted, examples are listed, nothing is cut.
    conc = ChangeTrainer(model="siam_conc", **TINY_MODEL)
    other = _saved(conc, tmp_path / "conc.ckpt")
    with pytest.raises(CheckpointError) as info:
        ChangeTrainer.load_from_checkpoint(other, model="fusion_unet")
    message = str(info.value)
    missing = sorted(set(module.state_dict()) - set(conc.state_dict()))
    assert len(missing) > 5
    assert f"{len(missing)} missing keys" in message and f"and {len(missing) - 5} more" in message
    assert "keys with another shape" in message
    assert "\n" not in message and "Error(s) in loading" not in message


@pytest.mark.parametrize(
    ("key", "metadata_value", "hparams_value"),
    [("in_channels", 4, 3), ("model", "siam_conc", "fusion_unet"), ("task", "semantic", "binary"),
     ("patch_size", 64, 32)],
)  # fmt: skip
def test_metadata_is_cross_checked_against_hyper_parameters(
    tmp_path: Path, key: str, metadata_value: Any, hparams_value: Any
) -> None:
    module = ChangeTrainer(model="fusion_unet", **TINY_MODEL, patch_size=32)
    assert module.hparams[key] == hparams_value

    def edit(checkpoint: dict[str, Any]) -> None:
        checkpoint["geochange"][key] = metadata_value
        if key == "task":  # a consistent semantic record, so only the task disagrees
            checkpoint["geochange"]["num_classes"] = None

    path = _saved(module, tmp_path / "edited.ckpt", edit)
    for read in (read_checkpoint_metadata, ChangeTrainer.load_from_checkpoint):
        with pytest.raises(CheckpointError) as info:
            read(path)
        message = str(info.value)
        assert "edited.ckpt" in message and key in message
        assert repr(metadata_value) in message and repr(hparams_value) in message


def test_backbone_and_normalization_are_cross_checked(tmp_path: Path) -> None:
    module = ChangeTrainer(model="fusion_unet", **TINY_MODEL)

    def edit(checkpoint: dict[str, Any]) -> None:
        checkpoint["geochange"]["model_kwargs"]["backbone"] = "resnet34"

    with pytest.raises(CheckpointError, match=r"backbone.*'resnet34'.*'resnet18'"):
        read_checkpoint_metadata(_saved(module, tmp_path / "a.ckpt", edit))
    normalized = ChangeTrainer(model="fusion_unet", **TINY_MODEL,
                               normalization={"mean": [1.0] * 3, "std": [2.0] * 3})  # fmt: skip

    def edit_norm(checkpoint: dict[str, Any]) -> None:
        checkpoint["geochange"]["normalization"] = {"mean": [9.0] * 3, "std": [2.0] * 3}

    with pytest.raises(CheckpointError, match="normalization"):
        read_checkpoint_metadata(_saved(normalized, tmp_path / "b.ckpt", edit_norm))
    # A user-model checkpoint has no model hyper-parameter: nothing to compare, it reads fine.
    user = ChangeTrainer(model=TinyUserModel(), loss="bce")
    assert read_checkpoint_metadata(_saved(user, tmp_path / "c.ckpt"))["model"] == "TinyUserModel"


def test_hparams_file_overrides_saved_hyper_parameters(tmp_path: Path) -> None:
    import yaml

    module = ChangeTrainer(model="fusion_unet", **TINY_MODEL, lr=1e-3)
    path = _saved(module, tmp_path / "a.ckpt")
    hparams = dict(module.hparams, lr=0.05)
    (tmp_path / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    loaded = ChangeTrainer.load_from_checkpoint(path, hparams_file=tmp_path / "hparams.yaml")
    assert loaded.hparams["lr"] == 0.05
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(ConfigurationError, match="hparams_file"):
        ChangeTrainer.load_from_checkpoint(path, hparams_file=tmp_path / "hparams.json")
