from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geochange.datasets import ChangeFolderDataset, SemanticChangeFolderDataset
from geochange.datasets.folder import SECOND_PALETTE
from geochange.errors import DataError


def test_levircd_samples(shared_data: Path) -> None:
    root = shared_data / "levircd-samples"
    ds = ChangeFolderDataset(root, "demo")
    names = [ln.strip() for ln in (root / "list" / "demo.txt").read_text().splitlines() if ln]
    assert len(ds) == len(names)
    sample = ds[0]
    name = ds.names[0]
    assert sample["image"].shape == (2, 3, 256, 256)
    pre = np.asarray(Image.open(root / "A" / f"{name}.png"))
    np.testing.assert_array_equal(sample["image"][0].numpy(), np.moveaxis(pre, -1, 0))
    label = np.asarray(Image.open(root / "label" / f"{name}.png"))
    np.testing.assert_array_equal(sample["mask"].numpy(), (label == 255).astype(np.int64))
    assert set(np.unique(sample["mask"].numpy())) <= {0, 1}


def test_dsifn_patches(shared_data: Path) -> None:
    root = shared_data / "dsifn-samples"
    full = ChangeFolderDataset(root, "demo")
    patches = ChangeFolderDataset(root, "demo", patch_size=100)
    # 256 px -> patch starts 0, 100, 156 on each axis.
    assert len(patches) == 9 * len(full)
    last = patches[8]
    np.testing.assert_array_equal(last["image"].numpy(), full[0]["image"][:, :, 156:, 156:].numpy())
    np.testing.assert_array_equal(last["mask"].numpy(), full[0]["mask"][156:, 156:].numpy())
    padded = ChangeFolderDataset(root, "demo", patch_size=300)[0]
    assert padded["image"].shape == (2, 3, 300, 300)
    assert (padded["mask"][256:] == 255).all() and (padded["mask"][:, 256:] == 255).all()


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_split_folders_and_missing_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        for d in ("A", "B"):
            _png(
                tmp_path / "train" / d / f"{name}.png", rng.integers(0, 255, (64, 64, 3), np.uint8)
            )
        _png(tmp_path / "train" / "label" / f"{name}.png", np.full((64, 64), 255, np.uint8))
    ds = ChangeFolderDataset(tmp_path, "train")
    assert len(ds) == 2 and int(ds[1]["mask"].sum()) == 64 * 64
    unlabeled = ChangeFolderDataset(tmp_path, "train", labels=False)
    assert "mask" not in unlabeled[0]
    (tmp_path / "train" / "label" / "b.png").unlink()
    with pytest.raises(DataError, match=r"label file for 'b' is missing.*train/label/b"):
        ChangeFolderDataset(tmp_path, "train")
    (tmp_path / "train" / "B" / "a.png").unlink()
    with pytest.raises(DataError, match=r"post file for 'a' is missing"):
        ChangeFolderDataset(tmp_path, "train", labels=False)
    with pytest.raises(DataError, match="cannot find split 'val'"):
        ChangeFolderDataset(tmp_path, "val")
    # A post image whose pre image was renamed away is named, not silently dropped.
    (tmp_path / "train" / "A" / "b.png").rename(tmp_path / "train" / "A" / "c.png")
    with pytest.raises(DataError, match=r"post file .*train/B/b\.png.* has no pre image"):
        ChangeFolderDataset(tmp_path, "train", labels=False)


def test_list_layout_missing_pair(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "levir"
    shutil.copytree(shared_data / "levircd-samples", root, ignore=shutil.ignore_patterns("pred*"))
    victim = sorted((root / "B").iterdir())[0]
    victim.unlink()
    with pytest.raises(DataError, match=f"post file for '{victim.stem}' is missing"):
        ChangeFolderDataset(root, "demo")


def _second(root: Path, rgb: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    label1 = np.zeros((32, 32), np.uint8)
    label2 = np.zeros((32, 32), np.uint8)
    label1[4:12, 4:12], label2[4:12, 4:12] = 1, 5  # low vegetation -> building
    label1[20:24, :], label2[20:24, :] = 4, 2  # water -> ground
    for split in ("train",):
        for d in ("im1", "im2"):
            _png(root / split / d / "x.png", rng.integers(0, 255, (32, 32, 3), np.uint8))
        for d, lab in (("label1", label1), ("label2", label2)):
            if rgb:
                lut = {v: k for k, v in SECOND_PALETTE.items()}
                colour = np.array([lut[int(v)] for v in lab.ravel()], np.uint8).reshape(32, 32, 3)
                _png(root / split / d / "x.png", colour)
            else:
                _png(root / split / d / "x.png", lab)
    return label1, label2


@pytest.mark.parametrize("rgb", [False, True])
def test_second_layout(tmp_path: Path, rgb: bool) -> None:
    label1, _ = _second(tmp_path, rgb)
    ds = SemanticChangeFolderDataset(tmp_path, "train", layout="second")
    assert ds.num_classes == 6
    sample = ds[0]
    change = (label1 > 0).astype(np.int64)
    np.testing.assert_array_equal(sample["mask"].numpy(), change)
    np.testing.assert_array_equal(
        sample["mask_pre"].numpy(), np.where(label1 > 0, label1.astype(np.int64) - 1, 255)
    )
    assert int(sample["mask_post"][5, 5]) == 4  # building
    assert int(sample["mask_post"][0, 0]) == 255  # unchanged: no class given


def test_hiucd_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for d in ("2018", "2019"):
        _png(tmp_path / "val" / "image" / d / "t.png", rng.integers(0, 255, (16, 16, 3), np.uint8))
    mask = np.zeros((16, 16, 3), np.uint8)
    mask[..., 0] = 3  # building
    mask[..., 1] = 3
    mask[:4, :, 1] = 5  # building -> road
    mask[..., 2] = 0
    mask[:4, :, 2] = 1
    mask[12:, :, 0] = 0  # unlabeled semantics
    mask[12:, :, 2] = 255  # ignored change
    _png(tmp_path / "val" / "mask" / "2018_2019" / "t.png", mask)
    ds = SemanticChangeFolderDataset(tmp_path, "val", layout="hiucd")
    sample = ds[0]
    assert ds.num_classes == 9 and ds.class_names[2] == "building"
    assert int(sample["mask_pre"][0, 0]) == 2 and int(sample["mask_post"][0, 0]) == 4
    assert (sample["mask_pre"][12:] == 255).all()
    assert (sample["mask"][:4] == 1).all() and (sample["mask"][4:12] == 0).all()
    assert (sample["mask"][12:] == 255).all()
    (tmp_path / "val" / "mask" / "2018_2019" / "t.png").unlink()
    with pytest.raises(DataError, match=r"label file for pre image .*t\.png.* is missing"):
        SemanticChangeFolderDataset(tmp_path, "val", layout="hiucd")
