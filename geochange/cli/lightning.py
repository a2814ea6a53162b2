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

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from geochange.datamodules import ChangeDataModule
from geochange.errors import GeochangeError

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

    The scene (:func:`geochange.synthetic.make_scene`) is written to ``root`` unless
    ``root/scene.json`` already exists, then read through the geo path like real rasters.

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
        from geochange.synthetic import Scene, make_scene

        folder = Path(root)
        if (folder / "scene.json").exists():
            scene = Scene.load(folder)
        else:
            scene = make_scene(folder, height, width, seed=scene_seed, bands=bands)
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


def main(argv: Sequence[str] | None = None) -> None:
    """Run LightningCLI with :class:`~geochange.trainers.ChangeTrainer` and the datamodules.

    Args:
        argv: Arguments starting with the subcommand (``["fit", "--config", "cfg.yaml"]``);
            ``None`` reads ``sys.argv``.

    Raises:
        SystemExit: With status 1 after printing a clean message for a geochange error.
    """
    from lightning.pytorch import LightningDataModule
    from lightning.pytorch.cli import LightningCLI

    import geochange
    from geochange.trainers import ChangeTrainer

    for key, value in _GDAL_SETTINGS.items():
        os.environ.setdefault(key, value)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        LightningCLI(
            model_class=ChangeTrainer,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"version": f"geochange {geochange.__version__}"},
            args=args,
        )
    except Exception as error:
        # jsonargparse wraps errors raised while it builds the model or datamodule in its own
        # ValueError: report the geochange error behind it, as for errors raised later.
        cause = _geochange_cause(error)
        if cause is None:
            raise
        command = args[0] if args else "fit"
        print(f"geochange {command}: error: {cause}", file=sys.stderr)
        raise SystemExit(1) from error


def _geochange_cause(error: BaseException) -> GeochangeError | None:
    """``error`` itself or the first :class:`GeochangeError` it was raised from (``__cause__``)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, GeochangeError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None
