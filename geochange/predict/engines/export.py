"""ONNX export and the engines that run an exported model (OpenVINO, ONNX Runtime).

The model (BatchNorm folded, followed by its sigmoid/softmax) is exported once per
(weights, input shape, input kind, precision, engine and exporter versions) into the engine
cache (:mod:`geochange.predict.engines.cache`); every process compiles it from there. The
input kind is ``"normalized"`` (float32 tiles the caller normalized: the int8 models, whose
calibration sees normalized tiles) or the raw tiles' dtype (``"uint8"``, ...: the graph
normalizes them, see :class:`~geochange.predict.engines.base.NormalizingModel`).
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
from geochange.predict.engines.base import (
    Engine,
    Normalization,
    NormalizingModel,
    ProbabilityModel,
    as_tensor,
    normalize,
)
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
MEAN_NAME = "mean"
STD_NAME = "std"
OUTPUT_NAME = "probabilities"
ONNX_NAME = "model.onnx"
#: The input kind of graphs that take tiles the caller normalized.
NORMALIZED = "normalized"

#: ``fn(batch [B, 2, C, H, W], *normalization) -> probabilities [B, 1 + 2K, H, W] float32``:
#: a normalized float32 batch alone, or a raw batch followed by its mean and std.
Compiled = Callable[..., np.ndarray]


def input_kind(x: Tensor, normalization: Normalization | None) -> str:
    """``"normalized"``, or the dtype of raw tiles ``x`` (e.g. ``"uint8"``)."""
    return NORMALIZED if normalization is None else str(x.dtype).removeprefix("torch.")


def export_onnx(
    model: nn.Module, shape: tuple[int, ...], path: Path, kind: str = NORMALIZED
) -> None:
    """Export ``model`` + its probability head for a fixed input ``shape`` to ONNX at ``path``.

    ``kind`` is the input kind (see the module): raw kinds export a :class:`NormalizingModel`
    with ``image`` in that dtype plus ``mean`` and ``std`` inputs.

    The TorchScript-based exporter (``dynamo=False``) is used: both exporters export every
    registered model with outputs equal to PyTorch's to ~2e-7 (torch 2.14, opset 17), but the
    ``torch.export`` one took 40-70 s per model on 2 CPU cores against 2-9 s.
    """
    if kind == NORMALIZED:
        module: nn.Module = ProbabilityModel(model).eval()
        inputs: tuple[Tensor, ...] = (torch.zeros(shape, dtype=torch.float32),)
        names = [INPUT_NAME]
    else:
        module = NormalizingModel(model).eval()
        stats = (1, 2, shape[2], 1, 1)
        inputs = (
            torch.zeros(shape, dtype=getattr(torch, kind)),
            torch.zeros(stats, dtype=torch.float32),
            torch.ones(stats, dtype=torch.float32),
        )
        names = [INPUT_NAME, MEAN_NAME, STD_NAME]
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter's deprecation notice and tracer warnings (shape-dependent Python
        # branches are fine: the shape is fixed) say nothing about this model.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            str(path),
            input_names=names,
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )


class ExportedEngine(Engine):
    """An engine running the exported model; subclasses build and load the cache entry.

    Inputs always have the compiled batch: a smaller (last) batch is padded with zeros, a
    larger one runs in chunks. Each input shape (tile shape) and input kind gets its own entry.
    At float precisions the engine takes raw tiles (:meth:`takes_raw`); int8 models take
    normalized ones (their calibration is on normalized tiles).
    """

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if self.cache_dir is None:
            self.cache_dir = default_cache_dir()
        #: Cache entry of each compiled (input shape, input kind) (kept when pickled: workers
        #: load them).
        self.entries: dict[tuple[tuple[int, ...], str], str] = {}
        self._compiled: dict[tuple[tuple[int, ...], str], Compiled] = {}

    def takes_raw(self) -> bool:
        """True at float precisions: the graph normalizes raw tiles (see the module)."""
        return self.precision != "int8"

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
    def build(
        self, runner: nn.Module, shape: tuple[int, ...], directory: Path, kind: str = NORMALIZED
    ) -> dict[str, Any]:
        """Write the entry (files for ``runner``, ``shape``, input ``kind``) into ``directory``."""
        raise NotImplementedError

    @abstractmethod
    def load(self, entry: Path, shape: tuple[int, ...]) -> Compiled:
        """Compile the model of ``entry``."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------

    def key_fields(
        self, runner: nn.Module, shape: tuple[int, ...], kind: str = NORMALIZED
    ) -> dict[str, Any]:
        """What the exported file depends on (hashed into its cache key)."""
        fields = {
            "engine": self.name,
            "engine_version": self.engine_version(),
            "torch": torch.__version__,
            "opset": OPSET,
            "weights": weights_digest(runner),
            "shape": list(shape),
            "precision": self.precision,
        }
        if kind != NORMALIZED:  # keys of normalized entries stay what they were
            fields["input"] = kind
        return fields

    def compiled(self, x: Tensor, normalization: Normalization | None = None) -> Compiled:
        """The compiled model for the batch shape and input kind of ``x`` (made on first use)."""
        slot = ((self.batch_size, *x.shape[1:]), input_kind(x, normalization))
        with self._lock:
            if slot in self._compiled:
                return self._compiled[slot]
            assert self.cache_dir is not None
            key = self.entries.get(slot)
            entry = entry_ready(self.cache_dir, key) if key else None
            if entry is None:
                entry = self.export(x, slot[0], normalization)
            self._compiled[slot] = self.load(entry, slot[0])
            return self._compiled[slot]

    def export(
        self, x: Tensor, shape: tuple[int, ...], normalization: Normalization | None = None
    ) -> Path:
        """Export (or find in the cache) the entry of ``shape``; the model is folded on ``x``."""
        kind = input_kind(x, normalization)
        if self.precision == "int8":
            raise ConfigurationError(
                f"the int8 {self.name} engine is calibrated for tiles of shape "
                f"{[s for s, _ in self.entries]}, not {shape}; it must be calibrated on the "
                "scene first"
            )
        # BatchNorm folding runs the model: on normalized tiles.
        runner = self.runner(x if normalization is None else normalize(x, normalization))
        fields = self.key_fields(runner, shape, kind)
        key = cache_key(fields)
        assert self.cache_dir is not None
        entry = get_or_create(
            self.cache_dir, key, lambda d: self.build(runner, shape, d, kind), fields=fields
        )
        self.entries[(shape, kind)] = key
        return entry

    def run(self, x: Tensor | np.ndarray, normalization: Normalization | None = None) -> Tensor:
        """Probabilities ``[B, 1 + 2K, H, W]`` (float32, on the CPU); see :class:`Engine`."""
        if normalization is not None and not self.takes_raw():
            x, normalization = normalize(torch.as_tensor(x), normalization), None
        x = torch.as_tensor(x).detach().cpu().contiguous()
        if normalization is None:
            x = as_tensor(x)  # float32
        fn = self.compiled(x, normalization)
        extra = () if normalization is None else normalization
        batch = self.batch_size
        outs = []
        for start in range(0, x.shape[0], batch):
            chunk = x[start : start + batch].numpy()
            count = chunk.shape[0]
            if count < batch:  # compiling another shape costs more than the padded tiles
                padding = np.zeros((batch - count, *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            outs.append(np.asarray(fn(chunk, *extra), dtype=np.float32)[:count])
        return torch.from_numpy(outs[0] if len(outs) == 1 else np.concatenate(outs))
