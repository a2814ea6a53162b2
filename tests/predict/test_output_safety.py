"""Safe outputs of ``predict``: directory lock, inputs and foreign files never overwritten,
named I/O errors (truncated / corrupt inputs, full disk), resumable finalization."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import torch

from geochange.cli import main as cli_main
from geochange.errors import DataError, OutputError
from geochange.predict import ChangePredictor
from geochange.predict.predictor import LOCK_NAME, SIDECAR_NAME
from tests.builders import TinyConvChange, write_raster
from tests.predict.helpers import BINARY_OUTPUT_FILES, FailingAfter, Interrupt, read

NORM = {"mean": [0.0, 0.0, 0.0], "std": [1000.0, 1000.0, 1000.0]}


def exact_predictor(model: torch.nn.Module | None = None, **kwargs) -> ChangePredictor:
    options = {
        "tile_size": 128,
        "overlap": 32,
        "precision": "fp32",
        "probability_dtype": "float32",
        "normalization": NORM,
        "size_divisor": 1,
        "num_workers": 0,
        "progress": False,
        "batch_size": 2,
    }
    options.update(kwargs)
    return ChangePredictor(model if model is not None else TinyConvChange(), **options)


class CountingModel(TinyConvChange):
    """The tiny model, counting the tile batches it sees (not the 32-px channel probe)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def forward(self, x: torch.Tensor):
        if x.shape[-1] > 40:
            self.batches += 1
        return super().forward(x)


@pytest.fixture
def tall_pair(tmp_path: Path) -> tuple[Path, Path]:
    """3-band 1100 x 130 uint16 pair: 12 tile rows of 2 tiles with 128-px tiles, 3 block rows."""
    rng = np.random.default_rng(9)
    pre = rng.integers(0, 1000, size=(3, 1100, 130)).astype(np.uint16)
    post = rng.integers(0, 1000, size=(3, 1100, 130)).astype(np.uint16)
    scene = tmp_path / "scene"
    scene.mkdir()
    return write_raster(scene / "pre.tif", pre), write_raster(scene / "post.tif", post)


def use_predictor(monkeypatch, predictor: ChangePredictor) -> None:
    """Make ``geochange predict --checkpoint X`` use ``predictor`` (a tiny model)."""

    def from_checkpoint(cls, path, **overrides):
        predictor.checkpoint = Path(path)
        return predictor

    monkeypatch.setattr(ChangePredictor, "from_checkpoint", classmethod(from_checkpoint))


def cli_predict(pre: Path, post: Path, out: Path, *extra: str) -> int:
    ckpt = pre.parent.parent / "model.ckpt"
    ckpt.touch()
    args = ["predict", "--checkpoint", str(ckpt), "--pre", str(pre), "--post", str(post)]
    return cli_main([*args, "--out-dir", str(out), "--quiet", *extra])


# --- item 2: one run per output directory ----------------------------------------------------


class Intruder(TinyConvChange):
    """The tiny model; during its first tile batch it starts a second run (``intrude``)."""

    def __init__(self, intrude) -> None:
        super().__init__()
        self.intrude = intrude
        self.errors: list[Exception] = []

    def forward(self, x: torch.Tensor):
        if x.shape[-1] > 40 and self.intrude is not None:
            intrude, self.intrude = self.intrude, None
            try:
                intrude()
            except OutputError as err:
                self.errors.append(err)
        return super().forward(x)


def test_second_run_into_the_same_directory_fails_at_once_naming_the_holder(
    tall_pair, tmp_path: Path
) -> None:
    pre, post = tall_pair
    out = tmp_path / "out"
    reference = exact_predictor().predict(pre, post, tmp_path / "ref")
    second = CountingModel()
    model = Intruder(lambda: exact_predictor(second).predict(pre, post, out))
    result = exact_predictor(model).predict(pre, post, out)
    [error] = model.errors
    message = str(error)
    assert f"pid {os.getpid()}" in message and "started" in message
    assert "in use by another geochange predict run" in message and str(out) in message
    assert second.batches == 0  # it failed before any tile
    # The first run's maps are its own, whole.
    for key in ("change", "probability"):
        np.testing.assert_array_equal(read(getattr(result, key)), read(getattr(reference, key)))
    assert sorted(p.name for p in out.iterdir()) == BINARY_OUTPUT_FILES


