"""Row-band outputs: tiled GeoTIFFs written band by band, a resume sidecar, COG finalization.

Nothing final is written before the whole scene is: rows go to hidden tiled GeoTIFFs, which are
turned into hidden COGs; only when all of them are complete are they renamed over the outputs.
The sidecar records each step (``"writing"``, then ``"finalizing"`` once every COG is complete),
so an interrupted run resumes where it stopped, if need be with the renames alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.windows import Window

from geochange import __version__
from geochange.classes import class_colours
from geochange.errors import OutputError
from geochange.io import (
    TILED_GTIFF_OPTIONS,
    Category,
    atomic_output,
    build_cog,
    partial_path,
    sidecar_paths,
    write_errors,
    write_style_sidecars,
)

# The output contract (tags, scale, nodata) lives in geochange.io.products; the names stay
# importable from here.
from geochange.io.products import (
    CLASS_NAMES_TAG,
    NODATA_U8,
    PROBABILITY_SCALE,
    TRANSITION_NAMES_TAG,
    WRITER_NAME,
    WRITER_TAG,
)

__all__ = [
    "CLASS_NAMES_TAG",
    "NODATA_U8",
    "PROBABILITY_SCALE",
    "RESUME_HINT",
    "TRANSITION_NAMES_TAG",
    "WRITER_NAME",
    "WRITER_TAG",
    "GeoTiffBandWriter",
    "OutputSpec",
    "check_replaceable",
    "class_colours",
    "written_by_geochange",
]

#: zstd level of the hidden tiled files: they are decoded once into the COGs (which keep
#: GDAL's default level, so the final files are unchanged). Level 1 wrote a 4096^2 probability
#: raster ~3x faster than the default 9, at the same size.
INTERMEDIATE_ZSTD_LEVEL = 1

#: Appended to errors after which the partial results stay on disk.
RESUME_HINT = (
    "Partial results are kept: fix the problem (e.g. free disk space) and rerun with --resume "
    "(resume=True) to continue"
)


@dataclass
class OutputSpec:
    """One output raster: its final path, dtype, nodata and metadata.

    Attributes:
        key: output name (``"probability"``, ``"change"``, ...).
        path: final COG path.
        dtype: numpy dtype name.
        nodata: nodata value.
        resampling: overview resampling.
        tags: GDAL metadata tags.
        colormap: optional colour table (value -> RGBA; the file keeps RGB, the PAM sidecar
            the opacity).
        description: the band description.
        scale_offset: GDAL scale and offset of the band (clients read ``value * scale +
            offset``), or None.
        categories: the classes of a class raster (category names, RAT, palette style).
        styled: write the GIS sidecars (:func:`geochange.io.write_style_sidecars`): those of
            ``categories``, or a probability's colour-ramp style when they are None.
    """

    key: str
    path: Path
    dtype: str
    nodata: float
    resampling: str
    tags: dict[str, str]
    colormap: dict[int, tuple[int, int, int, int]] | None = None
    description: str = ""
    scale_offset: tuple[float, float] | None = None
    categories: Sequence[Category] | None = None
    styled: bool = False

    @property
    def sidecars(self) -> list[Path]:
        """The GIS sidecars written beside :attr:`path` and their temporary names."""
        if not self.styled:
            return []
        final = sidecar_paths(self.path)
        return [*final, *(partial_path(p) for p in final)]

    @property
    def tiled_path(self) -> Path:
        """The hidden intermediate tiled GeoTIFF written band by band."""
        return partial_path(self.path.with_suffix(".tiled.tif"))

    @property
    def cog_path(self) -> Path:
        """The hidden complete COG, renamed to :attr:`path` once every output has one."""
        return partial_path(self.path)


def written_by_geochange(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a raster written by ``geochange predict`` (its ``GEOCHANGE_WRITER``)."""
    try:
        with rasterio.open(path) as ds:
            return str(ds.tags().get(WRITER_TAG, "")).startswith(WRITER_NAME)
    except (rasterio.RasterioIOError, CPLE_BaseError):
        return False


