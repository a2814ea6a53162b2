"""Whole-scene sliding-window change prediction: :class:`ChangePredictor`.

The predictor orchestrates the stages of :mod:`geochange.predict`: read tiles
(:mod:`~geochange.predict.reader`), infer them (:mod:`~geochange.predict.inference`,
:mod:`~geochange.predict.tiles`), blend them (:mod:`~geochange.predict.blend`), decode them
(:mod:`~geochange.predict.outputs`) and write COGs (:mod:`~geochange.predict.writer`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from rasterio.crs import CRS
from rasterio.windows import Window
from torch import nn

from geochange._deprecation import renamed_argument
from geochange.checkpoint import load_model
from geochange.errors import CheckpointError, ConfigurationError, NormalizationWarning
from geochange.io import bound_malloc_growth, gdal_cache
from geochange.models.early_fusion import adapt_input_layout
from geochange.models.torchgeo_checkpoint import torchgeo_overrides
from geochange.predict.arguments import _check_arguments
from geochange.predict.blend import (
    DECODE_CHUNK_WIDTH,
    TRIM_EVERY_TILES,
    Decode,
    Write,
    _BandAssembler,
    blend_stripe,
)
from geochange.predict.distributed import (
    MAX_ROWS_PER_BLOCK,
    array_writer,
    to_dataset,
    xarray_source,
)
from geochange.predict.engines import resolve_engine
from geochange.predict.engines.quantize import CALIBRATION_TILES
from geochange.predict.inference import (
    _Inferencer,
    default_num_workers,
)
from geochange.predict.lazy import is_dask, lazy_outputs
from geochange.predict.outputs import decode_outputs, output_class_names
from geochange.predict.result import PredictionResult
from geochange.predict.run import LOCK_NAME, SIDECAR_NAME, _PredictOptions, _SceneRun
from geochange.predict.tiles import (
    MIN_STRIPE_TILES,
    PREDICT_MMAP_THRESHOLD,
    _compute_tiles,
    calibrate_on_scene,
    stripes_for_budget,
)
from geochange.predict.windows import ColumnStripe, TileGrid

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

# The tuning constants stay importable from here (their old home), but they are read in
# blend.py, tiles.py and distributed.py: change them there.
__all__ = [
    "DECODE_CHUNK_WIDTH",
    "LOCK_NAME",
    "MAX_ROWS_PER_BLOCK",
    "MIN_STRIPE_TILES",
    "PREDICT_MMAP_THRESHOLD",
    "SIDECAR_NAME",
    "TRIM_EVERY_TILES",
    "ChangePredictor",
    "Precision",
    "PredictionResult",
    "overlap_default",
]

Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
EngineName = Literal["torch", "openvino", "onnxruntime"]


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
        precision: ``"auto"`` (the engine's best: bf16 autocast on CUDA and on CPUs with
            native bf16 for torch, OpenVINO's bf16 inference precision on CPUs with AMX or
            AVX-512-bf16, else fp32; fp32 for ONNX Runtime), ``"fp32"``, ``"bf16"``,
            ``"fp16"`` or ``"int8"`` (OpenVINO only: NNCF post-training quantization on
            ``calibration_tiles`` tiles of each scene, refused with a
            :class:`~geochange.errors.QuantizationError` when it changes more than 0.5 % of the
            binary change pixels of held-out tiles; see docs/prediction.md).
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
        engine: the inference engine: ``"torch"`` (default), ``"openvino"`` (CPU; extra
            ``geochange[openvino]``) or ``"onnxruntime"`` (CPU or CUDA, fp32; extra
            ``geochange[onnx]``). Every engine runs the same graph (the model, BatchNorm
            folded, then its sigmoid/softmax); OpenVINO and ONNX Runtime run it exported to
            ONNX, once per weights, tile shape, batch, precision and engine version, cached in
            ``engine_cache_dir``.
        engine_cache_dir: the directory of exported models; default
            ``$XDG_CACHE_HOME/geochange/engines`` (or ``$GEOCHANGE_ENGINE_CACHE``). Dask
            workers load from it (and export again where they do not see it).
        calibration_tiles: with ``precision="int8"``, tiles sampled evenly over the scene
            for calibration; a quarter of them are held out for the agreement check.
        input_layout: how ``model`` takes the two dates: ``"temporal"`` ``[B, 2, C, H, W]``
            (the geochange contract) or ``"stacked"`` ``[B, 2C, H, W]``, pre-date bands first
            (early-fusion networks such as the ``unet`` of TorchGeo's change task); a stacked
            model is wrapped in :class:`geochange.models.StackedDates` (``self.model``).

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
        engine: EngineName = "torch",
        engine_cache_dir: str | os.PathLike[str] | None = None,
        calibration_tiles: int = CALIBRATION_TILES,
        input_layout: Literal["temporal", "stacked"] = "temporal",
    ) -> None:
        margin = overlap // 4 if margin is None else margin
        # An ordinary bi-temporal module from here on (for exporters and engines too).
        model = adapt_input_layout(model, input_layout, in_channels)
        _check_arguments(
            tile_size=tile_size,
            overlap=overlap,
            margin=margin,
            blend=blend,
            semantic_blend=semantic_blend,
            probability_dtype=probability_dtype,
            threshold=threshold,
            batch_size=batch_size,
            normalization=normalization,
            value_range=value_range,
        )
        self.engine = engine
        self.device, self.precision = resolve_engine(engine, device, precision)
        self.calibration_tiles = int(calibration_tiles)
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
            default_num_workers(self.device) if num_workers is None else int(num_workers)
        )
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
            precision=self.precision,
            normalization=normalization,
            tta=tta,
            channels_last=channels_last,
            size_divisor=size_divisor,
            fold_batchnorm=fold_batchnorm,
            engine=engine,
            batch_size=self.batch_size,
            engine_cache_dir=engine_cache_dir,
        )

    # -- construction from checkpoints -----------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], **overrides: Any) -> ChangePredictor:
        """Build a predictor from a geochange training checkpoint.

        Normalization, bands, class names, input channels and tile size come from the
        checkpoint's ``"geochange"`` metadata; any constructor argument can be overridden. A
        TorchGeo ``ChangeDetection`` checkpoint is rebuilt from its hyper-parameters (see
        :func:`geochange.checkpoint.load_model`); it records no normalization: pass
        ``normalization`` (the datamodule's ``mean``/``std``), else raw values are fed.

        Args:
            path: a checkpoint written by :class:`geochange.trainers.ChangeTrainer`, or by
                TorchGeo's ``ChangeDetection`` task.
            **overrides: constructor keyword arguments (``input_layout`` must match a TorchGeo
                checkpoint's, which the loaded model already follows).

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
        if metadata.trainer == "torchgeo.tasks.ChangeDetection":
            torchgeo_overrides(path, metadata.extra.get("input_layout"), overrides)
        elif overrides.get("input_layout", "temporal") != "temporal":
            raise ConfigurationError(
                f"{str(path)!r} holds a geochange model, which takes [B, 2, C, H, W]: "
                "input_layout='stacked' is for networks taking the dates as channels"
            )
        elif metadata.input_range is None and overrides.get("value_range") != "ignore":
            warnings.warn(
                f"checkpoint {str(path)!r} has no record of its training imagery's value range "
                f"(written by geochange {metadata.version}); predict cannot check that a "
                "scene's values match them",
                stacklevel=2,
            )
        if metadata.normalization is None and overrides.get("normalization") is None:
            warnings.warn(
                f"checkpoint {str(path)!r} carries no normalization: the model is fed raw "
                "pixel values; pass normalization={'mean': [...], 'std': [...]} if it was "
                "trained on normalized data",
                NormalizationWarning,
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
        res: float | tuple[float, float] | None = None,
        overwrite: bool = False,
        resolution: float | tuple[float, float] | None = None,
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
            res: output pixel size in CRS units instead of the pre image's (TorchGeo's name).
            overwrite: also replace existing output files that geochange did not write (never
                an input).
            resolution: deprecated spelling of ``res`` (kept for one release).

        Returns:
            The written paths and georeferencing.

        Raises:
            DataError: missing, truncated or corrupt inputs (naming the file and window),
                band mismatch, dates that do not overlap, a window outside the pre image.
            OutputError: ``out_dir`` not writable or in use by another run, an output that
                would overwrite an input or a file geochange did not write, a failed write
                (a full disk says so).
            ConfigurationError: both ``res`` and ``resolution`` given.
        """
        res = renamed_argument(
            res,
            resolution,
            old="resolution",
            new="res",
            message="predict(resolution=...) is deprecated; use res=... (TorchGeo's name)",
            conflict="give res or its deprecated spelling resolution, not both",
            refuse_both=True,
            error=ConfigurationError,
        )
        options = _PredictOptions(
            window, write_probability, resume, client, blocks_per_worker, crs, res, overwrite
        )
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
                return _SceneRun(self, pre, post, out_dir, options).run()
            finally:
                self._inferencer = inferencer

    def _ranged_inferencer(
        self, pre: str | os.PathLike[str], post: str | os.PathLike[str]
    ) -> _Inferencer:
        """The inferencer for this scene: rescaling dates whose values need it (value_range)."""
        return self._inferencer.for_scene(
            pre,
            post,
            input_range=self.input_range,
            value_range=self.value_range,
            bands=self.bands,
            in_channels=self.in_channels,
        )

    def predict_xarray(self, pre: xr.DataArray, post: xr.DataArray) -> xr.Dataset:
        """Predict change between two ``(band, y, x)`` DataArrays; returns a CF-described Dataset.

        The post array is reprojected onto the pre grid with rioxarray when their CRS or
        transform differ. Dask-backed inputs give a lazy, dask-backed Dataset (one task per
        two tile rows, each reading only the input rows it needs; nothing runs until it is
        computed, on any dask scheduler, and the values equal the in-memory result); numpy
        inputs are predicted at once.

        Args:
            pre: pre-date array ``(band, y, x)`` (rioxarray CRS/transform are carried over).
            post: post-date array.

        Returns:
            Dataset with ``change`` (uint8, 255 nodata), ``probability`` (float32, NaN nodata)
            and, for semantic models, ``semantic_pre``, ``semantic_post``, ``transition``; each
            with CF attributes (``long_name``, ``_FillValue``, ``units`` for the probability,
            ``flag_values``/``flag_meanings``/``flag_colors`` for class maps). Write one as a
            GeoTIFF with its palette with :func:`geochange.predict.lazy.to_raster`.
        """
        source, pre, crs = xarray_source(pre, post, self.in_channels)
        height, width = source.height, source.width
        grid = self._grid(height, width)
        channels, classes = self._inferencer.probe_channels(
            int(pre.shape[0]), (grid.tile_height, grid.tile_width)
        )
        calibrate_on_scene(
            self._inferencer,
            source,
            grid,
            count=self.calibration_tiles,
            threshold=self.threshold,
        )
        names = output_class_names(self.class_names, classes, stacklevel=3) if classes else []
        if is_dask(source.pre) or is_dask(source.post):
            lazy = lazy_outputs(self, source, grid, channels, classes, names)
            return to_dataset(lazy, pre, names, crs, classes)
        decode = self._decoder(classes, "float32")
        outputs: dict[str, np.ndarray] = {}
        stripes = self._stripes(grid, channels, classes)
        with self._progress(sum(len(grid.row_starts) * len(st.cols) for st in stripes)) as bar:
            for stripe in stripes:
                write = array_writer(outputs, height, width, stripe.out_x0)
                tiles = _compute_tiles(
                    self._inferencer,
                    source,
                    grid,
                    range(len(grid.row_starts)),
                    channels,
                    cols=stripe.cols,
                    batch_size=self.batch_size,
                    num_workers=0,
                    progress=bar,
                )
                assembler = self._assembler(grid, channels, classes, decode, write, stripe)
                blend_stripe(assembler, 0, tiles)
        return to_dataset(outputs, pre, names, crs, classes)

    # -- helpers -----------------------------------------------------------------------------

    def _grid(self, height: int, width: int) -> TileGrid:
        return TileGrid(height, width, self.tile_size, self.overlap, self.margin, self.blend)

    def _stripes(self, grid: TileGrid, channels: int, classes: int) -> list[ColumnStripe]:
        """Column stripes whose blending bands fit ``band_memory_mb``."""
        return stripes_for_budget(grid, channels, classes, self.semantic_blend, self.band_memory_mb)

    def _decoder(
        self, classes: int, probability_dtype: str, wanted: set[str] | None = None
    ) -> Decode:
        """``decode(probs, valid, labels)`` -> the output arrays (only ``wanted`` keys)."""

        def decode(
            probs: np.ndarray, valid: np.ndarray, labels: np.ndarray | None
        ) -> dict[str, np.ndarray]:
            arrays = decode_outputs(
                probs,
                valid,
                classes,
                threshold=self.threshold,
                probability_dtype=probability_dtype,
                labels=labels,
            )
            if wanted is None:
                return arrays
            return {k: v for k, v in arrays.items() if k in wanted}

        return decode

    def _assembler(
        self,
        grid: TileGrid,
        channels: int,
        classes: int,
        decode: Decode,
        write: Write,
        stripe: ColumnStripe,
        skip: int = 0,
    ) -> _BandAssembler:
        """The blending band of one stripe (rows above ``skip`` are already on disk)."""
        return _BandAssembler(
            grid,
            channels,
            decode,
            write,
            skip_until=skip,
            classes=classes,
            semantic_blend=self.semantic_blend,
            stripe=stripe,
        )

    def _progress(self, total: int) -> contextlib.AbstractContextManager[Any]:
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="tile", desc="predict", disable=not self.progress)


def overlap_default(tile_size: int) -> int:
    """Default overlap for a tile size: a quarter of the tile."""
    return tile_size // 4
