"""One source of class names, ids and colours (geochange.classes) and the paths re-exporting it."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from geochange.classes import (
    CHANGE_COLORS,
    CHANGE_PALETTE,
    CLASS_COLORS,
    IGNORE_INDEX,
    LSSCD_CLASS_NAMES,
    LSSCD_NUM_CLASSES,
    class_colours,
    class_palette,
)


def test_palette_covers_every_lsscd_class_with_distinct_colours() -> None:
    assert LSSCD_NUM_CLASSES == len(LSSCD_CLASS_NAMES) == 7
    assert sorted(CLASS_COLORS) == list(range(LSSCD_NUM_CLASSES))
    assert len(set(CLASS_COLORS.values())) == LSSCD_NUM_CLASSES
    assert class_colours(LSSCD_NUM_CLASSES) == [CLASS_COLORS[i] for i in range(7)]
    more = class_colours(12)
    assert more[:7] == class_colours(7) and len(more) == 12
    assert all(0 <= v <= 255 for rgb in more for v in rgb)
    assert set(CHANGE_COLORS) == {0, 1} and IGNORE_INDEX == 255
    assert class_palette(3) == {i: (*CLASS_COLORS[i], 255) for i in range(3)}


def test_change_palette_shows_only_the_changes() -> None:
    # "no change" is transparent over the imagery; change is opaque and unlike any class.
    assert CHANGE_PALETTE[0][3] == 0 and CHANGE_PALETTE[1][3] == 255
    assert CHANGE_COLORS == {v: rgba[:3] for v, rgba in CHANGE_PALETTE.items()}
    assert CHANGE_COLORS[1] not in CLASS_COLORS.values() and CHANGE_COLORS[1] != (0, 0, 0)


def test_old_names_are_the_one_source() -> None:
    import geochange.datasets as datasets
    import geochange.losses as losses
    import geochange.pseudo as pseudo
    import geochange.synthetic as synthetic
    import geochange.trainers as trainers
    from geochange.models.semantic_change import LSSCD_NUM_CLASSES as model_classes

    assert synthetic.CLASS_COLORS is CLASS_COLORS
    assert synthetic.CLASS_NAMES == LSSCD_CLASS_NAMES == pseudo.DEFAULT_CLASS_NAMES
    assert trainers.LSSCD_CLASS_NAMES == LSSCD_CLASS_NAMES
    assert datasets.LSSCD_CLASSES == list(LSSCD_CLASS_NAMES)
    assert model_classes == LSSCD_NUM_CLASSES
    assert synthetic.LABEL_NODATA == datasets.IGNORE_INDEX == losses.IGNORE_INDEX == IGNORE_INDEX
    from geochange.io import MASK_IGNORE

    assert MASK_IGNORE == IGNORE_INDEX


#: Every public name geochange/io.py had before it became a package.
OLD_IO_NAMES = (
    "TILED_GTIFF_OPTIONS check_writable_dir partial_path atomic_output open_raster "
    "check_raster_complete describe_window error_detail DISK_FULL_FREE_BYTES read_errors "
    "output_error write_errors file_identity check_not_inputs exclusive_lock nonfinite_pixels "
    "MASK_NO_CHANGE MASK_CHANGE MASK_IGNORE MASK_VALUES ChangeMask check_change_mask "
    "overview_factors build_cog finalize_cog bound_malloc_growth model_buffers_on_heap trim_heap "
    "worker_init_bound_malloc"
).split()


@pytest.mark.parametrize("name", OLD_IO_NAMES)
def test_old_io_names_resolve(name: str) -> None:
    io = importlib.import_module("geochange.io")
    assert getattr(io, name) is not None
    assert name in io.__all__


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("geochange.io", ["ChangeProducts", "CLASS_NAMES_TAG", "PROBABILITY_SCALE", "gdal_cache"]),
        ("geochange.synthetic", ["CLASS_COLORS", "CLASS_NAMES", "LABEL_NODATA", "BUILDING"]),
        ("geochange.predict.writer", ["CLASS_NAMES_TAG", "PROBABILITY_SCALE", "class_colours"]),
        ("geochange.predict.writer", ["NODATA_U8", "TRANSITION_NAMES_TAG", "WRITER_TAG"]),
        ("geochange.vectorize", ["OUTPUT_DRIVERS", "CLASS_NAMES_TAG", "read_class_names"]),
        ("geochange.evaluate", ["PREDICTION_FILES"]),
        ("geochange.pseudo", ["DEFAULT_CLASS_NAMES", "PSEUDO_LABELS_TAG", "CLASS_NAMES_TAG"]),
        ("geochange.trainers.change", ["LSSCD_CLASS_NAMES"]),
        ("geochange.trainers.semi", ["PSEUDO_PRE", "PSEUDO_POST", "PSEUDO_CHANGE"]),
        ("geochange.datasets", ["IGNORE_INDEX", "LSSCD_CLASSES"]),
        ("geochange.datasets.geo", ["IGNORE_INDEX", "LSSCD_CLASSES"]),
        ("geochange.losses", ["IGNORE_INDEX"]),
        ("geochange.datasets.splits", ["region_boxes", "spatial_split", "Box"]),
        ("geochange.models", ["CHANGE", "SEMANTIC_PRE", "SEMANTIC_POST", "EMBEDDING_PRE"]),
        ("geochange.models.base", ["CHANGE", "SEMANTIC_PRE", "FEATURE_DISTANCE"]),
    ],
)
def test_moved_names_keep_their_old_paths(module: str, names: list[str]) -> None:
    mod = importlib.import_module(module)
    for name in names:
        assert hasattr(mod, name), f"{module}.{name}"


def test_products_contract_values() -> None:
    from geochange import io
    from geochange.predict import PredictionResult

    assert io.PREDICTION_FILES["probability"] == "probability.tif"
    assert io.PREDICTION_FILES["change"] == "change.tif"
    assert io.PROBABILITY_SCALE == 254 and io.NODATA_U8 == 255
    result = PredictionResult(change=Path("change.tif"))
    assert isinstance(result, io.ChangeProducts)
    from geochange.evaluate import PREDICTION_FILES

    assert set(PREDICTION_FILES.items()) <= set(io.PREDICTION_FILES.items())


class _SevenClasses(nn.Module):
    """Predicts class ``x // 8 mod 7`` per tile column: every LsSCD class appears."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, _, h, w = x.shape
        cols = torch.arange(w).div(8, rounding_mode="floor") % 7
        logits = nn.functional.one_hot(cols, 7).T.float()[None, :, None, :].expand(b, 7, h, w)
        return {
            "change": torch.ones(b, 1, h, w),
            "semantic_pre": logits * 10,
            "semantic_post": logits.roll(1, dims=1) * 10,
        }


