"""Figures of change predictions: pre | post | truth | prediction (+ semantic maps).

:func:`plot_predictions` runs a model on a few dataset samples and draws one row per sample;
:class:`geochange.trainers.ChangeTrainer` logs the same figure during validation through
:func:`figure_from_arrays`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from geochange.classes import IGNORE_INDEX, class_colours
from geochange.errors import ConfigurationError, DataError
from geochange.io import atomic_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["figure_from_arrays", "plot_predictions"]

# Change map colours: no change, change; ignore is drawn grey.
_CHANGE_COLOURS = ("#1a1a1a", "#ffffff")
_IGNORE_COLOUR = "#7f7f7f"


def _display_rgb(pair: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stretch a ``[2, C, H, W]`` image pair to two ``[H, W, 3]`` RGB arrays in ``[0, 1]``.

    The 2-98 % stretch is shared by both dates so that real radiometric change stays visible.
    """
    channels = pair.shape[1]
    rgb = pair[:, :3] if channels >= 3 else np.repeat(pair[:, :1], 3, axis=1)
    finite = rgb[np.isfinite(rgb)]
    if finite.size == 0:
        return np.zeros((*rgb.shape[2:], 3)), np.zeros((*rgb.shape[2:], 3))
    low, high = np.percentile(finite, [2, 98])
    scale = high - low if high > low else 1.0
    stretched = np.clip((rgb - low) / scale, 0, 1)
    stretched = np.nan_to_num(stretched)
    return stretched[0].transpose(1, 2, 0), stretched[1].transpose(1, 2, 0)


def _class_colours(num_classes: int) -> list[Any]:
    # The palette of the class rasters (geochange.classes), so figures match the GIS.
    return [(r / 255, g / 255, b / 255, 1.0) for r, g, b in class_colours(num_classes)]


