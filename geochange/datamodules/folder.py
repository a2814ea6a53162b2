"""Benchmark folders (LEVIR-CD, WHU-CD, DSIFN, SECOND, Hi-UCD) for the change datamodule.

:func:`open_folder_splits` opens the splits a benchmark ships with;
:class:`FolderChangeDataModule` is :meth:`ChangeDataModule.from_folder` as a class, so YAML
configs can build it.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Literal

import numpy as np
from torch.utils.data import Dataset, Subset

from geochange.datamodules.change import ChangeDataModule
from geochange.datasets import ChangeFolderDataset, SemanticChangeFolderDataset
from geochange.errors import ConfigurationError, DataError

#: Folder layouts: ``binary`` (A/B/label) and the two semantic benchmarks.
LAYOUTS = ("binary", "second", "hiucd")


def open_folder_splits(
    root: str | os.PathLike[str],
    *,
    layout: str = "binary",
    train_split: str | None = "train",
    val_split: str | None = "val",
    test_split: str | None = "test",
    patch_size: int = 256,
    labeled_fraction: float | None = None,
    seed: int = 0,
    dataset_kwargs: dict[str, Any] | None = None,
    stacklevel: int = 2,
) -> dict[str, Dataset[Any] | None]:
    """Open a benchmark folder's splits (and, for semi-supervised training, a labeled subset).

    Args:
        root: dataset root.
        layout: ``"binary"`` (A/B/label, :class:`ChangeFolderDataset`), ``"second"`` or
            ``"hiucd"`` (:class:`SemanticChangeFolderDataset`).
        train_split: training split name (None: no training data).
        val_split: validation split name; a split that does not exist is skipped with a
            warning.
        test_split: test split name, same rule.
        patch_size: cut images into patches of this size.
        labeled_fraction: share of training pairs keeping labels: a seeded random subset
            (``"labeled"``), the rest is ``"unlabeled"``.
        seed: seed of the labeled subset.
        dataset_kwargs: extra dataset arguments (``stride``, ``class_names``, dirs, ...).
        stacklevel: ``stacklevel`` of the skipped-split warning, counted from the caller.

    Returns:
        Datasets by name (``train``, ``val``, ``test``, ``labeled``, ``unlabeled``).

    Raises:
        ConfigurationError: unknown layout, or a labeled share leaving no unlabeled pair.
        DataError: the training split is missing or a file lacks its pair/label.
    """
    extra = dict(dataset_kwargs or {})

    def make(split: str) -> Dataset[Any]:
        if layout == "binary":
            return ChangeFolderDataset(root, split, patch_size=patch_size, **extra)
        return SemanticChangeFolderDataset(
            root, split, layout=layout, patch_size=patch_size, **extra
        )

    if layout not in LAYOUTS:
        raise ConfigurationError(f"layout must be binary, second or hiucd, got {layout!r}")
    datasets: dict[str, Dataset[Any] | None] = {}
    for name, split in (("train", train_split), ("val", val_split), ("test", test_split)):
        if split is None:
            continue
        try:
            datasets[name] = make(split)
        except DataError as err:
            # A missing val/test split is skipped; missing files are always errors.
            text = str(err)
            split_missing = "cannot find split" in text or (
                "folder" in text and "is missing" in text
            )
            if name == "train" or not split_missing:
                raise
            warnings.warn(f"{name} split {split!r} skipped: {err}", stacklevel=stacklevel + 1)
    train = datasets.get("train")
    if labeled_fraction is not None and train is not None:
        n = len(train)  # type: ignore[arg-type]
        order = np.random.default_rng(seed).permutation(n)
        k = max(1, round(labeled_fraction * n))
        if k >= n:
            raise ConfigurationError(
                f"labeled_fraction {labeled_fraction} leaves no unlabeled sample out of {n}"
            )
        datasets["labeled"] = Subset(train, sorted(order[:k].tolist()))
        datasets["unlabeled"] = Subset(train, sorted(order[k:].tolist()))
    return datasets


class FolderChangeDataModule(ChangeDataModule):
    """:meth:`ChangeDataModule.from_folder` as a class, so YAML configs can build it.

    Args:
        root: Dataset root (LEVIR-CD / WHU-CD / DSIFN ``A/B/label``, SECOND, Hi-UCD).
        layout: ``"binary"``, ``"second"`` or ``"hiucd"``.
        train_split: Training split name (folder or ``list/<name>.txt``).
        val_split: Validation split name (skipped with a warning when missing).
        test_split: Test split name (skipped with a warning when missing).
        dataset_kwargs: Extra dataset arguments (``stride``, ``class_names``, folder names).
        **kwargs: :class:`ChangeDataModule` options (``patch_size``, ``batch_size``,
            ``num_workers``, ``normalization``, ``stats_samples``, ``augment``,
            ``date_swap``, ``per_date_shift``, ``value_range``, ``labeled_fraction``,
            ``seed``, ...).
    """

    def __init__(
        self,
        root: str,
        layout: Literal["binary", "second", "hiucd"] = "binary",
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        *,
        dataset_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # The scene arguments are named so that configs do not offer them for a folder.
        super().__init__(
            pre=None, post=None, change=None, semantic_pre=None, semantic_post=None, **kwargs
        )
        self._open_folder(root, layout, train_split, val_split, test_split, dataset_kwargs)
