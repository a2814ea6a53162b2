"""Lightning datamodule for bi-temporal change detection (geo scenes and benchmark folders)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from geochange.datamodules.geo import open_scene, region_sampler, seeded, split_scene
from geochange.datasets import BiTemporalRasterDataset, SemanticChangeFolderDataset
from geochange.datasets.batches import select_keys, stack_samples, widen
from geochange.errors import ConfigurationError
from geochange.io import worker_init_bound_malloc
from geochange.keys import (
    DIAGNOSTIC_CHANGE,
    MASK,
    MASK_KEYS,
    MASK_POST,
    MASK_PRE,
    PSEUDO_POST,
    PSEUDO_PRE,
    check_mask_layout,
    to_mask_layout,
)
from geochange.transforms import ChangeAugmentation, NormalizeChange, compute_band_statistics
from geochange.transforms.stats import input_range_record


def stack_unlabeled(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate samples like ``stack_samples`` after dropping their label masks."""
    return stack_samples(select_keys(samples, drop=MASK_KEYS))


def stack_unlabeled_with_pseudo(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate unlabeled samples, keeping per-date semantic maps as ``pseudo_pre/post``.

    For semantic rasters that are a segmenter's output over the whole scene (DiffMatch): the
    change label is dropped, the per-date maps stay as pseudo labels.
    """
    renamed = {MASK_PRE: PSEUDO_PRE, MASK_POST: PSEUDO_POST}
    return stack_samples(select_keys(samples, drop=(MASK,), rename=renamed))


def stack_unlabeled_with_truth(
    samples: Sequence[dict[str, Any]], *, pseudo: bool = False
) -> dict[str, Any]:
    """Collate unlabeled samples keeping the change label as ``diagnostic_change``.

    For benchmarks on scenes whose unlabeled share has a ground truth (generated scenes): the
    semi-supervised trainer scores its pseudo labels against it and never trains on it.
    """
    kept = select_keys(samples, rename={MASK: DIAGNOSTIC_CHANGE})
    if pseudo:
        return stack_unlabeled_with_pseudo(kept)
    return stack_unlabeled(kept)


class ChangeDataModule(LightningDataModule):
    """Lightning datamodule streaming bi-temporal samples from a scene pair or a folder dataset.

    **Geo path** (``ChangeDataModule(pre=..., post=..., change=...)``): one
    :class:`~geochange.datasets.BiTemporalRasterDataset` is split into train/val/test regions
    (:func:`~geochange.datasets.spatial_split`): rectangular stripes across the scene when each
    stripe is at least one window wide, otherwise (a scene only a few windows long, such as
    2048 x 2048 pixels with ``patch_size=256``) a grid of window-sized blocks handed out to
    the splits in proportion to ``splits``. Windows are drawn inside the rectangles of their
    split's region, so no window crosses splits. Training draws ``samples_per_epoch`` random
    windows per epoch with :class:`~geochange.samplers.ChangeBalancedGeoSampler`
    (``change_fraction`` of them around change when ``balanced``); validation/test cover their
    region with a grid of windows.

    **Folder path** (:meth:`from_folder`): benchmark folders (LEVIR-CD/WHU-CD/DSIFN, SECOND,
    Hi-UCD) with their own splits.

    Batches are dicts with ``image`` ``[B, 2, C, H, W]`` float32, ``mask`` ``[B, H, W]`` long
    and, for semantic labels, ``mask_pre``/``mask_post``. In ``on_after_batch_transfer`` (on the
    device) training batches are augmented with :class:`~geochange.transforms.ChangeAugmentation`
    (shared geometry, per-date photometry, optional date swap), then every batch is normalized
    with :attr:`normalization`.

    **Semi-supervised training**: with ``labeled_fraction`` (e.g. 0.05) only that share of the
    training data keeps labels: on the geo path a stripe (or blocks) of that share of the
    training region, cut from its largest rectangle, on the folder path a seeded random subset
    of training pairs. ``train_dataloader()`` yields the labeled batches;
    :meth:`unlabeled_dataloader` yields batches without masks from the rest.
    :meth:`semi_supervised_dataloader` (or ``combine_unlabeled=True``, which makes it the
    ``train_dataloader``) yields ``{"labeled": batch, "unlabeled": batch}``; labeled batches are
    augmented and normalized, unlabeled ones only normalized so a semi-supervised trainer can
    make its own weak/strong views with ``ChangeAugmentation(value_range=None)``.

    Args:
        pre: pre-date image(s) (file, directory, list, or TorchGeo RasterDataset).
        post: post-date image(s).
        change: change label (raster or vector), optional.
        semantic_pre: pre-date semantic label (raster or vector), optional.
        semantic_post: post-date semantic label, optional.
        patch_size: window / patch side in pixels.
        batch_size: samples per batch.
        samples_per_epoch: random training windows per epoch (geo path; default: number of
            non-overlapping windows of the training region).
        num_workers: DataLoader worker processes.
        splits: train/val/test shares of the scene (geo path).
        balanced: draw ``change_fraction`` of the training windows around change (geo path).
        change_fraction: share of change-centred windows when ``balanced``.
        normalization: ``{"mean": [...], "std": [...]}`` per band in raw pixel units; computed
            once from ``stats_samples`` random training windows when None.
        stats_samples: windows read to compute the normalization.
        augment: True for the default augmentation, False for none, or a
            :class:`~geochange.transforms.ChangeAugmentation`.
        date_swap: probability of swapping the dates in the default augmentation.
        per_date_shift: largest independent translation of each date, in pixels, in the
            default augmentation (0: none); masks follow the pre date (see
            :class:`~geochange.transforms.ChangeAugmentation`).
        value_range: pixel value mapped to 1.0 for photometric jitter; ``"auto"`` uses 255 for
            8-bit imagery and ``max(mean + 3 std)`` otherwise.
        labeled_fraction: share of the training data that keeps labels (None: all).
        unlabeled_batch_size: batch size of the unlabeled loader (default ``batch_size``).
        combine_unlabeled: make ``train_dataloader`` return labeled + unlabeled batches.
        semantic_as_pseudo: the ``semantic_pre``/``semantic_post`` rasters are per-date maps
            available over the whole scene (e.g. an open-vocabulary segmenter's output, as in
            DiffMatch): unlabeled batches keep them as ``pseudo_pre``/``pseudo_post`` instead of
            dropping them with the change label.
        unlabeled_truth: keep the change label of unlabeled batches as ``diagnostic_change``
            (generated scenes, benchmarks): the semi-supervised trainer logs the precision and
            recall of its pseudo labels against it; no loss reads it.
        seed: seed of the splits, samplers and labeled subset.
        mask_values: how the change-label raster stores change (geo path): ``"auto"`` (0 no
            change, 1 change, 255 ignore; a 0/255 label is refused when the datamodule is
            built, with a message naming this option), ``"0,1"`` or ``"0,255"`` (255 =
            change); see :func:`geochange.io.check_change_mask`.
        dataset_kwargs: extra arguments for :class:`BiTemporalRasterDataset` (``crs``, ``res``,
            ``bands``, ``class_names``, ``class_attribute``, ...). The geo path's dataset is
            ``compact`` by default: its loaders yield uint8 images and masks from 8-bit
            rasters (a quarter of the bytes to copy and to hand over from workers), which
            :meth:`apply_batch_transforms` (Lightning's ``on_after_batch_transfer``) turns
            into float32 images and long masks on the device; ``{"compact": False}`` keeps
            float32 / long batches from the loader.
        mask_layout: ``"geochange"`` (masks ``[B, H, W]``) or ``"torchgeo"`` (``[B, 1, H, W]``,
            what TorchGeo's ``ChangeDetection`` task trains on).

    Raises:
        ConfigurationError: inconsistent arguments (bad fractions; a scene with fewer windows
            than non-empty splits, with the ``patch_size`` or ``splits`` that would work).
        DataError: unusable input data (see the dataset classes).
    """

    def __init__(
        self,
        pre: Any = None,
        post: Any = None,
        change: Any = None,
        semantic_pre: Any = None,
        semantic_post: Any = None,
        *,
        patch_size: int = 256,
        batch_size: int = 8,
        samples_per_epoch: int | None = None,
        num_workers: int = 0,
        splits: Sequence[float] = (0.8, 0.1, 0.1),
        balanced: bool = True,
        change_fraction: float = 0.5,
        normalization: dict[str, list[float]] | None = None,
        stats_samples: int = 64,
        augment: bool | ChangeAugmentation = True,
        date_swap: float = 0.0,
        per_date_shift: float = 0.0,
        value_range: float | str | None = "auto",
        labeled_fraction: float | None = None,
        unlabeled_batch_size: int | None = None,
        combine_unlabeled: bool = False,
        semantic_as_pseudo: bool = False,
        unlabeled_truth: bool = False,
        seed: int = 0,
        mask_values: str = "auto",
        dataset_kwargs: dict[str, Any] | None = None,
        mask_layout: str = "geochange",
    ) -> None:
        super().__init__()
        #: Layout of the label keys of the batches it hands out (after the batch transforms).
        self.mask_layout = check_mask_layout(mask_layout)
        if patch_size <= 0 or batch_size <= 0:
            raise ConfigurationError(
                f"patch_size and batch_size must be positive, got {patch_size}, {batch_size}"
            )
        if labeled_fraction is not None and not 0 < labeled_fraction < 1:
            raise ConfigurationError(f"labeled_fraction must be in (0, 1), got {labeled_fraction}")
        if combine_unlabeled and labeled_fraction is None:
            raise ConfigurationError("combine_unlabeled=True needs a labeled_fraction")
        if (pre is None) != (post is None):
            raise ConfigurationError("both pre and post images are needed")
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.unlabeled_batch_size = unlabeled_batch_size or batch_size
        self.samples_per_epoch = samples_per_epoch
        self.num_workers = num_workers
        self.balanced = balanced
        self.change_fraction = change_fraction
        self.stats_samples = stats_samples
        self.labeled_fraction = labeled_fraction
        self.combine_unlabeled = combine_unlabeled
        self.semantic_as_pseudo = semantic_as_pseudo
        self.unlabeled_truth = unlabeled_truth
        self.seed = seed
        self._normalization = normalization
        self._input_range: dict[str, Any] | None = None
        self._augment_arg = augment
        self._date_swap = date_swap
        self._per_date_shift = per_date_shift
        self._value_range_arg = value_range
        self._augmentation: ChangeAugmentation | None = None
        self._normalize: NormalizeChange | None = None
        self._samplers: dict[str, Sampler[Any]] = {}
        #: The scene's dataset (geo path; None for folders).
        self.geo_dataset: BiTemporalRasterDataset | None = None
        #: The regions of the scene by split name (geo path).
        self.rois: dict[str, Any] = {}
        #: The datasets by split name (folder path, filled by :meth:`from_folder`).
        self.folder_datasets: dict[str, Dataset[Any] | None] = {}
        if pre is None:
            return
        # Opening the scene reads its headers and a bounded sample of its labels, and cutting
        # the regions is geometry: both are cheap, and bad input fails here with a named
        # error, not hours later. The costly parts (samplers, band statistics) wait for setup.
        self.geo_dataset = open_scene(
            pre,
            post,
            change,
            semantic_pre,
            semantic_post,
            mask_values=mask_values,
            # Compact samples (uint8 images and masks from 8-bit rasters): a quarter of the
            # bytes through the loader; apply_batch_transforms widens them on the device.
            dataset_kwargs={"compact": True, **(dataset_kwargs or {})},
        )
        self.rois = split_scene(self.geo_dataset, splits, patch_size, labeled_fraction)

    @property
    def mode(self) -> str:
        """``"geo"`` for a scene pair, ``"folder"`` for a benchmark folder."""
        return "geo" if self.geo_dataset is not None else "folder"

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_folder(
        cls,
        root: str | os.PathLike[str],
        *,
        layout: str = "binary",
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        dataset_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> ChangeDataModule:
        """Build a datamodule over a benchmark folder.

        The folder's splits are opened now (see
        :func:`~geochange.datamodules.folder.open_folder_splits`, which describes the layouts);
        :class:`~geochange.datamodules.FolderChangeDataModule` does the same from a config.

        Args:
            root: dataset root.
            layout: one of ``binary``, ``second``, ``hiucd``.
            train_split: the split to train on (None: none).
            val_split: the validation split, skipped with a warning when the folder lacks it.
            test_split: the test split, skipped the same way.
            dataset_kwargs: extra arguments of the folder dataset class.
            **kwargs: datamodule arguments (``patch_size``, ``batch_size``, ...).

        Returns:
            The datamodule.

        Raises:
            DataError: the training split is missing or a file lacks its pair/label.
        """
        module = cls(**kwargs)
        module._open_folder(root, layout, train_split, val_split, test_split, dataset_kwargs)
        return module

    def _open_folder(
        self,
        root: str | os.PathLike[str],
        layout: str,
        train_split: str | None,
        val_split: str | None,
        test_split: str | None,
        dataset_kwargs: dict[str, Any] | None,
    ) -> None:
        """Open a benchmark folder's splits into :attr:`folder_datasets` (its caller warns)."""
        # Imported here: geochange.datamodules.folder subclasses this class.
        from geochange.datamodules.folder import open_folder_splits

        self.folder_datasets = open_folder_splits(
            root,
            layout=layout,
            train_split=train_split,
            val_split=val_split,
            test_split=test_split,
            patch_size=self.patch_size,
            labeled_fraction=self.labeled_fraction,
            seed=self.seed,
            dataset_kwargs=dataset_kwargs,
            stacklevel=3,  # the caller of from_folder / FolderChangeDataModule
        )

    # -- metadata the trainer reads ---------------------------------------------------------

    def _first_dataset(self) -> Any:
        if self.geo_dataset is not None:
            return self.geo_dataset
        for key in ("train", "val", "test"):
            ds = self.folder_datasets.get(key)
            if ds is not None:
                return ds
        raise ConfigurationError("the datamodule has no dataset (use from_folder or pre/post)")

    @property
    def in_channels(self) -> int:
        """Bands per date."""
        ds = self._first_dataset()
        if isinstance(ds, BiTemporalRasterDataset):
            return ds.in_channels
        return int(ds[0]["image"].shape[1])

    @property
    def task(self) -> str:
        """``"semantic"`` with semantic labels, else ``"binary"``."""
        ds = self._first_dataset()
        if isinstance(ds, BiTemporalRasterDataset):
            return ds.task
        return "semantic" if isinstance(ds, SemanticChangeFolderDataset) else "binary"

    @property
    def class_names(self) -> list[str] | None:
        """Semantic class names in class-id order (None for binary change)."""
        if self.task != "semantic":
            return None
        names = self._first_dataset().class_names
        return list(names) if names is not None else None

    @property
    def num_classes(self) -> int | None:
        """Number of semantic classes (None for binary change)."""
        names = self.class_names
        return len(names) if names is not None else None

    def _sample_statistics(self) -> dict[str, list[float]]:
        """Mean, std, min and max per band from ``stats_samples`` training windows."""
        if self.geo_dataset is not None:
            return compute_band_statistics(
                self.geo_dataset,
                num_samples=self.stats_samples,
                patch_size=self.patch_size,
                seed=self.seed,
                roi=self.rois.get("train"),
                with_range=True,
            )
        ds = self.folder_datasets.get("train") or self._first_dataset()
        return compute_band_statistics(
            ds, num_samples=self.stats_samples, seed=self.seed, with_range=True
        )

    @property
    def normalization(self) -> dict[str, list[float]]:
        """Per-band ``{"mean", "std"}`` in raw pixel units (computed once on first use)."""
        if self._normalization is None:
            stats = self._sample_statistics()
            self._normalization = {"mean": stats["mean"], "std": stats["std"]}
            if self._input_range is None:  # same windows: keep their range too
                self._input_range = input_range_record(self._image_dtype(), stats)
        return self._normalization

    @normalization.setter
    def normalization(self, value: dict[str, list[float]]) -> None:
        if len(value["mean"]) != len(value["std"]):
            raise ConfigurationError("normalization mean and std must have one value per band")
        self._normalization = value
        self._normalize = None

    @property
    def input_range(self) -> dict[str, Any]:
        """The dtype and per-band ``min``/``max`` of the training imagery (raw pixel units).

        Sampled from the same windows as :attr:`normalization` (computed once on first use).
        Checkpoints record it so :class:`~geochange.predict.ChangePredictor` can check that a
        scene's values match what the model was trained on.
        """
        if self._input_range is None:
            self._input_range = input_range_record(self._image_dtype(), self._sample_statistics())
        return self._input_range

    def _image_dtype(self) -> str | None:
        dtype = getattr(self._first_dataset(), "image_dtype", None)
        return str(dtype) if dtype is not None else None

    @property
    def value_range(self) -> float | None:
        """Pixel value mapped to 1.0 by photometric augmentation."""
        arg = self._value_range_arg
        if arg != "auto":
            return None if arg is None else float(arg)
        if self.geo_dataset is not None and self.geo_dataset.image_dtype != "uint8":
            stats = self.normalization
            return float(max(m + 3 * s for m, s in zip(stats["mean"], stats["std"], strict=True)))
        return 255.0

    @property
    def normalize(self) -> NormalizeChange:
        """The normalization module built from :attr:`normalization`."""
        if self._normalize is None:
            stats = self.normalization
            self._normalize = NormalizeChange(stats["mean"], stats["std"])
        return self._normalize

    @property
    def augmentation(self) -> ChangeAugmentation | None:
        """The training augmentation (None when disabled)."""
        if self._augmentation is None and self._augment_arg is not False:
            if isinstance(self._augment_arg, ChangeAugmentation):
                self._augmentation = self._augment_arg
            else:
                self._augmentation = ChangeAugmentation(
                    date_swap=self._date_swap,
                    value_range=self.value_range,
                    per_date_shift=self._per_date_shift,
                )
        return self._augmentation

    # -- Lightning hooks --------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Build what the stage's loaders need: band statistics and the scene's samplers.

        The datasets themselves are opened when the module is built (so that bad input fails
        fast); here the samplers of the stage's regions are made (for training, a scan of the
        change label) and the normalization and input range are computed once.

        Args:
            stage: ``"fit"`` (training, unlabeled and validation regions), ``"validate"``,
                ``"test"``, ``"predict"`` (nothing to sample), or None (all regions).
        """
        _ = self.normalization
        _ = self.input_range
        training = ("labeled", "unlabeled") if self.labeled_fraction is not None else ("train",)
        keys = {
            "fit": (*training, "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": (),
        }.get(stage or "", (*training, "val", "test"))
        for key in keys:
            if key in self.rois:
                self._sampler(key)

    def _sampler(self, key: str) -> Sampler[Any]:
        """The scene sampler of a region, made once (loaders made before setup make it)."""
        if key not in self._samplers:
            assert self.geo_dataset is not None
            roi = self.rois.get(key)
            if roi is None:
                raise ConfigurationError(f"no {key} region: check splits / labeled_fraction")
            train = key in ("train", "labeled", "unlabeled")
            labeled = key != "unlabeled" and self.geo_dataset.has_labels
            self._samplers[key] = region_sampler(
                self.geo_dataset,
                roi,
                self.patch_size,
                train=train,
                samples_per_epoch=self.samples_per_epoch,
                change_fraction=self.change_fraction if self.balanced and labeled else 0.0,
            )
        return self._samplers[key]

    def _loader(
        self,
        key: str,
        *,
        train: bool,
        unlabeled: bool = False,
        batch_size: int | None = None,
    ) -> DataLoader[Any]:
        batch_size = batch_size or self.batch_size
        collate: Callable[[Sequence[dict[str, Any]]], dict[str, Any]] = stack_samples
        if unlabeled:
            collate = stack_unlabeled_with_pseudo if self.semantic_as_pseudo else stack_unlabeled
            if self.unlabeled_truth:
                collate = partial(stack_unlabeled_with_truth, pseudo=self.semantic_as_pseudo)
        common: dict[str, Any] = {
            "batch_size": batch_size,
            "num_workers": self.num_workers,
            "collate_fn": collate,
            "persistent_workers": self.num_workers > 0,
            # Workers allocate and free a few MB per sample: keep the heap from fragmenting.
            "worker_init_fn": worker_init_bound_malloc if self.num_workers > 0 else None,
        }
        if self.geo_dataset is not None:
            # Each loader draws from its own freshly seeded generator, as a new sampler would.
            sampler = seeded(self._sampler(key), self.seed + (1 if unlabeled else 0))
            return DataLoader(self.geo_dataset, sampler=sampler, **common)
        dataset = self.folder_datasets.get(key)
        if dataset is None:
            raise ConfigurationError(f"no {key} dataset")
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, shuffle=train, generator=generator, **common)

    def train_dataloader(self) -> Any:
        """Training batches (the labeled share when ``labeled_fraction`` is set)."""
        if self.combine_unlabeled:
            return self.semi_supervised_dataloader()
        key = "labeled" if self.labeled_fraction is not None else "train"
        return self._loader(key, train=True)

    def unlabeled_dataloader(self) -> DataLoader[Any]:
        """Batches without masks from the unlabeled share of the training data."""
        if self.labeled_fraction is None:
            raise ConfigurationError("unlabeled_dataloader() needs labeled_fraction")
        return self._loader(
            "unlabeled", train=True, unlabeled=True, batch_size=self.unlabeled_batch_size
        )

    def semi_supervised_dataloader(self) -> Any:
        """``{"labeled": batch, "unlabeled": batch}`` batches (cycling the shorter loader)."""
        from lightning.pytorch.utilities import CombinedLoader

        labeled = self._loader("labeled", train=True)
        return CombinedLoader(
            {"labeled": labeled, "unlabeled": self.unlabeled_dataloader()}, mode="max_size_cycle"
        )

    def val_dataloader(self) -> Any:
        """Validation batches (an empty list when there is no validation split)."""
        if "val" not in self.rois and self.folder_datasets.get("val") is None:
            return []
        return self._loader("val", train=False)

    def test_dataloader(self) -> Any:
        """Test batches (an empty list when there is no test split)."""
        if "test" not in self.rois and self.folder_datasets.get("test") is None:
            return []
        return self._loader("test", train=False)

    def apply_batch_transforms(self, batch: dict[str, Any], *, train: bool) -> dict[str, Any]:
        """Augment (when ``train``) and normalize a batch already on its device.

        Args:
            batch: a batch dict (``image`` ``[B, 2, C, H, W]`` in raw pixel units).
            train: apply the training augmentation first.

        Returns:
            The transformed batch.
        """
        batch = widen(batch)  # compact loader batches: float32 images, long masks
        if train and self.augmentation is not None:
            augmentation = self.augmentation.to(batch["image"].device)
            batch = augmentation(batch)
        batch = self.normalize.to(batch["image"].device)(batch)
        return to_mask_layout(batch, self.mask_layout) if self.mask_layout != "geochange" else batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches and normalize every batch, on the device."""
        training = bool(self.trainer is not None and self.trainer.training)
        if isinstance(batch, dict) and "labeled" in batch and "unlabeled" in batch:
            return {
                "labeled": self.apply_batch_transforms(batch["labeled"], train=training),
                "unlabeled": self.apply_batch_transforms(batch["unlabeled"], train=False),
            }
        if isinstance(batch, dict) and "image" in batch:
            return self.apply_batch_transforms(batch, train=training)
        return batch
