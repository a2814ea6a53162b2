"""The PyTorch engine: the model itself, BatchNorm folded, channels-last, under autocast."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

from geochange.errors import ConfigurationError
from geochange.io import model_buffers_on_heap
from geochange.predict.engines.base import (
    Engine,
    Normalization,
    as_tensor,
    normalize,
    to_probabilities,
)


def resolve_torch_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> bf16 autocast where the hardware has it (fp16 on older GPUs), else fp32.

    Raises:
        ConfigurationError: an unknown precision, or int8 (OpenVINO only).
    """
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_bf16_supported() else "fp32"
    if precision == "int8":
        raise ConfigurationError("precision='int8' needs engine='openvino'")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ConfigurationError(f"unknown precision {precision!r}")
    return precision


def cpu_bf16_supported() -> bool:
    """Whether PyTorch's oneDNN has native bf16 kernels on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class TorchEngine(Engine):
    """Runs the PyTorch model directly (CPU or CUDA); bf16/fp16 precisions are autocast."""

    name = "torch"

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @torch.inference_mode()
    def run(self, x: Tensor | np.ndarray, normalization: Normalization | None = None) -> Tensor:
        """Probabilities ``[B, 1 + 2K, H, W]`` (float32, on the engine's device); see Engine."""
        if normalization is not None:
            x = normalize(torch.as_tensor(x), normalization)
        x = as_tensor(x).to(self.device, non_blocking=True)
        runner = self.runner(x)
        with self._autocast(), model_buffers_on_heap():
            out = runner(x)
        return to_probabilities(out)