def check_replaceable(paths: Sequence[Path], overwrite: bool = False) -> None:
    """Refuse to replace existing files that ``geochange predict`` did not write.

    Args:
        paths: the final output paths.
        overwrite: replace any existing file (never a directory).

    Raises:
        OutputError: a path is a directory, or an existing file without geochange's tag (and
            not ``overwrite``).
    """
    for path in paths:
        if path.is_dir():
            raise OutputError(f"output {str(path)!r} is a directory")
        if (path.exists() or path.is_symlink()) and not (overwrite or written_by_geochange(path)):
            raise OutputError(
                f"{str(path)!r} exists and was not written by geochange predict; move it away, "
                "choose another output directory, or pass --overwrite (overwrite=True) to "
                "replace it"
            )


class GeoTiffBandWriter:
    """Streams row bands into tiled GeoTIFFs and records progress in a sidecar for resuming.

    A scene is written as one or more column stripes (see
    :func:`geochange.predict.windows.column_stripes`), each top to bottom. Within a stripe,
    rows are buffered until a whole GeoTIFF block row (512 rows) is complete, so every block
    is compressed and written once (blocks straddling a stripe edge twice); writes run on a
    background thread so they overlap with inference. After each write the files are closed
    (flushed) and the sidecar records the position (stripe, rows done in it), so an
    interrupted run can resume from there.

    Args:
        specs: the outputs.
        crs: output CRS.
        transform: output transform.
        height: output height.
        width: output width.
        sidecar: progress file path.
        fingerprint: JSON-able description of the run; resuming requires an equal one.
        resume: continue from an existing sidecar with the same fingerprint.
        stripes: number of column stripes the scene is written in.
        overwrite: replace existing outputs that geochange did not write (see
            :func:`check_replaceable`; checked here and again before the renames).

    Raises:
        OutputError: an existing output may not be replaced, or the files cannot be written.
    """

    def __init__(
        self,
        specs: Sequence[OutputSpec],
        *,
        crs: CRS | None,
        transform: Affine,
        height: int,
        width: int,
        sidecar: Path,
        fingerprint: dict[str, Any],
        resume: bool,
        stripes: int = 1,
        overwrite: bool = False,
    ) -> None:
        self.specs = list(specs)
        self.height, self.width = height, width
        self.sidecar = sidecar
        self.fingerprint = fingerprint
        self.stripes = stripes
        self.overwrite = overwrite
        self.block = int(TILED_GTIFF_OPTIONS["blockysize"])
        # Existing outputs are replaced only once the new ones are complete (never deleted
        # here), and only when geochange wrote them: fail now rather than after the run.
        check_replaceable([spec.path for spec in self.specs], overwrite)
        #: Every COG is complete under its hidden name; only the renames are left.
        self.finalizing = False
        #: Resume position: stripes before ``stripe`` are complete, ``rows_done`` rows of it.
        self.stripe, self.rows_done = self._resume_point() if resume else (0, 0)
        if (self.stripe, self.rows_done) == (0, 0):
            for spec in self.specs:
                profile = dict(TILED_GTIFF_OPTIONS)
                profile.update(
                    zstd_level=INTERMEDIATE_ZSTD_LEVEL,
                    count=1,
                    dtype=spec.dtype,
                    nodata=spec.nodata,
                    crs=crs,
                    transform=transform,
                    height=height,
                    width=width,
                )
                with (
                    write_errors(spec.tiled_path, needed_bytes=self.needed_bytes),
                    rasterio.open(spec.tiled_path, "w", **profile) as ds,
                ):
                    ds.update_tags(**spec.tags, **{WRITER_TAG: f"{WRITER_NAME} {__version__}"})
                    if spec.colormap is not None:
                        ds.write_colormap(1, spec.colormap)
                    if spec.description:
                        ds.set_band_description(1, spec.description)
                    if spec.scale_offset is not None:
                        ds.scales, ds.offsets = (spec.scale_offset[0],), (spec.scale_offset[1],)
            self._write_sidecar()
        self._col_off, self._stripe_width = 0, width
        # Rows wait in one preallocated buffer per output until whole block rows are complete.
        self._buffers: dict[str, np.ndarray] = {}
        self._pending_top = self.rows_done
        self._pending_rows = 0
        self._executor = ThreadPoolExecutor(max_workers=1)
        self._inflight: Future[None] | None = None

    @property
    def complete(self) -> bool:
        """Whether every stripe has been written."""
        return self.stripe >= self.stripes

    def _resume_point(self) -> tuple[int, int]:
        try:
            state = json.loads(self.sidecar.read_text())
        except (OSError, ValueError):
            return 0, 0
        if state.get("fingerprint") != self.fingerprint:
            return 0, 0
        if state.get("state") == "finalizing" and all(
            spec.cog_path.exists() or spec.path.exists() for spec in self.specs
        ):
            # Killed during the renames: each output is either still under its hidden name
            # or already renamed.
            self.finalizing = True
            return self.stripes, 0
        if not all(spec.tiled_path.exists() for spec in self.specs):
            return 0, 0
        return int(state.get("stripe", 0)), int(state.get("rows_done", 0))

    def _write_sidecar(self) -> None:
        state = {
            "fingerprint": self.fingerprint,
            "state": "finalizing" if self.finalizing else "writing",
            "stripe": self.stripe,
            "rows_done": self.rows_done,
        }
        with (
            write_errors(self.sidecar, needed_bytes=self.needed_bytes, hint=RESUME_HINT),
            atomic_output(self.sidecar) as tmp,
        ):
            tmp.write_text(json.dumps(state))

    def needed_bytes(self) -> int | None:
        """About how many more bytes of disk the outputs need until the run is complete.

        Extrapolated from the size of the tiled files so far (their uncompressed size before
        anything is written), plus a third for overviews, twice: the COG copies coexist with
        the tiled files until the renames.
        """
        try:
            tiled = sum(s.tiled_path.stat().st_size for s in self.specs if s.tiled_path.exists())
            cogs = sum(s.cog_path.stat().st_size for s in self.specs if s.cog_path.exists())
        except OSError:
            return None
        done = (self.stripe + self.rows_done / max(1, self.height)) / max(1, self.stripes)
        if done > 0:
            full = tiled / min(1.0, done)
        else:
            full = sum(np.dtype(s.dtype).itemsize for s in self.specs) * self.height * self.width
        return max(0, int(full * 4 / 3 * 2 - tiled - cogs))

    def begin_stripe(self, index: int, col_off: int, width: int) -> int:
        """Start writing stripe ``index`` (columns ``col_off`` to ``col_off + width``).

        Returns:
            The first row still to write in it (non-zero when resuming inside the stripe).
        """
        self._wait()
        if self._pending_rows:
            raise RuntimeError("the previous stripe was not written to the bottom")  # invariant
        if index < self.stripe:
            raise RuntimeError(f"stripe {index} is already written")  # internal invariant
        self._col_off, self._stripe_width = col_off, width
        self._pending_top = self.rows_done if index == self.stripe else 0
        self._buffers = {}
        return self._pending_top

    def _buffer(self, key: str, dtype: np.dtype[Any], rows: int) -> np.ndarray:
        buffer = self._buffers.get(key)
        needed = self._pending_rows + rows
        if buffer is None or buffer.shape[0] < needed:
            grown = np.empty((max(needed, 2 * self.block), self._stripe_width), dtype=dtype)
            if buffer is not None:
                grown[: self._pending_rows] = buffer[: self._pending_rows]
            self._buffers[key] = buffer = grown
        return buffer

    def write(self, top: int, arrays: dict[str, np.ndarray], col: int = 0) -> None:
        """Queue finished rows starting at ``top``, columns ``col`` to ``col + w`` of the stripe.

        ``arrays[key]`` is ``[n, w]``; the rows count as complete once their last column
        arrives (chunks come left to right).
        """
        if top != self._pending_top + self._pending_rows:
            raise RuntimeError("row bands must be written in order")  # internal invariant
        rows = width = 0
        for key, values in arrays.items():
            rows, width = values.shape
            buffer = self._buffer(key, values.dtype, rows)
            buffer[self._pending_rows : self._pending_rows + rows, col : col + width] = values
        if col + width < self._stripe_width:
            return
        self._pending_rows += rows
        end = self._pending_top + self._pending_rows
        if self._pending_rows >= self.block or end >= self.height:
            # Write whole block rows only (except at the bottom of the scene).
            keep = 0 if end >= self.height else (end - self._pending_top) % self.block
            self._flush(keep)

    def _flush(self, keep: int) -> None:
        count = self._pending_rows - keep
        top = self._pending_top
        self._wait()
        # The write thread gets its own copy; the kept rows move to the top of the buffers.
        chunk = {key: buffer[:count].copy() for key, buffer in self._buffers.items()}
        for buffer in self._buffers.values():
            buffer[:keep] = buffer[count : count + keep]
        self._pending_top = top + count
        self._pending_rows = keep
        self._inflight = self._executor.submit(
            self._write_chunk, top, self._col_off, self._stripe_width, chunk
        )

    def _write_chunk(
        self, top: int, col_off: int, width: int, chunk: dict[str, np.ndarray]
    ) -> None:
        rows = next(iter(chunk.values())).shape[0]
        window = Window(col_off, top, width, rows)
        for spec in self.specs:
            with (
                write_errors(
                    spec.tiled_path, window, needed_bytes=self.needed_bytes, hint=RESUME_HINT
                ),
                rasterio.open(spec.tiled_path, "r+") as ds,
            ):
                ds.write(chunk[spec.key], 1, window=window)
        if top + rows >= self.height:
            self.stripe, self.rows_done = self.stripe + 1, 0
        else:
            self.rows_done = top + rows
        self._write_sidecar()

    def _wait(self) -> None:
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.result()  # re-raises a failed write once

    def close(self) -> None:
        """Wait for pending writes and stop the writer thread (partial files stay for resuming)."""
        try:
            self._wait()
        finally:
            self._executor.shutdown(wait=True)

    def finalize(self) -> dict[str, Path]:
        """Turn the complete tiled files into COGs, then rename them over the outputs.

        Every COG is built under its hidden name first, so existing outputs are replaced only
        once all new ones are complete; the sidecar then says ``"finalizing"``, and a run
        interrupted during the renames resumes with the renames alone. Then the GIS sidecars
        of each output are written (:attr:`OutputSpec.styled`); the tiled files and the
        progress sidecar are removed at the end.

        Returns:
            Output key -> final path.

        Raises:
            OutputError: a COG cannot be written (a full disk says so), or an existing output
                may no longer be replaced.
        """
        self.close()
        if not self.complete:
            raise RuntimeError("finalize called before all rows were written")  # invariant
        if not self.finalizing:
            for spec in self.specs:
                spec.cog_path.unlink(missing_ok=True)  # an earlier run's incomplete COG
                try:
                    with write_errors(spec.cog_path, hint=RESUME_HINT):
                        build_cog(
                            spec.tiled_path,
                            spec.cog_path,
                            resampling=spec.resampling,
                            needed_bytes=self.needed_bytes,
                            hint=RESUME_HINT,
                        )
                        _fsync(spec.cog_path)  # complete on disk before it may be renamed
                except BaseException:
                    # Free the space of an incomplete COG (the tiled file stays for resuming).
                    spec.cog_path.unlink(missing_ok=True)
                    raise
            self.finalizing = True
            self._write_sidecar()
        # A file may have appeared at an output path during the run.
        pending = [spec for spec in self.specs if spec.cog_path.exists()]
        check_replaceable([spec.path for spec in pending], self.overwrite)
        for spec in pending:
            with write_errors(spec.path, hint=RESUME_HINT):
                os.replace(spec.cog_path, spec.path)
        # The sidecars describe the new rasters: written (again, when resuming) once they are
        # in place, before the resume state is dropped.
        for spec in self.specs:
            if spec.styled:
                write_style_sidecars(spec.path, spec.categories)
        for spec in self.specs:
            spec.tiled_path.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)
        return {spec.key: spec.path for spec in self.specs}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
