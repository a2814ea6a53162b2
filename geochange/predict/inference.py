"""The model runner of the predictor: normalization, padding, TTA around an inference engine.

:class:`_Inferencer` turns raw tile batches into probabilities; the forward pass itself is the
engine's (:mod:`geochange.predict.engines`: torch, OpenVINO, ONNX Runtime). It is picklable so
Dask workers receive it once; engines re-create what they compiled in each process.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from geochange.errors import ConfigurationError, DataError
from geochange.io import band_indexes, open_raster
from geochange.predict.engines import Engine, create_engine, to_probabilities
from geochange.predict.engines.base import Normalization
from geochange.predict.engines.torch_engine import cpu_bf16_supported, resolve_torch_precision
from geochange.predict.reader import TileDataset
from geochange.transforms.stats import check_value_range, sample_raster_range


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; anything else as given."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The torch engine's precision: ``"auto"`` -> bf16 autocast where native, else fp32.

    Raises:
        ConfigurationError: an unknown precision.
    """
    return resolve_torch_precision(precision, device)


def default_num_workers(device: torch.device) -> int:
    """DataLoader reader processes for ``device`` when the caller gives none."""
    cpus = os.cpu_count() or 1
    if device.type == "cuda":
        # Reading and decoding overlap with GPU compute.
        return min(4, max(1, cpus // 4))
    # On the CPU the model's threads use every core; a reader process only steals cores from
    # them (on 2 cores one reader worker made a 2048^2 run 1.8x slower than reading inline).
    return 0 if cpus < 8 else min(2, cpus // 8)


_cpu_bf16_supported = cpu_bf16_supported


class _Inferencer:
    """Picklable model runner: normalization, padding, TTA around the engine's forward pass.

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
        engine: str = "torch",
        batch_size: int = 4,
        engine_cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.model = model
        self.device = device
        self.precision = precision
        # Per band, or per date and band (lists of two lists) once value_range rescales.
        self.normalization: dict[str, Any] | None = normalization
        self.tta = tta
        self.size_divisor = size_divisor
        #: The engine running the forward pass (same device and precision).
        self.engine: Engine = create_engine(
            engine,
            model,
            device=device,
            precision=precision,
            cache_dir=engine_cache_dir,
            batch_size=batch_size,
            channels_last=channels_last,
            fold_batchnorm=fold_batchnorm,
            size_divisor=size_divisor,
        )
        self._prepared = False
        self._thread: ThreadPoolExecutor | None = None
        #: Channel count -> the normalization handed to raw-input engines.
        self._raw: dict[int, Normalization] = {}

    @property
    def folded_batchnorms(self) -> int | None:
        """BatchNorm layers folded into convolutions (None until the first batch)."""
        return self.engine.folded_batchnorms

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_prepared"] = False
        state["_thread"] = None
        state["_raw"] = {}
        return state

    def __call__(self, image: Tensor) -> np.ndarray:
        """Probabilities ``[B, 1 + 2K, h, w]`` (float32 numpy) for raw tiles ``[B, 2, C, h, w]``.

        On the CPU the model runs on one dedicated thread: glibc gives that thread its own
        malloc arena, so the forward passes' buffers (raised mmap threshold, see
        :func:`geochange.io.model_buffers_on_heap`) are reused pass after pass without
        fragmenting the heap that tile and row buffers use.
        """
        return self.submit(image).result()

    def submit(self, image: Tensor) -> Future[np.ndarray]:
        """Start :meth:`__call__` on ``image``; its probabilities come from the future.

        On the CPU the batch runs on a model thread, so the caller reads the next batch and
        blends the previous one meanwhile; batches run in submission order, as many at once
        as the engine's :attr:`~geochange.predict.engines.Engine.concurrency`.
        Elsewhere (CUDA) it runs now and the future is already done.
        """
        if self.device.type != "cpu":
            done: Future[np.ndarray] = Future()
            done.set_result(self._infer(image))
            return done
        if self._thread is None:
            # One model thread per batch the engine runs at once (OpenVINO's streams).
            self._thread = ThreadPoolExecutor(
                max_workers=self.engine.concurrency, thread_name_prefix="geochange-model"
            )
        return self._thread.submit(self._infer, image)

    def _prepare(self) -> None:
        if self._prepared:
            return
        if self.normalization is not None:
            mean = torch.as_tensor(self.normalization["mean"], dtype=torch.float32)
            std = torch.as_tensor(self.normalization["std"], dtype=torch.float32)
            # One list per band, or one per date and band (value_range="rescale").
            dates = 2 if mean.ndim == 2 else 1
            self._mean = mean.view(1, dates, -1, 1, 1).to(self.device)
            self._std = std.view(1, dates, -1, 1, 1).to(self.device)
        self._prepared = True

    def raw_normalization(self, channels: int) -> Normalization:
        """The ``(mean, std)`` an engine that :meth:`~Engine.takes_raw` normalizes with.

        Made once per channel count (every batch of a run uses it).
        """
        self._prepare()
        cached = self._raw.get(channels)
        if cached is not None:
            return cached
        if self.normalization is None:
            mean, std = torch.zeros(1, 1, channels, 1, 1), torch.ones(1, 1, channels, 1, 1)
        else:
            mean, std = self._mean.cpu(), self._std.cpu()
        shape = (1, 2, channels, 1, 1)
        self._raw[channels] = (
            np.array(np.broadcast_to(mean.numpy(), shape), dtype=np.float32),
            np.array(np.broadcast_to(std.numpy(), shape), dtype=np.float32),
        )
        return self._raw[channels]

    def preprocess(self, image: Tensor, normalize: bool | None = None) -> Tensor:
        """Raw tiles ``[B, 2, C, h, w]`` -> the engine's input.

        Normalized float32, or, for an engine that :meth:`~Engine.takes_raw` (and
        ``normalize`` not True), the raw tiles in their own dtype (the engine normalizes them
        with :meth:`raw_normalization`). Tiles are padded to the model's size multiple (only
        tiles smaller than it need that); reflect and replicate padding commute with the
        per-band normalization, so either order gives the same values.
        """
        self._prepare()
        if normalize is None:
            normalize = not self.engine.takes_raw()
        x = image.to(self.device, non_blocking=True)
        if normalize:
            x = x.float()
        if normalize and self.normalization is not None:
            # One temporary, divided in place (the same values as ``(x - mean) / std``).
            x = (x - self._mean).div_(self._std)
        height, width = x.shape[-2:]
        pad_h = -height % self.size_divisor
        pad_w = -width % self.size_divisor
        if pad_h or pad_w:
            batch, dates, channels = x.shape[:3]
            flat = x.reshape(batch, dates * channels, height, width)
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            flat = torch.nn.functional.pad(flat, (0, pad_w, 0, pad_h), mode=mode)
            x = flat.reshape(batch, dates, channels, height + pad_h, width + pad_w)
        return x

    @torch.inference_mode()
    def _infer(self, image: Tensor) -> np.ndarray:
        x = self.preprocess(image)
        raw = self.raw_normalization(x.shape[2]) if self.engine.takes_raw() else None
        height, width = image.shape[-2:]
        flips: list[tuple[int, ...]] = [()]
        if self.tta:
            flips = [(), (-1,), (-2,), (-2, -1)]
        total: Tensor | None = None
        for dims in flips:
            xi = x.flip(dims) if dims else x
            probs = self.engine.run(xi, raw)
            if dims:
                probs = probs.flip(dims)
            total = probs if total is None else total + probs
        assert total is not None
        if len(flips) > 1:  # x / 1 == x: no copy without TTA
            total = total / len(flips)
        total = total[..., :height, :width]
        return total.float().cpu().numpy()

    def calibrate(
        self, source: Any, windows: Sequence[tuple[int, int, int, int]], threshold: float
    ) -> float | None:
        """For ``precision="int8"``: quantize the engine on these tiles of the scene.

        Tiles without valid pixels are skipped. Returns the held-out binary change agreement
        of int8 with fp32 (None for other precisions).

        Raises:
            QuantizationError: the agreement is below 99.5 %, or too few valid tiles.
        """
        if self.engine.precision != "int8":
            return None
        from geochange.predict.engines.openvino_engine import OpenVINOEngine
        from geochange.predict.engines.quantize import quantize_engine

        assert isinstance(self.engine, OpenVINOEngine)
        dataset = TileDataset(source, windows)
        tiles = []
        for index in range(len(dataset)):
            item = dataset[index]
            if bool(item["valid"].any()):
                with torch.inference_mode():
                    x = self.preprocess(item["image"][None], normalize=True)
                    tiles.append(x.cpu().numpy()[0])
        stacked = np.stack(tiles) if tiles else np.zeros((0, 1), np.float32)
        return quantize_engine(self.engine, stacked, threshold=threshold)

    def for_scene(
        self,
        pre: str | os.PathLike[str],
        post: str | os.PathLike[str],
        *,
        input_range: dict[str, Any] | None,
        value_range: str,
        bands: Sequence[int | str] | None,
        in_channels: int | None,
    ) -> _Inferencer:
        """This inferencer, or a copy rescaling the dates whose values need it (value_range).

        Raises:
            DataError: with ``value_range="check"``, a date whose values do not match
                ``input_range``.
        """
        if input_range is None or value_range == "ignore":
            return self
        scales = []
        for path in (pre, post):
            with open_raster(path) as src:
                indexes = band_indexes(src, bands)
            if in_channels is not None and len(indexes) != in_channels:
                return self  # RasterPair.open reports the band mismatch
            sample = sample_raster_range(path, indexes)
            scales.append(check_value_range(input_range, sample, name=str(path), mode=value_range))
        if scales == [1.0, 1.0]:
            return self
        # (s * x - mean) / std == (x - mean / s) / (std / s): fold each date's factor into its
        # normalization.
        channels = len(indexes)
        norm = self.normalization or {"mean": [0.0] * channels, "std": [1.0] * channels}
        per_date = {
            key: [[float(v) / scale for v in norm[key]] for scale in scales]
            for key in ("mean", "std")
        }
        rescaled = _Inferencer.__new__(_Inferencer)
        rescaled.__dict__.update(self.__getstate__())
        rescaled.normalization = per_date
        return rescaled

    def probe_channels(self, in_channels: int, tile: tuple[int, int]) -> tuple[int, int]:
        """Output channel count and class count, found by running the model on a small input.

        A 32-px probe is tried first (cheap); models that need full tiles get one of ``tile``.

        Raises:
            DataError: the model cannot run on ``in_channels`` bands.
            ConfigurationError: the model's output is not ``1 + 2K`` channels.
        """
        error: Exception | None = None
        for height, width in ((32, 32), tile):
            probe = torch.zeros(1, 2, in_channels, height, width)
            try:
                probs = self._probe(probe)
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

    @torch.inference_mode()
    def _probe(self, image: Tensor) -> np.ndarray:
        """The PyTorch model's probabilities (fp32) for ``image``: no engine export for a probe.

        It folds the engine's BatchNorms on the probe, as the first batch would.
        """
        x = self.preprocess(image, normalize=True)
        runner = self.engine.runner(x.to(self.engine.model_device()))
        out = to_probabilities(runner(x.to(self.engine.model_device())))
        return out[..., : image.shape[-2], : image.shape[-1]].cpu().numpy()


def model_fingerprint(model: nn.Module) -> str:
    """A digest of the model's weights: a resumed run must use the same model."""
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(f"{float(tensor.float().sum()):.6e}".encode())
    return digest.hexdigest()
