"""Batches read straight into their buffers (``__getitems__``) and geochange's ``stack_samples``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchgeo.datasets import stack_samples as torchgeo_stack_samples

from geochange.datasets import BiTemporalRasterDataset
from geochange.datasets.batches import BatchSamples, select_keys, stack_samples, widen
from tests.builders import ORIGIN, Pair, write_tif

X0, Y0 = ORIGIN


def _query(col: int, row: int, size: int) -> tuple[slice, slice]:
    return slice(X0 + col, X0 + col + size), slice(Y0 - row - size, Y0 - row)


QUERIES = [_query(c, r, 64) for c, r in ((0, 0), (90, 30), (13, 171), (150, 150), (100, 40))]


def _dataset(pair: Pair, **kwargs: Any) -> BiTemporalRasterDataset:
    return BiTemporalRasterDataset(
        pair.pre,
        pair.post,
        change=pair.change,
        semantic_pre=pair.semantic_pre,
        semantic_post=pair.semantic_post,
        **kwargs,
    )


def _assert_batches_equal(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def test_getitems_equals_one_sample_at_a_time(pair: Pair) -> None:
    ds = _dataset(pair)
    samples = ds.__getitems__(QUERIES)
    assert isinstance(samples, BatchSamples)
    for sample, query in zip(samples, QUERIES, strict=True):
        _assert_batches_equal(sample, ds[query])
    # The batch holds real pixels and labels: the changed rectangle of the pair is in window 4.
    assert int(samples[4]["mask"].sum()) == 40 * 60


def test_stack_samples_reuses_the_buffers_and_equals_torchgeo(pair: Pair) -> None:
    ds = _dataset(pair)
    samples = ds.__getitems__(QUERIES)
    batch = stack_samples(samples)
    assert batch["image"].data_ptr() == samples.stacked["image"].data_ptr()  # no copy
    assert batch["image"].shape == (5, 2, 3, 64, 64) and batch["mask"].shape == (5, 64, 64)
    _assert_batches_equal(batch, torchgeo_stack_samples([ds[q] for q in QUERIES]))


def test_stack_samples_copies_samples_that_were_replaced(pair: Pair) -> None:
    ds = _dataset(pair)
    samples = ds.__getitems__(QUERIES)
    samples[1]["image"] = samples[1]["image"] * 2  # e.g. a transform outside the dataset
    batch = stack_samples(samples)
    assert batch["image"].data_ptr() != samples.stacked["image"].data_ptr()
    np.testing.assert_array_equal(batch["image"][1].numpy(), 2 * ds[QUERIES[1]]["image"].numpy())


def test_select_keys_keeps_the_batch(pair: Pair) -> None:
    ds = _dataset(pair)
    samples = ds.__getitems__(QUERIES)
    kept = select_keys(samples, drop=("mask_pre",), rename={"mask": "diagnostic_change"})
    batch = stack_samples(kept)
    assert "mask_pre" not in batch and "mask" not in batch
    assert batch["diagnostic_change"].data_ptr() == samples.stacked["mask"].data_ptr()


def test_transforms_and_torchgeo_layout_read_sample_by_sample(pair: Pair) -> None:
    def double(sample: dict[str, Any]) -> dict[str, Any]:
        return {**sample, "image": sample["image"] * 2}

    for ds in (_dataset(pair, transforms=double), _dataset(pair, mask_layout="torchgeo")):
        samples = ds.__getitems__(QUERIES)
        assert not isinstance(samples, BatchSamples)
        _assert_batches_equal(
            stack_samples(samples), torchgeo_stack_samples([ds[q] for q in QUERIES])
        )


def test_windows_of_different_sizes_fall_back(pair: Pair) -> None:
    ds = _dataset(pair)
    queries = [_query(0, 0, 64), _query(10, 10, 32)]
    samples = ds.__getitems__(queries)
    assert [s["image"].shape[-1] for s in samples] == [64, 32]


def test_windows_past_the_edge_are_filled_as_one_at_a_time(pair: Pair) -> None:
    ds = _dataset(pair)
    queries = [_query(220, 220, 64), _query(0, 0, 64)]  # the first one reads past the edge
    samples = ds.__getitems__(queries)
    for sample, query in zip(samples, queries, strict=True):
        _assert_batches_equal(sample, ds[query])
    assert bool((samples[0]["mask"] == 255).any())


def _collate_noting_shared(samples: list[dict[str, Any]]) -> dict[str, Any]:
    batch = stack_samples(samples)
    # Checked where the batch is made: in shared memory there, it reaches the main process
    # without the copy the DataLoader makes of an ordinary tensor.
    return {**batch, "made_shared": [batch["image"].is_shared()]}


def test_worker_batches_are_made_in_shared_memory_and_equal(pair: Pair) -> None:
    ds = _dataset(pair)
    loader = DataLoader(
        ds, sampler=QUERIES, batch_size=5, collate_fn=_collate_noting_shared, num_workers=1
    )
    (batch,) = list(loader)
    assert batch.pop("made_shared") == [True]
    _assert_batches_equal(batch, torchgeo_stack_samples([ds[q] for q in QUERIES]))


@pytest.mark.parametrize("workers", [0, 1])
def test_stack_samples_of_plain_samples(workers: int) -> None:
    samples = [{"image": torch.full((2, 3), float(i)), "name": str(i)} for i in range(3)]
    loader = DataLoader(
        samples, batch_size=3, collate_fn=_collate_noting_shared, num_workers=workers
    )
    (batch,) = list(loader)
    assert batch["name"] == ["0", "1", "2"]
    assert batch["made_shared"] == [workers > 0]
    torch.testing.assert_close(batch["image"][:, 0, 0], torch.tensor([0.0, 1.0, 2.0]))


def test_compact_samples_widen_to_the_ordinary_batch(pair: Pair) -> None:
    ordinary = _dataset(pair)
    compact = _dataset(pair, compact=True)
    queries = [*QUERIES, _query(220, 220, 64)]  # the last one reads past the edge
    samples = compact.__getitems__(queries)
    batch = stack_samples(samples)
    assert batch["image"].dtype == torch.uint8 and batch["mask"].dtype == torch.uint8
    assert batch["image"].data_ptr() == samples.stacked["image"].data_ptr()
    expected = torchgeo_stack_samples([ordinary[q] for q in queries])
    _assert_batches_equal(widen(batch), expected)
    single = compact[queries[-1]]  # one at a time, through the general (filling) path
    assert single["image"].dtype == torch.uint8 and single["mask"].dtype == torch.uint8
    _assert_batches_equal(widen(single), ordinary[queries[-1]])


def test_widen_leaves_ordinary_batches_alone() -> None:
    batch = {"image": torch.zeros(1, 2, 3, 4, 4), "mask": torch.zeros(1, 4, 4, dtype=torch.long)}
    widened = widen(batch)
    assert widened["image"] is batch["image"] and widened["mask"] is batch["mask"]


def test_compact_float_rasters_stay_float32(tmp_path: Path) -> None:
    pre = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    ds = BiTemporalRasterDataset(
        write_tif(tmp_path / "pre.tif", pre), write_tif(tmp_path / "post.tif", pre), compact=True
    )
    assert ds[_query(0, 0, 32)]["image"].dtype == torch.float32
