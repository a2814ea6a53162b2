"""Whole-scene sliding-window change prediction: :class:`ChangePredictor`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import array_bounds
from rasterio.windows import Window, from_bounds
from torch import Tensor, nn
from torch.utils.data import DataLoader

from geochange.checkpoint import load_model
from geochange.classes import CHANGE_CLASS_NAMES, CHANGE_COLORS, class_colours
from geochange.errors import CheckpointError, ConfigurationError, DataError, GeochangeError
from geochange.io import (
    CHANGE_FILE,
    CLASS_NAMES_TAG,
    NODATA_U8,
    PREDICTION_FILES,
    PROBABILITY_FILE,
    PROBABILITY_SCALE,
    PROBABILITY_SCALE_TAG,
    TRANSITION_FILE,
    TRANSITION_NAMES_TAG,
    band_indexes,
    bound_malloc_growth,
    check_not_inputs,
    check_writable_dir,
    describe_window,
    exclusive_lock,
    gdal_cache,
    model_buffers_on_heap,
    open_raster,
    partial_path,
    trim_heap,
    worker_init_bound_malloc,
)
from geochange.keys import CHANGE, SEMANTIC_POST, SEMANTIC_PRE
from geochange.models.folding import fold_batch_norm
from geochange.predict.reader import (
    ArrayPair,
    RasterPair,
    TileDataset,
    picklable_error,
)
from geochange.predict.windows import BLEND_MODES, ColumnStripe, TileGrid, column_stripes
from geochange.predict.writer import GeoTiffBandWriter, OutputSpec
from geochange.transforms.stats import VALUE_RANGE_MODES, check_value_range, sample_raster_range

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

Precision = Literal["auto", "fp32", "bf16", "fp16"]
SIDECAR_NAME = ".geochange-predict-progress.json"
#: Held (``flock``) by the run writing into an output directory; it names the holder.
LOCK_NAME = ".geochange-predict.lock"


@dataclass
class PredictionResult:
    """Paths of the rasters written by :meth:`ChangePredictor.predict`.

    Attributes:
        change: binary change COG (uint8 0/1, nodata 255).
        probability: change probability COG (uint8 ``round(p * 254)`` with nodata 255, or
            float32 with NaN nodata), or None when not written.
        semantic_pre: pre-date class ids (uint8, nodata 255) for semantic models.
        semantic_post: post-date class ids for semantic models.
        transition: ``from * K + to`` where changed, 254 where unchanged, 255 nodata (uint8;
            uint16 with 65534 / 65535 when ``K * K > 253``), for semantic models.
        class_names: semantic class names in id order (None for binary models).
        crs: output CRS.
        transform: output affine transform.
        height: output height in pixels.
        width: output width in pixels.
        tiles: number of tiles inferred in this call.
        seconds: wall time of this call.
    """

    change: Path
    probability: Path | None = None
    semantic_pre: Path | None = None
    semantic_post: Path | None = None
    transition: Path | None = None
    class_names: list[str] | None = None
    crs: CRS | None = None
    transform: Affine | None = None
    height: int = 0
    width: int = 0
    tiles: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _default_workers(device: torch.device) -> int:
    cpus = os.cpu_count() or 1
    if device.type == "cuda":
        # Reading and decoding overlap with GPU compute.
        return min(4, max(1, cpus // 4))
    # On the CPU the model's threads use every core; a reader process only steals cores from
    # them (on 2 cores one reader worker made a 2048^2 run 1.8x slower than reading inline).
    return 0 if cpus < 8 else min(2, cpus // 8)


def _cpu_bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class _Inferencer:
    """Picklable model runner: normalization, autocast, TTA and output decoding.

    It turns a batch of raw ``[B, 2, C, h, w]`` tiles into float32 probabilities
    ``[B, 1 + 2K, h, w]`` (change probability, then pre and post class probabilities).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: torch.device,
        precision: str,
        normalization: dict[str, Sequence[float]] | None,
        tta: bool,
        channels_last: bool,
        size_divisor: int,
        fold_batchnorm: bool = True,
    ) -> None:
        self.model = model
        self.device = device
        self.precision = precision
        # Per band, or per date and band (lists of two lists) once value_range rescales.
        self.normalization: dict[str, Any] | None = normalization
        self.tta = tta
        self.channels_last = channels_last
        self.size_divisor = size_divisor
        self.fold_batchnorm = fold_batchnorm
        #: BatchNorm layers folded into convolutions (None until the first batch).
        self.folded_batchnorms: int | None = None
        self._prepared = False
        self._thread: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_prepared"] = False
        state["_thread"] = None
        state.pop("_runner", None)
        state["folded_batchnorms"] = None
        return state

    def __call__(self, image: Tensor) -> np.ndarray:
        """Probabilities ``[B, 1 + 2K, h, w]`` (float32 numpy) for raw tiles ``[B, 2, C, h, w]``.

        On the CPU the model runs on one dedicated thread: glibc gives that thread its own
        malloc arena, so the forward passes' buffers (raised mmap threshold, see
        :func:`geochange.io.model_buffers_on_heap`) are reused pass after pass without
        fragmenting the heap that tile and row buffers use.
        """
        if self.device.type != "cpu":
            return self._infer(image)
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="geochange-model")
        return self._thread.submit(self._infer, image).result()

    def _prepare(self) -> None:
        if self._prepared:
            return
        self.model.eval()
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # The module that runs; the BatchNorm-folded copy once the first batch has been seen.
        self._runner: nn.Module = self.model
        if self.normalization is not None:
            mean = torch.as_tensor(self.normalization["mean"], dtype=torch.float32)
            std = torch.as_tensor(self.normalization["std"], dtype=torch.float32)
            # One list per band, or one per date and band (value_range="rescale").
            dates = 2 if mean.ndim == 2 else 1
            self._mean = mean.view(1, dates, -1, 1, 1).to(self.device)
            self._std = std.view(1, dates, -1, 1, 1).to(self.device)
        self._prepared = True

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        with self._autocast(), model_buffers_on_heap():
            out = self._runner(x)
        if isinstance(out, Tensor):
            change, pre, post = out, None, None
        elif isinstance(out, dict) and CHANGE in out:
            change, pre, post = out[CHANGE], out.get(SEMANTIC_PRE), out.get(SEMANTIC_POST)
        else:
            raise ConfigurationError(
                "the model must return change logits [B, 1, H, W] or a dict with a 'change' key"
            )
        change = change.float()
        if change.ndim == 3:
            change = change.unsqueeze(1)
        # One logit -> sigmoid; two logits -> softmax probability of class 1.
        change_prob = (
            torch.sigmoid(change[:, :1]) if change.shape[1] == 1 else change.softmax(1)[:, 1:2]
        )
        pre_prob = pre.float().softmax(1) if pre is not None else None
        post_prob = post.float().softmax(1) if post is not None else None
        return change_prob, pre_prob, post_prob

    def _fold(self, x: Tensor) -> None:
        """Fold BatchNorms into convolutions, found and checked on a crop of the first tile."""
        self.folded_batchnorms = 0
        if not self.fold_batchnorm:
            return
        # A crop keeps the two extra forward passes cheap; it stays a multiple of the model's
        # size divisor so any model that accepts the tiles accepts it.
        crop = max(self.size_divisor, 128 // self.size_divisor * self.size_divisor)
        crop = min(crop, x.shape[-2], x.shape[-1])
        # Outside inference mode (the clone there is an ordinary tensor), so the folded
        # weights become ordinary parameters.
        with torch.inference_mode(False), torch.no_grad():
            sample = x[:1, ..., :crop, :crop].clone()
            runner, self.folded_batchnorms = fold_batch_norm(self.model, sample)
        if self.folded_batchnorms and self.channels_last:
            runner.to(memory_format=torch.channels_last)
        self._runner = runner

    @torch.inference_mode()
    def _infer(self, image: Tensor) -> np.ndarray:
        self._prepare()
        x = image.to(self.device, non_blocking=True).float()
        if self.normalization is not None:
            x = (x - self._mean) / self._std
        height, width = x.shape[-2:]
        pad_h = -height % self.size_divisor
        pad_w = -width % self.size_divisor
        if pad_h or pad_w:
            # Only for tiles smaller than the model's size multiple (scenes smaller than a tile).
            batch, dates, channels = x.shape[:3]
            flat = x.reshape(batch, dates * channels, height, width)
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            flat = torch.nn.functional.pad(flat, (0, pad_w, 0, pad_h), mode=mode)
            x = flat.reshape(batch, dates, channels, height + pad_h, width + pad_w)
        if self.folded_batchnorms is None:
            self._fold(x)
        flips: list[tuple[int, ...]] = [()]
        if self.tta:
            flips = [(), (-1,), (-2,), (-2, -1)]
        total: Tensor | None = None
        for dims in flips:
            xi = x.flip(dims) if dims else x
            parts = [p for p in self._forward(xi) if p is not None]
            probs = torch.cat(parts, dim=1)
            if dims:
                probs = probs.flip(dims)
            total = probs if total is None else total + probs
        assert total is not None
        total = total / len(flips)
        total = total[..., :height, :width]
        return total.float().cpu().numpy()


def _tile_windows(
    grid: TileGrid, rows: Sequence[int], cols: Sequence[int], origin: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    row_starts, col_starts = grid.row_starts, grid.col_starts
    return [
        (origin[0] + row_starts[r], origin[1] + col_starts[c], grid.tile_height, grid.tile_width)
        for r in rows
        for c in cols
    ]


@dataclass
class _TileResult:
    """Probabilities ``probs[ch, h, w]`` of one tile (None when the tile is all nodata)."""

    row: int
    col: int
    probs: np.ndarray | None
    valid: np.ndarray
    weighted: bool = False  # probs already multiplied by the blending window


def _tile_weights(grid: TileGrid, row: int, col: int) -> np.ndarray:
    """The (separable) blending window of tile ``(row, col)``, float32 ``[h, w]``."""
    return (grid.row_weights(row)[:, None] * grid.col_weights(col)[None, :]).astype(np.float32)


def _weight_tile(grid: TileGrid, tile: _TileResult, weights: np.ndarray | None = None) -> None:
    """Multiply the tile's probabilities by its blending window, in place."""
    if tile.probs is not None and not tile.weighted:
        tile.probs *= _tile_weights(grid, tile.row, tile.col) if weights is None else weights
    tile.weighted = True


def _compute_tiles(
    inferencer: _Inferencer,
    source: Any,
    grid: TileGrid,
    rows: Sequence[int],
    channels: int,
    *,
    cols: Sequence[int] | None = None,
    origin: tuple[int, int] = (0, 0),
    batch_size: int = 4,
    num_workers: int = 0,
    pin_memory: bool = False,
    progress: Any = None,
) -> Iterator[_TileResult]:
    """Run the model on the tiles of ``rows`` x ``cols``; yield tiles in row-major order.

    ``cols`` defaults to every tile column.
    """
    rows = list(rows)
    cols = list(range(len(grid.col_starts))) if cols is None else list(cols)
    if not rows or not cols:
        return
    ncols = len(cols)
    dataset = TileDataset(source, _tile_windows(grid, rows, cols, origin))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=_collate,
        worker_init_fn=worker_init_bound_malloc if num_workers > 0 else None,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
    for batch in loader:
        if "error" in batch:
            raise batch["error"]
        valid = batch["valid"].numpy()
        keep = valid.reshape(valid.shape[0], -1).any(axis=1)
        probs = inferencer(batch["image"][torch.from_numpy(keep)]) if keep.any() else None
        if probs is not None and probs.shape[1] != channels:
            raise ConfigurationError(
                f"the model produced {probs.shape[1]} output channels, expected {channels}"
            )
        kept = 0
        for i, index in enumerate(batch["index"]):
            tile_probs = None
            if keep[i]:
                assert probs is not None
                tile_probs = probs[kept]
                kept += 1
            yield _TileResult(rows[index // ncols], cols[index % ncols], tile_probs, valid[i])
        if progress is not None:
            progress.update(len(batch["index"]))


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    for item in items:
        if "error" in item:  # a reader worker's GeochangeError, raised in the main process
            return {"error": item["error"]}
    return {
        "image": torch.stack([item["image"] for item in items]),
        "valid": torch.stack([item["valid"] for item in items]),
        "index": [int(item["index"]) for item in items],
    }


class _BandAssembler:
    """Blends tiles into a rolling band of rows and writes finished, decoded rows.

    The band covers the rows of the current tile row and the columns of one
    :class:`ColumnStripe` (the whole width by default). Rows above the start of the next tile
    row receive no further contributions, so they are divided by the (separable) weight sum,
    decoded by ``decode(probs, valid, labels)`` in column chunks (so the float32 temporaries
    stay small for many-class models) and each chunk of the stripe's output columns is handed
    to ``write(top, arrays, col)`` (``col`` counted from the stripe's first output column).
    Only one band of ``channels x tile_height x band_width`` float32 values is held.

    With ``classes`` > 0 and ``semantic_blend="center"`` only the change probability is
    blended; each date's class map takes the arg-max of the tile with the largest window weight
    at each pixel (kept as two uint8 classes and one float32 weight: 6 bytes per pixel instead
    of ``8 K``), and ``labels`` holds the two class maps.
    """

    def __init__(
        self,
        grid: TileGrid,
        channels: int,
        decode: Any,
        write: Any,
        skip_until: int = 0,
        chunk_width: int | None = None,
        classes: int = 0,
        semantic_blend: str = "probability",
        stripe: ColumnStripe | None = None,
    ) -> None:
        self.grid = grid
        self.decode = decode
        self.write = write
        self.skip_until = skip_until
        self.chunk_width = max(1, int(chunk_width or DECODE_CHUNK_WIDTH))
        self.stripe = stripe or column_stripes(grid, None)[0]
        self.row_starts = grid.row_starts
        self.row_sum = grid.row_weight_sum().astype(np.float32)
        self.col_sum = grid.col_weight_sum().astype(np.float32)
        h, width = grid.tile_height, self.stripe.band_width
        self.classes = classes
        self.center = bool(classes) and semantic_blend == "center"
        self.acc = np.zeros((1 if self.center else channels, h, width), dtype=np.float32)
        self.labels: np.ndarray | None = None
        self.best: np.ndarray | None = None
        if self.center:
            self.labels = np.zeros((2, h, width), dtype=np.uint8)
            self.best = np.zeros((h, width), dtype=np.float32)
        self.valid = np.zeros((h, width), dtype=bool)
        self.top: int | None = None
        self.row: int | None = None
        self.tiles = 0

    def _release(self, until: int) -> None:
        assert self.top is not None
        count = until - self.top
        if count <= 0:
            return
        start = self.top
        if until > self.skip_until:
            first = max(0, self.skip_until - start)  # resumed run: rows on disk are dropped
            row_sum = self.row_sum[start + first : until, None]
            x0, out_x0, out_x1 = self.stripe.band_x0, self.stripe.out_x0, self.stripe.out_x1
            for s0 in range(out_x0, out_x1, self.chunk_width):
                s1 = min(out_x1, s0 + self.chunk_width)
                c0, c1 = s0 - x0, s1 - x0  # band columns
                probs = self.acc[:, first:count, c0:c1] / (row_sum * self.col_sum[None, s0:s1])
                labels = None if self.labels is None else self.labels[:, first:count, c0:c1]
                arrays = self.decode(probs, self.valid[first:count, c0:c1], labels)
                self.write(start + first, arrays, s0 - out_x0)
        # Shift the band up, one channel at a time to keep the temporary small.
        planes = list(self.acc)
        if self.labels is not None and self.best is not None:
            planes += [*self.labels, self.best]
        for plane in planes:
            plane[:-count] = plane[count:]
            plane[-count:] = 0
        self.valid[:-count] = self.valid[count:]
        self.valid[-count:] = False
        self.top = until

    def start(self, row: int) -> None:
        """Begin at tile row ``row`` (so rows are written even if no tile arrives)."""
        self._enter_row(row)

    def _enter_row(self, row: int) -> None:
        if row == self.row:
            return
        if self.row is not None and row < self.row:
            raise RuntimeError("tile rows must arrive in increasing order")
        start = self.row_starts[row]
        if self.top is None:
            self.top = start
        self._release(start)
        self.row = row

    def add_tile(self, tile: _TileResult) -> None:
        """Blend one tile of the stripe (tiles must arrive in row-major order)."""
        self._enter_row(tile.row)
        c0 = self.grid.col_starts[tile.col] - self.stripe.band_x0
        cols = slice(c0, c0 + self.grid.tile_width)
        self.valid[:, cols] |= tile.valid
        if tile.probs is None:
            return
        if self.tiles % TRIM_EVERY_TILES == TRIM_EVERY_TILES - 1:
            # Per-tile buffers must not fragment the heap into growth with the scene; trimming
            # rarely keeps the (re-faulted) pages of the model's activations cheap.
            trim_heap()
        weights = _tile_weights(self.grid, tile.row, tile.col)
        if self.center:
            self._take_center_labels(tile.probs, weights, cols)
            # Only the change probability is blended.
            change = tile.probs[0] if tile.weighted else tile.probs[0] * weights
            self.acc[0, :, cols] += change
        else:
            _weight_tile(self.grid, tile, weights)
            self.acc[:, :, cols] += tile.probs
        self.tiles += 1

    def _take_center_labels(self, probs: np.ndarray, weights: np.ndarray, cols: slice) -> None:
        """Keep each date's tile arg-max where this tile's window weight is the largest so far."""
        assert self.labels is not None and self.best is not None
        better = weights > self.best[:, cols]  # one weight window for both dates
        np.copyto(self.best[:, cols], weights, where=better)
        k = self.classes
        for date in range(2):
            # Arg-max is unchanged by the (positive) window weight, so weighted tiles work too.
            ids = probs[1 + date * k : 1 + (date + 1) * k].argmax(0).astype(np.uint8)
            np.copyto(self.labels[date, :, cols], ids, where=better)

    def finish(self) -> None:
        """Write the remaining rows down to the bottom of the scene."""
        if self.top is not None:
            self._release(self.grid.height)


# --- Dask workers -----------------------------------------------------------------------------


def _dask_tiles(
    inferencer: _Inferencer,
    source: Any,
    grid: TileGrid,
    rows: list[int],
    cols: list[int],
    channels: int,
    origin: tuple[int, int],
    batch_size: int,
    gdal_cache_mb: int = 64,
) -> list[_TileResult]:
    """Dask task: the weighted tiles of a block of tile rows x columns (all-nodata dropped).

    Weighting happens here, with the same arithmetic as in a single process, so the client's
    blend is bit-identical to a single-process run.
    """
    bound_malloc_growth(PREDICT_MMAP_THRESHOLD)
    tiles = []
    try:
        with gdal_cache(gdal_cache_mb * 2**20):
            for tile in _compute_tiles(
                inferencer,
                source,
                grid,
                rows,
                channels,
                cols=cols,
                origin=origin,
                batch_size=batch_size,
            ):
                if tile.probs is not None:
                    _weight_tile(grid, tile)
                    tiles.append(tile)
        return tiles
    except GeochangeError as err:
        raise picklable_error(err) from None  # it goes back to the client
    finally:
        if hasattr(source, "close"):
            source.close()


def _rows_from(grid: TileGrid, skip: int) -> list[int]:
    """The tile rows that contribute to scene rows from ``skip`` down."""
    starts = grid.row_starts
    first = next((r for r, s in enumerate(starts) if s + grid.tile_height > skip), len(starts))
    return list(range(first, len(starts)))


MAX_ROWS_PER_BLOCK = 2
# Narrowest stripe, in tiles, whatever band_memory_mb says (at most ~1/6 tiles recomputed).
MIN_STRIPE_TILES = 8
# Columns decoded at a time when rows are released (bounds float32 temporaries).
DECODE_CHUNK_WIDTH = 2048
# Tiles between two heap trims (see geochange.io.trim_heap).
TRIM_EVERY_TILES = 64
# glibc mmap threshold of the predicting process (reader workers use 128 KiB).
PREDICT_MMAP_THRESHOLD = 8 * 2**20


class ChangePredictor:
    """Seamless, georeferenced, bounded-memory sliding-window prediction over whole scenes.

    The scene is read tile by tile (in background DataLoader workers where cores allow), tiles
    are batched and inferred, blended into a band of accumulators one tile row high with a
    smooth weight window (zero within ``margin`` of inner tile edges, see
    :mod:`geochange.predict.windows`) and flushed to disk row band by row band. A scene whose
    band would exceed ``band_memory_mb`` is predicted in vertical column stripes, so memory
    depends on the tile size, the model and that budget, not on the scene size.

    Args:
        model: any module following the geochange model contract (dict with ``"change"`` logits
            and optional ``"semantic_pre"``/``"semantic_post"``) or returning a bare change-logit
            tensor ``[B, 1, H, W]``; it receives float32 ``[B, 2, C, H, W]``.
        tile_size: tile size in pixels.
        overlap: overlap between neighbouring tiles.
        margin: pixels of zero weight along inner tile edges; default ``overlap // 4``. For
            a model whose receptive-field radius is at most ``margin`` the mosaic equals
            whole-image inference.
        batch_size: tiles per forward pass.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        threshold: change probability threshold for the binary map.
        blend: ``"cosine"``, ``"gaussian"``, ``"mean"`` or ``"center"``.
        semantic_blend: how semantic models' class maps are mosaicked. ``"probability"``
            (default): arg-max of the blended class probabilities; the band then holds
            ``1 + 2K`` float32 channels. ``"center"``: each pixel takes the class of the tile
            with the largest window weight there (the tile it is deepest inside), so the band
            holds the change probability plus 6 bytes per pixel whatever K is; exact for models
            whose receptive-field radius is at most ``margin``. Use it for many classes on very
            wide scenes.
        tta: average predictions over horizontal/vertical flips (4 passes).
        num_workers: DataLoader reader processes; default on CUDA ``min(4, cpu_count // 4)``
            (at least 1), on the CPU 0 below 8 cores (the model's threads use them all), else
            ``min(2, cpu_count // 8)``.
        precision: ``"auto"`` (bf16 autocast on CUDA and on CPUs with native bf16, else fp32),
            ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        normalization: ``{"mean": [...], "std": [...]}`` per band in raw pixel units; None feeds
            raw pixel values.
        probability_dtype: ``"uint8"`` (``round(p * 254)``, nodata 255) or ``"float32"`` (NaN).
        class_names: semantic class names in id order (written as raster metadata).
        bands: bands read from the images (1-based indexes or band descriptions); default all.
        in_channels: expected band count (checked before any work when given).
        channels_last: convert the model to channels-last memory format (on a 2-core AMD EPYC
            CPU in fp32 it made resnet18 change models 1.24-1.53x faster, and it is the fast
            layout for CUDA convolutions; results agree to ~1e-7).
        size_divisor: tiles are padded to a multiple of this for the model (only tiles smaller
            than ``tile_size`` can need it).
        progress: show a progress bar (tiles, tiles/s, ETA).
        gdal_cache_mb: GDAL block cache size while predicting (GDAL's default, 5 % of RAM,
            would make memory grow with the scene). At 48000 px wide, 256 MB cost 200 MB more
            peak RSS than 64 MB with no measurable speed difference.
        band_memory_mb: memory budget of the blending band (``tile_size`` rows of float32
            accumulators). A scene whose band would exceed it is predicted in vertical
            stripes, each top to bottom, so memory stops growing with the scene width; the
            output is bit-identical, and each stripe after the first recomputes the one tile
            column (with the default overlap) that reaches into it. The default fits binary
            models on scenes up to ~200k px wide in one stripe.
        fold_batchnorm: predict with a copy of the model whose eval-mode BatchNorm layers are
            folded into the convolutions feeding them
            (:func:`geochange.models.fold_batch_norm`, checked against the model on a crop of
            the first tile; the model passed in is not modified). It saves one pass over
            every activation map: with the resnet18 ``fusion_unet`` the whole pipeline ran
            1.15x faster on a 2-core AMD EPYC CPU (``bench_predict.py --unfolded``).
        input_range: value range of the training imagery (``{"dtype", "min": [...],
            "max": [...]}``, recorded in checkpoints; see
            :func:`geochange.transforms.check_value_range`); None skips the check.
        value_range: what :meth:`predict` does when a sample of a scene's values does not match
            ``input_range`` (e.g. 12-bit imagery for a model trained on 8-bit imagery):
            ``"check"`` (default) raises a :class:`~geochange.errors.DataError` naming both
            ranges before the first tile, ``"rescale"`` maps that date's values linearly onto
            the training range (by the ratio of the full-scale values, 255 / 4095 for 12-bit
            imagery on an 8-bit model), ``"ignore"`` predicts on the values as they are.

    Raises:
        ConfigurationError: inconsistent arguments (e.g. ``tile_size <= overlap``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        tile_size: int = 512,
        overlap: int = 128,
        margin: int | None = None,
        batch_size: int = 4,
        device: str | torch.device = "auto",
        threshold: float = 0.5,
        blend: str = "cosine",
        semantic_blend: Literal["probability", "center"] = "probability",
        tta: bool = False,
        num_workers: int | None = None,
        precision: Precision = "auto",
        normalization: dict[str, Sequence[float]] | None = None,
        probability_dtype: Literal["uint8", "float32"] = "uint8",
        class_names: Sequence[str] | None = None,
        bands: Sequence[int | str] | None = None,
        in_channels: int | None = None,
        channels_last: bool = True,
        size_divisor: int = 32,
        progress: bool = True,
        gdal_cache_mb: int = 64,
        band_memory_mb: float = 512,
        fold_batchnorm: bool = True,
        input_range: dict[str, Any] | None = None,
        value_range: Literal["check", "rescale", "ignore"] = "check",
    ) -> None:
        if value_range not in VALUE_RANGE_MODES:
            raise ConfigurationError(
                f"value_range must be one of {VALUE_RANGE_MODES}, got {value_range!r}"
            )
        if tile_size <= 0 or overlap < 0:
            raise ConfigurationError(f"invalid tile_size={tile_size} / overlap={overlap}")
        if tile_size <= overlap:
            raise ConfigurationError(
                f"tile_size ({tile_size}) must be larger than overlap ({overlap})"
            )
        margin = overlap // 4 if margin is None else margin
        if overlap > 0 and not 0 <= 2 * margin < overlap:
            raise ConfigurationError(f"margin ({margin}) must be in [0, overlap / 2)")
        if blend not in BLEND_MODES:
            raise ConfigurationError(f"unknown blend {blend!r}; choose one of {BLEND_MODES}")
        if semantic_blend not in ("probability", "center"):
            raise ConfigurationError(
                f"semantic_blend must be 'probability' or 'center', got {semantic_blend!r}"
            )
        if probability_dtype not in ("uint8", "float32"):
            raise ConfigurationError("probability_dtype must be 'uint8' or 'float32'")
        if not 0.0 <= threshold <= 1.0:
            raise ConfigurationError(f"threshold must be in [0, 1], got {threshold}")
        if batch_size < 1:
            raise ConfigurationError("batch_size must be >= 1")
        if normalization is not None:
            if set(normalization) < {"mean", "std"}:
                raise ConfigurationError("normalization must have 'mean' and 'std' lists")
            if len(normalization["mean"]) != len(normalization["std"]):
                raise ConfigurationError("normalization 'mean' and 'std' differ in length")
            if any(float(s) == 0 for s in normalization["std"]):
                raise ConfigurationError("normalization 'std' contains zeros")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if precision == "auto":
            if self.device.type == "cuda":
                precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                precision = "bf16" if _cpu_bf16_supported() else "fp32"
        if precision not in ("fp32", "bf16", "fp16"):
            raise ConfigurationError(f"unknown precision {precision!r}")
        self.model = model
        self.tile_size = int(tile_size)
        self.overlap = int(overlap)
        self.margin = int(margin)
        self.batch_size = int(batch_size)
        self.threshold = float(threshold)
        self.blend = blend
        self.semantic_blend = semantic_blend
        self.tta = tta
        self.num_workers = (
            _default_workers(self.device) if num_workers is None else int(num_workers)
        )
        self.precision: str = precision
        self.normalization = normalization
        self.probability_dtype = probability_dtype
        self.class_names = list(class_names) if class_names is not None else None
        self.bands = list(bands) if bands is not None else None
        self.in_channels = in_channels
        if in_channels is None and normalization is not None:
            self.in_channels = len(normalization["mean"])
        self.progress = progress
        self.gdal_cache_mb = int(gdal_cache_mb)
        if not band_memory_mb > 0:
            raise ConfigurationError(f"band_memory_mb must be > 0, got {band_memory_mb}")
        self.band_memory_mb = float(band_memory_mb)
        #: The checkpoint the model came from (:meth:`from_checkpoint`); no output replaces it.
        self.checkpoint: Path | None = None
        self.input_range = input_range
        self.value_range = value_range
        self._inferencer = _Inferencer(
            model,
            device=self.device,
            precision=precision,
            normalization=normalization,
            tta=tta,
            channels_last=channels_last,
            size_divisor=size_divisor,
            fold_batchnorm=fold_batchnorm,
        )

    # -- construction from checkpoints -----------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], **overrides: Any) -> ChangePredictor:
        """Build a predictor from a geochange training checkpoint.

        Normalization, bands, class names, input channels and tile size come from the
        checkpoint's ``"geochange"`` metadata; any constructor argument can be overridden.

        Args:
            path: a checkpoint written by :class:`geochange.trainers.ChangeTrainer`.
            **overrides: constructor keyword arguments.

        Returns:
            The predictor with the checkpoint's model in eval mode.

        Raises:
            CheckpointError: missing file, not a geochange/Lightning checkpoint, a file holding
                Python objects (never unpickled), metadata that disagrees with the Lightning
                hyper-parameters, or weights that do not fit the model.
        """
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"checkpoint not found: {str(path)!r}")
        # Read once (weights_only=True: the file cannot run code), without Lightning: the
        # metadata and the model both come from this one dict.
        model, metadata = load_model(path)
        kwargs: dict[str, Any] = {
            "normalization": metadata.normalization,
            "bands": metadata.bands,
            "class_names": metadata.class_names,
            "in_channels": metadata.in_channels,
            "input_range": metadata.input_range,
        }
        if metadata.input_range is None and overrides.get("value_range") != "ignore":
            warnings.warn(
                f"checkpoint {str(path)!r} has no record of its training imagery's value range "
                f"(written by geochange {metadata.version}); predict cannot check that a "
                "scene's values match them",
                stacklevel=2,
            )
        if metadata.patch_size:  # the training patch is the default inference tile
            tile = int(metadata.patch_size)
            kwargs["tile_size"] = tile
            kwargs["overlap"] = min(overlap_default(tile), tile - 1)
        kwargs.update(overrides)
        predictor = cls(model, **kwargs)
        predictor.checkpoint = path
        return predictor

    # -- helpers -----------------------------------------------------------------------------

    def _channels(self, in_channels: int, tile: tuple[int, int]) -> tuple[int, int]:
        """Output channel count and class count, found by running the model on a small input.

        A 32-px probe is tried first (cheap); models that need full tiles get one of ``tile``.
        """
        error: Exception | None = None
        for height, width in ((32, 32), tile):
            probe = torch.zeros(1, 2, in_channels, height, width)
            try:
                probs = self._inferencer(probe)
                break
            except ConfigurationError:
                raise
            except Exception as err:
                error = err
        else:
            raise DataError(f"the model cannot run on {in_channels}-band input: {error}")
        channels = probs.shape[1]
        classes = (channels - 1) // 2
        if channels != 1 + 2 * classes:
            raise ConfigurationError(f"model produced {channels} output channels")
        return channels, classes

    def _stripes(self, grid: TileGrid, channels: int, classes: int) -> list[ColumnStripe]:
        """Column stripes whose blending bands fit ``band_memory_mb``."""
        if classes and self.semantic_blend == "center":
            per_pixel = 4 + 2 + 4 + 1  # change sum, two class ids, best weight, valid
        else:
            per_pixel = 4 * channels + 1
        max_width = int(self.band_memory_mb * 2**20) // (grid.tile_height * per_pixel)
        # Stripes narrower than a few tiles would recompute a large share of the tiles.
        max_width = max(max_width, MIN_STRIPE_TILES * grid.tile_width)
        return column_stripes(grid, max_width)

    def _model_fingerprint(self) -> str:
        digest = hashlib.sha1()
        for name, tensor in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(f"{float(tensor.float().sum()):.6e}".encode())
        return digest.hexdigest()

    def _names(self, classes: int) -> list[str]:
        if self.class_names is not None and len(self.class_names) == classes:
            return list(self.class_names)
        if self.class_names is not None:
            warnings.warn(
                f"{len(self.class_names)} class names given but the model predicts {classes} "
                "classes; using numbered names",
                stacklevel=3,
            )
        return [f"class_{i}" for i in range(classes)]

    def _decode(
        self,
        probs: np.ndarray,
        valid: np.ndarray,
        classes: int,
        probability_dtype: str | None = None,
        labels: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Turn blended probabilities ``[ch, n, W]`` into the output arrays.

        ``labels`` (``[2, n, W]``) are ready class maps (``semantic_blend="center"``); without
        them the classes are the arg-max of the blended class probabilities.
        """
        probability_dtype = probability_dtype or self.probability_dtype
        change_prob = probs[0]
        changed = change_prob >= self.threshold
        out: dict[str, np.ndarray] = {}
        if probability_dtype == "float32":
            out["probability"] = np.where(valid, change_prob, np.nan).astype(np.float32)
        else:
            scaled = np.rint(np.clip(change_prob, 0, 1) * PROBABILITY_SCALE).astype(np.uint8)
            out["probability"] = np.where(valid, scaled, NODATA_U8).astype(np.uint8)
        out["change"] = np.where(valid, changed, NODATA_U8).astype(np.uint8)
        if classes:
            if labels is not None:
                pre, post = labels[0], labels[1]
            else:
                pre = probs[1 : 1 + classes].argmax(0)
                post = probs[1 + classes : 1 + 2 * classes].argmax(0)
            out["semantic_pre"] = np.where(valid, pre, NODATA_U8).astype(np.uint8)
            out["semantic_post"] = np.where(valid, post, NODATA_U8).astype(np.uint8)
            nodata, unchanged, dtype = _transition_codes(classes)
            code = pre.astype(np.int64) * classes + post
            trans = np.where(changed, code, unchanged)
            out["transition"] = np.where(valid, trans, nodata).astype(dtype)
        return out

    def _output_specs(
        self, out_dir: Path, classes: int, names: list[str], write_probability: bool
    ) -> list[OutputSpec]:
        specs: list[OutputSpec] = []
        if write_probability:
            is_float = self.probability_dtype == "float32"
            specs.append(
                OutputSpec(
                    "probability",
                    out_dir / PROBABILITY_FILE,
                    "float32" if is_float else "uint8",
                    float("nan") if is_float else NODATA_U8,
                    "average",
                    {PROBABILITY_SCALE_TAG: "1" if is_float else str(PROBABILITY_SCALE)},
                )
            )
        change_colors = {value: (*rgb, 255) for value, rgb in CHANGE_COLORS.items()}
        specs.append(
            OutputSpec(
                "change",
                out_dir / CHANGE_FILE,
                "uint8",
                NODATA_U8,
                "nearest",
                {CLASS_NAMES_TAG: json.dumps(list(CHANGE_CLASS_NAMES))},
                change_colors,
            )
        )
        if classes:
            colours = class_colours(classes)
            cmap = {i: (*c, 255) for i, c in enumerate(colours)}
            tags = {CLASS_NAMES_TAG: json.dumps(names)}
            for key in ("semantic_pre", "semantic_post"):
                specs.append(
                    OutputSpec(
                        key,
                        out_dir / PREDICTION_FILES[key],
                        "uint8",
                        NODATA_U8,
                        "nearest",
                        tags,
                        cmap,
                    )
                )
            nodata, unchanged, dtype = _transition_codes(classes)
            transition_names = {
                str(a * classes + b): f"{names[a]} -> {names[b]}"
                for a in range(classes)
                for b in range(classes)
            }
            transition_names[str(unchanged)] = "no change"
            # Colour a transition by its destination class.
            tmap = None
            if dtype == "uint8":
                tmap = {
                    a * classes + b: (*colours[b], 255)
                    for a in range(classes)
                    for b in range(classes)
                }
                tmap[unchanged] = (0, 0, 0, 255)
            specs.append(
                OutputSpec(
                    "transition",
                    out_dir / TRANSITION_FILE,
                    dtype,
                    nodata,
                    "nearest",
                    {**tags, TRANSITION_NAMES_TAG: json.dumps(transition_names)},
                    tmap,
                )
            )
        return specs

    def _resolve_window(self, pair: RasterPair, window: Any) -> Window:
        if window is None:
            return Window(0, 0, pair.width, pair.height)
        if isinstance(window, Window):
            asked = f"window {describe_window(window)} lies"
        else:
            left, bottom, right, top = (float(v) for v in window)
            asked = f"bounds ({left:g}, {bottom:g}, {right:g}, {top:g}) lie"
            window = from_bounds(left, bottom, right, top, transform=pair.transform)
        window = window.round_offsets().round_lengths()
        full = Window(0, 0, pair.width, pair.height)
        outside = DataError(
            f"{asked} outside the pre image {str(pair.pre_path)!r} ({pair.width} x "
            f"{pair.height} px, bounds "
            f"{tuple(round(v, 6) for v in array_bounds(pair.height, pair.width, pair.transform))}"
            ")"
        )
        try:
            window = window.intersection(full)
        except Exception as err:
            raise outside from err
        if window.width < 1 or window.height < 1:
            raise outside
        return window

    # -- prediction ------------------------------------------------------------------------

    def predict(
        self,
        pre: str | os.PathLike[str],
        post: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        *,
        window: Window | Sequence[float] | None = None,
        write_probability: bool = True,
        resume: bool = False,
        client: Any = None,
        blocks_per_worker: int = 4,
        crs: str | CRS | None = None,
        resolution: float | tuple[float, float] | None = None,
        overwrite: bool = False,
    ) -> PredictionResult:
        """Predict change over a whole scene pair and write Cloud-Optimized GeoTIFFs.

        The run holds an exclusive lock on ``out_dir`` (a second run into it fails at once,
        naming the holder), never writes over its inputs, and replaces existing outputs only
        once all new ones are complete, and only files ``geochange predict`` wrote unless
        ``overwrite``. Until then everything goes to hidden partial files, kept on failure
        for ``resume``.

        Args:
            pre: pre-change image (any GDAL raster; its grid is the output grid).
            post: post-change image; warped on the fly onto the pre grid when CRS/grid differ.
            out_dir: output directory (created); files: ``probability.tif``, ``change.tif``,
                and for semantic models ``semantic_pre.tif``, ``semantic_post.tif``,
                ``transition.tif``.
            window: restrict to a pixel :class:`~rasterio.windows.Window` of the pre image or
                to bounds ``(left, bottom, right, top)`` in its CRS.
            write_probability: also write the probability raster.
            resume: continue an interrupted run with the same settings from its flushed rows.
            client: a ``dask.distributed.Client``: blocks of tile rows (with an ``overlap``
                halo) are inferred on its workers, which each load the model once.
            blocks_per_worker: with ``client``, aim for this many blocks per worker (a block
                holds at most ``MAX_ROWS_PER_BLOCK`` = 2 tile rows, so large scenes get more).
            crs: output CRS instead of the pre image's (both dates are warped onto it).
            resolution: output pixel size in CRS units instead of the pre image's.
            overwrite: also replace existing output files that geochange did not write (never
                an input).

        Returns:
            The written paths and georeferencing.

        Raises:
            DataError: missing, truncated or corrupt inputs (naming the file and window),
                band mismatch, dates that do not overlap, a window outside the pre image.
            OutputError: ``out_dir`` not writable or in use by another run, an output that
                would overwrite an input or a file geochange did not write, a failed write
                (a full disk says so).
        """
        # A bounded GDAL block cache (the default is 5 % of RAM) keeps memory independent of the
        # scene size (forked DataLoader workers inherit it). A fixed 8 MiB mmap threshold plus a
        # heap trim every 64 tiles stop per-tile buffers from fragmenting the heap; reader
        # workers use 128 KiB. The model itself runs with 32 MiB (model_buffers_on_heap): the
        # 8 MiB threshold made its forward pass ~8 % slower, a fixed 32 MiB for everything added
        # ~700 MB peak RSS at 48000 px wide.
        bound_malloc_growth(PREDICT_MMAP_THRESHOLD)
        inferencer = self._inferencer
        with gdal_cache(self.gdal_cache_mb * 2**20):
            # Before the first tile: the scene's values against the training range.
            self._inferencer = self._ranged_inferencer(pre, post)
            try:
                return self._predict(
                    pre,
                    post,
                    out_dir,
                    window,
                    write_probability,
                    resume,
                    client,
                    blocks_per_worker,
                    crs,
                    resolution,
                    overwrite,
                )
            finally:
                self._inferencer = inferencer

    def _ranged_inferencer(
        self, pre: str | os.PathLike[str], post: str | os.PathLike[str]
    ) -> _Inferencer:
        """The inferencer for this scene: rescaling dates whose values need it (value_range)."""
        if self.input_range is None or self.value_range == "ignore":
            return self._inferencer
        scales = []
        for path in (pre, post):
            with open_raster(path) as src:
                bands = band_indexes(src, self.bands)
            if self.in_channels is not None and len(bands) != self.in_channels:
                return self._inferencer  # RasterPair.open reports the band mismatch
            sample = sample_raster_range(path, bands)
            name = str(path)
            scales.append(
                check_value_range(self.input_range, sample, name=name, mode=self.value_range)
            )
        if scales == [1.0, 1.0]:
            return self._inferencer
        # (s * x - mean) / std == (x - mean / s) / (std / s): fold each date's factor into its
        # normalization.
        channels = len(bands)
        norm = self.normalization or {"mean": [0.0] * channels, "std": [1.0] * channels}
        per_date = {
            key: [[float(v) / scale for v in norm[key]] for scale in scales]
            for key in ("mean", "std")
        }
        rescaled = _Inferencer.__new__(_Inferencer)
        rescaled.__dict__.update(self._inferencer.__getstate__())
        rescaled.normalization = per_date
        return rescaled

    def _predict(
        self,
        pre: str | os.PathLike[str],
        post: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        window: Window | Sequence[float] | None,
        write_probability: bool,
        resume: bool,
        client: Any,
        blocks_per_worker: int,
        crs: str | CRS | None,
        resolution: float | tuple[float, float] | None,
        overwrite: bool,
    ) -> PredictionResult:
        started = time.perf_counter()
        pair = RasterPair.open(
            pre,
            post,
            bands=self.bands,
            expected_channels=self.in_channels,
            crs=crs,
            resolution=resolution,
        )
        # Everything that can be checked is checked before anything is created.
        win = self._resolve_window(pair, window)
        height, width = int(win.height), int(win.width)
        origin = (int(win.row_off), int(win.col_off))
        transform = pair.transform @ Affine.translation(origin[1], origin[0])
        grid = TileGrid(height, width, self.tile_size, self.overlap, self.margin, self.blend)
        channels, classes = self._channels(len(pair.bands), (grid.tile_height, grid.tile_width))
        names = self._names(classes) if classes else []
        out_path = Path(out_dir)
        specs = self._output_specs(out_path, classes, names, write_probability)
        fingerprint = {
            "pre": [str(Path(pre).resolve()), os.stat(pre).st_mtime_ns, os.stat(pre).st_size],
            "post": [str(Path(post).resolve()), os.stat(post).st_mtime_ns, os.stat(post).st_size],
            "window": [origin[0], origin[1], height, width],
            "grid_crs": pair.crs.to_string() if pair.crs else None,
            "transform": list(transform)[:6],
            "grid": [
                self.tile_size,
                self.overlap,
                self.margin,
                self.blend,
                self.semantic_blend,
                self.tta,
            ],
            "outputs": [s.key for s in specs],
            "threshold": self.threshold,
            "precision": self.precision,
            "probability_dtype": self.probability_dtype,
            "model": self._model_fingerprint(),
        }
        stripes = self._stripes(grid, channels, classes)
        fingerprint["stripes"] = [[st.band_x0, st.out_x0, st.out_x1] for st in stripes]
        sidecar = out_path / SIDECAR_NAME
        lock = out_path / LOCK_NAME
        written = [p for s in specs for p in (s.path, s.cog_path, s.tiled_path)]
        check_not_inputs(
            [*written, sidecar, partial_path(sidecar), lock],
            {"pre image": pre, "post image": post, "checkpoint": self.checkpoint},
        )
        check_writable_dir(out_path)
        # One run per directory: partial and sidecar names are fixed (a resumed run must find
        # them), so this lock is what keeps two runs from mixing their rows.
        cleanup = contextlib.ExitStack()
        cleanup.enter_context(exclusive_lock(lock, what="geochange predict"))
        try:
            writer = GeoTiffBandWriter(
                specs,
                crs=pair.crs,
                transform=transform,
                height=height,
                width=width,
                sidecar=sidecar,
                fingerprint=fingerprint,
                resume=resume,
                stripes=len(stripes),
                overwrite=overwrite,
            )
        except BaseException:
            cleanup.close()
            raise
        tiles = 0
        try:
            wanted = {s.key for s in specs}

            def decode(
                probs: np.ndarray, valid: np.ndarray, labels: np.ndarray | None
            ) -> dict[str, np.ndarray]:
                arrays = self._decode(probs, valid, classes, labels=labels)
                return {k: v for k, v in arrays.items() if k in wanted}

            # The stripes (or, resuming, their rest) still to predict, with their tile rows.
            work: list[tuple[int, ColumnStripe, list[int]]] = []
            for index in range(writer.stripe, len(stripes)):
                skip = writer.rows_done if index == writer.stripe else 0
                work.append((index, stripes[index], _rows_from(grid, skip)))
            total = sum(len(rows) * len(stripe.cols) for _, stripe, rows in work)
            with self._progress(total) as bar:
                dask_blocks = None
                if client is not None:
                    dask_blocks = groupby(
                        self._dask_results(
                            client, pair, grid, work, channels, origin, blocks_per_worker, bar
                        ),
                        key=itemgetter(0),
                    )
                for index, stripe, rows in work:
                    skip = writer.begin_stripe(index, stripe.out_x0, stripe.out_x1 - stripe.out_x0)
                    assembler = _BandAssembler(
                        grid,
                        channels,
                        decode,
                        writer.write,
                        skip_until=skip,
                        classes=classes,
                        semantic_blend=self.semantic_blend,
                        stripe=stripe,
                    )
                    assembler.start(rows[0])
                    if dask_blocks is not None:
                        block_index, blocks = next(dask_blocks)
                        assert block_index == index
                        stream: Iterable[_TileResult] = (t for _, ts in blocks for t in ts)
                    else:
                        stream = _compute_tiles(
                            self._inferencer,
                            pair,
                            grid,
                            rows,
                            channels,
                            cols=stripe.cols,
                            origin=origin,
                            batch_size=self.batch_size,
                            num_workers=self.num_workers,
                            pin_memory=self.device.type == "cuda",
                            progress=bar,
                        )
                    for tile in stream:
                        assembler.add_tile(tile)
                    assembler.finish()
                    tiles += assembler.tiles
            paths = writer.finalize()
        finally:
            try:
                writer.close()
            finally:
                pair.close()
                cleanup.close()
        return PredictionResult(
            change=paths["change"],
            probability=paths.get("probability"),
            semantic_pre=paths.get("semantic_pre"),
            semantic_post=paths.get("semantic_post"),
            transition=paths.get("transition"),
            class_names=names or None,
            crs=pair.crs,
            transform=transform,
            height=height,
            width=width,
            tiles=tiles,
            seconds=time.perf_counter() - started,
        )

    def _progress(self, total: int) -> contextlib.AbstractContextManager[Any]:
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="tile", desc="predict", disable=not self.progress)

    def _dask_results(
        self,
        client: Any,
        source: Any,
        grid: TileGrid,
        work: list[tuple[int, ColumnStripe, list[int]]],
        channels: int,
        origin: tuple[int, int],
        blocks_per_worker: int,
        bar: Any,
    ) -> Iterator[tuple[int, list[_TileResult]]]:
        """Run blocks of tile rows on Dask workers; yield ``(stripe, tiles)`` per block.

        Blocks come in order, each once, even when all its tiles were nodata; the tiles are
        already weighted.
        """
        from distributed import as_completed

        workers = max(1, len(client.scheduler_info().get("workers", {})))
        total_rows = sum(len(rows) for _, _, rows in work)
        nblocks = max(1, min(total_rows, workers * blocks_per_worker))
        # At most MAX_ROWS_PER_BLOCK tile rows per block: blocks cost no extra compute (tiles
        # are independent), and small ones keep the client's in-flight results small.
        size = min(math.ceil(total_rows / nblocks), MAX_ROWS_PER_BLOCK)
        blocks = [
            (index, rows[i : i + size], list(stripe.cols))
            for index, stripe, rows in work
            for i in range(0, len(rows), size)
        ]
        # Ship the model once to every worker; tasks reuse the worker's deserialized copy.
        [model_future] = client.scatter([self._inferencer], broadcast=True, hash=False)
        window = max(1, 2 * workers)  # blocks in flight, to bound client memory
        submitted: dict[Any, int] = {}
        done: dict[int, list[_TileResult]] = {}
        next_block = 0
        queue = as_completed()

        def submit(index: int) -> None:
            _, rows, cols = blocks[index]
            future = client.submit(
                _dask_tiles,
                model_future,
                source,
                grid,
                rows,
                cols,
                channels,
                origin,
                self.batch_size,
                self.gdal_cache_mb,
                pure=False,
            )
            submitted[future] = index
            queue.add(future)

        for index in range(min(window, len(blocks))):
            submit(index)
        issued = min(window, len(blocks))
        for future in queue:
            index = submitted.pop(future)
            done[index] = future.result()
            bar.update(len(blocks[index][1]) * len(blocks[index][2]))
            while next_block in done:
                yield blocks[next_block][0], done.pop(next_block)
                next_block += 1
                if issued < len(blocks):
                    submit(issued)
                    issued += 1

    def predict_xarray(self, pre: xr.DataArray, post: xr.DataArray) -> xr.Dataset:
        """Predict change between two ``(band, y, x)`` DataArrays; returns an in-memory Dataset.

        The post array is reprojected onto the pre grid with rioxarray when their CRS or
        transform differ; lazily dask-backed inputs are read tile by tile.

        Args:
            pre: pre-date array ``(band, y, x)`` (rioxarray CRS/transform are carried over).
            post: post-date array.

        Returns:
            Dataset with ``change`` (uint8, 255 nodata), ``probability`` (float32, NaN nodata)
            and, for semantic models, ``semantic_pre``, ``semantic_post``, ``transition``.
        """
        import xarray as xr

        if pre.ndim == 2:
            pre = pre.expand_dims("band")
        if post.ndim == 2:
            post = post.expand_dims("band")
        if pre.ndim != 3 or post.ndim != 3:
            raise DataError("predict_xarray expects (band, y, x) arrays")
        crs = _rio_crs(pre)
        if crs is not None and _rio_crs(post) is not None:
            same = (
                crs == _rio_crs(post)
                and post.shape == pre.shape
                and (pre.rio.transform().almost_equals(post.rio.transform()))
            )
            if not same:
                post = post.rio.reproject_match(pre)
        if pre.shape != post.shape:
            raise DataError(f"pre {pre.shape} and post {post.shape} arrays differ in shape")
        if self.in_channels is not None and pre.shape[0] != self.in_channels:
            raise DataError(
                f"the model expects {self.in_channels} bands but the arrays have {pre.shape[0]}"
            )
        source = ArrayPair(
            pre.data,
            post.data,
            pre_nodata=_rio_nodata(pre),
            post_nodata=_rio_nodata(post),
        )
        height, width = source.height, source.width
        grid = TileGrid(height, width, self.tile_size, self.overlap, self.margin, self.blend)
        channels, classes = self._channels(int(pre.shape[0]), (grid.tile_height, grid.tile_width))
        names = self._names(classes) if classes else []
        outputs: dict[str, np.ndarray] = {}

        def decode(
            probs: np.ndarray, valid: np.ndarray, labels: np.ndarray | None
        ) -> dict[str, np.ndarray]:
            return self._decode(probs, valid, classes, probability_dtype="float32", labels=labels)

        stripes = self._stripes(grid, channels, classes)
        with self._progress(sum(len(grid.row_starts) * len(st.cols) for st in stripes)) as bar:
            for stripe in stripes:

                def write(
                    top: int, arrays: dict[str, np.ndarray], col: int, x0: int = stripe.out_x0
                ) -> None:
                    for key, values in arrays.items():
                        if key not in outputs:
                            outputs[key] = np.empty((height, width), dtype=values.dtype)
                        rows, cols = values.shape
                        outputs[key][top : top + rows, x0 + col : x0 + col + cols] = values

                assembler = _BandAssembler(
                    grid,
                    channels,
                    decode,
                    write,
                    classes=classes,
                    semantic_blend=self.semantic_blend,
                    stripe=stripe,
                )
                assembler.start(0)
                for tile in _compute_tiles(
                    self._inferencer,
                    source,
                    grid,
                    range(len(grid.row_starts)),
                    channels,
                    cols=stripe.cols,
                    batch_size=self.batch_size,
                    num_workers=0,
                    progress=bar,
                ):
                    assembler.add_tile(tile)
                assembler.finish()
        coords = {k: pre.coords[k] for k in ("y", "x") if k in pre.coords}
        data_vars = {key: (("y", "x"), values) for key, values in outputs.items()}
        dataset = xr.Dataset(data_vars, coords=coords)
        dataset["change"].attrs["_FillValue"] = NODATA_U8
        if names:
            dataset.attrs[CLASS_NAMES_TAG] = json.dumps(names)
        if crs is not None:
            dataset = dataset.rio.write_crs(crs)
            dataset = dataset.rio.write_transform(pre.rio.transform())
        return dataset


def overlap_default(tile_size: int) -> int:
    """Default overlap for a tile size: a quarter of the tile."""
    return tile_size // 4


def _transition_codes(classes: int) -> tuple[int, int, str]:
    """``(nodata, unchanged, dtype)`` of the transition raster for ``classes`` classes."""
    if classes * classes <= 253:
        return 255, 254, "uint8"
    return 65535, 65534, "uint16"


def _rio_crs(array: Any) -> Any:
    try:
        return array.rio.crs
    except Exception:  # rioxarray not registered or no CRS
        return None


def _rio_nodata(array: Any) -> float | None:
    try:
        value = array.rio.nodata
    except Exception:
        value = None
    return None if value is None else float(value)
