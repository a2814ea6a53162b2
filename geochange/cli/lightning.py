"""``geochange fit | validate | test --config CONFIG.yaml``: training through LightningCLI.

Configs follow TorchGeo's ``torchgeo fit`` style::

    model:
      class_path: ChangeTrainer
      init_args: {model: fusion_unet, backbone: resnet18, task: binary}
    data:
      class_path: ChangeDataModule          # geo path: pre/post rasters
      init_args: {pre: pre.tif, post: post.tif, change: change.tif, patch_size: 256}

Short class names resolve for the trainer and the datamodules of :mod:`geochange.datamodules`:
:class:`~geochange.datamodules.ChangeDataModule`, the config-friendly
:class:`~geochange.datamodules.FolderChangeDataModule` (benchmark folders, i.e.
``ChangeDataModule.from_folder``) and :class:`~geochange.datamodules.SyntheticSceneDataModule`
(generates a synthetic scene on first use, so a config runs out of the box); both stay
importable from here for configs naming ``geochange.cli.lightning.X``. See ``examples/configs/``.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from geochange.datamodules import FolderChangeDataModule, SyntheticSceneDataModule
from geochange.errors import ConfigurationError, GeochangeError

__all__ = ["FolderChangeDataModule", "SyntheticSceneDataModule", "main"]

# Raster access settings for large files, set for the duration of one CLI call only. Not
# GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR (TorchGeo's CLI sets it): it hides every sidecar,
# so GDAL would ignore a scene's .ovr overviews and the .aux.xml class names and colour alpha
# geochange writes, for the rest of the process.
_GDAL_SETTINGS = {
    "GDAL_MAX_RAW_BLOCK_CACHE_SIZE": "200000000",
    "GDAL_SWATH_SIZE": "200000000",
    "VSI_CURL_CACHE_SIZE": "200000000",
}


#: ``--ckpt_path`` values Lightning resolves itself (to a checkpoint callback's files).
_CKPT_ALIASES = ("best", "last", "hpc", "registry")


class _SafeCheckpointCLI(LightningCLI):
    """LightningCLI that reads checkpoints only with ``weights_only=True``, with named errors.

    ``--ckpt_path`` is checked (it must be a geochange checkpoint of tensors and plain values)
    before Lightning opens it, and the trainer loads it with ``weights_only=True``.
    """

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse the arguments, then check ``--ckpt_path`` before Lightning reads it."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        options = self.config[subcommand]
        if options.get("weights_only") is False:
            raise ConfigurationError(
                "--weights_only=false is not supported: geochange never unpickles arbitrary "
                "objects from a checkpoint"
            )
        ckpt_path = options.get("ckpt_path")
        if ckpt_path and (Path(ckpt_path).exists() or str(ckpt_path) not in _CKPT_ALIASES):
            from geochange.checkpoint import load_checkpoint_dict, validate_metadata

            # Tensor data is memory-mapped: this reads the pickled structure, not the weights.
            validate_metadata(load_checkpoint_dict(ckpt_path, mmap=True), ckpt_path)

    def _safe_kwargs(self, method: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if "weights_only" in inspect.signature(method).parameters:
            kwargs["weights_only"] = True
        return kwargs

    def fit(self, **kwargs: Any) -> None:
        """``trainer.fit``, loading ``--ckpt_path`` with ``weights_only=True``."""
        self.trainer.fit(**self._safe_kwargs(self.trainer.fit, kwargs))

    def validate(self, **kwargs: Any) -> None:
        """``trainer.validate``, loading ``--ckpt_path`` with ``weights_only=True``."""
        self.trainer.validate(**self._safe_kwargs(self.trainer.validate, kwargs))

    def test(self, **kwargs: Any) -> None:
        """``trainer.test``, loading ``--ckpt_path`` with ``weights_only=True``."""
        self.trainer.test(**self._safe_kwargs(self.trainer.test, kwargs))


def main(argv: Sequence[str] | None = None) -> None:
    """Run LightningCLI with :class:`~geochange.trainers.ChangeTrainer` and the datamodules.

    Args:
        argv: Arguments starting with the subcommand (``["fit", "--config", "cfg.yaml"]``);
            ``None`` reads ``sys.argv``.

    Raises:
        SystemExit: With status 1 after printing a clean message for a geochange error.
    """
    from lightning.pytorch import LightningDataModule

    import geochange
    from geochange.trainers import ChangeTrainer

    saved_environ = {key: os.environ.get(key) for key in _GDAL_SETTINGS}
    for key, value in _GDAL_SETTINGS.items():
        os.environ.setdefault(key, value)
    args = list(sys.argv[1:] if argv is None else argv)
    # LightningCLI parses sys.argv and warns ("args parameter is intended to run from within
    # Python") when it is also given args, as on every console call: pass them as sys.argv.
    saved_argv = sys.argv
    sys.argv = ["geochange", *args]
    try:
        _SafeCheckpointCLI(
            model_class=ChangeTrainer,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"version": f"geochange {geochange.__version__}"},
        )
    except Exception as error:
        # jsonargparse wraps errors raised while it builds the model/datamodule in a
        # ValueError listing every Union subtype it tried: report the geochange error itself.
        cause = _geochange_error(error)
        if cause is None:
            raise
        command = args[0] if args else "fit"
        print(f"geochange {command}: error: {cause}", file=sys.stderr)
        raise SystemExit(1) from cause
    finally:
        sys.argv = saved_argv
        for key, saved in saved_environ.items():
            if saved is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = saved


def _geochange_error(error: BaseException) -> GeochangeError | None:
    """The first :class:`GeochangeError` in ``error``'s chain of causes and contexts."""
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, GeochangeError):
            return current
        # Explicit causes (``raise ... from``) first: pushed last, popped first.
        pending.extend(e for e in (current.__context__, current.__cause__) if e is not None)
    return None
