"""Prediction figures logged during validation (geochange.trainers.figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from geochange.trainers import ChangeTrainer
from tests.trainers.conftest import TinyUserModel


def test_figure_logged_to_tensorboard(tmp_path: Path, make_dm: Any) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    module = ChangeTrainer(model=TinyUserModel(), loss="bce", plot_every_n_epochs=1, plot_samples=2)
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=make_dm())
    accumulator = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    accumulator.Reload()
    assert "val/predictions" in accumulator.Tags()["images"]
    image = accumulator.Images("val/predictions")[0]
    assert image.width > 200 and image.height > 100
    assert "val/f1" in accumulator.Tags()["scalars"]
