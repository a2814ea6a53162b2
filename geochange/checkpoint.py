"""Checkpoint files: safe reading, the geochange metadata, and rebuilding the model.

The one home of the checkpoint contract, with no Lightning import: inference
(:mod:`geochange.predict`) loads a model with :func:`load_model`, the trainers write the metadata
with :func:`write_metadata`. A geochange checkpoint is a Lightning checkpoint whose top-level
dict holds a ``"geochange"`` entry (:class:`CheckpointMetadata`): what the predictor needs (task,
model name and arguments, bands, normalization, training patch size, class names).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from geochange.errors import CheckpointError

__all__ = [
    "CHECKPOINT_KEY",
    "METADATA_KEYS",
    "CheckpointMetadata",
    "describe_state_dict_mismatch",
    "load_checkpoint_dict",
    "load_model",
    "load_torch_file",
    "model_from_checkpoint",
    "read_checkpoint_metadata",
    "validate_metadata",
    "write_metadata",
]

#: Top-level checkpoint key holding the geochange metadata.
CHECKPOINT_KEY = "geochange"

#: Keys always present in ``checkpoint["geochange"]`` (``patch_size`` may be stored under its
#: old name ``tile_size`` in checkpoints written before docs/glossary.md).
METADATA_KEYS = (
    "task",
    "model",
    "model_kwargs",
    "in_channels",
    "num_classes",
    "class_names",
    "normalization",
    "bands",
    "patch_size",
    "version",
)

#: Metadata keys renamed since checkpoints were first written: old name -> current name.
_RENAMED = {"tile_size": "patch_size"}

#: Prefix of the model's weights in a trainer's state dict (``ChangeTrainer.model``).
_MODEL_PREFIX = "model."


@dataclass(frozen=True)
class CheckpointMetadata:
    """What a geochange checkpoint records for inference (``checkpoint["geochange"]``).

    Attributes:
        task: ``"binary"`` (change / no change) or ``"semantic"`` (per-date classes + change).
        model: Registry name of the model (see :func:`geochange.models.build_model`), or the
            class name of a user module (which cannot be rebuilt from the file alone).
        model_kwargs: Keyword arguments of ``build_model`` that rebuild the network (incl.
            ``backbone``, ``in_channels``, ``num_classes``).
        in_channels: Bands per date of the training imagery.
        num_classes: Semantic classes ``K`` (``None`` for binary models).
        class_names: Names of the ``K`` classes, ordered by id (``None`` for binary models).
        normalization: ``{"mean": [...], "std": [...]}`` in raw pixel units, or ``None``.
        bands: Band indexes / names of the training imagery, in model order, or ``None``.
        patch_size: Side of the training patch in pixels (stored as ``tile_size`` by
            checkpoints written before the glossary), or ``None`` when unknown.
        version: geochange version that wrote the checkpoint.
        input_range: ``{"dtype", "min": [...], "max": [...]}`` of the training imagery (raw
            pixel units), checked by the predictor; ``None`` when unknown (older checkpoints).
        trainer: Class path of the LightningModule that wrote it (``None`` when unknown).
    """

    task: Literal["binary", "semantic"]
    model: str
    model_kwargs: dict[str, Any]
    in_channels: int
    num_classes: int | None
    class_names: list[str] | None
    normalization: dict[str, list[float]] | None
    bands: list[int | str] | None
    patch_size: int | None
    version: str
    input_range: dict[str, Any] | None = None
    trainer: str | None = None
    #: Entries of the stored dict that are not fields (written by a newer geochange).
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckpointMetadata:
        """Build from a stored metadata dict (old key names are read as the current ones).

        Args:
            data: ``checkpoint["geochange"]``, e.g. as :func:`validate_metadata` returns it.

        Returns:
            The metadata.
        """
        values = {_RENAMED.get(key, key): value for key, value in data.items()}
        names = {f for f in cls.__dataclass_fields__ if f != "extra"}
        fields = {key: value for key, value in values.items() if key in names}
        fields.setdefault("patch_size", None)
        extra = {key: value for key, value in values.items() if key not in names}
        return cls(**fields, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The dict stored as ``checkpoint["geochange"]`` (current key names).

        Returns:
            Plain values only (the file is read with ``weights_only=True``).
        """
        data = asdict(self)
        extra = data.pop("extra")
        return {**data, **extra}


