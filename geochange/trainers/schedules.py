"""Step schedules of training: learning-rate warm-up and decay, linear weight ramps."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["estimated_total_steps", "linear_schedule", "lr_factor"]


def estimated_total_steps(module: Any) -> int:
    """Optimizer steps of the whole run as the attached Lightning trainer estimates them.

    Args:
        module: A LightningModule, attached to a trainer or not.

    Returns:
        The step count; 0 when no trainer is attached or the count is unknown (infinite).
    """
    if module._trainer is None:
        return 0
    estimated = module.trainer.estimated_stepping_batches
    return int(estimated) if math.isfinite(estimated) else 0


def lr_factor(
    step: int, *, warmup: int, total: int, kind: str, power: float = 0.9, floor: float = 0.0
) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then cosine / poly decay to ``floor``.

    Args:
        step: Optimizer step (0-based).
        warmup: Warm-up steps (the factor rises linearly from ``1 / warmup`` to 1).
        total: Total optimizer steps; 0 (unknown) keeps the factor at 1 after warm-up.
        kind: ``"cosine"``, ``"poly"`` or ``"none"``.
        power: Exponent of the poly decay.
        floor: Final factor of the decay.

    Returns:
        The multiplier of the peak learning rate.
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "none" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * progress))
    else:
        decay = (1 - progress) ** power
    return floor + (1 - floor) * decay


def linear_schedule(step: int, *, start: float, end: float, steps: int) -> float:
    """Value moving linearly from ``start`` (step 0) to ``end`` (step ``steps``), then constant.

    Args:
        step: Optimizer step (0-based).
        start: Value at step 0.
        end: Value from step ``steps`` on.
        steps: Length of the ramp; ``<= 0`` (unknown length) keeps ``start``.

    Returns:
        The scheduled value.
    """
    if steps <= 0:
        return start
    progress = min(1.0, max(0.0, step / steps))
    return start + (end - start) * progress


def with_head_lr_multiplier(
    config: dict[str, Any], module: Any, encoder: Any, multiplier: float
) -> dict[str, Any]:
    """Rebuild an optimizer config with two groups: the encoder at ``lr``, the rest faster.

    DiffMatch (after UniMatch) trains the randomly initialised parts (decoders, heads) at a
    multiple of the encoder's learning rate; the warm-up / decay schedule is kept.

    Args:
        config: ``{"optimizer": ..., "lr_scheduler": {"scheduler": LambdaLR, ...}}`` as
            :meth:`ChangeTrainer.configure_optimizers` returns it.
        module: The LightningModule (its trainable parameters and ``hparams``).
        encoder: The model's encoder module, or ``None`` (config returned unchanged).
        multiplier: Learning-rate factor of the non-encoder parameters.

    Returns:
        The config, with a new optimizer and scheduler when ``multiplier != 1``.
    """
    import torch
    from torch.optim.lr_scheduler import LambdaLR

    if multiplier == 1.0 or not isinstance(encoder, torch.nn.Module):
        return config
    optimizer = config["optimizer"]
    lr, decay = float(module.hparams["lr"]), float(module.hparams["weight_decay"])
    encoder_ids = {id(p) for p in encoder.parameters()}
    trainable = [p for p in module.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) in encoder_ids], "lr": lr},
        {"params": [p for p in trainable if id(p) not in encoder_ids], "lr": lr * multiplier},
    ]
    optimizer = type(optimizer)([g for g in groups if g["params"]], lr=lr, weight_decay=decay)
    factor = config["lr_scheduler"]["scheduler"].lr_lambdas[0]
    config["optimizer"] = optimizer
    config["lr_scheduler"]["scheduler"] = LambdaLR(optimizer, factor)
    return config
