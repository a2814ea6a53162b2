"""ONNX export and the engines that run an exported model (OpenVINO, ONNX Runtime).

The model (BatchNorm folded, followed by its sigmoid/softmax) is exported once per
(weights, input shape, precision, engine and exporter versions) into the engine cache
(:mod:`geochange.predict.engines.cache`); every process compiles it from there.
"""

from __future__ import annotations

import logging
import warnings
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from geochange.errors import ConfigurationError
from geochange.predict.engines.base import Engine, ProbabilityModel, as_tensor
from geochange.predict.engines.cache import (
    cache_key,
    default_cache_dir,
    entry_ready,
    get_or_create,
    weights_digest,
)

logger = logging.getLogger("geochange.predict.engines")

#: ONNX opset of the exported graphs (supported by every OpenVINO and ONNX Runtime in use).
OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
ONNX_NAME = "model.onnx"

#: ``fn(batch [B, 2, C, H, W] float32) -> probabilities [B, 1 + 2K, H, W] float32``.
Compiled = Callable[[np.ndarray], np.ndarray]


def export_onnx(model: nn.Module, shape: tuple[int, ...], path: Path) -> None:
    """Export ``model`` + its probability head for a fixed input ``shape`` to ONNX at ``path``.

    The TorchScript-based exporter (``dynamo=False``) is used: both exporters export every
    registered model with outputs equal to PyTorch's to ~2e-7 (torch 2.14, opset 17), but the
    ``torch.export`` one took 40-70 s per model on 2 CPU cores against 2-9 s.
    """
    module = ProbabilityModel(model).eval()
    sample = torch.zeros(shape, dtype=torch.float32)
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter's deprecation notice and tracer warnings (shape-dependent Python
        # branches are fine: the shape is fixed) say nothing about this model.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (sample,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )


class ExportedEngine(Engine):
    """An engine running the exported model; subclasses build and load the cache entry.

    Inputs always have the compiled batch: a smaller (last) batch is padded with zeros, a
    larger one runs in chunks. Each input shape (tile shape) gets its own entry.
    """

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if self.cache_dir is None:
            self.cache_dir = default_cache_dir()
        #: Cache entry of each compiled input shape (kept when pickled: workers load them).
        self.entries: dict[tuple[int, ...], str] = {}
        self._compiled: dict[tuple[int, ...], Compiled] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_compiled"] = {}
        return state

    def model_device(self) -> torch.device:
        """The CPU: the model is folded and exported there."""
        return torch.device("cpu")

    # -- what subclasses provide -------------------------------------------------------------

    @abstractmethod
    def engine_version(self) -> str:
        """The version of the runtime (part of the cache key)."""
        raise NotImplementedError

    @abstractmethod
    def build(self, runner: nn.Module, shape: tuple[int, ...], directory: Path) -> dict[str, Any]:
        """Write the entry's files for ``runner`` and ``shape`` into ``directory``."""
        raise NotImplementedError

    @abstractmethod
    def load(self, entry: Path, shape: tuple[int, ...]) -> Compiled:
        """Compile the model of ``entry``."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------

    def key_fields(self, runner: nn.Module, shape: tuple[int, ...]) -> dict[str, Any]:
        """What the exported file depends on (hashed into its cache key)."""
        return {
            "engine": self.name,
            "engine_version": self.engine_version(),
            "torch": torch.__version__,
            "opset": OPSET,
            "weights": weights_digest(runner),
            "shape": list(shape),
            "precision": self.precision,
        }

    def compiled(self, x: Tensor) -> Compiled:
        """The compiled model for the batch shape of ``x`` (exported or loaded on first use)."""
        shape = (self.batch_size, *x.shape[1:])
        with self._lock:
            if shape in self._compiled:
                return self._compiled[shape]
            assert self.cache_dir is not None
            key = self.entries.get(shape)
            entry = entry_ready(self.cache_dir, key) if key else None
            if entry is None:
                entry = self.export(x, shape)
            self._compiled[shape] = self.load(entry, shape)
            return self._compiled[shape]

    def export(self, x: Tensor, shape: tuple[int, ...]) -> Path:
        """Export (or find in the cache) the entry of ``shape``; the model is folded on ``x``."""
        if self.precision == "int8":
            raise ConfigurationError(
                f"the int8 {self.name} engine is calibrated for tiles of shape "
                f"{tuple(self.entries)}, not {shape}; it must be calibrated on the scene first"
            )
        runner = self.runner(x)
        fields = self.key_fields(runner, shape)
        key = cache_key(fields)
        assert self.cache_dir is not None
        entry = get_or_create(
            self.cache_dir, key, lambda d: self.build(runner, shape, d), fields=fields
        )
        self.entries[shape] = key
        return entry

    def run(self, x: Tensor | np.ndarray) -> Tensor:
        """Probabilities ``[B, 1 + 2K, H, W]`` (float32, on the CPU); see :class:`Engine`."""
        x = as_tensor(x).detach().cpu().contiguous()
        fn = self.compiled(x)
        batch = self.batch_size
        outs = []
        for start in range(0, x.shape[0], batch):
            chunk = x[start : start + batch].numpy()
            count = chunk.shape[0]
            if count < batch:  # compiling another shape costs more than the padded tiles
                padding = np.zeros((batch - count, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, padding])
            outs.append(np.asarray(fn(chunk), dtype=np.float32)[:count])
        return torch.from_numpy(outs[0] if len(outs) == 1 else np.concatenate(outs))
