"""Inference-time folding of BatchNorm layers into the convolutions that feed them.

In eval mode a ``BatchNorm2d`` is an affine map per channel, so ``bn(conv(x))`` equals one
convolution with rescaled weights and a shifted bias. Folding removes one full pass over every
activation map, which on CPUs is memory-bound: on a 2-core AMD EPYC, whole-scene prediction
with the ``fusion_unet``/resnet18 change model ran 1.15x faster
(``benchmarks/bench_predict.py --unfolded``, see docs/prediction.md).

Which convolution feeds which BatchNorm is found by running the model once on a sample with
forward hooks, since model code (SMP encoders and decoders, siamese wrappers) is not traceable
with ``torch.fx`` in general. The folded copy is then checked against the original on the same
sample; if they disagree (a pre-BatchNorm activation that is also used elsewhere, say) the
original model is returned unchanged.
"""

from __future__ import annotations

import copy
import logging
import weakref
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

logger = logging.getLogger(__name__)


def _flatten_outputs(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for key in sorted(out) for t in _flatten_outputs(out[key])]
    if isinstance(out, list | tuple):
        return [t for item in out for t in _flatten_outputs(item)]
    return []


def _foldable_pairs(model: nn.Module, sample: Tensor) -> list[tuple[str, str]]:
    """``(conv name, batchnorm name)`` pairs where, in every call, the BN consumed the conv."""
    names = {module: name for name, module in model.named_modules()}
    # Weak references: the outputs are freed when the model drops them, as in a plain forward
    # pass (holding them changed the heap layout enough to cost ~80 MB of peak RSS in a whole
    # scene prediction); the reference check guards against a reused id.
    produced: dict[int, tuple[weakref.ref[Tensor], nn.Module]] = {}
    conv_calls: dict[nn.Module, int] = defaultdict(int)
    bn_sources: dict[nn.Module, list[nn.Module | None]] = defaultdict(list)

    def on_conv(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        conv_calls[module] += 1
        if isinstance(output, Tensor):
            produced[id(output)] = (weakref.ref(output), module)

    def on_bn(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        tensor = args[0] if args and isinstance(args[0], Tensor) else None
        source = produced.get(id(tensor)) if tensor is not None else None
        alive = source is not None and source[0]() is tensor
        bn_sources[module].append(source[1] if source is not None and alive else None)

    hooks = []
    for module in model.modules():
        if type(module) is nn.Conv2d:
            hooks.append(module.register_forward_hook(on_conv))
        elif isinstance(module, nn.BatchNorm2d) and module.track_running_stats:
            hooks.append(module.register_forward_hook(on_bn))
    try:
        model(sample)
    finally:
        for hook in hooks:
            hook.remove()
        produced.clear()

    fed: dict[nn.Module, list[nn.Module]] = defaultdict(list)
    for bn, sources in bn_sources.items():
        if len(set(sources)) == 1 and sources[0] is not None:
            fed[sources[0]].append(bn)
    pairs = []
    for conv, bns in fed.items():
        # One BN behind the conv, fed by it in every one of the conv's calls (shared siamese
        # encoders run each conv once per date).
        if len(set(bns)) == 1 and len(bns) == conv_calls[conv]:
            pairs.append((names[conv], names[bns[0]]))
    return pairs


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


@torch.no_grad()
def fold_batch_norm(
    model: nn.Module, sample: Tensor, *, rtol: float = 1e-4, atol: float = 1e-4
) -> tuple[nn.Module, int]:
    """Return an eval-mode copy of ``model`` with each foldable BatchNorm merged into its conv.

    A ``BatchNorm2d`` (with running statistics) is folded when, during a forward pass on
    ``sample``, every call of it took the output of the same ``nn.Conv2d`` directly, and that
    convolution fed only it. The copy's outputs are then compared with the original's on
    ``sample``; if any differs by more than ``atol + rtol * |reference|`` the original model
    is returned with 0 folds (and a warning is logged). ``model`` itself is never modified
    (apart from being put in eval mode).

    Args:
        model: a model in any mode; it is switched to eval mode.
        sample: an input the model accepts (e.g. one small ``[1, 2, C, h, w]`` tile); its
            values only steer the check.
        rtol: relative tolerance of the check.
        atol: absolute tolerance of the check.

    Returns:
        ``(model, n)``: the folded copy and the number of BatchNorm layers folded, or the
        original model and 0 when nothing could be folded safely.
    """
    model.eval()
    pairs = _foldable_pairs(model, sample)
    if not pairs:
        return model, 0
    folded = copy.deepcopy(model)
    for conv_name, bn_name in pairs:
        conv = folded.get_submodule(conv_name)
        bn = folded.get_submodule(bn_name)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        _set_submodule(folded, conv_name, fuse_conv_bn_eval(conv, bn))
        _set_submodule(folded, bn_name, nn.Identity())
    reference = _flatten_outputs(model(sample))
    result = _flatten_outputs(folded(sample))
    same = len(reference) == len(result) and all(
        a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=rtol, atol=atol)
        for a, b in zip(reference, result, strict=True)
    )
    if not same:
        logger.warning(
            "BatchNorm folding changed the model's outputs; predicting with the unfolded model"
        )
        return model, 0
    return folded, len(pairs)
