"""Encoders cut to the stages a model uses.

smp builds every stage of an encoder whatever its ``depth``: a resnet18 of depth 3 still holds
``layer3`` and ``layer4`` (10 M of its 11 M parameters), which then get no gradient, count in
the parameter total and fill the state dict. Models that use only the early stages (BIT,
TinyCD) build their encoder with :func:`make_truncated_encoder`, which replaces every
submodule that a forward pass never calls by ``nn.Identity``.
"""

from __future__ import annotations

import torch
from torch import nn

from geochange.errors import ConfigurationError
from geochange.models.base import make_encoder


def _used_names(module: nn.Module, sample: torch.Tensor) -> set[str]:
    """Names of the submodules called on ``sample``, and of their ancestors.

    Containers such as ``nn.ModuleList`` are never called themselves.
    """
    called: set[nn.Module] = set()
    hooks = [
        child.register_forward_hook(lambda m, args, out: called.add(m))
        for child in module.modules()
    ]
    was_training = module.training
    # Eval mode: the probe must not touch BatchNorm running statistics.
    module.eval()
    try:
        with torch.no_grad():
            module(sample)
    finally:
        for hook in hooks:
            hook.remove()
        module.train(was_training)
    used = {""}
    for name, child in module.named_modules():
        if child in called:
            parts = name.split(".")
            used.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return used


def prune_unused(module: nn.Module, sample: torch.Tensor) -> list[str]:
    """Replace the submodules of ``module`` that a forward pass on ``sample`` never calls.

    Only submodules holding parameters or buffers are replaced (by ``nn.Identity``), the
    outermost unused one of a branch at a time. A module whose weights are read without
    calling it would be lost, so the outputs are compared before and after.

    Args:
        module: The module, modified in place.
        sample: An input it accepts.

    Returns:
        Names of the replaced submodules.

    Raises:
        ConfigurationError: If pruning changed the outputs (the module reads weights of
            submodules it does not call).
    """
    used = _used_names(module, sample)
    module.eval()
    with torch.no_grad():
        reference = [t.clone() for t in module(sample)]
    removed: list[str] = []
    for name, child in list(module.named_modules()):
        if name in used or any(name.startswith(r + ".") for r in removed):
            continue
        if next(child.parameters(), None) is None and next(child.buffers(), None) is None:
            continue
        parent_name, _, leaf = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, leaf, nn.Identity())
        removed.append(name)
    with torch.no_grad():
        result = list(module(sample))
    module.train()
    if len(result) != len(reference) or not all(
        torch.equal(a, b) for a, b in zip(reference, result, strict=True)
    ):
        raise ConfigurationError(
            f"cannot truncate encoder {type(module).__name__}: it reads weights of stages it "
            "does not call"
        )
    return removed


def make_truncated_encoder(
    backbone: str,
    in_channels: int,
    depth: int,
    weights: str | None = None,
    output_stride: int | None = None,
) -> nn.Module:
    """Build an smp encoder without the stages deeper than ``depth``.

    See :func:`~geochange.models.base.make_encoder` for the encoder names and errors.

    Args:
        backbone: smp encoder name.
        in_channels: Bands per date.
        depth: Encoder stages kept (1-5).
        weights: smp pretrained weights name or ``None``.
        output_stride: Dilate the deepest stages so features stay at this stride (8 or 16);
            ``None`` keeps the encoder's strides. Encoders without dilation support raise.

    Returns:
        The encoder, in training mode; its state-dict keys are a subset of the full encoder's,
        so full-encoder weights still load into it.

    Raises:
        ConfigurationError: On an invalid backbone/depth, or an encoder that cannot be dilated.
    """
    stride = 32 if output_stride is None or output_stride >= 2**depth else output_stride
    try:
        encoder = make_encoder(backbone, in_channels, depth, weights, output_stride=stride)
    except ValueError as error:
        raise ConfigurationError(
            f"encoder {backbone!r} cannot be dilated to output_stride={output_stride} "
            f"({error}); pass output_stride=None"
        ) from error
    prune_unused(encoder, torch.zeros(1, in_channels, 64, 64))
    return encoder
