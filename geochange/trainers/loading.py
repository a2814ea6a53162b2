"""How a trainer is rebuilt from a checkpoint: one read, Lightning's loading steps, clear errors.

Also the one place of the ``tile_size`` -> ``patch_size`` rename of the trainers' argument
(docs/glossary.md): the deprecated argument and checkpoints that saved the old hyper-parameter.

:class:`CheckpointLoading` is mixed into :class:`~geochange.trainers.ChangeTrainer` (and so its
subclasses); it overrides Lightning's ``load_from_checkpoint`` and ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import lightning.pytorch as pl
import torch

# Lightning's own steps after it has read a checkpoint (instantiation with the saved
# hyper-parameters, incl. LightningCLI's allow-listed instantiator; version migrations): reused so
# a checkpoint dict read once by geochange loads exactly as Lightning would load the file.
from lightning.pytorch.core.saving import _default_map_location, _load_state
from lightning.pytorch.utilities.migration.utils import _pl_migrate_checkpoint
from torch import Tensor

from geochange._deprecation import renamed_argument
from geochange.errors import CheckpointError, ConfigurationError
from geochange.trainers.checkpoint import (
    describe_state_dict_mismatch,
    load_checkpoint_dict,
    validate_metadata,
)

__all__ = ["CheckpointLoading"]

_T = TypeVar("_T", bound="CheckpointLoading")

#: Renamed trainer hyper-parameters, old name -> current name (checkpoints keep the old one).
_RENAMED_HPARAMS = {"tile_size": "patch_size"}


def _patch_size_argument(patch_size: int | None, tile_size: int | None) -> int | None:
    """``patch_size``, or the value of its deprecated name ``tile_size`` (with a warning)."""
    return renamed_argument(
        patch_size,
        tile_size,
        old="tile_size",
        new="patch_size",
        message="the trainers' tile_size= is now patch_size= (the training patch, see "
        "docs/glossary.md); tile_size= will be removed in the next release",
        conflict="patch_size={value} and its old name tile_size={old_value} disagree",
        error=ConfigurationError,
        stacklevel=3,  # this wrapper, then the trainer's __init__: point at its caller
    )


def _current_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Saved hyper-parameters with renamed ones under their current name.

    No warning: an older geochange wrote the checkpoint, the caller did nothing wrong.
    """
    current = dict(hparams)
    for old, new in _RENAMED_HPARAMS.items():
        if old in current:
            value = current.pop(old)
            current.setdefault(new, value)
    return current


