"""The OpenVINO engine: the exported model converted to OpenVINO IR, compiled for the CPU.

Precision is OpenVINO's ``INFERENCE_PRECISION_HINT``: ``bf16`` where the CPU reports BF16 in
``OPTIMIZATION_CAPABILITIES`` (AMX or AVX-512-bf16), ``f32`` elsewhere; ``int8`` runs a model
quantized by NNCF on tiles of the scene (:mod:`geochange.predict.engines.quantize`).
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geochange.errors import ConfigurationError, EngineUnavailableError
from geochange.predict.engines.export import (
    NORMALIZED,
    ONNX_NAME,
    Compiled,
    ExportedEngine,
    export_onnx,
)

logger = logging.getLogger("geochange.predict.engines")

IR_NAME = "model.xml"
#: geochange precision -> OpenVINO inference precision hint (int8 models run their float
#: parts at the best float precision).
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def require_openvino() -> Any:
    """The ``openvino`` module.

    Raises:
        EngineUnavailableError: OpenVINO is not installed (names the pip command).
    """
    try:
        import openvino
    except ImportError as err:
        raise EngineUnavailableError(
            "engine='openvino' needs OpenVINO: pip install 'geochange[openvino]' "
            f"(openvino, nncf) ({err})"
        ) from err
    return openvino


@functools.cache
def _core() -> Any:
    return require_openvino().Core()


def cpu_capabilities() -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU (e.g. ``FP32``, ``BF16``, ``INT8``)."""
    return [str(c) for c in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def best_float_precision() -> str:
    """``"bf16"`` where OpenVINO can run bf16 natively on this CPU, else ``"fp32"``."""
    return "bf16" if "BF16" in cpu_capabilities() else "fp32"


def resolve_openvino_precision(precision: str, device: torch.device) -> str:
    """The precision the OpenVINO engine runs for the predictor's ``precision=``.

    ``"auto"`` -> the best float precision of the CPU; ``"fp32"`` forces f32; ``"bf16"``,
    ``"fp16"`` and ``"int8"`` need the CPU's support for them.

    Raises:
        EngineUnavailableError: OpenVINO is not installed.
        ConfigurationError: a device other than the CPU, or a precision the CPU lacks.
    """
    require_openvino()
    if device.type != "cpu":
        raise ConfigurationError(
            f"engine='openvino' runs on the CPU; got device={str(device)!r} (use engine='torch' "
            "or 'onnxruntime' for CUDA)"
        )
    capabilities = cpu_capabilities()
    if precision == "auto":
        precision = best_float_precision()
    wanted = {"bf16": "BF16", "fp16": "FP16", "int8": "INT8"}.get(precision)
    if precision not in ("fp32", "bf16", "fp16", "int8"):
        raise ConfigurationError(f"unknown precision {precision!r} for engine='openvino'")
    if wanted is not None and wanted not in capabilities:
        raise ConfigurationError(
            f"precision={precision!r}: this CPU's OpenVINO capabilities are {capabilities}"
        )
    return precision


class OpenVINOEngine(ExportedEngine):
    """The model as OpenVINO IR, compiled for the CPU at the resolved precision."""

    name = "openvino"

    def engine_version(self) -> str:
        """OpenVINO's version."""
        return str(require_openvino().__version__)

    @property
    def concurrency(self) -> int:
        """Inference streams: 2 (each on half the threads) where there are 2 threads or more.

        Two batches in flight, each on its own stream of one thread (on 2 cores), measured
        faster than one batch on both threads: a stream's thread that the pipeline's own work
        preempts delays only its batch, where a two-thread stream waits at every layer for
        the preempted thread (see docs/prediction.md, "Pipeline overhead").
        """
        return 2 if torch.get_num_threads() >= 2 else 1

    def compile_config(self) -> dict[str, Any]:
        """The CPU plugin settings: precision hint, streams, torch's thread count."""
        hint = _HINTS.get(self.precision, _HINTS[best_float_precision()])
        streams = self.concurrency
        return {
            "INFERENCE_PRECISION_HINT": hint,
            # One stream: one request at a time on all threads; more: a request per stream,
            # the threads shared out between them.
            "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
            "NUM_STREAMS": streams,
            # The same cores as the torch engine would use (torch.set_num_threads).
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        }

    def build(
        self, runner: nn.Module, shape: tuple[int, ...], directory: Path, kind: str = NORMALIZED
    ) -> dict[str, Any]:
        """Export to ONNX, convert to IR (weights kept in fp32), drop the ONNX file."""
        ov = require_openvino()
        onnx_path = directory / ONNX_NAME
        export_onnx(runner, shape, onnx_path, kind)
        model = ov.convert_model(str(onnx_path))
        ov.save_model(model, str(directory / IR_NAME), compress_to_fp16=False)
        for path in directory.glob("model.onnx*"):
            path.unlink()
        return {"ir": IR_NAME}

    def load(self, entry: Path, shape: tuple[int, ...]) -> Compiled:
        """Compile the entry's IR; log the precision it runs at."""
        config = self.compile_config()
        compiled = _core().compile_model(str(entry / IR_NAME), "CPU", config)
        actual = compiled.get_property("INFERENCE_PRECISION_HINT")
        logger.info(
            "openvino engine: %s model, inference precision %s (CPU capabilities %s), "
            "%s threads, %s stream(s)",
            self.precision,
            actual,
            ",".join(cpu_capabilities()),
            config["INFERENCE_NUM_THREADS"],
            config["NUM_STREAMS"],
        )
        return _Requests(compiled)


class _Requests:
    """A compiled model called from several threads: one infer request per thread."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.local = threading.local()

    def __call__(self, batch: np.ndarray, *normalization: np.ndarray) -> np.ndarray:
        request = getattr(self.local, "request", None)
        if request is None:
            request = self.local.request = self.compiled.create_infer_request()
        request.infer(dict(enumerate((batch, *normalization))))
        # Copied: the request's output buffer is reused by its next inference.
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