def test_lock_of_a_killed_run_does_not_block_the_next(
    tall_pair, tmp_path: Path, monkeypatch, capsys
) -> None:
    pre, post = tall_pair
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from geochange.io import exclusive_lock\n"
            f"with exclusive_lock({str(out / LOCK_NAME)!r}, what='geochange predict'):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        use_predictor(monkeypatch, exact_predictor())
        assert cli_predict(pre, post, out) == 1
        err = capsys.readouterr().err
        assert err.startswith("geochange predict: error: ")
        assert f"pid {holder.pid} on " in err and "started" in err and "Traceback" not in err
        assert not (out / "change.tif").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # flock dies with its process: the next run proceeds (over the stale lock file).
    assert (out / LOCK_NAME).exists()
    assert cli_predict(pre, post, out) == 0
    assert sorted(p.name for p in out.iterdir()) == BINARY_OUTPUT_FILES


# --- item 3: inputs and foreign files are never deleted or overwritten -------------------------


def test_foreign_file_in_out_is_kept_and_needs_overwrite(tall_pair, monkeypatch, capsys) -> None:
    """--out-dir is the scene folder, holding a reference change.tif (not written by geochange)."""
    pre, post = tall_pair
    scene = pre.parent
    truth = write_raster(scene / "change.tif", np.ones((1, 1100, 130), dtype=np.uint8))
    original = truth.read_bytes()
    use_predictor(monkeypatch, exact_predictor(FailingAfter(calls=3)))
    assert cli_predict(pre, post, scene) == 1
    err = capsys.readouterr().err
    assert f"{str(truth)!r} exists and was not written by geochange predict" in err
    assert "--overwrite" in err
    assert truth.read_bytes() == original
    assert sorted(p.name for p in scene.iterdir()) == ["change.tif", "post.tif", "pre.tif"]
    # With --overwrite it is replaced only by a complete map: a run that fails keeps it ...
    with pytest.raises(Interrupt):
        cli_predict(pre, post, scene, "--overwrite")
    assert truth.read_bytes() == original
    assert not (scene / "probability.tif").exists()
    # ... and a run that succeeds replaces it.
    use_predictor(monkeypatch, exact_predictor())
    assert cli_predict(pre, post, scene, "--overwrite") == 0
    with rasterio.open(truth) as ds:
        assert ds.tags()["GEOCHANGE_WRITER"].startswith("geochange predict")
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


@pytest.mark.parametrize("link", ["same path", "hard link", "symlink"])
def test_outputs_never_overwrite_inputs(tall_pair, link: str) -> None:
    pre, post = tall_pair
    out = pre.parent / "out"
    out.mkdir()
    if link == "same path":
        target = pre.rename(out / "probability.tif")
        pre = target
    elif link == "hard link":
        target = post
        os.link(post, out / "change.tif")
    else:
        target = post
        (out / "probability.tif").symlink_to(post)
    original = target.read_bytes()
    with pytest.raises(OutputError, match=r"would overwrite the (pre|post) image"):
        exact_predictor().predict(pre, post, out)
    assert target.read_bytes() == original
    with pytest.raises(OutputError, match=r"would overwrite the (pre|post) image"):
        exact_predictor().predict(pre, post, out, overwrite=True)
    assert target.read_bytes() == original
    assert not list(out.glob(".*"))  # nothing was started


def test_checkpoint_is_an_input(tall_pair, tmp_path: Path) -> None:
    pre, post = tall_pair
    predictor = exact_predictor()
    out = tmp_path / "out"
    out.mkdir()
    predictor.checkpoint = out / "change.tif"
    predictor.checkpoint.write_bytes(b"weights")
    with pytest.raises(OutputError, match="would overwrite the checkpoint"):
        predictor.predict(pre, post, out)
    assert predictor.checkpoint.read_bytes() == b"weights"


def test_failed_rerun_keeps_the_earlier_maps_until_the_new_ones_are_complete(
    tall_pair, tmp_path: Path
) -> None:
    pre, post = tall_pair
    out = tmp_path / "out"
    first = exact_predictor(TinyConvChange(seed=3)).predict(pre, post, out)
    before = {p.name: p.read_bytes() for p in (first.change, first.probability)}
    with pytest.raises(Interrupt):
        exact_predictor(FailingAfter(calls=8)).predict(pre, post, out)
    # Nothing was deleted at start-up: the complete maps of the first run are untouched.
    assert {n: (out / n).read_bytes() for n in before} == before
    assert json.loads((out / SIDECAR_NAME).read_text())["rows_done"] == 512
    resumed = exact_predictor().predict(pre, post, out, resume=True)
    reference = exact_predictor().predict(pre, post, tmp_path / "ref")
    assert 0 < resumed.tiles < reference.tiles
    for key in ("change", "probability"):
        np.testing.assert_array_equal(read(getattr(resumed, key)), read(getattr(reference, key)))
    assert sorted(p.name for p in out.iterdir()) == BINARY_OUTPUT_FILES


