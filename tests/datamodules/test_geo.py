"""GeoTIFF scenes in the datamodule (geochange.datamodules.geo): open, split leak-free, sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
import torch
from rasterio.transform import from_origin

from geochange.datamodules import ChangeDataModule
from geochange.errors import ConfigurationError, DataError
from tests.builders import ORIGIN, Pair, make_pair, write_tif


def test_geo_loaders_do_not_leak(pair: Pair) -> None:
    dm = ChangeDataModule(
        pair.pre,
        pair.post,
        pair.change,
        patch_size=32,
        batch_size=4,
        samples_per_epoch=12,
        splits=(0.6, 0.2, 0.2),
    )
    dm.setup("fit")
    train_x = dm.rois["train"].bounds
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    batch = batches[0]
    assert batch["image"].shape == (4, 2, 3, 32, 32) and batch["mask"].shape == (4, 32, 32)
    for b in batches:
        assert (b["bounds"][:, 0] >= train_x[0]).all() and (b["bounds"][:, 1] <= train_x[2]).all()
    val_x = dm.rois["val"].bounds
    val = list(dm.val_dataloader())
    assert val
    for b in val:
        assert (b["bounds"][:, 0] >= val_x[0]).all() and (b["bounds"][:, 1] <= val_x[2]).all()
    assert train_x[2] <= val_x[0]
    out = dm.apply_batch_transforms(batch, train=True)
    assert out["image"].shape == batch["image"].shape and out["image"].dtype == torch.float32
    stats = dm.normalization
    mean = torch.tensor(stats["mean"]).view(1, 1, 3, 1, 1)
    std = torch.tensor(stats["std"]).view(1, 1, 3, 1, 1)
    plain = dm.apply_batch_transforms(batch, train=False)
    torch.testing.assert_close(plain["image"], (batch["image"] - mean) / std)
    assert set(out["mask"].unique().tolist()) <= {0, 1, 255}


def test_geo_labeled_fraction(pair: Pair) -> None:
    dm = ChangeDataModule(
        pair.pre,
        pair.post,
        pair.change,
        patch_size=32,
        batch_size=2,
        samples_per_epoch=4,
        labeled_fraction=0.25,
        combine_unlabeled=True,
        splits=(0.6, 0.2, 0.2),
    )
    labeled, unlabeled = dm.rois["labeled"], dm.rois["unlabeled"]
    assert labeled.intersection(unlabeled).area == 0
    assert labeled.area == pytest.approx(0.25 * dm.rois["train"].area, rel=0.05)
    ub = next(iter(dm.unlabeled_dataloader()))
    assert "mask" not in ub and ub["image"].shape == (2, 2, 3, 32, 32)
    combined = dm.train_dataloader()
    batch, *_ = next(iter(combined))
    assert set(batch) == {"labeled", "unlabeled"}
    out = dm.on_after_batch_transfer(batch, 0)
    assert "mask" in out["labeled"] and "mask" not in out["unlabeled"]


def test_geo_0_255_label_needs_mask_values(pair: Pair, shared_data: Path, tmp_path: Path) -> None:
    # A real LEVIR-CD label (0/255 PNG) as a GeoTIFF on the scene's grid.
    from PIL import Image

    from tests.builders import write_tif

    levir = np.asarray(Image.open(shared_data / "levircd-samples/label/test_2_0000_0000.png"))
    assert set(np.unique(levir)) == {0, 255}
    label = write_tif(tmp_path / "levir_change.tif", levir)
    options = {"patch_size": 32, "batch_size": 4, "splits": (0.6, 0.2, 0.2)}
    with pytest.raises(DataError, match=r"levir_change\.tif.*0/255.*mask_values=\"0,255\""):
        ChangeDataModule(pair.pre, pair.post, label, **options)
    dm = ChangeDataModule(pair.pre, pair.post, label, mask_values="0,255", **options)
    assert dm.geo_dataset is not None
    change = dm.geo_dataset.read_change(tuple(dm.geo_dataset.overlap.bounds))
    np.testing.assert_array_equal(change, (levir == 255).astype(np.uint8))
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["mask"].unique().tolist()) <= {0, 1} and (batch["mask"] == 1).any()
    # Values outside the convention fail when the datamodule is built, not at the first batch.
    seven = write_tif(tmp_path / "seven.tif", np.where(levir == 255, 7, 0).astype(np.uint8))
    with pytest.raises(DataError, match=r"seven\.tif.* holds value 7 outside"):
        ChangeDataModule(pair.pre, pair.post, seven, **options)


def _scene(root: Path, size: int, res: float) -> tuple[Path, Path, Path]:
    """A ``size`` x ``size`` random pair at ``res`` with a few changed rectangles."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    transform = from_origin(*ORIGIN, res, res)
    pre = rng.integers(20, 200, (3, size, size), dtype=np.uint8)
    change = np.zeros((size, size), np.uint8)
    for r, c in rng.integers(0, size - 60, (12, 2)):
        change[r : r + 60, c : c + 60] = 1
    post = np.where(change[None] == 1, 255 - pre, pre).astype(np.uint8)
    return (
        write_tif(root / "pre.tif", pre, transform=transform),
        write_tif(root / "post.tif", post, transform=transform),
        write_tif(root / "change.tif", change, transform=transform, nodata=255),
    )


