"""Short end-to-end runs of a registered model: a few training steps, one scene prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from geochange.predict import ChangePredictor
from geochange.trainers import ChangeTrainer
from tests.builders import TinyChangeDataset, write_raster


class _LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, *args: Any) -> None:
        self.losses.append(float(outputs["loss"]))


def fit_losses(
    tmp_path: Path, model: str, steps: int = 20, lr: float = 3e-3, **model_kwargs: Any
) -> list[float]:
    """Train registry model ``model`` in :class:`ChangeTrainer` on one tiny batch.

    Args:
        tmp_path: Lightning's root directory.
        model: Registry name.
        steps: Optimizer steps (the same batch of four 32-px samples each time).
        lr: Learning rate (constant: no scheduler).
        **model_kwargs: Model arguments (``backbone`` included).

    Returns:
        The training loss of every step.
    """
    torch.manual_seed(0)
    backbone = model_kwargs.pop("backbone", "resnet18")
    module = ChangeTrainer(
        model=model, backbone=backbone, model_kwargs=model_kwargs, lr=lr, scheduler="none"
    )
    loader = DataLoader(TinyChangeDataset(4, size=32), batch_size=4)
    recorder = _LossRecorder()
    trainer = pl.Trainer(
        max_steps=steps,
        max_epochs=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[recorder],
    )
    trainer.fit(module, train_dataloaders=loader)
    return recorder.losses


def predict_scene(model: nn.Module, out_dir: Path, bands: int = 3) -> Path:
    """Predict a 150 x 203 generated GeoTIFF pair (64-px tiles) with ``model``.

    Args:
        model: A change model (any mode; the predictor switches it to eval).
        out_dir: Where the scene and the products are written.
        bands: Bands of the scene (the model's ``in_channels``).

    Returns:
        The ``change.tif`` path.
    """
    rng = np.random.default_rng(0)
    pre = rng.integers(0, 1000, size=(bands, 150, 203)).astype(np.uint16)
    post = pre.copy()
    post[:, 40:90, 60:140] = rng.integers(0, 1000, size=(bands, 50, 80))
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = ChangePredictor(
        model,
        tile_size=64,
        overlap=16,
        precision="fp32",
        normalization={"mean": [500.0] * bands, "std": [300.0] * bands},
        num_workers=0,
        progress=False,
    )
    result = predictor.predict(
        write_raster(out_dir / "pre.tif", pre), write_raster(out_dir / "post.tif", post), out_dir
    )
    return result.change