def figure_from_arrays(
    image: np.ndarray,
    truth: np.ndarray,
    prediction: np.ndarray,
    *,
    truth_pre: np.ndarray | None = None,
    truth_post: np.ndarray | None = None,
    prediction_pre: np.ndarray | None = None,
    prediction_post: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
    titles: Sequence[str] | None = None,
) -> Figure:
    """Draw one row per sample: pre | post | truth | prediction (+ semantic truth/prediction).

    Args:
        image: ``[N, 2, C, H, W]`` images (raw or normalized; each row is contrast-stretched).
        truth: ``[N, H, W]`` reference change (0/1, ``ignore_index`` shown grey).
        prediction: ``[N, H, W]`` predicted change (0/1).
        truth_pre: ``[N, H, W]`` reference classes of the first date (optional).
        truth_post: ``[N, H, W]`` reference classes of the second date.
        prediction_pre: ``[N, H, W]`` predicted classes of the first date.
        prediction_post: ``[N, H, W]`` predicted classes of the second date.
        class_names: Names of the semantic classes, for the legend.
        ignore_index: Label value drawn grey.
        titles: Optional row labels (e.g. sample ids).

    Returns:
        The matplotlib figure (close it with ``matplotlib.pyplot.close`` when done).

    Raises:
        DataError: If array shapes disagree.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 5 or image.shape[1] != 2:
        raise DataError(f"image must be [N, 2, C, H, W], got shape {image.shape}")
    n, height, width = image.shape[0], image.shape[3], image.shape[4]
    for name, array in (("truth", truth), ("prediction", prediction)):
        if np.asarray(array).shape != (n, height, width):
            raise DataError(
                f"{name} must be [{n}, {height}, {width}], got {np.asarray(array).shape}"
            )
    semantic_panels = [
        (label, array)
        for label, array in (
            ("truth pre", truth_pre),
            ("truth post", truth_post),
            ("pred pre", prediction_pre),
            ("pred post", prediction_post),
        )
        if array is not None
    ]
    num_classes = 0
    if semantic_panels:
        if class_names is not None:
            num_classes = len(class_names)
        else:
            values = np.concatenate([np.asarray(a).ravel() for _, a in semantic_panels])
            values = values[values != ignore_index]
            num_classes = int(values.max()) + 1 if values.size else 1
    columns = 4 + len(semantic_panels)
    figure, axes = plt.subplots(
        n,
        columns,
        figsize=(2.4 * columns, 2.4 * n + (0.6 if semantic_panels else 0)),
        squeeze=False,
    )
    change_cmap = ListedColormap(list(_CHANGE_COLOURS)).with_extremes(bad=_IGNORE_COLOUR)
    class_cmap = ListedColormap(_class_colours(max(num_classes, 1))).with_extremes(
        bad=_IGNORE_COLOUR
    )
    for row in range(n):
        pre_rgb, post_rgb = _display_rgb(image[row])
        panels: list[tuple[str, Any, Any, int]] = [
            ("pre", pre_rgb, None, 0),
            ("post", post_rgb, None, 0),
            ("truth", np.ma.masked_equal(np.asarray(truth[row]), ignore_index), change_cmap, 1),
            (
                "prediction",
                np.ma.masked_equal(np.asarray(prediction[row]), ignore_index),
                change_cmap,
                1,
            ),
        ]
        for label, array in semantic_panels:
            panels.append(
                (
                    label,
                    np.ma.masked_equal(np.asarray(array[row]), ignore_index),
                    class_cmap,
                    num_classes - 1,
                )
            )
        for column, (label, data, cmap, vmax) in enumerate(panels):
            axis = axes[row][column]
            if cmap is None:
                axis.imshow(data)
            else:
                axis.imshow(data, cmap=cmap, vmin=0, vmax=max(vmax, 1), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(label, fontsize=9)
        if titles is not None and row < len(titles):
            axes[row][0].set_ylabel(str(titles[row]), fontsize=8)
    if semantic_panels:
        names = (
            list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        )
        colours = _class_colours(max(num_classes, 1))
        handles = [Patch(color=colours[i], label=names[i]) for i in range(num_classes)]
        figure.legend(handles=handles, loc="lower center", ncol=min(num_classes, 7), fontsize=8)
    figure.tight_layout(rect=(0, 0.06 if semantic_panels else 0, 1, 1))
    return figure


def _normalization_of(
    model: nn.Module, normalization: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    if normalization is not None:
        return normalization
    # A ChangeTrainer (or its checkpoint) knows the statistics it was trained with.
    return getattr(model, "normalization", None)


@torch.no_grad()
def plot_predictions(
    model: nn.Module,
    dataset: Sequence[Mapping[str, Any]] | Any,
    n: int = 4,
    path: str | Path | None = None,
    *,
    indices: Sequence[int] | None = None,
    normalization: Mapping[str, Sequence[float]] | None = None,
    class_names: Sequence[str] | None = None,
    threshold: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
    device: str | torch.device = "cpu",
    dpi: int = 100,
) -> Figure:
    """Predict ``n`` dataset samples and draw pre | post | truth | prediction per row.

    Semantic models (outputs ``semantic_pre`` / ``semantic_post``) add truth and predicted class
    maps when the samples hold ``mask_pre`` / ``mask_post``.

    Args:
        model: A :class:`geochange.trainers.ChangeTrainer` or any module following the model
            contract (``forward(x [B, 2, C, H, W]) -> {"change": logits, ...}``).
        dataset: Indexable dataset of sample dicts (``image`` ``[2, C, H, W]`` raw pixel values,
            ``mask`` ``[H, W]``, optional ``mask_pre``/``mask_post``).
        n: Number of samples (the first ``n`` unless ``indices`` is given).
        path: If given, the figure is also saved there (atomically; format from the suffix).
        indices: Dataset indices to draw.
        normalization: ``{"mean", "std"}`` applied to model inputs; default: the model's own
            (``ChangeTrainer.normalization``), else none (samples are used as they are).
        class_names: Semantic class names (default: the model's).
        threshold: Change probability threshold.
        ignore_index: Label value drawn grey.
        device: Device to run the model on.
        dpi: Resolution of the saved file.

    Returns:
        The matplotlib figure.

    Raises:
        ConfigurationError: If ``n`` < 1 or an index is out of range.
        DataError: If samples lack ``image`` / ``mask`` or normalization has the wrong length.
    """
    if indices is None:
        if n < 1:
            raise ConfigurationError(f"n must be >= 1, got {n}")
        indices = list(range(min(n, len(dataset))))
    if not indices:
        raise ConfigurationError("the dataset is empty: nothing to plot")
    samples = []
    for index in indices:
        if not 0 <= index < len(dataset):
            raise ConfigurationError(
                f"index {index} is outside the dataset (length {len(dataset)})"
            )
        sample = dataset[index]
        if "image" not in sample or "mask" not in sample:
            raise DataError(
                f"dataset sample {index} lacks 'image' or 'mask' (keys {sorted(sample)})"
            )
        samples.append(sample)
    images = torch.stack([torch.as_tensor(s["image"]).float() for s in samples])
    norm = _normalization_of(model, normalization)
    inputs = images
    if norm is not None:
        mean = torch.as_tensor(norm["mean"], dtype=torch.float32).view(1, 1, -1, 1, 1)
        std = torch.as_tensor(norm["std"], dtype=torch.float32).view(1, 1, -1, 1, 1)
        if mean.numel() != images.shape[2]:
            raise DataError(
                f"normalization has {mean.numel()} bands but the samples have {images.shape[2]}"
            )
        inputs = (images - mean) / std
    was_training = model.training
    model.eval()
    model.to(device)
    try:
        outputs = model(inputs.to(device))
    finally:
        model.train(was_training)
    if isinstance(outputs, Tensor):
        outputs = {"change": outputs}
    probability = outputs["change"][:, 0].float().sigmoid().cpu()
    prediction = (probability > threshold).long().numpy()

    def stack(key: str) -> np.ndarray | None:
        if all(key in s for s in samples):
            return torch.stack([torch.as_tensor(s[key]) for s in samples]).long().numpy()
        return None

    semantic = "semantic_pre" in outputs and "semantic_post" in outputs
    names = class_names if class_names is not None else getattr(model, "class_names", None)
    figure = figure_from_arrays(
        images.numpy(),
        stack("mask"),  # type: ignore[arg-type]
        prediction,
        truth_pre=stack("mask_pre") if semantic else None,
        truth_post=stack("mask_post") if semantic else None,
        prediction_pre=outputs["semantic_pre"].argmax(1).cpu().numpy() if semantic else None,
        prediction_post=outputs["semantic_post"].argmax(1).cpu().numpy() if semantic else None,
        class_names=names,
        ignore_index=ignore_index,
        titles=[str(i) for i in indices],
    )
    if path is not None:
        path = Path(path)
        with atomic_output(path) as temporary:
            figure.savefig(temporary, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return figure