# --- item 7: truncated and corrupt inputs, full disks ------------------------------------------


def tiled_copy(src: Path, dst: Path, *, cog: bool) -> Path:
    """``src`` as a DEFLATE COG or plain tiled GeoTIFF with 128 x 128 blocks."""
    if cog:
        rasterio.shutil.copy(src, dst, driver="COG", compress="DEFLATE", blocksize=128)
    else:
        with rasterio.open(src) as ds:
            profile = dict(ds.profile, tiled=True, blockxsize=128, blockysize=128)
            profile["compress"] = "deflate"
            with rasterio.open(dst, "w", **profile) as out:
                out.write(ds.read())
    return dst


@pytest.mark.parametrize("cog", [True, False], ids=["cog", "tiled"])
def test_truncated_input_fails_before_anything_is_created(
    tall_pair, tmp_path: Path, monkeypatch, capsys, cog: bool
) -> None:
    pre, post = tall_pair
    cut = tiled_copy(post, tmp_path / "cut.tif", cog=cog)
    data = cut.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.7)])
    with rasterio.open(cut) as ds:  # GDAL opens it and reads its first block
        ds.read(1, window=((0, 1), (0, 1)))
    use_predictor(monkeypatch, exact_predictor())
    out = tmp_path / "out"
    assert cli_predict(pre, cut, out) == 1
    err = capsys.readouterr().err
    assert f"raster {str(cut)!r} is truncated: it has {int(len(data) * 0.7)} bytes" in err
    assert "Traceback" not in err
    assert not out.exists()


def corrupt_block(path: Path, row: int, col: int = 0) -> None:
    """Overwrite the inside of block (row, col) of band 1 with zeros (sizes stay valid)."""
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1))
        size = int(ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=1))
    data = bytearray(path.read_bytes())
    data[offset + 8 : offset + size - 8] = bytes(size - 16)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("date", "cog", "workers"),
    [("pre", True, 0), ("post", False, 0), ("post", True, 1)],
    ids=["pre-cog", "post-tiled", "post-cog-worker"],
)
def test_corrupt_block_deep_in_the_run_names_file_and_window(
    tall_pair, tmp_path: Path, monkeypatch, capsys, date: str, cog: bool, workers: int
) -> None:
    pre, post = tall_pair
    bad = tiled_copy(pre if date == "pre" else post, tmp_path / "bad.tif", cog=cog)
    corrupt_block(bad, row=6)  # rows 768-896: the run has flushed its first 512 rows by then
    if date == "pre":
        pre = bad
    else:
        post = bad
    use_predictor(monkeypatch, exact_predictor(num_workers=workers))
    out = tmp_path / "out"
    assert cli_predict(pre, post, out) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"geochange predict: error: cannot read {str(bad)!r} at rows ")
    assert "(corrupt or truncated file?)" in err and "TIFFReadEncodedTile" in err
    # The failing tile's window: it covers the corrupt block's rows.
    rows = err.split(" at rows ")[1].split(",")[0]
    top, bottom = (int(v) for v in rows.split("-"))
    assert top < 896 and bottom > 768
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (out / "change.tif").exists() and not (out / "probability.tif").exists()
    assert json.loads((out / SIDECAR_NAME).read_text())["rows_done"] == 512  # kept for resume
    assert not (out / LOCK_NAME).exists()


