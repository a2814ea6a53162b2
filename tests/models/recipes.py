"""Recipes the per-model tests share: a short ``ChangeTrainer`` fit and a whole-scene prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import rasterio
import torch
from torch import nn
from torch.utils.data import DataLoader

from geochange.predict import ChangePredictor, PredictionResult
from geochange.trainers import ChangeTrainer
from tests.builders import TinyChangeDataset, make_pair


class _LossRecorder(pl.Callback):
    """Keeps the training loss of every step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, outputs: Any, *_: Any) -> None:
        self.losses.append(float(outputs["loss"]))


def fit_losses(model: str, tmp_path: Path, steps: int = 20, **model_kwargs: Any) -> list[float]:
    """Train registry model ``model`` for ``steps`` steps in ``ChangeTrainer``; the step losses.

    The data is one fixed batch of four 32 px :class:`TinyChangeDataset` samples, so the loss
    measures fitting, not sampling noise.
    """
    torch.manual_seed(0)
    module = ChangeTrainer(model=model, model_kwargs=model_kwargs, lr=2e-3, scheduler="none")
    data = DataLoader(TinyChangeDataset(4), batch_size=4)
    recorder = _LossRecorder()
    trainer = pl.Trainer(
        max_steps=steps,
        max_epochs=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[recorder],
    )
    trainer.fit(module, train_dataloaders=data)
    return recorder.losses


def predict_pair(model: nn.Module, tmp_path: Path) -> tuple[PredictionResult, ChangePredictor]:
    """Predict a 96 x 96 :func:`make_pair` scene with ``model`` in 64 px tiles (fp32, CPU)."""
    pair = make_pair(tmp_path / "pair", size=96)
    predictor = ChangePredictor(
        model.eval(),
        tile_size=64,
        overlap=16,
        batch_size=2,
        precision="fp32",
        num_workers=0,
        progress=False,
        normalization={"mean": [128.0] * 3, "std": [64.0] * 3},
    )
    result = predictor.predict(pair.pre, pair.post, tmp_path / "out")
    assert result.change is not None
    with rasterio.open(result.change) as ds, rasterio.open(pair.pre) as src:
        assert (ds.width, ds.height, ds.crs) == (src.width, src.height, src.crs)
        values = np.unique(ds.read(1))
    assert set(values.tolist()) <= {0, 1}
    return result, predictor


def fixmatch_terms(model: str, **model_kwargs: Any) -> dict[str, torch.Tensor]:
    """One FixMatch loss of the semi-supervised trainer with registry model ``model``.

    Both models here have only a change head, so FixMatch (not DiffMatch) is what applies.
    """
    from geochange.trainers import SemiSupervisedChangeTrainer

    torch.manual_seed(0)
    trainer = SemiSupervisedChangeTrainer(model, method="fixmatch", model_kwargs=model_kwargs)
    labeled = TinyChangeDataset(2, size=32)
    batch = {key: torch.stack([s[key] for s in labeled.samples]) for key in ("image", "mask")}
    unlabeled = {"image": torch.stack([s["image"] for s in TinyChangeDataset(2, seed=1).samples])}
    terms = trainer.semi_supervised_losses(batch, unlabeled)
    terms["loss"].backward()
    return terms
