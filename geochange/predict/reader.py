"""Windowed reading of a co-registered pre/post raster pair.

:class:`RasterPair` holds the scene geometry (the pre image's grid) and the file paths; it opens
the files lazily, once per process, so a copy handed to each DataLoader worker (or Dask worker)
opens its own handles. The post image is warped on the fly onto the pre grid with a
:class:`~rasterio.vrt.WarpedVRT` when the grids differ. :class:`TileDataset` turns a tile grid
into a map-style dataset of ``[2, C, h, w]`` tiles (float32, or the files' own uint8, int8 or
int16) plus validity masks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.transform import array_bounds
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window, from_bounds
from torch.utils.data import Dataset

from geochange.errors import DataError, GeochangeError
from geochange.io import (
    band_indexes,
    describe_window,
    nonfinite_pixels,
    open_raster,
    read_errors,
)

#: Rasters up to this many pixels are read whole for the no-valid-pixel check.
WHOLE_READ_PIXELS = 2**18  # 512 x 512: a cheap read, even for a corrupt file


def _check_some_valid(src: Any, bands: Sequence[int]) -> None:
    """Raise when ``src`` holds no valid pixel, from a cheap read that covers the whole image.

    That read is the coarsest overview (a COG's smallest level) or, for rasters of up to
    :data:`WHOLE_READ_PIXELS`, the image itself; larger rasters without overviews are not
    checked here (their tiles come out as nodata).
    """
    factors = src.overviews(bands[0])
    if not factors and src.width * src.height > WHOLE_READ_PIXELS:
        return
    if factors:
        factor = max(factors)
        shape = (len(bands), max(1, src.height // factor), max(1, src.width // factor))
    else:
        shape = (len(bands), src.height, src.width)
    try:
        with read_errors(src.name, None):
            data = src.read(list(bands), out_shape=shape, masked=True)
    except DataError:
        return  # a corrupt block: the tile reader reports it with its window

    valid = ~np.ma.getmaskarray(data) & np.isfinite(np.ma.getdata(data))
    if not valid.any():
        nodata = f" (nodata {src.nodata:g})" if src.nodata is not None else ""
        raise DataError(f"{src.name!r} holds no valid pixel: every pixel is nodata{nodata}")


@dataclass
class RasterPair:
    """A pre/post raster pair read on the pre image's grid.

    Create it with :meth:`open`, which validates the inputs before any work.

    Attributes:
        pre_path: pre-change image.
        post_path: post-change image.
        bands: 1-based band indexes read from both images.
        crs: CRS of the output grid (the pre image's).
        transform: affine transform of the output grid.
        height: grid height.
        width: grid width.
        warp_post: whether the post image must be warped onto the pre grid.
        pre_nodata: nodata value of the pre image (or None).
        post_nodata: nodata value of the post image (or None).
    """

    pre_path: Path
    post_path: Path
    bands: list[int]
    crs: CRS | None
    transform: Affine
    height: int
    width: int
    warp_post: bool
    pre_nodata: float | None
    post_nodata: float | None
    resampling: Resampling = Resampling.bilinear
    warp_pre: bool = False
    _handles: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def open(
        cls,
        pre: str | os.PathLike[str],
        post: str | os.PathLike[str],
        *,
        bands: Sequence[int | str] | None = None,
        expected_channels: int | None = None,
        resampling: str = "bilinear",
        crs: str | CRS | None = None,
        resolution: float | tuple[float, float] | None = None,
    ) -> RasterPair:
        """Validate a raster pair and describe its geometry.

        Args:
            pre: pre-change image path.
            post: post-change image path.
            bands: bands to read (1-based indexes or band descriptions); default all.
            expected_channels: the model's input channel count, checked against the bands.
            resampling: resampling used to warp the post image when grids differ.
            crs: output CRS (default the pre image's); both dates are then warped.
            resolution: output pixel size in CRS units (default the pre image's, or GDAL's
                suggestion when ``crs`` changes).

        Returns:
            The pair (file handles are opened lazily on first read).

        Raises:
            DataError: missing/unreadable files, band mismatch, or no overlap between dates.
        """
        pre_path, post_path = Path(pre), Path(post)
        with open_raster(pre_path) as pre_src, open_raster(post_path) as post_src:
            pre_bands = band_indexes(pre_src, bands)
            post_bands = band_indexes(post_src, bands)
            if pre_bands != post_bands or (pre_src.count != post_src.count and bands is None):
                raise DataError(
                    f"pre image {str(pre_path)!r} has {pre_src.count} bands but post image "
                    f"{str(post_path)!r} has {post_src.count}"
                )
            if expected_channels is not None and len(pre_bands) != expected_channels:
                raise DataError(
                    f"the model expects {expected_channels} bands but {str(pre_path)!r} provides "
                    f"{len(pre_bands)} (bands {pre_bands})"
                )
            if (pre_src.crs is None) != (post_src.crs is None):
                raise DataError(
                    f"only one of {str(pre_path)!r} and {str(post_path)!r} is georeferenced"
                )
            out_crs, out_transform = pre_src.crs, pre_src.transform
            out_height, out_width = pre_src.height, pre_src.width
            warp_pre = False
            if crs is not None or resolution is not None:
                if pre_src.crs is None:
                    raise DataError(f"{str(pre_path)!r} is not georeferenced; cannot reproject")
                out_crs = CRS.from_user_input(crs) if crs is not None else pre_src.crs
                out_transform, out_width, out_height = calculate_default_transform(
                    pre_src.crs,
                    out_crs,
                    pre_src.width,
                    pre_src.height,
                    *pre_src.bounds,
                    resolution=resolution,
                )
                warp_pre = not (
                    out_crs == pre_src.crs
                    and out_transform.almost_equals(pre_src.transform)
                    and (out_height, out_width) == pre_src.shape
                )
            same_grid = (
                out_crs == post_src.crs
                and out_transform.almost_equals(post_src.transform)
                and (out_height, out_width) == post_src.shape
            )
            if not same_grid:
                if pre_src.crs is None:
                    raise DataError(
                        f"{str(pre_path)!r} and {str(post_path)!r} are not georeferenced and "
                        "differ in size; cannot co-register them"
                    )
                post_bounds = transform_bounds(post_src.crs, pre_src.crs, *post_src.bounds)
                pre_bounds = pre_src.bounds
                if (
                    post_bounds[0] >= pre_bounds.right
                    or post_bounds[2] <= pre_bounds.left
                    or post_bounds[1] >= pre_bounds.top
                    or post_bounds[3] <= pre_bounds.bottom
                ):
                    raise DataError(
                        f"pre image {str(pre_path)!r} and post image {str(post_path)!r} do not "
                        "overlap"
                    )
            _check_some_valid(pre_src, pre_bands)
            _check_some_valid(post_src, post_bands)
            return cls(
                pre_path=pre_path,
                post_path=post_path,
                bands=pre_bands,
                crs=out_crs,
                transform=out_transform,
                height=int(out_height),
                width=int(out_width),
                warp_post=not same_grid,
                warp_pre=warp_pre,
                pre_nodata=pre_src.nodata,
                post_nodata=post_src.nodata,
                resampling=Resampling[resampling],
            )

    def __getstate__(self) -> dict[str, Any]:
        # Handles are per process: never pickle them.
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def _sources(self) -> tuple[Any, Any]:
        pid = os.getpid()
        if self._handles.get("pid") != pid:
            self._handles.clear()
            with read_errors(self.pre_path):
                pre = rasterio.open(self.pre_path)
            with read_errors(self.post_path):
                post = rasterio.open(self.post_path)
            views = [self._warped(pre) if self.warp_pre else pre]
            views.append(self._warped(post) if self.warp_post else post)
            # Read errors deep into a run name the file and window.
            views = [_NamedReader(views[0], self.pre_path), _NamedReader(views[1], self.post_path)]
            self._handles.update(pid=pid, pre=pre, post=post, pre_view=views[0], post_view=views[1])
            # A file read on its own grid with no nodata value, mask band or alpha band is
            # valid everywhere: its dataset mask (a GDAL call and a tile-sized array per
            # tile) says nothing, so it is skipped. Warped views always read theirs.
            self._handles["all_valid"] = (
                not self.warp_pre and _all_valid(pre),
                not self.warp_post and _all_valid(post),
            )
        return self._handles["pre_view"], self._handles["post_view"]

    def _warped(self, src: Any) -> WarpedVRT:
        return WarpedVRT(
            src,
            crs=self.crs,
            transform=self.transform,
            width=self.width,
            height=self.height,
            resampling=self.resampling,
            # An alpha band marks the footprint when the file has no nodata value.
            add_alpha=src.nodata is None,
        )

    def close(self) -> None:
        """Close the file handles of this process."""
        for key in ("post_view", "pre_view", "post", "pre"):
            handle = self._handles.get(key)
            if handle is not None:
                handle.close()
        self._handles.clear()

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read both dates in ``window`` of the pre grid.

        Args:
            window: pixel window of the pre grid.

        Returns:
            ``(image, valid)``: ``[2, C, h, w]`` raw pixel values (0 where invalid) and
            a bool ``[h, w]`` mask, False where either date is nodata, NaN or +-inf in any
            band, or outside the post footprint.
        """
        pre, post = self._sources()
        pre_data = pre.read(self.bands, window=window, out_dtype=_tile_dtype(pre, self.warp_pre))
        post_data = post.read(
            self.bands, window=window, out_dtype=_tile_dtype(post, self.warp_post)
        )
        valid = np.ones(pre_data.shape[-2:], dtype=bool)
        for view, all_valid in zip((pre, post), self._handles["all_valid"], strict=True):
            if not all_valid:
                valid &= view.dataset_mask(window=window) > 0
        # NaN / +-inf are nodata whether or not the file declares a nodata value (as in
        # training): a single NaN would spread through every convolution that sees it.
        for data in (pre_data, post_data):
            if data.dtype.kind in "fc":  # integers are always finite
                valid &= ~nonfinite_pixels(data)
        image = np.stack([pre_data, post_data])  # float32 unless both dates are small ints
        # Nodata values (e.g. -9999), NaN or warp fill must not reach the model: valid pixels
        # near a hole or footprint edge see them through the receptive field. Zero, as in
        # training, so the model sees what it was trained on around holes.
        if not valid.all():
            image[:, :, ~valid] = 0
        return image, valid


def _all_valid(src: Any) -> bool:
    """Whether every pixel of ``src`` is valid: no nodata value, no mask or alpha band."""
    return src.nodata is None and all(
        flags == [MaskFlags.all_valid] for flags in src.mask_flag_enums
    )


#: Integer dtypes read as they are (every value is exact in float32, torch converts them):
#: uint8 tiles are a quarter of float32 ones to read, mask, stack and hand to the model.
NATIVE_TILE_DTYPES = frozenset({"uint8", "int8", "int16"})


def _tile_dtype(view: Any, warped: bool) -> str:
    """The dtype a date's tiles are read in: its own small-integer dtype, else float32.

    Warped dates stay float32, as GDAL resamples them for that buffer type.
    """
    dtype = str(view.dtypes[0])
    if not warped and dtype in NATIVE_TILE_DTYPES and len(set(view.dtypes)) == 1:
        return dtype
    return "float32"


def picklable_error(err: GeochangeError) -> GeochangeError:
    """``err`` without its cause chain, so it can cross to another process.

    The message already says what the GDAL error said, and GDAL's exceptions cannot be
    unpickled where tblib (installed by Dask) pickles causes too.
    """
    err.__cause__ = None
    err.__context__ = None
    err.__suppress_context__ = True
    return err.with_traceback(None)


class _NamedReader:
    """A dataset (or warped view) whose read errors are :class:`DataError` naming the file."""

    def __init__(self, dataset: Any, path: Path) -> None:
        self.dataset, self.path = dataset, path

    def read(self, *args: Any, window: Window | None = None, **kwargs: Any) -> Any:
        with read_errors(self.path, window):
            return self.dataset.read(*args, window=window, **kwargs)

    def dataset_mask(self, *args: Any, window: Window | None = None, **kwargs: Any) -> Any:
        with read_errors(self.path, window):
            return self.dataset.dataset_mask(*args, window=window, **kwargs)

    def read_masks(self, *args: Any, window: Window | None = None, **kwargs: Any) -> Any:
        with read_errors(self.path, window):
            return self.dataset.read_masks(*args, window=window, **kwargs)

    def close(self) -> None:
        self.dataset.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dataset, name)


class TileDataset(Dataset[dict[str, Any]]):
    """Map-style dataset of the tiles of a :class:`RasterPair` (or any object with ``read``).

    Args:
        source: object with ``read(window) -> (image [2, C, h, w], valid [h, w])``.
        windows: ``(row_off, col_off, height, width)`` of each tile, in processing order.
    """

    def __init__(self, source: Any, windows: Sequence[tuple[int, int, int, int]]) -> None:
        self.source = source
        self.windows = list(windows)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Read tile ``index`` as ``{"image", "valid", "index"}`` tensors."""
        row, col, height, width = self.windows[index]
        try:
            image, valid = self.source.read(Window(col, row, width, height))
        except GeochangeError as err:
            if torch.utils.data.get_worker_info() is None:
                raise
            # A DataLoader re-raises a worker's error with the worker's traceback in its
            # message; handed over as a value, it reaches the caller as it was raised.
            return {"error": picklable_error(err), "index": index}
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "valid": torch.from_numpy(np.ascontiguousarray(valid)),
            "index": index,
        }


@dataclass
class ArrayPair:
    """An in-memory (or dask-backed) pair of ``[C, H, W]`` arrays on the same grid.

    Attributes:
        pre: pre-date array (numpy, dask or xarray values) ``[C, H, W]``.
        post: post-date array on the same grid.
        pre_nodata: nodata value of the pre array (or None; NaN is always nodata).
        post_nodata: nodata value of the post array.
    """

    pre: Any
    post: Any
    pre_nodata: float | None = None
    post_nodata: float | None = None

    @property
    def height(self) -> int:
        """Grid height."""
        return int(self.pre.shape[-2])

    @property
    def width(self) -> int:
        """Grid width."""
        return int(self.pre.shape[-1])

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read both dates in ``window``; see :meth:`RasterPair.read`."""
        rows = slice(int(window.row_off), int(window.row_off + window.height))
        cols = slice(int(window.col_off), int(window.col_off + window.width))
        pre = np.asarray(self.pre[:, rows, cols], dtype=np.float32)
        post = np.asarray(self.post[:, rows, cols], dtype=np.float32)
        valid = ~nonfinite_pixels(pre) & ~nonfinite_pixels(post)
        if self.pre_nodata is not None:
            valid &= np.all(pre != self.pre_nodata, axis=0)
        if self.post_nodata is not None:
            valid &= np.all(post != self.post_nodata, axis=0)
        image = np.nan_to_num(np.stack([pre, post]), nan=0.0)
        image[:, :, ~valid] = 0
        return image, valid


def resolve_window(pair: RasterPair, window: Window | Sequence[float] | None) -> Window:
    """The pixel window of ``pair`` to predict: all of it, a window, or bounds in its CRS.

    Raises:
        DataError: the window or bounds lie outside the pre image.
    """
    if window is None:
        return Window(0, 0, pair.width, pair.height)
    if isinstance(window, Window):
        asked = f"window {describe_window(window)} lies"
        win = window
    else:
        left, bottom, right, top = (float(v) for v in window)
        asked = f"bounds ({left:g}, {bottom:g}, {right:g}, {top:g}) lie"
        win = from_bounds(left, bottom, right, top, transform=pair.transform)
    win = win.round_offsets().round_lengths()
    full = Window(0, 0, pair.width, pair.height)
    outside = DataError(
        f"{asked} outside the pre image {str(pair.pre_path)!r} ({pair.width} x "
        f"{pair.height} px, bounds "
        f"{tuple(round(v, 6) for v in array_bounds(pair.height, pair.width, pair.transform))}"
        ")"
    )
    try:
        win = win.intersection(full)
    except Exception as err:
        raise outside from err
    if win.width < 1 or win.height < 1:
        raise outside
    return win
