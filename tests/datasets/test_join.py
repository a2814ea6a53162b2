"""``BiTemporalRasterDataset & RasterDataset`` (geochange.datasets.join): layers under own keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchgeo.datasets import RasterDataset, stack_samples

from geochange.datasets import BiTemporalRasterDataset
from geochange.errors import DataError
from geochange.keys import EXTRA_IMAGE, EXTRA_MASK
from geochange.transforms import ChangeAugmentation
from tests.builders import ORIGIN, Pair, write_tif

X0, Y0 = ORIGIN


def _window(col: int, row: int, size: int) -> tuple[slice, slice]:
    return slice(X0 + col, X0 + col + size), slice(Y0 - row - size, Y0 - row)


class Dem(RasterDataset):
    filename_glob = "dem*.tif"


class LandCover(RasterDataset):
    filename_glob = "landcover.tif"
    is_image = False


@pytest.fixture
def layers(tmp_path: Path) -> dict[str, np.ndarray]:
    """A one-band float DEM and a 0..6 land-cover label on the pair's grid."""
    rng = np.random.default_rng(5)
    dem = rng.uniform(0, 500, (1, 256, 256)).astype(np.float32)
    cover = rng.integers(0, 7, (256, 256), dtype=np.uint8)
    (tmp_path / "layers").mkdir()
    write_tif(tmp_path / "layers" / "dem.tif", dem)
    write_tif(tmp_path / "layers" / "landcover.tif", cover)
    return {"dem": dem, "cover": cover, "root": tmp_path / "layers"}  # type: ignore[dict-item]


def test_image_layer_arrives_once_under_its_own_key(pair: Pair, layers: dict) -> None:
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    joined = ds & Dem(str(layers["root"]))
    sample = joined[_window(90, 30, 64)]
    assert sample["image"].shape == (2, 3, 64, 64)
    assert sample[EXTRA_IMAGE].shape == (1, 64, 64)
    np.testing.assert_allclose(sample[EXTRA_IMAGE].numpy(), layers["dem"][:, 30:94, 90:154])
    np.testing.assert_array_equal(sample["mask"].numpy(), pair.change_array[30:94, 90:154])
    # The bi-temporal sample's metadata, not a concatenation of both.
    assert sample["bounds"].shape == (9,) and sample["transform"].shape == (9,)


def test_label_layer_arrives_under_its_own_key(pair: Pair, layers: dict) -> None:
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    joined = ds & LandCover(str(layers["root"]))
    sample = joined[_window(0, 0, 64)]
    assert sample["mask"].shape == (64, 64)  # was (128, 64): both masks concatenated
    np.testing.assert_array_equal(sample["mask"].numpy(), pair.change_array[:64, :64])
    np.testing.assert_array_equal(sample[EXTRA_MASK].numpy(), layers["cover"][:64, :64])
    # Several layers: (pairs & dem) & landcover, batched and augmented together.
    both = ds & Dem(str(layers["root"])) & LandCover(str(layers["root"]))
    batch = stack_samples([both[_window(c, 0, 32)] for c in (0, 32)])
    assert batch[EXTRA_IMAGE].shape == (2, 1, 32, 32) and batch[EXTRA_MASK].shape == (2, 32, 32)
    torch.manual_seed(0)
    out = ChangeAugmentation(scale=None, brightness=0, contrast=0, saturation=0, hue=0)(batch)
    # The layers moved with the image: the DEM stays where the pre image's pixels went.
    pre_in, pre_out = batch["image"][:, 0, 0], out["image"][:, 0, 0]
    matched = 0
    for i in range(2):
        for k in range(4):
            for flipped in (torch.rot90(pre_in[i], k), torch.rot90(pre_in[i], k).flip(-1)):
                if torch.allclose(flipped, pre_out[i], atol=1e-3):
                    dem = torch.rot90(batch[EXTRA_IMAGE][i, 0], k)
                    cover = torch.rot90(batch[EXTRA_MASK][i], k)
                    if not torch.equal(flipped, torch.rot90(pre_in[i], k)):
                        dem, cover = dem.flip(-1), cover.flip(-1)
                    assert torch.allclose(out[EXTRA_IMAGE][i, 0], dem, atol=1e-2)
                    assert torch.equal(out[EXTRA_MASK][i], cover)
                    matched += 1
    assert matched == 2  # flips and 90° turns: each sample is one of the 8 symmetries


def test_label_layer_is_the_mask_of_an_unlabeled_dataset(pair: Pair, tmp_path: Path) -> None:
    class ChangeLabel(RasterDataset):
        filename_glob = "change.tif"
        is_image = False

    images = BiTemporalRasterDataset(pair.pre, pair.post)
    sample = (images & ChangeLabel(str(pair.root)))[_window(90, 30, 64)]
    np.testing.assert_array_equal(sample["mask"].numpy(), pair.change_array[30:94, 90:154])
    assert EXTRA_MASK not in sample


def test_time_series_layer_arrives_per_date(pair: Pair, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    dates = [rng.uniform(0, 1, (2, 256, 256)).astype(np.float32) for _ in range(2)]
    root = tmp_path / "ndvi"
    root.mkdir()
    for day, data in zip(("20200101", "20210101"), dates, strict=True):
        write_tif(root / f"ndvi_{day}.tif", data)

    class Ndvi(RasterDataset):
        filename_glob = "ndvi_*.tif"
        filename_regex = r"ndvi_(?P<date>\d{8})"
        date_format = "%Y%m%d"

    ds = BiTemporalRasterDataset(pair.pre, pair.post)
    joined = ds & Ndvi(str(root), time_series=True)
    sample = joined[_window(0, 0, 32)]
    assert sample[EXTRA_IMAGE].shape == (2, 2, 32, 32)
    np.testing.assert_allclose(sample[EXTRA_IMAGE][1].numpy(), dates[1][:, :32, :32])
    loader = DataLoader([sample, sample], batch_size=2, collate_fn=stack_samples)
    assert next(iter(loader))[EXTRA_IMAGE].shape == (2, 2, 2, 32, 32)


def test_torchgeo_mask_layout(pair: Pair, layers: dict) -> None:
    ds = BiTemporalRasterDataset(
        pair.pre, pair.post, change=pair.change, semantic_pre=pair.semantic_pre,
        semantic_post=pair.semantic_post, mask_layout="torchgeo",
    )  # fmt: skip
    sample = (ds & LandCover(str(layers["root"])))[_window(0, 0, 32)]
    for key in ("mask", "mask_pre", "mask_post", EXTRA_MASK):
        assert sample[key].shape == (1, 32, 32), key
    np.testing.assert_array_equal(sample["mask"][0].numpy(), pair.change_array[:32, :32])


def test_bad_layer_shapes(pair: Pair, layers: dict, tmp_path: Path) -> None:
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    cover = LandCover(str(layers["root"]))
    with pytest.raises(DataError, match="second label layer"):
        (ds & cover & LandCover(str(layers["root"])))[_window(0, 0, 32)]
