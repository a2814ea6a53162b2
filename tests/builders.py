"""Builders shared by the tests: GeoTIFF writing, a labelled scene pair, tiny models and datasets.

Import them as ``from tests.builders import write_raster, make_pair, ...``; fixtures built on them
live in ``tests/conftest.py`` (shared) or a directory's ``conftest.py`` (local to it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
import torch
from affine import Affine
from rasterio.transform import from_origin
from torch import nn
from torch.utils.data import Dataset

#: The sibling ``../shared/data`` folder of a clone (LEVIR-CD samples, ...); may be absent.
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

CRS = "EPSG:32631"
#: The default grid of :func:`write_raster`: 10 m pixels.
TRANSFORM = from_origin(500000.0, 4600000.0, 10.0, 10.0)
#: Top-left corner of :func:`make_pair` scenes (1 m pixels).
ORIGIN = (500000.0, 4000000.0)
#: The grid of :func:`make_pair` scenes and the default of :func:`write_tif`.
PAIR_GRID = from_origin(*ORIGIN, 1.0, 1.0)


# --- rasters -------------------------------------------------------------------------------------


def write_raster(
    path: Path,
    array: np.ndarray,
    class_names: list[str] | None = None,
    *,
    crs: str | None = CRS,
    transform: Affine | None = None,
    nodata: float | None = None,
    dtype: str | None = None,
    block: int | None = None,
) -> Path:
    """Write ``array`` (``[C, H, W]`` or ``[H, W]``) as a GeoTIFF.

    Args:
        path: File to write.
        array: Pixel values; a 2-D array is written as one band.
        class_names: Written as the ``GEOCHANGE_CLASS_NAMES`` tag (JSON) when given.
        crs: Coordinate reference system; ``None`` writes a file without one.
        transform: Pixel-to-map transform; :data:`TRANSFORM` when ``None``.
        nodata: The file's nodata value.
        dtype: Data type of the file (values are cast); the array's own when ``None``.
        block: Internal tile size of a tiled file; ``None`` writes a striped one.

    Returns:
        ``path``.
    """
    arrays = array[None] if array.ndim == 2 else array
    profile: dict[str, object] = {
        "driver": "GTiff",
        "height": arrays.shape[1],
        "width": arrays.shape[2],
        "count": arrays.shape[0],
        "dtype": dtype or arrays.dtype.name,
        "crs": crs,
        "transform": TRANSFORM if transform is None else transform,
        "nodata": nodata,
    }
    if block is not None:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(arrays)
        if class_names is not None:
            ds.update_tags(GEOCHANGE_CLASS_NAMES=json.dumps(class_names))
    return path


def write_tif(
    path: Path,
    array: np.ndarray,
    *,
    transform: Affine | None = None,
    crs: str | None = CRS,
    nodata: float | None = None,
) -> Path:
    """:func:`write_raster` on the :func:`make_pair` grid by default, tiled in 64 px blocks."""
    transform = PAIR_GRID if transform is None else transform
    return write_raster(path, array, transform=transform, crs=crs, nodata=nodata, block=64)


def read_raster(path: Path, band: int | None = None) -> np.ndarray:
    """All bands of a raster (``[C, H, W]``), or one band (``[H, W]``) when ``band`` is given."""
    with rasterio.open(path) as ds:
        return ds.read(band) if band else ds.read()


# --- a labelled scene pair ----------------------------------------------------------------------


@dataclass
class Pair:
    """Paths and in-memory arrays of a generated scene pair."""

    root: Path
    pre: Path
    post: Path
    change: Path
    semantic_pre: Path
    semantic_post: Path
    change_vector: Path
    semantic_vector: Path
    pre_array: np.ndarray
    post_array: np.ndarray
    change_array: np.ndarray
    sem_pre_array: np.ndarray
    sem_post_array: np.ndarray


def make_pair(root: Path, size: int = 256, bands: int = 3, seed: int = 0) -> Pair:
    """A ``size`` x ``size`` pair at 1 m with two changed rectangles (raster and vector labels).

    Changed pixels: rows 40-79 x cols 100-159 (class 4 -> 0) and rows 200-219 x cols 20-49
    (class 5 -> 2). Pixel values differ between dates only there (plus 3 per band elsewhere).
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pre = rng.integers(20, 200, (bands, size, size), dtype=np.uint8)
    post = (pre + 3).astype(np.uint8)
    sem_pre = np.full((size, size), 5, dtype=np.uint8)
    sem_pre[: size // 2] = 4
    sem_post = sem_pre.copy()
    boxes = [((40, 80, 100, 160), 0), ((200, 220, 20, 50), 2)]
    for (r0, r1, c0, c1), new_class in boxes:
        sem_post[r0:r1, c0:c1] = new_class
        post[:, r0:r1, c0:c1] = 250
    change = (sem_pre != sem_post).astype(np.uint8)
    paths = {
        "pre": write_tif(root / "pre.tif", pre),
        "post": write_tif(root / "post.tif", post),
        "change": write_tif(root / "change.tif", change, nodata=255),
        "semantic_pre": write_tif(root / "semantic_pre.tif", sem_pre, nodata=255),
        "semantic_post": write_tif(root / "semantic_post.tif", sem_post, nodata=255),
    }
    x0, y0 = ORIGIN
    polygons = [shapely.box(x0 + c0, y0 - r1, x0 + c1, y0 - r0) for (r0, r1, c0, c1), _ in boxes]
    change_vector = root / "change.gpkg"
    gpd.GeoDataFrame({"id": [1, 2]}, geometry=polygons, crs=CRS).to_file(change_vector)
    # Per-date footprints of the post date with a class attribute (names).
    top = shapely.box(x0, y0 - size / 2, x0 + size, y0)
    bottom = shapely.box(x0, y0 - size, x0 + size, y0 - size / 2)
    semantic_vector = root / "semantic_post.gpkg"
    gpd.GeoDataFrame(
        {"class": ["tree", "cropland", "building", "water"]},
        geometry=[top.difference(polygons[0]), bottom.difference(polygons[1]), *polygons],
        crs=CRS,
    ).to_file(semantic_vector)
    return Pair(
        root=root,
        change_vector=change_vector,
        semantic_vector=semantic_vector,
        pre_array=pre,
        post_array=post,
        change_array=change,
        sem_pre_array=sem_pre,
        sem_post_array=sem_post,
        **paths,
    )


# --- tiny models (inference tests) --------------------------------------------------------------


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
    return (
        torch.sigmoid(out["change"][0, 0]).numpy(),
        out["semantic_pre"][0].argmax(0).numpy(),
        out["semantic_post"][0].argmax(0).numpy(),
    )


def torchgeo_checkpoint(task: nn.Module) -> dict:
    """The parts of a Lightning checkpoint of a TorchGeo ``ChangeDetection`` task that matter.

    ``trainer.save_checkpoint`` writes the same ``state_dict`` (the network under ``model.``)
    and ``hyper_parameters``; this skips the training run that would precede it.
    """
    state = {f"model.{k}": v for k, v in task.model.state_dict().items()}
    return {"state_dict": state, "hyper_parameters": dict(task.hparams)}


def write_torchgeo_checkpoint(
    path: Path, model: str = "unet", backbone: str = "resnet18", in_channels: int = 3, seed: int = 0
) -> Path:
    """Save a randomly initialised TorchGeo ``ChangeDetection`` checkpoint (needs torchgeo)."""
    from torchgeo.tasks import ChangeDetection

    torch.manual_seed(seed)
    task = ChangeDetection(model=model, backbone=backbone, in_channels=in_channels)
    torch.save(torchgeo_checkpoint(task.eval()), path)
    return path


# --- tiny in-memory training data ----------------------------------------------------------------


class TinyChangeDataset(Dataset[dict[str, torch.Tensor]]):
    """Random pre/post images where a square changes; optional semantic labels."""

    def __init__(
        self,
        length: int = 8,
        size: int = 32,
        channels: int = 3,
        num_classes: int | None = None,
        seed: int = 0,
    ) -> None:
        self.samples: list[dict[str, torch.Tensor]] = []
        gen = torch.Generator().manual_seed(seed)
        for _ in range(length):
            pre = torch.rand(channels, size, size, generator=gen)
            post = pre.clone()
            change = torch.zeros(size, size, dtype=torch.long)
            y, x = torch.randint(0, size // 2, (2,), generator=gen).tolist()
            post[:, y : y + size // 3, x : x + size // 3] += 1.0
            change[y : y + size // 3, x : x + size // 3] = 1
            change[0, :4] = 255  # some unlabeled pixels
            sample = {"image": torch.stack([pre, post]), "mask": change}
            if num_classes is not None:
                mask_pre = torch.randint(0, num_classes, (size, size), generator=gen)
                mask_post = torch.where(change == 1, (mask_pre + 1) % num_classes, mask_pre)
                sample["mask_pre"] = mask_pre
                sample["mask_post"] = mask_post
            self.samples.append(sample)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.samples[index]