class CheckpointLoading(pl.LightningModule):
    """Checkpoint loading of geochange trainers (offline, any device, weights-only reads)."""

    model_name: str
    task: str
    #: State-dict key prefixes of buffers that are configuration, not learned weights: left out
    #: of saved checkpoints, and kept at their current values when a checkpoint lacks them.
    _UNSAVED_PREFIXES: tuple[str, ...] = ()

    def _drop_unsaved(self, checkpoint: dict[str, Any]) -> None:
        """Remove the :attr:`_UNSAVED_PREFIXES` keys from a checkpoint's ``state_dict``."""
        state = checkpoint.get("state_dict")
        if self._UNSAVED_PREFIXES and isinstance(state, dict):
            for key in [k for k in state if k.startswith(self._UNSAVED_PREFIXES)]:
                del state[key]

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load weights; weights that do not fit raise a :class:`CheckpointError` listing why.

        Buffers under :attr:`_UNSAVED_PREFIXES` that the checkpoint lacks keep their values.

        Args:
            state_dict: Saved weights.
            strict: Require the keys to match exactly.
            assign: See :meth:`torch.nn.Module.load_state_dict`.

        Returns:
            The missing and unexpected keys, as :meth:`torch.nn.Module.load_state_dict`.

        Raises:
            CheckpointError: Missing, unexpected or differently shaped weights (all counted).
        """
        if self._UNSAVED_PREFIXES:
            merged = dict(state_dict)
            for key, value in self.state_dict().items():
                if key.startswith(self._UNSAVED_PREFIXES):
                    merged.setdefault(key, value)
            state_dict = merged
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except RuntimeError as error:
            # torch's message lists every key on many lines; summarise all of it on one.
            problems = describe_state_dict_mismatch(self.state_dict(), state_dict, strict=strict)
            raise CheckpointError(
                f"weights do not fit {type(self).__name__}(model={self.model_name!r}, "
                f"task={self.task!r}): {problems or ' '.join(str(error).split())}"
            ) from error

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls: type[_T],
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> _T:
        """Load a geochange checkpoint (offline, any device), with clear errors.

        The file is read once, with ``torch.load(weights_only=True)``: it cannot run code.

        Args:
            checkpoint_path: ``.ckpt`` file written while training a :class:`ChangeTrainer`.
            map_location: Device mapping, e.g. ``"cpu"`` (default: where the tensors were
                saved, the CPU when that device is absent).
            hparams_file: Optional YAML overriding the stored hyperparameters.
            strict: Require an exact state dict match (default ``True``).
            **kwargs: Hyperparameter overrides (e.g. ``model=MyModule()`` for a user model).

        Returns:
            The trainer in eval mode-ready state, with the checkpoint's weights.

        Raises:
            CheckpointError: For a missing, corrupt, non-Lightning or non-geochange file, one
                holding Python objects, metadata that disagrees with the hyper-parameters, a
                checkpoint of another task than requested (``task=`` override), or weights that
                do not fit the model.
        """
        location = map_location if map_location is not None else _default_map_location
        checkpoint = load_checkpoint_dict(checkpoint_path, map_location=location)
        return cls.load_from_checkpoint_dict(
            checkpoint, checkpoint_path, hparams_file=hparams_file, strict=strict, **kwargs
        )

    @classmethod
    def load_from_checkpoint_dict(
        cls: type[_T],
        checkpoint: dict[str, Any],
        path: str | Path = "<checkpoint>",
        *,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> _T:
        """Build the trainer from an already loaded checkpoint dict (no second read).

        Args:
            checkpoint: The dict from :func:`geochange.trainers.checkpoint.load_checkpoint_dict`.
            path: Where it came from (for messages).
            hparams_file: Optional YAML overriding the stored hyperparameters.
            strict: Require an exact state dict match (default ``True``).
            **kwargs: Hyperparameter overrides, as for :meth:`load_from_checkpoint`.

        Returns:
            The trainer with the checkpoint's weights, on the device of those weights.

        Raises:
            CheckpointError: As :meth:`load_from_checkpoint`.
        """
        metadata = validate_metadata(checkpoint, path)
        # Pretrained weights were only the starting point: never fetch them again on load.
        kwargs.setdefault("weights", None)
        requested = kwargs.get("task")
        if requested is not None and requested != metadata["task"]:
            raise CheckpointError(
                f"{path} is a {metadata['task']!r} change checkpoint, it cannot be "
                f"loaded as task={requested!r}"
            )
        hparams = checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY, {})
        if "model" not in hparams and "model" not in kwargs:
            raise CheckpointError(
                f"{path} was trained with a user model "
                f"({metadata['model']}); pass it again: "
                "load_from_checkpoint(path, model=MyModel(...))"
            )
        # What Lightning's load_from_checkpoint does after reading the file; the caller's dict
        # is left as it was.
        checkpoint = dict(checkpoint)
        checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY] = _current_hparams(hparams)
        checkpoint = _pl_migrate_checkpoint(checkpoint, checkpoint_path=Path(path))
        if hparams_file is not None:
            checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY] = _current_hparams(
                _hparams_from_file(hparams_file)
            )
        checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY].update(kwargs)
        try:
            loaded = _load_state(cls, checkpoint, strict=strict, **kwargs)
        except CheckpointError as error:
            raise CheckpointError(f"{path}: {error}") from error
        tensors = (v for v in checkpoint["state_dict"].values() if isinstance(v, Tensor))
        device = next(tensors, torch.tensor(0)).device
        return cast(_T, loaded).to(device)


def _hparams_from_file(path: str | Path) -> dict[str, Any]:
    from lightning.pytorch.core.saving import load_hparams_from_tags_csv, load_hparams_from_yaml

    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return dict(load_hparams_from_tags_csv(str(path)))
    if suffix in (".yml", ".yaml"):
        return dict(load_hparams_from_yaml(str(path)))
    raise ConfigurationError(f"hparams_file must be .csv, .yml or .yaml, got {str(path)!r}")