def test_full_disk_is_reported_and_resume_continues(
    tall_pair, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Simulated: every raster write of rows below 512 fails as GDAL fails on a full disk."""
    pre, post = tall_pair
    out = tmp_path / "out"
    real_write = rasterio.io.DatasetWriter.write

    def full_write(self, arr, indexes=None, window=None, **kwargs):
        if window is not None and window.row_off >= 512:
            raise rasterio.errors.RasterioIOError("Write failed. See previous exception.")
        return real_write(self, arr, indexes, window=window, **kwargs)

    real_usage = shutil.disk_usage
    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", full_write)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=300 * 1024))
    use_predictor(monkeypatch, exact_predictor())
    assert cli_predict(pre, post, out) == 1
    err = capsys.readouterr().err
    assert err.startswith("geochange predict: error: disk full: cannot write ")
    assert "(rows 512-1100, cols 0-130)" in err and "0.3 MB free in" in err
    assert "need about" in err and "--resume" in err and "Traceback" not in err
    assert not (out / "change.tif").exists() and not (out / "probability.tif").exists()
    assert json.loads((out / SIDECAR_NAME).read_text())["rows_done"] == 512
    monkeypatch.undo()
    resumed = CountingModel()
    use_predictor(monkeypatch, exact_predictor(resumed))
    assert cli_predict(pre, post, out, "--resume") == 0
    reference = exact_predictor().predict(pre, post, tmp_path / "ref")
    assert 0 < resumed.batches < reference.tiles // 2  # batches of 2 tiles
    for key in ("change", "probability"):
        np.testing.assert_array_equal(read(out / f"{key}.tif"), read(getattr(reference, key)))


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 1 MiB tmpfs (needs root; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_real_full_disk(tall_pair, tmp_path: Path, tiny_disk: Path, monkeypatch, capsys) -> None:
    pre, post = tall_pair
    filler = tiny_disk / "filler"
    filler.write_bytes(bytes(1024 * 1024 - 250 * 1024))  # 250 KB left: too little for the maps
    out = tiny_disk / "out"
    use_predictor(monkeypatch, exact_predictor())
    assert cli_predict(pre, post, out) == 1
    err = capsys.readouterr().err
    assert err.startswith("geochange predict: error: disk full: cannot write ")
    assert "MB free in" in err and "need about" in err and "--resume" in err
    assert "Traceback" not in err
    assert not (out / "change.tif").exists() and not (out / "probability.tif").exists()
    assert (out / SIDECAR_NAME).exists()
    filler.unlink()
    assert cli_predict(pre, post, out, "--resume") == 0
    reference = exact_predictor().predict(pre, post, tmp_path / "ref")
    for key in ("change", "probability"):
        np.testing.assert_array_equal(read(out / f"{key}.tif"), read(getattr(reference, key)))


# --- item 8: resumable finalization, bounds outside the image -----------------------------------


def test_kill_between_the_final_renames_resumes_with_the_renames_only(
    tall_pair, tmp_path: Path, monkeypatch
) -> None:
    pre, post = tall_pair
    reference = exact_predictor().predict(pre, post, tmp_path / "ref")
    out = tmp_path / "out"
    real_replace = os.replace

    def crash_before_change(src, dst):
        if Path(dst) == out / "change.tif":  # the second output's rename
            raise Interrupt("killed between the renames")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_before_change)
    with pytest.raises(Interrupt):
        exact_predictor().predict(pre, post, out)
    monkeypatch.undo()
    assert (out / "probability.tif").exists() and not (out / "change.tif").exists()
    model = CountingModel()
    resumed = exact_predictor(model).predict(pre, post, out, resume=True)
    assert model.batches == 0 and resumed.tiles == 0
    for key in ("change", "probability"):
        assert getattr(resumed, key).read_bytes() == getattr(reference, key).read_bytes()
    assert sorted(p.name for p in out.iterdir()) == BINARY_OUTPUT_FILES


def test_bounds_outside_the_image_create_nothing(
    tall_pair, tmp_path: Path, monkeypatch, capsys
) -> None:
    pre, post = tall_pair
    out = tmp_path / "new" / "out"
    with pytest.raises(DataError, match="outside the pre image"):
        exact_predictor().predict(pre, post, out, window=(0.0, 0.0, 10.0, 10.0))
    assert not (tmp_path / "new").exists()
    use_predictor(monkeypatch, exact_predictor())
    bounds = ["--bounds", "0", "0", "10", "10", "--vector", str(out / "changes.gpkg")]
    assert cli_predict(pre, post, out, *bounds) == 1
    err = capsys.readouterr().err
    assert "bounds (0, 0, 10, 10) lie outside the pre image" in err
    assert str(pre) in err and "130 x 1100 px" in err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("flag", ["--res", "--resolution"])
def test_cli_res_and_its_deprecated_spelling(tall_pair, monkeypatch, capsys, flag: str) -> None:
    pre, post = tall_pair
    use_predictor(monkeypatch, exact_predictor())
    with rasterio.open(pre) as ds:
        res = 2 * ds.res[0]
    out = pre.parent / "out"
    assert cli_predict(pre, post, out, flag, str(res)) == 0
    warning = (
        "geochange predict: warning: --resolution is deprecated and will be removed in the next "
        "release; use --res\n"
    )
    assert (warning in capsys.readouterr().err) == (flag == "--resolution")
    with rasterio.open(out / "change.tif") as ds:
        assert ds.res == (res, res)
    with pytest.raises(SystemExit) as exit_info:
        cli_predict(pre, post, out, "--res", "1", "--resolution", "1", "--overwrite")
    assert exit_info.value.code == 2
    assert "give --res or its deprecated spelling --resolution, not both" in (
        capsys.readouterr().err
    )
