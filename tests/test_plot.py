"""geochange.plot: prediction figures from a model and a dataset."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from geochange.errors import ConfigurationError, DataError
from geochange.plot import figure_from_arrays, plot_predictions

matplotlib.use("Agg")

LEVIR = Path(__file__).parents[1] / ".." / "shared" / "data" / "levircd-samples"


class BrightnessChange(nn.Module):
    """Predicts change where the post date is brighter (a transparent stand-in model)."""

    def __init__(self, semantic_classes: int | None = None) -> None:
        super().__init__()
        self.semantic_classes = semantic_classes
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen = x
        difference = (x[:, 1] - x[:, 0]).mean(1, keepdim=True)
        out = {"change": 10 * (difference - 0.5)}
        if self.semantic_classes:
            k = self.semantic_classes
            logits = torch.zeros(x.shape[0], k, *x.shape[-2:])
            logits[:, 1] = 1.0
            out["semantic_pre"] = logits
            out["semantic_post"] = logits.roll(1, dims=1)
        return out


def _samples(n: int = 3, semantic: bool = False) -> list[dict[str, torch.Tensor]]:
    samples = []
    for i in range(n):
        image = torch.zeros(2, 3, 16, 16)
        image[1, :, : 4 + i, :8] = 1.0
        mask = torch.zeros(16, 16, dtype=torch.long)
        mask[: 4 + i, :8] = 1
        mask[-1] = 255
        sample = {"image": image, "mask": mask}
        if semantic:
            sample["mask_pre"] = torch.ones(16, 16, dtype=torch.long)
            sample["mask_post"] = torch.where(mask == 1, 2, 1)
        samples.append(sample)
    return samples


def test_plot_predictions_binary(tmp_path: Path) -> None:
    model = BrightnessChange()
    out = tmp_path / "grid.png"
    figure = plot_predictions(model, _samples(3), n=2, path=out)
    assert len(figure.axes) == 2 * 4  # n rows x (pre, post, truth, prediction)
    titles = [axis.get_title() for axis in figure.axes[:4]]
    assert titles == ["pre", "post", "truth", "prediction"]
    # The prediction panel shows exactly what the model predicted.
    shown = np.asarray(figure.axes[3].images[0].get_array())
    assert shown.sum() == 4 * 8
    assert out.exists() and Image.open(out).size[0] > 300
    assert not list(tmp_path.glob("*.partial*"))


def test_plot_predictions_normalizes_inputs() -> None:
    model = BrightnessChange()
    plot_predictions(model, _samples(1), n=1, normalization={"mean": [1, 1, 1], "std": [2, 2, 2]})
    assert model.seen is not None
    assert float(model.seen.min()) == pytest.approx(-0.5)
    model.normalization = {"mean": [0.0] * 3, "std": [0.5] * 3}  # a ChangeTrainer carries it
    plot_predictions(model, _samples(1), n=1)
    assert float(model.seen.max()) == pytest.approx(2.0)


def test_plot_predictions_semantic_adds_class_panels() -> None:
    figure = plot_predictions(
        BrightnessChange(semantic_classes=3), _samples(2, semantic=True), n=2,
        class_names=["a", "b", "c"],
    )  # fmt: skip
    assert len(figure.axes) == 2 * 8
    legend_texts = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend_texts == ["a", "b", "c"]


def test_plot_predictions_bad_input() -> None:
    with pytest.raises(ConfigurationError, match="outside the dataset"):
        plot_predictions(BrightnessChange(), _samples(2), indices=[5])
    with pytest.raises(DataError, match="normalization has 2 bands"):
        plot_predictions(
            BrightnessChange(), _samples(1), normalization={"mean": [0, 0], "std": [1, 1]}
        )
    with pytest.raises(DataError, match="lacks 'image' or 'mask'"):
        plot_predictions(BrightnessChange(), [{"image": torch.zeros(2, 3, 4, 4)}])
    with pytest.raises(DataError, match="image must be"):
        figure_from_arrays(np.zeros((1, 3, 4, 4)), np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))


@pytest.mark.skipif(not LEVIR.exists(), reason="shared LEVIR-CD samples not available")
def test_figure_from_levircd_crops(tmp_path: Path) -> None:
    names = ["test_2_0000_0000.png", "test_7_0256_0512.png"]
    image = np.stack([
        np.stack([np.array(Image.open(LEVIR / d / n)).transpose(2, 0, 1) for d in ("A", "B")])
        for n in names
    ])  # fmt: skip
    truth = np.stack([np.array(Image.open(LEVIR / "label" / n)) > 127 for n in names]).astype(int)
    pred = np.stack([np.array(Image.open(LEVIR / "predict_CD_BIT" / n)) > 127 for n in names])
    figure = figure_from_arrays(image, truth, pred.astype(int), titles=names)
    assert len(figure.axes) == 8
    pre_rgb = figure.axes[0].images[0].get_array()
    assert pre_rgb.shape == (256, 256, 3) and 0 <= pre_rgb.min() and pre_rgb.max() <= 1
    out = tmp_path / "levir.png"
    figure.savefig(out)
    assert out.stat().st_size > 10_000
