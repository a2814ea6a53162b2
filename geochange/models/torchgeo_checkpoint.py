"""TorchGeo ``ChangeDetection`` (``ChangeDetectionTask``) checkpoints as geochange models.

A checkpoint of TorchGeo's change task holds its network under ``model.`` and the task's
arguments in ``hyper_parameters`` (``model``, ``backbone``, ``in_channels``, ``task``,
``num_classes``, ...), but none of geochange's metadata. :func:`torchgeo_model_from_checkpoint`
rebuilds the network the way the task's ``configure_models`` does (randomly initialised, never
downloading), loads the weights and returns a module that takes ``[B, 2, C, H, W]``: the
stacked-channel networks (``unet``, ``deeplabv3+``, ...) come wrapped in
:class:`~geochange.models.early_fusion.StackedDates`, ``unet`` as geochange's own
:class:`~geochange.models.early_fusion.EarlyFusionUNet` (the same network). No Lightning and no
TorchGeo task is imported; the file is read with ``torch.load(weights_only=True)`` by the caller.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from geochange.checkpoint import CheckpointMetadata, describe_state_dict_mismatch
from geochange.errors import CheckpointError, ConfigurationError
from geochange.models.early_fusion import EarlyFusionUNet, StackedDates

__all__ = [
    "TORCHGEO_MODELS",
    "is_torchgeo_checkpoint",
    "torchgeo_model_from_checkpoint",
    "torchgeo_overrides",
]

#: Hyper-parameters every TorchGeo ``ChangeDetection`` checkpoint has (``freeze_decoder`` and
#: ``num_labels`` are the task's own; geochange trainers have neither).
_TASK_KEYS = frozenset({"model", "backbone", "in_channels", "task", "num_labels", "freeze_decoder"})


def _smp(name: str) -> Callable[[dict[str, Any], int], nn.Module]:
    """A builder of the smp architecture ``name`` on the stacked ``2C`` channels."""

    def build(hparams: dict[str, Any], classes: int) -> nn.Module:
        import segmentation_models_pytorch as smp

        return StackedDates(
            getattr(smp, name)(
                encoder_name=hparams["backbone"],
                encoder_weights=None,
                in_channels=2 * int(hparams["in_channels"]),
                classes=classes,
            ),
            int(hparams["in_channels"]),
        )

    return build


def _unet(hparams: dict[str, Any], classes: int) -> nn.Module:
    if classes != 1:  # geochange's early-fusion UNet has one change logit
        return _smp("Unet")(hparams, classes)
    # The same network as smp.Unet on 2C channels, with the same parameter names.
    return EarlyFusionUNet(backbone=hparams["backbone"], in_channels=int(hparams["in_channels"]))


def _fcn(hparams: dict[str, Any], classes: int) -> nn.Module:
    from torchgeo.models import FCN

    channels = int(hparams["in_channels"])
    network = FCN(
        in_channels=2 * channels, classes=classes, num_filters=int(hparams["num_filters"])
    )
    return StackedDates(network, channels)


def _fcsiam(name: str) -> Callable[[dict[str, Any], int], nn.Module]:
    def build(hparams: dict[str, Any], classes: int) -> nn.Module:
        import torchgeo.models

        return getattr(torchgeo.models, name)(
            encoder_name=hparams["backbone"],
            in_channels=int(hparams["in_channels"]),
            classes=classes,
            encoder_weights=None,
        )

    return build


#: The TorchGeo ``model`` names geochange rebuilds, and how: stacked networks wrapped in
#: :class:`StackedDates`; ``fcsiamdiff``/``fcsiamconc`` are TorchGeo's own classes (they take
#: ``[B, 2, C, H, W]`` already). ``changevit`` and ``btc`` are not supported.
TORCHGEO_MODELS: dict[str, Callable[[dict[str, Any], int], nn.Module]] = {
    "unet": _unet,
    "deeplabv3+": _smp("DeepLabV3Plus"),
    "upernet": _smp("UPerNet"),
    "segformer": _smp("Segformer"),
    "dpt": _smp("DPT"),
    "fcn": _fcn,
    "fcsiamdiff": _fcsiam("FCSiamDiff"),
    "fcsiamconc": _fcsiam("FCSiamConc"),
}


def is_torchgeo_checkpoint(checkpoint: Mapping[str, Any]) -> bool:
    """Whether a loaded checkpoint dict is one of TorchGeo's change task (not geochange's).

    Args:
        checkpoint: The dict read from the file.

    Returns:
        True for a Lightning checkpoint without geochange metadata whose hyper-parameters are
        those of ``torchgeo.tasks.ChangeDetection``.
    """
    hparams = checkpoint.get("hyper_parameters")
    return (
        "geochange" not in checkpoint
        and "state_dict" in checkpoint
        and isinstance(hparams, Mapping)
        and _TASK_KEYS <= set(hparams)
    )


def _classes(hparams: Mapping[str, Any], path: str) -> int:
    """Output channels of the network; only what a change probability can be read from."""
    task = hparams.get("task")
    classes = int(hparams.get("num_classes") or hparams.get("num_labels") or 1)
    if task == "binary" or (task == "multiclass" and classes == 2):
        return classes
    raise CheckpointError(
        f"{path}: a TorchGeo change checkpoint with task={task!r} and {classes} classes has "
        "no single change probability; geochange predicts task='binary' (one logit) or "
        "task='multiclass' with num_classes=2 (class 1 = change). Predict it with TorchGeo "
        "(ChangeDetection.predict_step), or retrain it as a binary task"
    )


def torchgeo_model_from_checkpoint(
    checkpoint: dict[str, Any], path: str = "<checkpoint>", *, strict: bool = True
) -> tuple[nn.Module, CheckpointMetadata]:
    """Rebuild the network of a TorchGeo ``ChangeDetection`` checkpoint and load its weights.

    Args:
        checkpoint: The checkpoint dict (read with ``weights_only=True``).
        path: Where it came from (for messages).
        strict: Require the weights to fit the network exactly.

    Returns:
        ``(module, metadata)``: a model taking ``[B, 2, C, H, W]`` in eval mode, and metadata
        with ``task="binary"``, ``model="torchgeo:<name>"``, ``trainer`` the TorchGeo task and
        no normalization, bands or value range (TorchGeo does not record them).

    Raises:
        CheckpointError: A model or task geochange cannot rebuild (the message says what to
            do instead), or weights that do not fit.
    """
    hparams = dict(checkpoint["hyper_parameters"])
    name = str(hparams["model"])
    build = TORCHGEO_MODELS.get(name)
    if build is None:
        raise CheckpointError(
            f"{path}: TorchGeo change model {name!r} cannot be rebuilt by geochange (it "
            f"rebuilds {', '.join(TORCHGEO_MODELS)}); predict it with TorchGeo, or wrap its "
            "network yourself: ChangePredictor(network, input_layout='stacked') for a network "
            "taking [B, 2C, H, W], ChangePredictor(network) for one taking [B, 2, C, H, W]"
        )
    classes = _classes(hparams, path)
    try:
        model = build(hparams, classes)
    except Exception as error:  # smp/timm raise many types for unknown backbones
        raise CheckpointError(
            f"{path}: cannot rebuild TorchGeo model {name!r} with backbone "
            f"{hparams.get('backbone')!r}: {error}"
        ) from error
    holder = model.model if isinstance(model, StackedDates) else model
    state = {
        key[len("model.") :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith("model.")
    }
    try:
        holder.load_state_dict(state, strict=strict)
    except RuntimeError as error:
        problems = describe_state_dict_mismatch(holder.state_dict(), state, strict=strict)
        raise CheckpointError(
            f"{path}: weights do not fit TorchGeo model {name!r} (backbone "
            f"{hparams.get('backbone')!r}): {problems or error}"
        ) from error
    layout = "temporal" if name.startswith("fcsiam") else "stacked"
    metadata = CheckpointMetadata(
        task="binary",
        model=f"torchgeo:{name}",
        model_kwargs={"backbone": hparams.get("backbone"), "in_channels": hparams["in_channels"]},
        in_channels=int(hparams["in_channels"]),
        num_classes=None,
        class_names=None,
        normalization=None,
        bands=None,
        patch_size=None,
        version="unknown (TorchGeo checkpoint)",
        trainer="torchgeo.tasks.ChangeDetection",
        extra={"input_layout": layout, "torchgeo_task": hparams.get("task")},
    )
    return model.eval(), metadata


def torchgeo_overrides(path: Path, layout: Any, overrides: dict[str, Any]) -> None:
    """Check a predictor's overrides for a TorchGeo checkpoint; warn of what it lacks.

    ``input_layout`` is removed from ``overrides`` (the loaded model is already adapted).

    Args:
        path: The checkpoint.
        layout: Its network's input layout (``metadata.extra["input_layout"]``).
        overrides: ``ChangePredictor.from_checkpoint``'s keyword arguments (edited in place).

    Raises:
        ConfigurationError: An ``input_layout`` that is not the network's.
    """
    asked = overrides.pop("input_layout", layout)
    if asked != layout:
        raise ConfigurationError(
            f"{str(path)!r} is a TorchGeo checkpoint whose network takes the {layout} layout; "
            f"input_layout={asked!r} does not match (leave it out: the loaded model is adapted)"
        )
    if overrides.get("normalization") is None:
        warnings.warn(
            f"TorchGeo checkpoint {str(path)!r} records no input normalization or value range; "
            "pass normalization={'mean': [...], 'std': [...]} (the mean/std of the datamodule "
            "it was trained with, e.g. std 255 for 8-bit imagery) or raw pixel values are fed",
            stacklevel=3,
        )