def test_synthetic_and_predicted_class_rasters_share_one_palette(tmp_path: Path) -> None:
    from geochange.predict import ChangePredictor
    from geochange.synthetic import make_scene

    scene = make_scene(tmp_path / "scene", 256, 256, seed=3, block_size=256)
    profile = {
        "driver": "GTiff", "count": 3, "height": 64, "width": 128, "dtype": "uint8",
        "crs": "EPSG:32631", "transform": from_origin(500000.0, 4600000.0, 1.0, 1.0),
    }  # fmt: skip
    paths = []
    for name in ("pre", "post"):
        path = tmp_path / f"{name}.tif"
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(np.full((3, 64, 128), 100, np.uint8))
        paths.append(path)
    predictor = ChangePredictor(
        _SevenClasses(),
        tile_size=64,
        overlap=16,
        precision="fp32",
        normalization={"mean": [0.0] * 3, "std": [1.0] * 3},
        size_divisor=1,
        num_workers=0,
        progress=False,
        class_names=list(LSSCD_CLASS_NAMES),
    )
    result = predictor.predict(paths[0], paths[1], tmp_path / "pred")
    assert result.semantic_pre is not None
    for predicted, synthetic in (
        (result.semantic_pre, scene.semantic_pre),
        (result.semantic_post, scene.semantic_post),
    ):
        with rasterio.open(predicted) as p, rasterio.open(synthetic) as s:
            assert np.unique(p.read(1)).tolist() == list(range(7))
            for class_id, rgb in CLASS_COLORS.items():
                assert p.colormap(1)[class_id] == s.colormap(1)[class_id] == (*rgb, 255)
    # The change rasters too (the synthetic one had no colour table), opacity included.
    with rasterio.open(result.change) as p, rasterio.open(scene.change) as s:
        for value, rgba in CHANGE_PALETTE.items():
            assert p.colormap(1)[value] == s.colormap(1)[value] == rgba