def _windows(batches: list[dict[str, torch.Tensor]]) -> list[shapely.Polygon]:
    return [
        shapely.box(*(float(b[i]) for i in (0, 3, 1, 4)))
        for batch in batches
        for b in batch["bounds"]
    ]


@pytest.mark.parametrize(
    ("size", "res", "patch", "batch_size"),
    [(2048, 0.6, 256, 8), (768, 1.0, 128, 4)],  # the README quickstart scene; 6 x 6 windows
)
def test_scene_a_few_windows_long_splits_into_blocks(
    tmp_path: Path, size: int, res: float, patch: int, batch_size: int
) -> None:
    pre, post, change = _scene(tmp_path, size, res)
    # As in the README: default splits (0.8, 0.1, 0.1), a 10 % stripe thinner than a window.
    dm = ChangeDataModule(pre=pre, post=post, change=change, patch_size=patch,
                          batch_size=batch_size)  # fmt: skip
    dm.setup("fit")
    total = (size * res) ** 2
    windows_per_scene = (size // patch) ** 2
    for name, fraction in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(dm.rois[name].area / total - fraction) <= 1 / windows_per_scene + 1e-9
    loader = iter(dm.train_dataloader())
    train = [next(loader) for _ in range(3)]
    assert train[0]["image"].shape == (batch_size, 2, 3, patch, patch)
    windows = {
        "train": _windows(train),
        "val": _windows(list(dm.val_dataloader())),
        "test": _windows(list(dm.test_dataloader())),
    }
    for name, boxes in windows.items():
        region = dm.rois[name].buffer(1e-6)
        assert boxes and all(region.contains(w) for w in boxes), name
        for w in boxes:
            assert w.bounds[2] - w.bounds[0] == pytest.approx(patch * res)
    held_out = windows["val"] + windows["test"]
    for w in windows["train"]:
        assert all(w.intersection(other).area < 1e-6 for other in held_out)
    # Validation/test grids cover their whole region.
    for name in ("val", "test"):
        assert sum(w.area for w in windows[name]) == pytest.approx(dm.rois[name].area)


def test_labeled_fraction_on_block_splits(tmp_path: Path) -> None:
    pair = make_pair(tmp_path / "scene", size=768)
    dm = ChangeDataModule(pair.pre, pair.post, pair.change, patch_size=128, batch_size=4,
                          samples_per_epoch=8, labeled_fraction=0.1)  # fmt: skip
    train, labeled, unlabeled = dm.rois["train"], dm.rois["labeled"], dm.rois["unlabeled"]
    assert labeled.intersection(unlabeled).area == 0
    assert labeled.union(unlabeled).symmetric_difference(train).area < 1e-6
    assert labeled.area == pytest.approx(0.1 * train.area, rel=0.15)
    loaders = {"labeled": dm.train_dataloader(), "unlabeled": dm.unlabeled_dataloader()}
    for key, loader in loaders.items():
        region = dm.rois[key].buffer(1e-6)
        assert all(region.contains(w) for w in _windows(list(loader)))


def test_scene_too_small_for_the_splits_says_what_would_work(pair: Pair) -> None:
    # 256 x 256 pixels: one 200-pixel window, three non-empty splits.
    with pytest.raises(ConfigurationError) as err:
        ChangeDataModule(pair.pre, pair.post, pair.change, patch_size=200)
    message = str(err.value)
    assert (
        str(pair.pre) in message and "256 x 256 pixels, 1 x 1 windows of patch_size 200" in message
    )
    assert "use patch_size <= 128 or splits with fewer non-zero shares" in message
    # What it suggests works.
    with pytest.warns(UserWarning, match="become shares"):  # 2 x 2 blocks: coarse shares
        assert set(ChangeDataModule(pair.pre, pair.post, patch_size=128).rois) == {
            "train",
            "val",
            "test",
        }
    only_train = ChangeDataModule(pair.pre, pair.post, patch_size=200, splits=(1.0, 0.0, 0.0))
    assert set(only_train.rois) == {"train"}
