"""Prediction figures of validation (pre | post | truth | prediction) sent to the loggers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import Tensor

__all__ = ["log_prediction_figure"]


def log_prediction_figure(
    loggers: Iterable[Any],
    batch: dict[str, Tensor],
    *,
    step: int,
    class_names: Sequence[str] | None,
    ignore_index: int,
) -> None:
    """Draw a kept validation batch and its predictions, and log the figure.

    TensorBoard gets it as ``val/predictions``, MLflow as ``predictions/step_<step>.png``;
    other loggers are skipped.

    Args:
        loggers: The module's loggers.
        batch: ``image``, ``mask`` (+ ``mask_pre`` / ``mask_post``) and the ``pred_<key>`` maps.
        step: Global step the figure belongs to.
        class_names: Names of the semantic classes, if any.
        ignore_index: Label value drawn as unlabeled.
    """
    import matplotlib.pyplot as plt

    from geochange.plot import figure_from_arrays

    figure = figure_from_arrays(
        image=batch["image"].float().cpu().numpy(),
        truth=batch["mask"].cpu().numpy(),
        prediction=batch["pred_change"].cpu().numpy(),
        truth_pre=batch["mask_pre"].cpu().numpy() if "mask_pre" in batch else None,
        truth_post=batch["mask_post"].cpu().numpy() if "mask_post" in batch else None,
        prediction_pre=batch["pred_semantic_pre"].cpu().numpy()
        if "pred_semantic_pre" in batch
        else None,
        prediction_post=batch["pred_semantic_post"].cpu().numpy()
        if "pred_semantic_post" in batch
        else None,
        class_names=class_names,
        ignore_index=ignore_index,
    )
    for logger in loggers:
        experiment: Any = getattr(logger, "experiment", None)
        if hasattr(experiment, "add_figure"):  # TensorBoard SummaryWriter
            experiment.add_figure("val/predictions", figure, global_step=step)
        elif hasattr(experiment, "log_figure") and hasattr(logger, "run_id"):  # MLflow client
            experiment.log_figure(logger.run_id, figure, f"predictions/step_{step:07d}.png")
    plt.close(figure)
