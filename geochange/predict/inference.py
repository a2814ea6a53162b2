"""The model runner of the predictor: device and precision choice, BatchNorm folding, forward.

:class:`_Inferencer` turns raw tile batches into probabilities; it is picklable so Dask
workers receive it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from geochange.errors import ConfigurationError, DataError
from geochange.io import band_indexes, model_buffers_on_heap, open_raster
from geochange.keys import CHANGE, SEMANTIC_POST, SEMANTIC_PRE
from geochange.models.folding import fold_batch_norm
from geochange.transforms.stats import check_value_range, sample_raster_range


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; anything else as given."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> bf16 autocast where the hardware has it (fp16 on older GPUs), else fp32.

    Raises:
        ConfigurationError: an unknown precision.
    """
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if _cpu_bf16_supported() else "fp32"
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigurationError(f"unknown precision {precision!r}")
    return precision


def default_num_workers(device: torch.device) -> int:
    """DataLoader reader processes for ``device`` when the caller gives none."""
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
                probs = self(probe)
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


def model_fingerprint(model: nn.Module) -> str:
    """A digest of the model's weights: a resumed run must use the same model."""
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(f"{float(tensor.float().sum()):.6e}".encode())
    return digest.hexdigest()