class _MetadataDict(dict[str, Any]):
    """The metadata dict of :func:`read_checkpoint_metadata`; ``["tile_size"]`` still reads."""

    def __missing__(self, key: str) -> Any:
        if key in _RENAMED:
            return self[_renamed(key)]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        """``dict.get``, reading a renamed key (with a ``DeprecationWarning``)."""
        if key in _RENAMED and key not in self:
            return super().get(_renamed(key), default)
        return super().get(key, default)


def _renamed(key: str) -> str:
    new = _RENAMED[key]
    warnings.warn(
        f"checkpoint metadata key {key!r} is now {new!r} (docs/glossary.md); "
        f"{key!r} will stop working in the next release",
        DeprecationWarning,
        stacklevel=3,
    )
    return new


#: Leading bytes of the two formats ``torch.save`` writes: a zip archive (PyTorch >= 1.6) and
#: the legacy pickle stream, which starts with a pickled magic number (protocol 2+, LONG1).
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x8a\x0a" + torch.serialization.MAGIC_NUMBER.to_bytes(10, "little")

# A global named in torch's weights-only refusal ("GLOBAL numpy.core..."): the file holds Python
# objects. Damaged bytes give opcodes or nameless globals ("GLOBAL .") instead.
_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)")

#: How to turn a file holding Python objects into one geochange reads, without trusting it here.
_CONVERT_HINT = (
    "to use it, convert it once where you trust it: obj = torch.load(path, weights_only=False), "
    "then torch.save only tensors and plain values (torch.save(model.state_dict(), 'weights.pt') "
    "for weights; for a training checkpoint, replace the objects by plain values, e.g. in "
    "'hyper_parameters')"
)


def load_torch_file(
    path: str | Path, *, what: str = "checkpoint", map_location: Any = "cpu", mmap: bool = False
) -> Any:
    """Load a file written by ``torch.save`` without ever unpickling arbitrary objects.

    Only tensors and plain Python values are rebuilt (``torch.load(weights_only=True)``), so an
    untrusted file cannot run code. Both the zip format and the legacy (pre-1.6, non-zip)
    format are read.

    Args:
        path: The file.
        what: What the file is, for messages (``"checkpoint"``, ``"weights file"``).
        map_location: Device mapping of the tensors (``torch.load``'s ``map_location``).
        mmap: Map the tensor data of a zip-format file instead of reading it (cheap when only
            the metadata is needed); ignored for legacy files.

    Returns:
        The loaded object.

    Raises:
        CheckpointError: If the file is missing, empty, not a PyTorch file, damaged, or holds
            Python objects other than tensors and plain values (the message then says how to
            convert it safely).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist or is not a file")
    with open(path, "rb") as file:
        head = file.read(16)
    is_zip = head.startswith(_ZIP_MAGIC)
    is_legacy = head[:1] == b"\x80" and head[2:14] == _LEGACY_MAGIC
    if not (is_zip or is_legacy):
        kind = "it is empty" if not head else f"it starts with {head[:8]!r}"
        raise CheckpointError(
            f"{what} {path} is not a PyTorch checkpoint (the file is corrupt or of another "
            f"format: {kind})"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and is_zip)
    except Exception as error:  # torch raises many types for damaged files
        text = str(error)
        found = _GLOBAL.search(text) if "weights only load failed" in text.lower() else None
        if found:
            legacy = " (legacy non-zip format)" if is_legacy else ""
            raise CheckpointError(
                f"{what} {path}{legacy} holds Python objects other than tensors and plain "
                f"values ({found.group(0)}); geochange only reads such files with "
                f"torch.load(weights_only=True), which cannot run code; {_CONVERT_HINT}"
            ) from error
        if "TorchScript" in text:
            raise CheckpointError(
                f"{what} {path} is a TorchScript archive (torch.jit.save), not a checkpoint or "
                "state dict; save the model's weights with torch.save(model.state_dict(), path)"
            ) from error
        raise CheckpointError(
            f"{what} {path} is corrupt or truncated ({type(error).__name__}: {_detail(text)})"
        ) from error


def _detail(text: str) -> str:
    """The informative line of a torch error (its weights-only preamble says nothing useful)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()[:200] or line[:200]
    return lines[0][:200] if lines else ""


