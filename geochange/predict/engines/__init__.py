"""Inference engines of the predictor: PyTorch, OpenVINO and ONNX Runtime.

Every engine runs the same graph, the model with its BatchNorm layers folded followed by its
sigmoid/softmax, through one call, :meth:`Engine.run` (normalized float32 tiles
``[B, 2, C, H, W]`` -> probabilities ``[B, 1 + 2K, H, W]``; the exported engines at float
precisions take the raw tiles and their normalization instead and normalize inside the graph).
The OpenVINO and ONNX Runtime engines export the model to ONNX once per (weights, tile shape,
batch, input dtype, precision, engine version) into an on-disk cache
(:mod:`~geochange.predict.engines.cache`).

    >>> from geochange.predict.engines import ENGINES
    >>> ENGINES
    ('torch', 'openvino', 'onnxruntime')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geochange.errors import ConfigurationError
from geochange.predict.engines.base import Engine, ProbabilityModel, to_probabilities
from geochange.predict.engines.cache import default_cache_dir
from geochange.predict.engines.torch_engine import TorchEngine, resolve_torch_precision

#: The engine names ``ChangePredictor(engine=...)`` and ``geochange predict --engine`` accept.
ENGINES = ("torch", "openvino", "onnxruntime")

__all__ = [
    "ENGINES",
    "Engine",
    "ProbabilityModel",
    "TorchEngine",
    "create_engine",
    "default_cache_dir",
    "resolve_engine",
    "to_probabilities",
]


def resolve_engine(
    engine: str, device: str | torch.device, precision: str
) -> tuple[torch.device, str]:
    """The device and precision ``engine`` runs for the predictor's ``device=`` and ``precision=``.

    ``device="auto"`` is CUDA when available for the torch and ONNX Runtime engines and the
    CPU for OpenVINO. ``precision="auto"`` is the device's best: bf16 autocast (torch) or
    bf16 inference precision (OpenVINO) where the CPU has native bf16 (AMX or AVX-512-bf16),
    fp32 elsewhere; ONNX Runtime runs fp32.

    Raises:
        ConfigurationError: an unknown engine, or a precision/device the engine cannot run.
        EngineUnavailableError: the engine's package is not installed.
    """
    if engine not in ENGINES:
        raise ConfigurationError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    if device == "auto":
        cuda = engine != "openvino" and torch.cuda.is_available()
        device = "cuda" if cuda else "cpu"
    device = torch.device(device)
    if engine == "openvino":
        from geochange.predict.engines.openvino_engine import resolve_openvino_precision

        return device, resolve_openvino_precision(precision, device)
    if engine == "onnxruntime":
        from geochange.predict.engines.onnx_engine import resolve_onnxruntime_precision

        return device, resolve_onnxruntime_precision(precision, device)
    return device, resolve_torch_precision(precision, device)


def create_engine(
    engine: str,
    model: nn.Module,
    *,
    device: torch.device,
    precision: str,
    cache_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Engine:
    """Build the engine ``engine`` for ``model`` (``device``/``precision`` resolved).

    Args:
        engine: one of :data:`ENGINES`.
        model: the PyTorch model.
        device: from :func:`resolve_engine`.
        precision: from :func:`resolve_engine`.
        cache_dir: the export cache of OpenVINO and ONNX Runtime (default
            :func:`default_cache_dir`).
        **options: ``batch_size``, ``channels_last``, ``fold_batchnorm``, ``size_divisor``.

    Raises:
        ConfigurationError: an unknown engine.
        EngineUnavailableError: the engine's package is not installed.
    """
    directory = Path(cache_dir) if cache_dir is not None else None
    if engine == "torch":
        return TorchEngine(model, device=device, precision=precision, **options)
    if engine == "openvino":
        from geochange.predict.engines.openvino_engine import OpenVINOEngine, require_openvino

        require_openvino()
        return OpenVINOEngine(
            model, device=device, precision=precision, cache_dir=directory, **options
        )
    if engine == "onnxruntime":
        from geochange.predict.engines.onnx_engine import OnnxRuntimeEngine, require_onnxruntime

        require_onnxruntime()
        return OnnxRuntimeEngine(
            model, device=device, precision=precision, cache_dir=directory, **options
        )
    raise ConfigurationError(f"unknown engine {engine!r}; choose one of {ENGINES}")
