"""Model registry, :func:`build_model` and loading of pretrained weights."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from geochange.checkpoint import load_torch_file
from geochange.errors import CheckpointError, ConfigurationError

#: A factory called as ``factory(backbone=..., in_channels=..., num_classes=..., **kwargs)``.
ModelFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}

#: TorchGeo's ``ChangeDetection`` model names accepted by :func:`build_model`, with the
#: geochange model each builds (same topology; docs/models.md says where they differ).
MODEL_ALIASES: dict[str, str] = {
    "fcsiamdiff": "siam_diff",
    "fcsiamconc": "siam_conc",
    "unet": "early_fusion_unet",
}

# Prefixes a state dict may carry around the model's own keys: a Lightning module holding the
# model as ``self.model``, DataParallel/DDP wrappers, torch.compile.
_WRAPPER_PREFIXES = ("model.", "module.", "_orig_mod.", "net.")


def register_model(
    name: str, factory: ModelFactory | None = None, *, overwrite: bool = False
) -> Any:
    """Register a model factory under ``name``; usable directly or as a decorator.

    The factory (a class or function) is called by :func:`build_model` with the keyword
    arguments ``backbone`` (only when given, or when the factory has no default for it:
    then ``"resnet18"``), ``in_channels``, ``num_classes``, ``encoder_weights`` (only when
    pretrained smp weights are requested) and any extra ``**kwargs`` given to
    :func:`build_model`. The returned module must follow the geochange model contract:
    ``forward(x [B, 2, C, H, W]) -> {"change": [B, 1, H, W], ...}``. A module with an
    ``encoder`` attribute supports ``freeze_backbone`` and encoder-only checkpoints.

    Example:
        >>> @register_model("my_model")  # doctest: +SKIP
        ... class MyModel(nn.Module): ...

    Args:
        name: Registry name (used in configs and checkpoints).
        factory: The class or function; omit to use as a decorator.
        overwrite: Allow replacing an existing registration.

    Returns:
        The factory (or a decorator returning it).

    Raises:
        ConfigurationError: If ``name`` is taken and ``overwrite`` is false.
    """

    def decorator(fn: ModelFactory) -> ModelFactory:
        if name in _REGISTRY and not overwrite and _REGISTRY[name] is not fn:
            raise ConfigurationError(
                f"a model named {name!r} is already registered; pass overwrite=True to replace it"
            )
        _REGISTRY[name] = fn
        return fn

    return decorator(factory) if factory is not None else decorator


def list_models() -> list[str]:
    """Return the registered model names, sorted (canonical names, no aliases).

    Returns:
        Names accepted by :func:`build_model` (which also accepts :data:`MODEL_ALIASES`).
    """
    return sorted(_REGISTRY)


def canonical_model_name(name: str) -> str:
    """The registry name of ``name``: itself, or the model a TorchGeo alias stands for.

    Args:
        name: A registry name or a key of :data:`MODEL_ALIASES` (``"fcsiamdiff"``, ...).

    Returns:
        The canonical registry name (a registered name is never taken as an alias).
    """
    return name if name in _REGISTRY else MODEL_ALIASES.get(name, name)


def build_model(
    name: str,
    *,
    backbone: str | None = None,
    in_channels: int = 3,
    num_classes: int | None = None,
    weights: str | Path | None = None,
    freeze_backbone: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered change model.

    Args:
        name: Registered model name (see :func:`list_models`): ``"fusion_unet"``,
            ``"siam_diff"``, ``"siam_conc"``, ``"early_fusion_unet"``, ``"semantic_change"``,
            ``"changeformer"``, ``"snunet"`` or a user model; TorchGeo's names
            ``"fcsiamdiff"``, ``"fcsiamconc"`` and ``"unet"`` build the geochange model of
            :data:`MODEL_ALIASES` (``model_name`` is then the canonical name).
        backbone: Any segmentation-models-pytorch encoder name; ``None`` (the default) keeps
            the model's own default (``"resnet18"`` for the UNet models, ``"mit_b0"`` for
            ``changeformer``; ``snunet`` has its own encoder).
        in_channels: Bands per date (any count; the first convolution is adapted).
        num_classes: Semantic classes ``K`` (semantic models, DiffMatch auxiliary decoders).
        weights: ``None`` for random initialisation (nothing is downloaded); the name of smp
            pretrained encoder weights such as ``"imagenet"`` (downloaded or read from the
            Hugging Face cache; a clear :class:`~geochange.errors.CheckpointError` when
            offline); or the path of a local checkpoint holding whole-model weights (a
            geochange/Lightning checkpoint or a saved ``state_dict``) or encoder weights.
        freeze_backbone: Freeze the encoder (no gradients, fixed BatchNorm statistics).
        **kwargs: Model-specific arguments (documented on each model class).

    Returns:
        The model. Its ``model_name`` and ``config`` attributes rebuild it with
        ``build_model(model.model_name, **model.config)``.

    Raises:
        ConfigurationError: Unknown model or backbone, or inconsistent arguments.
        CheckpointError: Pretrained weights unavailable or not matching the model.
    """
    name = canonical_model_name(name)
    if name not in _REGISTRY:
        aliases = ", ".join(f"{a} ({c})" for a, c in MODEL_ALIASES.items())
        raise ConfigurationError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())}; "
            f"TorchGeo aliases: {aliases}"
        )
    checkpoint_path: Path | None = None
    factory_kwargs = dict(kwargs)
    if weights is not None:
        candidate = Path(weights).expanduser()
        if (
            isinstance(weights, Path)
            or candidate.exists()
            or candidate.suffix
            in {
                ".ckpt",
                ".pt",
                ".pth",
                ".bin",
                ".safetensors",
            }
        ):
            checkpoint_path = candidate
        else:
            factory_kwargs["encoder_weights"] = str(weights)
    factory = _REGISTRY[name]
    if backbone is None:
        backbone = _default_backbone(factory)
    if backbone is not None:
        factory_kwargs["backbone"] = backbone
    try:
        model = factory(in_channels=in_channels, num_classes=num_classes, **factory_kwargs)
    except TypeError as error:
        accepted = _accepted_arguments(factory)
        raise ConfigurationError(
            f"invalid arguments for model {name!r}: {error}; accepted: {accepted}"
        ) from error
    if checkpoint_path is not None:
        load_pretrained(model, checkpoint_path)
    if freeze_backbone:
        _freeze(model, name)
    config = {
        "backbone": backbone,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "freeze_backbone": freeze_backbone,
        **kwargs,
    }
    # Plain attributes so any nn.Module (user models too) can carry them.
    setattr(model, "model_name", name)  # noqa: B010 - nn.Module typing would reject plain attrs
    setattr(model, "config", config)  # noqa: B010
    return model


