"""geochange.vectorize.blocks: per-block work in workers, and errors raised inside a block."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.features

from geochange.errors import DataError
from geochange.vectorize import (
    vectorize_changes,
)

from .conftest import (
    CRS,
    TRANSFORM,
    stress_mask,
    write_raster,
)


def test_process_pool_gives_same_result(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    mask = (rng.random((120, 100)) < 0.3).astype(np.uint8)
    path = write_raster(tmp_path / "noise.tif", mask)
    serial = vectorize_changes(path, block_size=32, workers=1)
    parallel = vectorize_changes(path, block_size=32, workers=2)
    assert len(serial) == len(parallel)
    assert serial.geometry.geom_equals_exact(parallel.geometry, tolerance=0).all()
    assert (serial["pixel_count"] == parallel["pixel_count"]).all()


def test_values_outside_the_open_time_sample_fail_in_their_block(
    tmp_path: Path, monkeypatch
) -> None:
    import geochange.io.raster

    mask = stress_mask()
    mask[-1, -1] = 7
    path = write_raster(tmp_path / "late.tif", mask)
    # Sample only the first strip when the file is opened: the block pass still finds the 7.
    monkeypatch.setattr(geochange.io.raster, "_MASK_SAMPLE_PIXELS", 1)
    with pytest.raises(DataError, match=r"late\.tif' holds value 7 outside"):
        vectorize_changes(path, block_size=16, workers=1)


def test_corrupt_block_is_a_data_error_naming_file_and_window(tmp_path: Path, capsys) -> None:
    from geochange.cli import main as cli_main

    values = np.zeros((64, 64), np.uint8)
    values[5:20, 5:20] = 1
    values[40:60, 30:50] = 1
    path = tmp_path / "change.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=64,
        width=64,
        count=1,
        dtype="uint8",
        crs=CRS,
        transform=TRANSFORM,
        nodata=255,
        tiled=True,
        blockxsize=16,
        blockysize=16,
        compress="deflate",
    ) as ds:
        ds.write(values, 1)
    with rasterio.open(path) as ds:  # zero the inside of block (row 2, col 2): rows 32-48
        offset = int(ds.get_tag_item("BLOCK_OFFSET_2_2", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_2_2", "TIFF", bidx=1))
    data = bytearray(path.read_bytes())
    data[offset + 2 : offset + size - 2] = bytes(size - 4)
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"cannot read {re.escape(repr(str(path)))} at rows 32-"):
        vectorize_changes(path, block_size=32, workers=1)
    code = cli_main(["vectorize", str(path), "--out", str(tmp_path / "x.gpkg"), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "geochange vectorize: error: cannot read " in err
    assert not (tmp_path / "x.gpkg").exists()
