"""Helpers for the predictor tests: raster writing, tiny models, whole-image reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

CRS_UTM = "EPSG:32631"


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = CRS_UTM,
    transform: rasterio.Affine | None = None,
    nodata: float | None = None,
) -> Path:
    """Write a ``[C, H, W]`` array as a GeoTIFF."""
    if transform is None:
        transform = from_origin(500000.0, 4600000.0, 10.0, 10.0)
    profile = {
        "driver": "GTiff",
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


class TinyConvChange(nn.Module):
    """Siamese-free early-fusion net of two 3x3 convs: receptive-field radius 2."""

    def __init__(self, in_channels: int = 3, semantic_classes: int = 0, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(2 * in_channels, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 1 + 2 * semantic_classes, 3, padding=1)
        for param in self.parameters():
            with torch.no_grad():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
        self.semantic_classes = semantic_classes

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor] | torch.Tensor:
        b, t, c, h, w = x.shape
        out = self.conv2(torch.relu(self.conv1(x.reshape(b, t * c, h, w))))
        k = self.semantic_classes
        if not k:
            return out
        return {
            "change": out[:, :1],
            "semantic_pre": out[:, 1 : 1 + k],
            "semantic_post": out[:, 1 + k :],
        }


class TinyConvBNChange(nn.Module):
    """Two 3x3 convs with an eval-mode BatchNorm between them (foldable): radius 2."""

    def __init__(self, in_channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(2 * in_channels, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 1, 3, padding=1)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
            self.bn.running_mean.copy_(torch.randn(8, generator=gen))
            self.bn.running_var.copy_(torch.rand(8, generator=gen) + 0.5)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        hidden = torch.relu(self.bn(self.conv1(x.reshape(b, t * c, h, w))))
        return self.conv2(hidden)


class DifferenceModel(nn.Module):
    """Per-pixel change logit from the absolute date difference (receptive field 0)."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        diff = (x[:, 1] - x[:, 0]).abs().mean(1, keepdim=True)
        return {"change": (diff - 50.0) / 5.0}


def whole_image(model: nn.Module, pre: np.ndarray, post: np.ndarray, norm: float = 1000.0):
    """Reference: the model run once on the whole scene; returns per-channel probabilities."""
    x = torch.from_numpy(np.stack([pre, post]).astype(np.float32))[None] / norm
    with torch.inference_mode():
        out = model(x)
    if isinstance(out, torch.Tensor):
        return torch.sigmoid(out[0, 0]).numpy(), None, None
    k = out["semantic_pre"].shape[1]
    del k
    return (
        torch.sigmoid(out["change"][0, 0]).numpy(),
        out["semantic_pre"][0].argmax(0).numpy(),
        out["semantic_post"][0].argmax(0).numpy(),
    )
