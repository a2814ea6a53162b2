"""Helpers shared by the predictor tests: tiny predictors, a band reader, a crashing model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch

from geochange.predict import ChangePredictor
from tests.builders import TinyConvChange

#: What a binary prediction leaves in its output directory: the COGs and their GIS sidecars
#: (PAM ``.aux.xml`` of the class raster, a QGIS ``.qml`` style each).
BINARY_OUTPUT_FILES = [
    "change.qml",
    "change.tif",
    "change.tif.aux.xml",
    "probability.qml",
    "probability.tif",
]

NORM = {"mean": [0.0, 0.0, 0.0], "std": [1000.0, 1000.0, 1000.0]}


#: Exact, quiet, single-process predictor settings on 64-px tiles.
EXACT = {
    "tile_size": 64,
    "overlap": 16,
    "precision": "fp32",
    "probability_dtype": "float32",
    "normalization": NORM,
    "size_divisor": 1,
    "num_workers": 0,
    "progress": False,
}


def exact_predictor(model: torch.nn.Module, **kwargs) -> ChangePredictor:
    return ChangePredictor(model, **{**EXACT, "batch_size": 3, **kwargs})


def tiny_predictor(**kwargs) -> ChangePredictor:
    return ChangePredictor(TinyConvChange(), **{**EXACT, **kwargs})


def read(path: Path | None) -> np.ndarray:
    assert path is not None
    with rasterio.open(path) as ds:
        return ds.read(1)


class Interrupt(RuntimeError):
    pass


class FailingAfter(TinyConvChange):
    """The same tiny model (same weights), raising after ``calls`` tile batches (a crash)."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls

    def forward(self, x: torch.Tensor):
        if x.shape[-1] > 40:  # let the 32-px channel probe through
            self.calls -= 1
            if self.calls < 0:
                raise Interrupt("simulated crash")
        return super().forward(x)