def load_checkpoint_dict(
    path: str | Path, *, map_location: Any = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Load a checkpoint file, turning every failure into a :class:`CheckpointError`.

    Only tensors and plain Python values are unpickled (``weights_only=True``, see
    :func:`load_torch_file`), so reading an untrusted file cannot run code.

    Args:
        path: Checkpoint file (``.ckpt``).
        map_location: Device mapping of the tensors (default: the CPU).
        mmap: Map the tensor data instead of reading it (for metadata-only reads).

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: If the file is missing, unreadable, corrupt, holds Python objects or
            is not a dict.
    """
    checkpoint = load_torch_file(path, what="checkpoint", map_location=map_location, mmap=mmap)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(checkpoint).__name__}, "
            "not a Lightning checkpoint dict"
        )
    return checkpoint


def validate_metadata(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Return the geochange metadata of a loaded checkpoint dict, checking it is complete.

    Args:
        checkpoint: Loaded checkpoint.
        path: Where it came from (for messages).

    Returns:
        A copy of ``checkpoint["geochange"]`` with current key names (``patch_size``; the
        old ``tile_size`` still reads, with a ``DeprecationWarning``).

    Raises:
        CheckpointError: If it is not a Lightning checkpoint, lacks geochange metadata, or the
            metadata disagrees with the Lightning hyper-parameters (task, model, backbone,
            bands, normalization, ...), which rebuild the model.
    """
    if "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (no 'state_dict'; keys: "
            f"{sorted(map(str, checkpoint))[:6]}); a bare model state dict cannot be used "
            "by the trainer or predictor"
        )
    stored = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(stored, dict):
        raise CheckpointError(
            f"{path} is a Lightning checkpoint but not a geochange one (no "
            f"'{CHECKPOINT_KEY}' metadata); train it with geochange.ChangeTrainer (a "
            "TorchGeo ChangeDetection checkpoint loads with load_model or "
            "ChangePredictor.from_checkpoint)"
        )
    metadata = _current_names(stored, path)
    missing = [key for key in METADATA_KEYS if key not in metadata]
    if missing:
        raise CheckpointError(f"{path}: geochange metadata lacks keys {missing}")
    if metadata["task"] not in ("binary", "semantic"):
        raise CheckpointError(f"{path}: unknown task {metadata['task']!r} in geochange metadata")
    _check_hyper_parameters(metadata, checkpoint.get("hyper_parameters"), path)
    return metadata


def _current_names(stored: dict[str, Any], path: str | Path) -> _MetadataDict:
    """``stored`` with renamed keys under their current name (both present must agree)."""
    metadata = _MetadataDict(stored)
    for old, new in _RENAMED.items():
        if old not in metadata:
            continue
        value = metadata.pop(old)
        if new in metadata and _plain(metadata[new]) != _plain(value):
            raise CheckpointError(
                f"{path}: geochange metadata has {new}={metadata[new]!r} and its old name "
                f"{old}={value!r}; the file was edited or written by another program"
            )
        metadata.setdefault(new, value)
    return metadata


#: Metadata entries that must equal a Lightning hyper-parameter, as (metadata key, hparam
#: key): the model is rebuilt from the hyper-parameters, the predictor's inputs come from the
#: metadata. The trainers' hyper-parameter for the training patch is ``patch_size``
#: (``tile_size`` in checkpoints written before docs/glossary.md).
_SHARED_KEYS = (
    ("task", "task"),
    ("in_channels", "in_channels"),
    ("num_classes", "num_classes"),
    ("normalization", "normalization"),
    ("bands", "bands"),
    ("patch_size", "patch_size"),
    ("input_range", "input_range"),
)
#: The same pairs under the hyper-parameters' old names: checked when an old file has them,
#: never written.
_OLD_SHARED_KEYS = (("patch_size", "tile_size"),)


def _check_hyper_parameters(metadata: dict[str, Any], hparams: Any, path: str | Path) -> None:
    """Raise when the geochange metadata and the Lightning hyper-parameters disagree."""
    if not isinstance(hparams, dict):
        return
    shared = (*_SHARED_KEYS, *_OLD_SHARED_KEYS)
    keys = [(ours, theirs) for ours, theirs in shared if theirs in hparams]
    if metadata.get("task") == "binary":
        # Binary registry models ignore it (a semi-supervised trainer may save it anyway).
        keys = [pair for pair in keys if pair[0] != "num_classes"]
    pairs = [(ours, metadata.get(ours), hparams[theirs]) for ours, theirs in keys]
    if isinstance(hparams.get("model"), str):  # a registry model (user modules are not saved)
        pairs.append(("model", metadata.get("model"), hparams["model"]))
        kwargs = metadata.get("model_kwargs")
        if "backbone" in hparams and isinstance(kwargs, dict):
            pairs.append(("backbone", kwargs.get("backbone"), hparams["backbone"]))
    differences = [
        f"{key}: geochange metadata {ours!r}, hyper_parameters {theirs!r}"
        for key, ours, theirs in pairs
        if _plain(ours) != _plain(theirs)
    ]
    if differences:
        raise CheckpointError(
            f"{path}: the geochange metadata disagrees with the Lightning hyper-parameters "
            f"({'; '.join(differences)}); the file was edited or written by another program"
        )


