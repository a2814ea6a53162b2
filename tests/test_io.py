import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geochange.io import TILED_GTIFF_OPTIONS, finalize_cog, overview_factors


def test_finalize_cog_keeps_georeferencing_and_adds_overviews(tmp_path):
    tiled = tmp_path / "tiled.tif"
    transform = from_origin(500000, 4000000, 0.6, 0.6)
    data = (np.arange(1024 * 768) % 251).astype("uint8").reshape(768, 1024)
    profile = dict(
        TILED_GTIFF_OPTIONS,
        height=768,
        width=1024,
        count=1,
        dtype="uint8",
        crs="EPSG:32650",
        transform=transform,
        nodata=255,
    )
    with rasterio.open(tiled, "w", **profile) as ds:
        ds.write(data[:512], 1, window=((0, 512), (0, 1024)))
        ds.write(data[512:], 1, window=((512, 768), (0, 1024)))
        ds.update_tags(class_names="a,b")
    out = finalize_cog(tiled, tmp_path / "out.tif")
    assert not tiled.exists()
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 32650
        assert ds.transform == transform
        assert ds.nodata == 255
        assert ds.overviews(1) == overview_factors(768, 1024) == [2]
        assert ds.profile["tiled"] and ds.tags()["class_names"] == "a,b"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        np.testing.assert_array_equal(ds.read(1), data)


def test_bound_malloc_growth_applies_on_linux_glibc() -> None:
    import platform
    import sys

    from geochange.io import bound_malloc_growth, worker_init_bound_malloc

    applied = bound_malloc_growth()
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert applied is True
        worker_init_bound_malloc(0)  # idempotent, as DataLoader workers call it
        assert bound_malloc_growth() is True
    else:
        assert applied is False


@pytest.mark.parametrize("interleave", ["pixel", "band"])
def test_truncated_geotiff_is_detected_without_reading_pixels(tmp_path, interleave):
    from geochange.errors import DataError
    from geochange.io import open_raster

    profile = dict(
        TILED_GTIFF_OPTIONS,
        height=600,
        width=300,
        count=3,
        dtype="uint16",
        crs="EPSG:32650",
        transform=from_origin(500000, 4000000, 1, 1),
        interleave=interleave,
        blockxsize=128,
        blockysize=128,
        sparse_ok=True,
    )
    path = tmp_path / "image.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as ds:
        # Band 3 of the last block row is never written (sparse): not a truncation.
        ds.write(rng.integers(0, 999, (2, 600, 300)).astype("uint16"), [1, 2])
        ds.write(rng.integers(0, 999, (512, 300)).astype("uint16"), 3, window=((0, 512), (0, 300)))
    open_raster(path).close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError, match=r"is truncated: it has \d+ bytes but its image data"):
        open_raster(path)


def test_exclusive_lock_names_holder_and_warns_where_locks_are_unsupported(tmp_path, monkeypatch):
    import errno
    import fcntl

    from geochange.errors import OutputError
    from geochange.io import exclusive_lock

    lock = tmp_path / ".lock"
    with exclusive_lock(lock, what="test"):
        assert lock.read_text().startswith(f"pid {os.getpid()} on ")
        with pytest.raises(OutputError, match=rf"in use by another test run \(pid {os.getpid()}"):
            with exclusive_lock(lock, what="test"):
                pass
    assert not lock.exists()
    with exclusive_lock(lock):  # released: it can be taken again
        pass

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="concurrent runs are not detected"):
        with exclusive_lock(lock):
            ran = True
    assert ran
