"""Reading and validating geochange checkpoints without building a model.

A geochange checkpoint is a Lightning checkpoint whose top-level dict holds a ``"geochange"``
entry written by :meth:`geochange.trainers.ChangeTrainer.on_save_checkpoint`: everything the
predictor needs (task, model name and arguments, bands, normalization, tile size, class names).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from geochange.errors import CheckpointError

__all__ = [
    "CHECKPOINT_KEY",
    "METADATA_KEYS",
    "describe_state_dict_mismatch",
    "load_checkpoint_dict",
    "load_torch_file",
    "read_checkpoint_metadata",
]

#: Top-level checkpoint key holding the geochange metadata.
CHECKPOINT_KEY = "geochange"

#: Keys always present in ``checkpoint["geochange"]``.
METADATA_KEYS = (
    "task",
    "model",
    "model_kwargs",
    "in_channels",
    "num_classes",
    "class_names",
    "normalization",
    "bands",
    "tile_size",
    "version",
)


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
        A copy of ``checkpoint["geochange"]``.

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
    metadata = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(metadata, dict):
        raise CheckpointError(
            f"{path} is a Lightning checkpoint but not a geochange one (no "
            f"'{CHECKPOINT_KEY}' metadata); train it with geochange.ChangeTrainer"
        )
    missing = [key for key in METADATA_KEYS if key not in metadata]
    if missing:
        raise CheckpointError(f"{path}: geochange metadata lacks keys {missing}")
    if metadata["task"] not in ("binary", "semantic"):
        raise CheckpointError(f"{path}: unknown task {metadata['task']!r} in geochange metadata")
    _check_hyper_parameters(metadata, checkpoint.get("hyper_parameters"), path)
    return dict(metadata)


#: Metadata entries that must equal the Lightning hyper-parameter of the same name: the model is
#: rebuilt from the hyper-parameters, the predictor's inputs come from the metadata.
_SHARED_KEYS = (
    "task",
    "in_channels",
    "num_classes",
    "normalization",
    "bands",
    "tile_size",
    "input_range",
)


def _check_hyper_parameters(metadata: dict[str, Any], hparams: Any, path: str | Path) -> None:
    """Raise when the geochange metadata and the Lightning hyper-parameters disagree."""
    if not isinstance(hparams, dict):
        return
    keys = [key for key in _SHARED_KEYS if key in hparams]
    if metadata.get("task") == "binary":
        # Binary registry models ignore it (a semi-supervised trainer may save it anyway).
        keys = [key for key in keys if key != "num_classes"]
    pairs = [(key, metadata.get(key), hparams[key]) for key in keys]
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
        ``bands``, ``tile_size``, ``version`` (geochange version that wrote it), plus
        ``trainer`` (class path of the LightningModule) and ``input_range``
        (``{"dtype", "min": [...], "max": [...]}`` of the training imagery, checked by the
        predictor; None when unknown, absent from checkpoints written before it was added).

    Raises:
        CheckpointError: For a missing, corrupt, non-Lightning or non-geochange file.
    """
    # Memory-mapped: only the pickled structure is read, not the weights.
    return validate_metadata(load_checkpoint_dict(path, mmap=True), path)
