"""``geochange fit | validate | test --config CONFIG.yaml``: training through LightningCLI.

Configs follow TorchGeo's ``torchgeo fit`` style::

    model:
      class_path: ChangeTrainer
      init_args: {model: fusion_unet, backbone: resnet18, task: binary}
    data:
      class_path: ChangeDataModule          # geo path: pre/post rasters
      init_args: {pre: pre.tif, post: post.tif, change: change.tif, patch_size: 256}

Short class names resolve for the trainer, :class:`~geochange.datamodules.ChangeDataModule` and
the two config-friendly datamodules defined here: :class:`FolderChangeDataModule` (benchmark
folders, i.e. ``ChangeDataModule.from_folder``) and :class:`SyntheticSceneDataModule` (generates
a synthetic scene on first use, so a config runs out of the box). See ``examples/configs/``.
"""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from geochange.datamodules import ChangeDataModule
from geochange.errors import ConfigurationError, GeochangeError

__all__ = ["FolderChangeDataModule", "SyntheticSceneDataModule", "main"]

# Raster access settings for remote / large files (as TorchGeo's CLI sets them).
_GDAL_SETTINGS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_MAX_RAW_BLOCK_CACHE_SIZE": "200000000",
    "GDAL_SWATH_SIZE": "200000000",
    "VSI_CURL_CACHE_SIZE": "200000000",
}


class FolderChangeDataModule(ChangeDataModule):
    """:meth:`ChangeDataModule.from_folder` as a class, so YAML configs can build it.

    Args:
        root: Dataset root (LEVIR-CD / WHU-CD / DSIFN ``A/B/label``, SECOND, Hi-UCD).
        layout: ``"binary"``, ``"second"`` or ``"hiucd"``.
        train_split: Training split name (folder or ``list/<name>.txt``).
        val_split: Validation split name (skipped with a warning when missing).
        test_split: Test split name (skipped with a warning when missing).
        patch_size: Cut images into patches of this size.
        batch_size: Samples per batch.
        num_workers: DataLoader workers.
        normalization: ``{"mean": [...], "std": [...]}``; computed from training samples if None.
        stats_samples: Samples read to compute the normalization.
        augment: Default augmentation on/off.
        date_swap: Probability of swapping the dates during augmentation.
        value_range: Pixel value mapped to 1.0 for photometric jitter (``"auto"``).
        labeled_fraction: Share of training pairs keeping labels (semi-supervised).
        seed: Seed of the labeled subset and samplers.
        dataset_kwargs: Extra dataset arguments (``stride``, ``class_names``, folder names).
    """

    def __init__(
        self,
        root: str,
        layout: Literal["binary", "second", "hiucd"] = "binary",
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        *,
        patch_size: int = 256,
        batch_size: int = 8,
        num_workers: int = 0,
        normalization: dict[str, list[float]] | None = None,
        stats_samples: int = 64,
        augment: bool = True,
        date_swap: float = 0.0,
        value_range: float | str | None = "auto",
        labeled_fraction: float | None = None,
        seed: int = 0,
        dataset_kwargs: dict[str, Any] | None = None,
    ) -> None:
        built = ChangeDataModule.from_folder(
            root,
            layout=layout,
            train_split=train_split,
            val_split=val_split,
            test_split=test_split,
            dataset_kwargs=dataset_kwargs,
            patch_size=patch_size,
            batch_size=batch_size,
            num_workers=num_workers,
            normalization=normalization,
            stats_samples=stats_samples,
            augment=augment,
            date_swap=date_swap,
            value_range=value_range,
            labeled_fraction=labeled_fraction,
            seed=seed,
        )
        # from_folder returns a fully set-up ChangeDataModule; adopt its state.
        self.__dict__.update(built.__dict__)


