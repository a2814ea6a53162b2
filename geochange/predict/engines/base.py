"""What every inference engine shares: the probability head, BatchNorm folding, the base class.

An engine turns a batch of *normalized* float32 tiles ``[B, 2, C, H, W]`` into float32
probabilities ``[B, 1 + 2K, H, W]`` (change probability, then the pre and post class
probabilities of semantic models) with :meth:`Engine.run`. Engines whose :meth:`Engine.takes_raw`
is true (the exported ones, at float precisions) take the *raw* tiles in their own dtype with
the normalization instead, and normalize inside their graph (:class:`NormalizingModel`): the
conversion and the arithmetic then run in the engine's vectorized, multi-threaded kernels
instead of three passes of torch over the batch on the model thread, and a uint8 batch is a
quarter of the bytes to hand over. Padding, TTA flips and output decoding stay in
:class:`geochange.predict.inference._Inferencer`, so every engine runs the same graph: the
model (BatchNorm folded) followed by its sigmoid/softmax.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from geochange.errors import ConfigurationError
from geochange.keys import CHANGE, SEMANTIC_POST, SEMANTIC_PRE
from geochange.models.folding import fold_batch_norm

logger = logging.getLogger("geochange.predict.engines")

#: Side of the crop of the first batch that BatchNorm folding is found and checked on.
FOLD_CROP = 128


def to_probabilities(out: Any) -> Tensor:
    """The model's outputs as one float32 tensor ``[B, 1 + 2K, H, W]`` of probabilities.

    One change logit -> sigmoid; two -> softmax probability of class 1; semantic logits ->
    softmax over the classes.

    Raises:
        ConfigurationError: an output that follows neither model contract.
    """
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
    parts = [torch.sigmoid(change[:, :1]) if change.shape[1] == 1 else change.softmax(1)[:, 1:2]]
    parts += [p.float().softmax(1) for p in (pre, post) if p is not None]
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


class ProbabilityModel(nn.Module):
    """``model`` followed by :func:`to_probabilities`: the graph the exported engines run."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """Probabilities ``[B, 1 + 2K, H, W]`` for model input ``x``."""
        return to_probabilities(self.model(x))


class NormalizingModel(ProbabilityModel):
    """:class:`ProbabilityModel` on raw tiles: ``(image - mean) / std`` in float32 first.

    ``mean`` and ``std`` are inputs of the graph (``[1, 2, C, 1, 1]``, per date and band), not
    constants, so one exported model serves every normalization (a scene rescaled by
    ``value_range`` included); the arithmetic is the one :class:`_Inferencer` does in torch.
    """

    def forward(self, image: Tensor, mean: Tensor, std: Tensor) -> Tensor:  # type: ignore[override]
        """Probabilities ``[B, 1 + 2K, H, W]`` for raw tiles ``image`` ``[B, 2, C, H, W]``."""
        return to_probabilities(self.model((image.float() - mean) / std))


#: ``(mean, std)``, float32 ``[1, 2, C, 1, 1]`` each: the normalization of raw tiles.
Normalization = tuple[np.ndarray, np.ndarray]


def normalize(x: Tensor, normalization: Normalization) -> Tensor:
    """Raw tiles ``x`` normalized as :class:`NormalizingModel` does (float32)."""
    mean, std = (torch.from_numpy(a) for a in normalization)
    return (x.float() - mean) / std


def as_tensor(x: Tensor | np.ndarray) -> Tensor:
    """``x`` as a float32 tensor (numpy arrays are wrapped, not copied)."""
    tensor = torch.from_numpy(np.asarray(x)) if isinstance(x, np.ndarray) else x
    return tensor.float()


class Engine(ABC):
    """Base class of the inference engines; :meth:`run` is the one call the pipeline makes.

    Engines are picklable (Dask workers receive them): what was compiled is dropped and made
    again lazily in the receiving process, from the on-disk cache where the engine has one.
    :meth:`run` may be called from any thread (a prefetching pipeline), one call at a time
    per thread; preparation is guarded by a lock.

    Args:
        model: the model (any module following the geochange model contract).
        device: where it runs.
        precision: the resolved precision (``"fp32"``, ``"bf16"``, ``"fp16"``, ``"int8"``).
        batch_size: the batch the pipeline feeds (compiled engines compile this batch).
        channels_last: run the torch model in the channels-last memory format.
        fold_batchnorm: fold eval-mode BatchNorms into convolutions before running.
        size_divisor: the model's input size multiple (the folding crop stays one).
        cache_dir: the directory of exported models (compiled engines only).
    """

    #: The engine's name as ``ChangePredictor(engine=...)`` spells it.
    name: ClassVar[str] = ""

    def __init__(
        self,
        model: nn.Module,
        *,
        device: torch.device,
        precision: str,
        batch_size: int = 4,
        channels_last: bool = True,
        fold_batchnorm: bool = True,
        size_divisor: int = 32,
        cache_dir: Path | None = None,
    ) -> None:
        self.model = model
        self.device = device
        self.precision = precision
        self.batch_size = int(batch_size)
        self.channels_last = channels_last
        self.fold_batchnorm = fold_batchnorm
        self.size_divisor = max(1, int(size_divisor))
        self.cache_dir = cache_dir
        #: BatchNorm layers folded into convolutions (None until the first batch).
        self.folded_batchnorms: int | None = None
        self._runner: nn.Module | None = None
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_runner"] = None
        state["folded_batchnorms"] = None
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def describe(self) -> str:
        """One line for logs and benchmarks: engine, precision, device."""
        return f"{self.name} engine, {self.precision} on {self.device}"

    def takes_raw(self) -> bool:
        """Whether :meth:`run` takes raw tiles with their normalization (see the module)."""
        return False

    @property
    def concurrency(self) -> int:
        """Batches the engine runs at once (:meth:`run` called from that many threads)."""
        return 1

    @abstractmethod
    def run(self, x: Tensor | np.ndarray, normalization: Normalization | None = None) -> Tensor:
        """Probabilities ``[B, 1 + 2K, H, W]`` (float32) for tiles ``[B, 2, C, H, W]``.

        Args:
            x: normalized float32 tiles (a tensor on any device, or a numpy array); with
                ``normalization``, raw tiles in their own dtype.
            normalization: the ``(mean, std)`` of raw tiles ``x``: engines that
                :meth:`takes_raw` normalize them in their graph, the others with
                :func:`normalize` first (the predictor passes it only to the former).

        Returns:
            The probabilities, on the engine's device for the torch engine, else on the CPU.
        """
        raise NotImplementedError

    def model_device(self) -> torch.device:
        """Where the PyTorch model itself runs (exported engines export it on the CPU)."""
        return self.device

    def runner(self, x: Tensor) -> nn.Module:
        """The module that runs: the BatchNorm-folded copy, made on a crop of the first batch."""
        with self._lock:
            if self._runner is not None:
                return self._runner
            model = self.model.eval().to(self.model_device())
            if self.channels_last:
                model.to(memory_format=torch.channels_last)
            runner, folded = model, 0
            if self.fold_batchnorm:
                runner, folded = _fold(model, x, self.size_divisor)
            if folded and self.channels_last:
                runner.to(memory_format=torch.channels_last)
            self.folded_batchnorms = folded
            self._runner = runner
            return runner


def _fold(model: nn.Module, x: Tensor, size_divisor: int) -> tuple[nn.Module, int]:
    """``fold_batch_norm`` on a crop of the first tile of ``x``."""
    # A crop keeps the two extra forward passes cheap; it stays a multiple of the model's
    # size divisor so any model that accepts the tiles accepts it.
    crop = max(size_divisor, FOLD_CROP // size_divisor * size_divisor)
    crop = min(crop, x.shape[-2], x.shape[-1])
    # Outside inference mode (the clone there is an ordinary tensor), so the folded weights
    # become ordinary parameters.
    with torch.inference_mode(False), torch.no_grad():
        sample = x[:1, ..., :crop, :crop].clone()
        return fold_batch_norm(model, sample)
