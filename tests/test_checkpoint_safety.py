"""No geochange entry point unpickles arbitrary objects from a weights / checkpoint file.

A crafted file whose pickle runs code when loaded (its ``__reduce__`` writes a marker file) is
handed to every way geochange reads such files; each must refuse it with a
:class:`~geochange.errors.CheckpointError` (the CLI: ``geochange CMD: error: ...``, exit 1, no
traceback) and the marker must never appear.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from geochange.cli import main as cli_main
from geochange.errors import CheckpointError
from geochange.models import build_model, load_pretrained
from geochange.predict import ChangePredictor
from geochange.trainers import ChangeTrainer, read_checkpoint_metadata

SMALL = {"encoder_depth": 3, "decoder_channels": [32, 16, 16]}
FORMATS = ["zip", "legacy"]  # torch.save's default zip format and the pre-1.6 pickle stream


class RunsCode:
    """Unpickling this writes ``marker``: a stand-in for arbitrary code in a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({self.marker!r}, 'w').close()",)


def _save(obj: Any, path: Path, fmt: str) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=fmt == "zip")
    return path


def _geochange_checkpoint() -> dict[str, Any]:
    module = ChangeTrainer(model="siam_diff", backbone="resnet18", model_kwargs=SMALL)
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    module.on_save_checkpoint(checkpoint)
    return checkpoint


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code-was-run"


@pytest.fixture(params=FORMATS)
def evil_weights(request: pytest.FixtureRequest, tmp_path: Path, marker: Path) -> Path:
    """Real siam_diff weights plus a code-running object, as a plain weights file."""
    state = build_model("siam_diff", **SMALL).state_dict()
    payload = {"state_dict": state, "extra": RunsCode(marker)}
    return _save(payload, tmp_path / "evil.pth", request.param)


@pytest.fixture(params=FORMATS)
def evil_checkpoint(request: pytest.FixtureRequest, tmp_path: Path, marker: Path) -> Path:
    """A complete geochange checkpoint that also carries a code-running object."""
    checkpoint = _geochange_checkpoint()
    checkpoint["callbacks"] = {"Evil": RunsCode(marker)}
    return _save(checkpoint, tmp_path / "evil.ckpt", request.param)


def _binary_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        pre = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        label = np.zeros((64, 64), dtype=np.uint8)
        for folder, array in (("A", pre), ("B", 255 - pre), ("label", label)):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / split / folder / "a.png")
    return root


def _fit_config(tmp_path: Path, weights: Path | None = None) -> Path:
    config = {
        "model": {
            "class_path": "ChangeTrainer",
            "init_args": {
                "model": "siam_diff",
                "backbone": "resnet18",
                "weights": str(weights) if weights else None,
                "model_kwargs": SMALL,
            },
        },
        "data": {
            "class_path": "FolderChangeDataModule",
            "init_args": {
                "root": str(_binary_folder(tmp_path / "data")),
                "test_split": None,
                "patch_size": 64,
                "batch_size": 1,
            },
        },
        "trainer": {
            "fast_dev_run": True,
            "accelerator": "cpu",
            "logger": False,
            "enable_progress_bar": False,
            "default_root_dir": str(tmp_path),
        },
    }
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _assert_clean_cli_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err
    assert f"geochange {command}: error:" in err
    assert "Traceback" not in err
    return err


def test_the_payload_really_runs_code_when_unpickled(evil_weights: Path, marker: Path) -> None:
    # Guards the tests below: the file is malicious, so "no marker" means "no code ran".
    torch.load(evil_weights, weights_only=False)
    assert marker.exists()


def test_build_model_refuses_code_in_weights(evil_weights: Path, marker: Path) -> None:
    with pytest.raises(CheckpointError, match=r"evil\.pth.*Python objects"):
        build_model("siam_diff", weights=evil_weights, **SMALL)
    assert not marker.exists()