def write_metadata(
    checkpoint: dict[str, Any], metadata: CheckpointMetadata | Mapping[str, Any]
) -> None:
    """Store ``metadata`` as ``checkpoint["geochange"]``, keeping the hyper-parameters in step.

    The saved hyper-parameters get the same normalization, bands, patch size and input range,
    so that reloading the trainer restores what the predictor reads.

    Args:
        checkpoint: The checkpoint dict being saved (edited in place).
        metadata: What to store; a mapping may use old key names (they are renamed).
    """
    if not isinstance(metadata, CheckpointMetadata):
        metadata = CheckpointMetadata.from_dict(metadata)
    stored = metadata.to_dict()
    checkpoint[CHECKPOINT_KEY] = stored
    hparams = checkpoint.get("hyper_parameters")
    if isinstance(hparams, dict):
        for ours, theirs in _SHARED_KEYS:
            if ours in ("normalization", "bands", "patch_size", "input_range"):
                hparams[theirs] = stored[ours]


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists, so saved sequences compare by content."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def describe_state_dict_mismatch(
    expected: Mapping[str, Any], given: Mapping[str, Any], *, strict: bool = True, examples: int = 5
) -> str:
    """Summarise why a state dict does not fit a module: every problem counted, a few named.

    Args:
        expected: The module's own ``state_dict()``.
        given: The state dict that failed to load.
        strict: Whether missing and unexpected keys count (as in ``load_state_dict``).
        examples: Keys named per kind of problem.

    Returns:
        E.g. ``"2 missing keys (a, b); 1 key with another shape (c (checkpoint [8] vs model
        [16]))"``; empty when keys and shapes all match.
    """

    def shape(value: Any) -> list[int]:
        return list(getattr(value, "shape", ()))

    missing = [key for key in expected if key not in given] if strict else []
    unexpected = [key for key in given if key not in expected] if strict else []
    reshaped = [
        f"{key} (checkpoint {shape(given[key])} vs model {shape(value)})"
        for key, value in expected.items()
        if key in given and shape(given[key]) != shape(value)
    ]
    parts = []
    for keys, singular, plural in (
        (missing, "missing key", "missing keys"),
        (unexpected, "unexpected key", "unexpected keys"),
        (reshaped, "key with another shape", "keys with another shape"),
    ):
        if keys:
            more = f", and {len(keys) - examples} more" if len(keys) > examples else ""
            label = singular if len(keys) == 1 else plural
            parts.append(f"{len(keys)} {label} ({', '.join(keys[:examples])}{more})")
    return "; ".join(parts)


def read_checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    """Read what inference needs from a geochange checkpoint, without building the model.

    Args:
        path: Checkpoint written by :class:`geochange.trainers.ChangeTrainer`.

    Returns:
        Dict with keys ``task`` (``"binary"`` or ``"semantic"``), ``model`` (registry name),
        ``model_kwargs`` (keyword arguments of :func:`geochange.models.build_model`, incl.
        ``backbone``, ``in_channels``, ``num_classes``), ``in_channels``, ``num_classes``,
        ``class_names``, ``normalization`` (``{"mean": [...], "std": [...]}`` or ``None``),
        ``bands``, ``patch_size`` (the training patch; ``["tile_size"]``, its old name, still
        reads with a ``DeprecationWarning``), ``version`` (geochange version that wrote it),
        plus ``trainer`` (class path of the LightningModule) and ``input_range``
        (``{"dtype", "min": [...], "max": [...]}`` of the training imagery, checked by the
        predictor; None when unknown, absent from checkpoints written before it was added).
        :class:`CheckpointMetadata` documents each field.

    Raises:
        CheckpointError: For a missing, corrupt, non-Lightning or non-geochange file.
    """
    # Memory-mapped: only the pickled structure is read, not the weights.
    return validate_metadata(load_checkpoint_dict(path, mmap=True), path)


