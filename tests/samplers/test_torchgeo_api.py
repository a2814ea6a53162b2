"""The samplers use TorchGeo 0.10's current sampler API: no DeprecationWarning from TorchGeo."""

from __future__ import annotations

import warnings

import torch
from torchgeo.samplers import GeoSampler
from torchgeo.samplers.single import GeoSampler as DeprecatedGeoSampler

from geochange.datasets import BiTemporalRasterDataset
from geochange.samplers import ChangeBalancedGeoSampler, InsideGridGeoSampler
from tests.builders import Pair


def test_samplers_emit_no_torchgeo_deprecation_warning(pair: Pair) -> None:
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    with warnings.catch_warnings():
        # Scoped to TorchGeo: any DeprecationWarning raised from its modules fails the test.
        warnings.filterwarnings("error", category=DeprecationWarning, module="torchgeo")
        warnings.filterwarnings("error", category=DeprecationWarning, message=".*torchgeo.*")
        balanced = ChangeBalancedGeoSampler(
            ds, 64, change_fraction=0.5, generator=torch.Generator().manual_seed(0)
        )
        grid = InsideGridGeoSampler(ds, 64)
        windows = list(balanced) + list(grid)
        samples = [ds[w] for w in windows[:3]]
    for sampler in (balanced, grid):
        assert isinstance(sampler, GeoSampler)
        assert not isinstance(sampler, DeprecatedGeoSampler)
    # Behaviour as before: 16 non-overlapping 64-pixel windows tile the 256-pixel scene.
    assert len(balanced) == 16 and len(grid) == 16
    assert all(s["image"].shape == (2, 3, 64, 64) for s in samples)