def test_load_pretrained_refuses_code_in_weights(evil_weights: Path, marker: Path) -> None:
    model = build_model("siam_diff", **SMALL)
    with pytest.raises(CheckpointError, match="Python objects"):
        load_pretrained(model, evil_weights)
    assert not marker.exists()


def test_trainer_weights_refuse_code(evil_weights: Path, marker: Path) -> None:
    with pytest.raises(CheckpointError, match="Python objects"):
        ChangeTrainer(model="siam_diff", weights=str(evil_weights), model_kwargs=SMALL)
    assert not marker.exists()


def test_checkpoint_readers_refuse_code(evil_checkpoint: Path, marker: Path) -> None:
    with pytest.raises(CheckpointError, match=r"evil\.ckpt.*Python objects"):
        read_checkpoint_metadata(evil_checkpoint)
    with pytest.raises(CheckpointError, match="Python objects"):
        ChangeTrainer.load_from_checkpoint(evil_checkpoint)
    with pytest.raises(CheckpointError, match="Python objects"):
        ChangePredictor.from_checkpoint(evil_checkpoint)
    assert not marker.exists()


def test_cli_predict_refuses_code(
    evil_checkpoint: Path, marker: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--pre", "pre.tif", "--post", "post.tif", "--out-dir", str(tmp_path / "out")]
    assert cli_main(["predict", "--checkpoint", str(evil_checkpoint), *args]) == 1
    assert "Python objects" in _assert_clean_cli_error(capsys, "predict")
    assert not marker.exists()


@pytest.fixture
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    # LightningCLI warns when sys.argv (pytest's) and args are both present.
    monkeypatch.setattr(sys, "argv", ["geochange"])


@pytest.mark.usefixtures("_plain_argv")
def test_cli_fit_weights_in_config_refuse_code(
    evil_weights: Path, marker: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _fit_config(tmp_path, weights=evil_weights)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(config)])
    assert exit_info.value.code == 1
    assert "Python objects" in _assert_clean_cli_error(capsys, "fit")
    assert not marker.exists()


@pytest.mark.usefixtures("_plain_argv")
def test_cli_fit_ckpt_path_refuses_code(
    evil_checkpoint: Path, marker: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _fit_config(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(config), "--ckpt_path", str(evil_checkpoint)])
    assert exit_info.value.code == 1
    err = _assert_clean_cli_error(capsys, "fit")
    assert "evil.ckpt" in err and "Python objects" in err
    assert not marker.exists()


@pytest.mark.usefixtures("_plain_argv")
def test_cli_still_resumes_and_validates_from_safe_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_fit_config(tmp_path))
    short = ["--trainer.fast_dev_run=false", "--trainer.limit_train_batches=1",
             "--trainer.limit_val_batches=1", "--trainer.enable_model_summary=false"]  # fmt: skip
    assert cli_main(["fit", "--config", config, *short, "--trainer.max_epochs=1"]) == 0
    [checkpoint] = (tmp_path / "checkpoints").glob("*.ckpt")
    assert read_checkpoint_metadata(checkpoint)["model"] == "siam_diff"
    # A full Lightning checkpoint (optimizer, loops, callbacks) reads with weights_only=True.
    resumed = ["--trainer.max_epochs=2", "--ckpt_path", str(checkpoint)]
    assert cli_main(["fit", "--config", config, *short, *resumed]) == 0
    assert cli_main(["validate", "--config", config, *short, "--ckpt_path", str(checkpoint)]) == 0
    capsys.readouterr()

    with pytest.raises(SystemExit) as exit_info:
        cli_main(["validate", "--config", config, "--ckpt_path", str(tmp_path / "nope.ckpt")])
    assert exit_info.value.code == 1
    assert "nope.ckpt does not exist" in _assert_clean_cli_error(capsys, "validate")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            ["fit", "--config", config, "--ckpt_path", str(checkpoint), "--weights_only=false"]
        )
    assert exit_info.value.code == 1
    assert "weights_only" in _assert_clean_cli_error(capsys, "fit")