def load_model(
    path: str | Path,
    *,
    model: nn.Module | None = None,
    map_location: Any = "cpu",
    strict: bool = True,
) -> tuple[nn.Module, CheckpointMetadata]:
    """Rebuild a checkpoint's model from the registry and load its weights (no Lightning).

    The file is read once, with ``torch.load(weights_only=True)``: it cannot run code. A
    TorchGeo ``ChangeDetection`` checkpoint is recognised by its hyper-parameters and rebuilt by
    :func:`geochange.models.torchgeo_checkpoint.torchgeo_model_from_checkpoint`.

    Args:
        path: Checkpoint written by a geochange trainer.
        model: The module to load the weights into, for a checkpoint trained with a user
            ``nn.Module`` (registry models are rebuilt from the metadata).
        map_location: Device mapping of the tensors (default: the CPU).
        strict: Require the model's weights to match the checkpoint's exactly.

    Returns:
        ``(module, metadata)``: the model in eval mode with the checkpoint's weights, and the
        checkpoint's metadata.

    Raises:
        CheckpointError: For a missing, corrupt, non-Lightning or non-geochange file, one
            holding Python objects, metadata that disagrees with the hyper-parameters, a user
            model checkpoint without ``model``, or weights that do not fit the model.
    """
    checkpoint = load_checkpoint_dict(path, map_location=map_location)
    return model_from_checkpoint(checkpoint, path, model=model, strict=strict)


def model_from_checkpoint(
    checkpoint: dict[str, Any],
    path: str | Path = "<checkpoint>",
    *,
    model: nn.Module | None = None,
    strict: bool = True,
) -> tuple[nn.Module, CheckpointMetadata]:
    """:func:`load_model` for a checkpoint dict already read (no second read of the file).

    Args:
        checkpoint: The dict from :func:`load_checkpoint_dict`.
        path: Where it came from (for messages).
        model: As for :func:`load_model`.
        strict: As for :func:`load_model`.

    Returns:
        As :func:`load_model`.

    Raises:
        CheckpointError: As :func:`load_model`.
    """
    from geochange.models.torchgeo_checkpoint import (  # imports the models: lazily
        is_torchgeo_checkpoint,
        torchgeo_model_from_checkpoint,
    )

    if model is None and is_torchgeo_checkpoint(checkpoint):
        return torchgeo_model_from_checkpoint(checkpoint, str(path), strict=strict)
    metadata = CheckpointMetadata.from_dict(validate_metadata(checkpoint, path))
    if model is None:
        model = _build_registry_model(checkpoint, metadata, path)
    # The trainer holds the network as ``self.model``; the other entries (loss buffers) are
    # training state the model does not need.
    state = {
        key[len(_MODEL_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(_MODEL_PREFIX)
    }
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as error:
        # torch's message lists every key on many lines; summarise all of it on one.
        problems = describe_state_dict_mismatch(
            {_MODEL_PREFIX + key: value for key, value in model.state_dict().items()},
            {_MODEL_PREFIX + key: value for key, value in state.items()},
            strict=strict,
        )
        raise CheckpointError(
            f"{path}: weights do not fit {type(model).__name__}(model={metadata.model!r}, "
            f"task={metadata.task!r}): {problems or ' '.join(str(error).split())}"
        ) from error
    except Exception as error:  # torch raises many types for foreign values
        raise CheckpointError(f"cannot load checkpoint {str(path)!r}: {error}") from error
    return model.eval(), metadata


def _build_registry_model(
    checkpoint: dict[str, Any], metadata: CheckpointMetadata, path: str | Path
) -> nn.Module:
    """The registry model the checkpoint was trained with, randomly initialised."""
    from geochange.models import build_model  # the models import this module's file reader

    hparams = checkpoint.get("hyper_parameters")
    hparams = hparams if isinstance(hparams, dict) else {}
    if "model" not in hparams:
        raise CheckpointError(
            f"{path} was trained with a user model ({metadata.model}); pass it again: "
            "load_model(path, model=MyModel(...)) or "
            "ChangeTrainer.load_from_checkpoint(path, model=MyModel(...))"
        )
    try:
        # Pretrained weights were only the starting point: never fetch them again on load.
        return build_model(
            metadata.model,
            weights=None,
            freeze_backbone=bool(hparams.get("freeze_backbone", False)),
            **metadata.model_kwargs,
        )
    except CheckpointError:
        raise
    except Exception as error:  # a foreign or edited file can name anything
        raise CheckpointError(f"cannot load checkpoint {str(path)!r}: {error}") from error