def _default_backbone(factory: ModelFactory) -> str | None:
    """``None`` (pass nothing) when the factory has its own default backbone, else resnet18.

    Factories without a default (user functions written when ``build_model`` always passed
    ``"resnet18"``) keep getting it.
    """
    try:
        parameter = inspect.signature(factory).parameters.get("backbone")
    except (TypeError, ValueError):
        parameter = None
    if parameter is not None and parameter.default is not inspect.Parameter.empty:
        return None
    return "resnet18"


def _accepted_arguments(factory: ModelFactory) -> str:
    try:
        return ", ".join(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return "?"


def _freeze(model: nn.Module, name: str) -> None:
    freeze = getattr(model, "freeze_backbone", None)
    if callable(freeze):
        freeze(True)
        return
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ConfigurationError(
            f"model {name!r} has no 'encoder' submodule, so freeze_backbone is not supported"
        )
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    payload: Any
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            payload = dict(load_file(str(path), device="cpu"))
        except Exception as error:
            raise CheckpointError(f"cannot read weights file {path}: {error}") from error
    else:
        # The loader never unpickles arbitrary objects (the file may come from anywhere: a
        # config, a download).
        payload = load_torch_file(path, what="weights file")
    if isinstance(payload, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = payload.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
                payload = inner
                break
    if not isinstance(payload, Mapping) or not any(isinstance(v, Tensor) for v in payload.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return {str(k): v for k, v in payload.items() if isinstance(v, Tensor)}


def _strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _matches(state: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> bool:
    return bool(target) and all(
        key in state and state[key].shape == value.shape for key, value in target.items()
    )


def load_pretrained(model: nn.Module, path: str | Path) -> str:
    """Load whole-model or encoder weights from a local file into ``model``.

    The file may be a geochange/Lightning checkpoint (``state_dict`` with a ``model.`` prefix),
    a plain ``state_dict`` saved with ``torch.save`` or a ``.safetensors`` file. Whole-model
    weights are used when every model key is found with the right shape; otherwise weights
    for ``model.encoder`` (keys with an ``encoder.`` prefix, or bare encoder keys) are loaded.

    Args:
        model: The freshly built model.
        path: The local weights file.

    Returns:
        ``"model"`` or ``"encoder"``: what was loaded.

    Raises:
        CheckpointError: If the file is unreadable or no weights match the model or encoder.
    """
    path = Path(path)
    state = _read_state_dict(path)
    candidates = [state] + [_strip(state, p) for p in _WRAPPER_PREFIXES]
    candidates += [
        _strip(_strip(state, p), q) for p in _WRAPPER_PREFIXES for q in _WRAPPER_PREFIXES
    ]
    model_state = model.state_dict()
    for candidate in candidates:
        if _matches(candidate, model_state):
            model.load_state_dict({k: candidate[k] for k in model_state})
            return "model"
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, nn.Module):
        encoder_state = encoder.state_dict()
        for candidate in candidates + [_strip(c, "encoder.") for c in candidates]:
            if _matches(candidate, encoder_state):
                encoder.load_state_dict({k: candidate[k] for k in encoder_state})
                return "encoder"
        mismatched = sorted(
            key
            for candidate in candidates + [_strip(c, "encoder.") for c in candidates]
            for key, value in encoder_state.items()
            if key in candidate and candidate[key].shape != value.shape
        )[:3]
        detail = f"; shape mismatch for e.g. {mismatched}" if mismatched else ""
    else:
        detail = ""
    raise CheckpointError(
        f"weights in {path} match neither the model {type(model).__name__} nor its encoder "
        f"(different backbone or band count?){detail}"
    )
