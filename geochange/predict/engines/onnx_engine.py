"""The ONNX Runtime engine: the exported model in an fp32 ``InferenceSession``.

CPU execution provider, or the CUDA one when the predictor's device is CUDA and this
onnxruntime build has it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geochange.errors import ConfigurationError, EngineUnavailableError
from geochange.predict.engines.export import (
    INPUT_NAME,
    MEAN_NAME,
    NORMALIZED,
    ONNX_NAME,
    STD_NAME,
    Compiled,
    ExportedEngine,
    export_onnx,
)

logger = logging.getLogger("geochange.predict.engines")


def require_onnxruntime() -> Any:
    """The ``onnxruntime`` module.

    Raises:
        EngineUnavailableError: ONNX Runtime (or the ``onnx`` exporter package) is missing.
    """
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime
    except ImportError as err:
        raise EngineUnavailableError(
            "engine='onnxruntime' needs ONNX Runtime: pip install 'geochange[onnx]' "
            f"(onnx, onnxruntime) ({err})"
        ) from err
    return onnxruntime


def resolve_onnxruntime_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` and ``"fp32"`` -> ``"fp32"``: the ONNX Runtime engine runs fp32 only.

    Raises:
        EngineUnavailableError: ONNX Runtime is not installed.
        ConfigurationError: any other precision, or CUDA without the CUDA provider.
    """
    ort = require_onnxruntime()
    if precision not in ("auto", "fp32"):
        raise ConfigurationError(
            f"engine='onnxruntime' runs fp32 only; got precision={precision!r}"
        )
    if device.type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ConfigurationError(
            "device='cuda' with engine='onnxruntime' needs onnxruntime-gpu (this onnxruntime "
            f"has {ort.get_available_providers()})"
        )
    return "fp32"


class OnnxRuntimeEngine(ExportedEngine):
    """The exported model in an ONNX Runtime session (fp32)."""

    name = "onnxruntime"

    def engine_version(self) -> str:
        """ONNX Runtime's version."""
        return str(require_onnxruntime().__version__)

    def build(
        self, runner: nn.Module, shape: tuple[int, ...], directory: Path, kind: str = NORMALIZED
    ) -> dict[str, Any]:
        """Export the ONNX file."""
        require_onnxruntime()
        export_onnx(runner, shape, directory / ONNX_NAME, kind)
        return {"onnx": ONNX_NAME}

    def providers(self) -> list[str]:
        """The execution providers of the session, by the predictor's device."""
        if self.device.type == "cuda":
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def load(self, entry: Path, shape: tuple[int, ...]) -> Compiled:
        """An ``InferenceSession`` on the entry, with torch's thread count."""
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers: list[Any] = list(self.providers())
        if self.device.type == "cuda" and self.device.index is not None:
            providers[0] = ("CUDAExecutionProvider", {"device_id": self.device.index})
        session = ort.InferenceSession(str(entry / ONNX_NAME), options, providers=providers)
        logger.info("onnxruntime engine: fp32, providers %s", session.get_providers())

        names = [INPUT_NAME, MEAN_NAME, STD_NAME]

        def run(batch: np.ndarray, *normalization: np.ndarray) -> np.ndarray:
            # InferenceSession.run may be called from several threads at once.
            feed = dict(zip(names, (batch, *normalization), strict=False))
            return np.asarray(session.run(None, feed)[0])

        return run