class SyntheticSceneDataModule(ChangeDataModule):
    """A :class:`ChangeDataModule` over a synthetic scene, generated on first use.

    The scene (:func:`geochange.synthetic.make_scene`) is written to ``root`` on first use,
    then read through the geo path like real rasters. An existing scene is reused when its
    ``scene.json`` records the requested ``height``, ``width``, ``scene_seed`` and ``bands``
    (every scene holds both binary and semantic labels, so ``task`` never needs a new one).
    Otherwise it is regenerated in place, with a warning, but only when ``root`` holds nothing
    but that earlier scene's files; a folder with other files, or with scene file names but no
    ``scene.json``, is refused with a :class:`~geochange.errors.ConfigurationError`, so no user
    file is ever overwritten.

    Args:
        root: Folder of the scene (created if needed).
        height: Scene height in pixels.
        width: Scene width in pixels.
        scene_seed: Seed of the generated content.
        bands: Bands per date.
        task: ``"binary"`` (change labels) or ``"semantic"`` (also per-date class rasters).
        patch_size: Window side in pixels.
        batch_size: Samples per batch.
        samples_per_epoch: Random training windows per epoch.
        num_workers: DataLoader workers.
        splits: Train/val/test shares of the scene.
        balanced: Draw part of the training windows around change.
        normalization: Band statistics; computed if None.
        augment: Default augmentation on/off.
        seed: Seed of the splits and samplers.
    """

    def __init__(
        self,
        root: str = "data/synthetic",
        height: int = 2048,
        width: int = 2048,
        scene_seed: int = 0,
        bands: int = 3,
        task: Literal["binary", "semantic"] = "binary",
        *,
        patch_size: int = 256,
        batch_size: int = 8,
        samples_per_epoch: int | None = None,
        num_workers: int = 0,
        splits: Sequence[float] = (0.8, 0.1, 0.1),
        balanced: bool = True,
        normalization: dict[str, list[float]] | None = None,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        scene = _synthetic_scene(Path(root), height, width, scene_seed, bands)
        semantic = task == "semantic"
        super().__init__(
            pre=str(scene.pre),
            post=str(scene.post),
            change=str(scene.change),
            semantic_pre=str(scene.semantic_pre) if semantic else None,
            semantic_post=str(scene.semantic_post) if semantic else None,
            patch_size=patch_size,
            batch_size=batch_size,
            samples_per_epoch=samples_per_epoch,
            num_workers=num_workers,
            splits=splits,
            balanced=balanced,
            normalization=normalization,
            augment=augment,
            seed=seed,
        )


def _synthetic_scene(folder: Path, height: int, width: int, seed: int, bands: int) -> Any:
    """The scene in ``folder`` if it matches the request, else a new one (see the class)."""
    from affine import Affine

    from geochange.io import atomic_output, partial_path
    from geochange.synthetic import MANIFEST_NAME, Scene, make_scene

    wanted = {"height": height, "width": width, "seed": seed, "bands": bands}
    if (folder / MANIFEST_NAME).exists():
        scene = Scene.load(folder)
        found = {"height": scene.height, "width": scene.width, "seed": scene.seed}
        found["bands"] = scene.bands
        if found == wanted:
            return scene
        names = {MANIFEST_NAME, *(p.name for p in _scene_files(scene))}
        # Leftovers of an interrupted generation are the generator's too.
        ours = names | {partial_path(n).name for n in names} | {f".{n}.tiled.tif" for n in names}
        others = sorted(p.name for p in folder.iterdir() if p.name not in ours)
        describe = ", ".join(f"{k}={v}" for k, v in found.items())
        asked = ", ".join(f"{k}={v}" for k, v in wanted.items())
        if others:
            raise ConfigurationError(
                f"{str(folder)!r} holds a synthetic scene with {describe}, not the requested "
                f"{asked}, and other files too ({', '.join(others[:5])}), so it is not "
                "regenerated there: use another root, or the scene's own height/width/"
                "scene_seed/bands"
            )
        warnings.warn(
            f"regenerating the synthetic scene in {str(folder)!r}: it had {describe}, the "
            f"requested scene has {asked}",
            UserWarning,
            stacklevel=3,
        )
        # A regeneration that fails half way must not leave a manifest describing other files;
        # one that fails before writing anything (bad arguments) keeps the old scene usable.
        manifest = folder / MANIFEST_NAME
        text = manifest.read_text()
        before = {p: _stamp(p) for p in _scene_files(scene)}
        manifest.unlink()
        try:
            return make_scene(folder, height, width, seed=seed, bands=bands)
        except BaseException:
            if all(_stamp(p) == stamp for p, stamp in before.items()):
                with atomic_output(manifest) as tmp:
                    tmp.write_text(text)
            raise
    if folder.is_dir():
        # Only the file names matter here: a placeholder scene rooted in the folder gives them.
        placeholder = Scene(folder, 0, 0, "", 0.0, Affine.identity())
        clash = sorted(p.name for p in _scene_files(placeholder) if p.exists())
        if clash:
            raise ConfigurationError(
                f"{str(folder)!r} holds {', '.join(clash)} but no {MANIFEST_NAME}, so they may "
                "not be a generated scene and are not overwritten: use another root, or remove "
                "them if they are left over from an interrupted generation"
            )
    return make_scene(folder, height, width, seed=seed, bands=bands)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _scene_files(scene: Any) -> list[Path]:
    return [
        scene.pre,
        scene.post,
        scene.change,
        scene.semantic_pre,
        scene.semantic_post,
        scene.changed_buildings,
    ]
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
