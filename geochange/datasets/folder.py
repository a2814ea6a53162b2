"""Folder datasets for change-detection benchmarks (LEVIR-CD, WHU-CD, DSIFN, SECOND, Hi-UCD).

Samples follow the same format as the geo path: ``image`` float32 ``[2, C, H, W]`` (raw pixel
values), ``mask`` long ``[H, W]`` (0/1 change, 255 ignore) and, for semantic layouts,
``mask_pre``/``mask_post`` long ``[H, W]`` (255 ignore). Large images can be cut into fixed-size
patches with ``patch_size``; the dataset then indexes patches, reading only the needed window
of GeoTIFFs (PNG/JPEG files are decoded whole, they are small in these benchmarks).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchgeo.datasets import NonGeoDataset

from geochange.classes import IGNORE_INDEX
from geochange.errors import ConfigurationError, DataError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")

#: SECOND semantic classes (label value k > 0 is class k - 1; 0 marks unchanged pixels).
SECOND_CLASSES = [
    "low vegetation",
    "non-vegetated ground surface",
    "tree",
    "water",
    "building",
    "playground",
]
#: RGB colours of the SECOND classes in its colour-coded label PNGs (white = unchanged).
SECOND_PALETTE = {
    (255, 255, 255): 0,
    (0, 128, 0): 1,
    (128, 128, 128): 2,
    (0, 255, 0): 3,
    (0, 0, 255): 4,
    (128, 0, 0): 5,
    (255, 0, 0): 6,
}
#: Hi-UCD land-cover classes in code order (code k > 0 is class k - 1; 0 is unlabeled).
HIUCD_CLASSES = [
    "water",
    "grassland",
    "building",
    "greenhouse",
    "road",
    "bridge",
    "others",
    "bare land",
    "woodland",
]


def _read_array(path: Path, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Read an image as ``[C, H, W]`` (optionally a ``(row, col, h, w)`` window of it)."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import rasterio
            from rasterio.windows import Window

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=rasterio.errors.NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    if window is None:
                        return src.read()
                    row, col, h, w = window
                    return src.read(window=Window(col, row, w, h), boundless=False)
        from PIL import Image

        with Image.open(path) as img:
            array = np.asarray(img)
    except Exception as err:  # PIL and GDAL raise many types for broken files
        raise DataError(f"cannot read image {str(path)!r}: {err}") from err
    array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    if window is not None:
        row, col, h, w = window
        array = array[:, row : row + h, col : col + w]
    return array


def _image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image without decoding its pixels."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import rasterio

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=rasterio.errors.NotGeoreferencedWarning)
                with rasterio.open(path) as src:
                    return src.height, src.width
        from PIL import Image

        with Image.open(path) as img:
            return img.height, img.width
    except Exception as err:
        raise DataError(f"cannot read image {str(path)!r}: {err}") from err


def _index_dir(directory: Path) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(directory.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }


def _patch_starts(size: int, patch: int, stride: int) -> list[int]:
    if size <= patch:
        return [0]
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)  # last patch flush with the edge, no padding
    return starts


class _PairFolderDataset(NonGeoDataset):
    """Shared machinery: pairing files by name, patch indexing, padding."""

    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        entries: list[dict[str, Path]],
        *,
        patch_size: int | None,
        stride: int | None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None,
    ) -> None:
        if patch_size is not None and patch_size <= 0:
            raise ConfigurationError(f"patch_size must be positive, got {patch_size}")
        if stride is not None and stride <= 0:
            raise ConfigurationError(f"stride must be positive, got {stride}")
        self.entries = entries
        self.names = [e["pre"].stem for e in entries]
        self.patch_size = patch_size
        self.transforms = transforms
        self.patches: list[tuple[int, int, int]] = []
        if patch_size is None:
            self.patches = [(i, 0, 0) for i in range(len(entries))]
        else:
            step = stride or patch_size
            for i, entry in enumerate(entries):
                height, width = _image_size(entry["pre"])
                for row in _patch_starts(height, patch_size, step):
                    for col in _patch_starts(width, patch_size, step):
                        self.patches.append((i, row, col))

    def __len__(self) -> int:
        """Number of samples (patches when ``patch_size`` is set, else image pairs)."""
        return len(self.patches)

    @property
    def image_dtype(self) -> str | None:
        """Pixel dtype of the source images (of the first pre image), None without images."""
        if not self.entries:
            return None
        return _read_array(self.entries[0]["pre"], (0, 0, 1, 1)).dtype.name

    def _window(self, row: int, col: int) -> tuple[int, int, int, int] | None:
        if self.patch_size is None:
            return None
        return row, col, self.patch_size, self.patch_size

    def _pad(self, array: np.ndarray, fill: float) -> np.ndarray:
        if self.patch_size is None:
            return array
        p = self.patch_size
        if array.shape[-2] == p and array.shape[-1] == p:
            return array
        out = np.full((*array.shape[:-2], p, p), fill, dtype=array.dtype)
        out[..., : array.shape[-2], : array.shape[-1]] = array
        return out

    def _images(self, entry: dict[str, Path], window: Any) -> tuple[torch.Tensor, np.ndarray]:
        pre = _read_array(entry["pre"], window)
        post = _read_array(entry["post"], window)
        if pre.shape != post.shape:
            raise DataError(
                f"pre image {str(entry['pre'])!r} has shape {pre.shape} but post image "
                f"{str(entry['post'])!r} has {post.shape}"
            )
        valid = np.ones(pre.shape[-2:], dtype=bool)
        valid = self._pad(valid, False)
        image = np.stack([self._pad(pre, 0), self._pad(post, 0)]).astype(np.float32)
        return torch.from_numpy(image), valid


class ChangeFolderDataset(_PairFolderDataset):
    """Binary change dataset in the A/B/label folder layout (LEVIR-CD, WHU-CD tiles, DSIFN).

    Two layouts are recognised:

    * ``root/{split}/{A,B,label}/NAME.png|tif`` (one folder per split);
    * ``root/{A,B,label}/NAME.*`` plus ``root/list/{split}.txt`` naming the split's files
      (with or without extension).

    Labels with values 0/255 (or 0/1) become 0/1; any non-zero value is change.

    Args:
        root: dataset root.
        split: split name (``"train"``, ``"val"``, ``"test"``, or a list name).
        patch_size: cut images into ``patch_size`` square patches (edge patches are flush
            with the border; images smaller than a patch are padded with ignore labels).
        stride: distance between patches (default ``patch_size``).
        image_dirs: names of the pre and post folders.
        label_dir: name of the label folder.
        labels: False to read images only (unlabeled data, prediction).
        transforms: function applied to each sample.

    Raises:
        DataError: unknown layout/split, an image missing its pair or label (named).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        patch_size: int | None = None,
        stride: int | None = None,
        image_dirs: tuple[str, str] = ("A", "B"),
        label_dir: str = "label",
        labels: bool = True,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.labels = labels
        base, names = self._locate(self.root, split, image_dirs[0])
        dirs = {"pre": base / image_dirs[0], "post": base / image_dirs[1]}
        if labels:
            dirs["label"] = base / label_dir
        for key, directory in dirs.items():
            if not directory.is_dir():
                raise DataError(f"{key} folder {str(directory)!r} is missing")
        indexed = {key: _index_dir(d) for key, d in dirs.items()}
        if names is None:
            names = sorted(indexed["pre"])
            # Every file of the split folder must belong to a pair: an orphan post image or
            # label usually means a renamed or missing pre image.
            for key in ("post", "label"):
                extra = sorted(set(indexed.get(key, {})) - set(indexed["pre"]))
                if extra:
                    raise DataError(
                        f"{key} file {str(indexed[key][extra[0]])!r} has no pre image in "
                        f"{str(dirs['pre'])!r}"
                    )
        entries: list[dict[str, Path]] = []
        for name in names:
            entry: dict[str, Path] = {}
            for key, files in indexed.items():
                path = files.get(name)
                if path is None:
                    expected = dirs[key] / name
                    raise DataError(
                        f"{key} file for {name!r} is missing: no {expected!s}.* "
                        f"(pre image {str(indexed['pre'].get(name, dirs['pre'] / name))!r})"
                    )
                entry[key] = path
            entries.append(entry)
        if not entries:
            raise DataError(f"no image pairs found for split {split!r} under {str(self.root)!r}")
        super().__init__(entries, patch_size=patch_size, stride=stride, transforms=transforms)

    @staticmethod
    def _locate(root: Path, split: str, pre_dir: str) -> tuple[Path, list[str] | None]:
        if not root.is_dir():
            raise DataError(f"dataset root {str(root)!r} does not exist")
        if (root / split / pre_dir).is_dir():
            return root / split, None
        listing = root / "list" / f"{split}.txt"
        if listing.is_file() and (root / pre_dir).is_dir():
            names = [Path(line.strip()).stem for line in listing.read_text().splitlines()]
            return root, [n for n in names if n]
        raise DataError(
            f"cannot find split {split!r} under {str(root)!r}: expected "
            f"{str(root / split / pre_dir)!r} or {str(listing)!r} with {str(root / pre_dir)!r}"
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return sample ``index``: ``image`` ``[2, C, H, W]`` and ``mask`` ``[H, W]``."""
        i, row, col = self.patches[index]
        entry = self.entries[i]
        window = self._window(row, col)
        image, valid = self._images(entry, window)
        sample: dict[str, Any] = {"image": image}
        if self.labels:
            raw = _read_array(entry["label"], window)
            change = np.asarray((raw > 0).any(axis=0), dtype=np.int64)
            change = self._pad(change, IGNORE_INDEX)
            change[~valid] = IGNORE_INDEX
            sample["mask"] = torch.from_numpy(change)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


class SemanticChangeFolderDataset(_PairFolderDataset):
    """Semantic change dataset in the SECOND or Hi-UCD layout.

    * ``layout="second"``: ``root/{split}/{im1,im2,label1,label2}/NAME.png``. Labels are class
      maps where 0 marks unchanged pixels and k > 0 is class k - 1 of :data:`SECOND_CLASSES`
      (colour-coded RGB labels with the SECOND palette are decoded too). ``mask`` is 1 where
      either label is non-zero; semantic masks are ignored (255) on unchanged pixels, where
      SECOND gives no class.
    * ``layout="hiucd"``: ``root/{split}/image/{pre_dir,post_dir}/NAME.png`` and a
      three-channel ``root/{split}/mask/{mask_dir}/NAME.png`` (pre classes, post classes,
      change). Class code k > 0 is class k - 1 of :data:`HIUCD_CLASSES`, code 0 (unlabeled)
      becomes 255; in the change channel 255 is ignore and any other non-zero value is change.

    Args:
        root: dataset root.
        split: split folder name.
        layout: ``"second"`` or ``"hiucd"``.
        pre_dir: pre image folder (default ``im1`` / ``2018``).
        post_dir: post image folder (default ``im2`` / ``2019``).
        mask_dir: Hi-UCD mask folder (default ``2018_2019``).
        class_names: override the class names.
        patch_size: cut images into patches (see :class:`ChangeFolderDataset`).
        stride: distance between patches.
        transforms: function applied to each sample.

    Raises:
        DataError: unknown layout folders, an image missing its pair or label (named).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        layout: str = "second",
        pre_dir: str | None = None,
        post_dir: str | None = None,
        mask_dir: str | None = None,
        class_names: Sequence[str] | None = None,
        patch_size: int | None = None,
        stride: int | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.layout = layout
        base = self.root / split
        if layout == "second":
            dirs = {
                "pre": base / (pre_dir or "im1"),
                "post": base / (post_dir or "im2"),
                "label_pre": base / "label1",
                "label_post": base / "label2",
            }
            default_names = SECOND_CLASSES
        elif layout == "hiucd":
            dirs = {
                "pre": base / "image" / (pre_dir or "2018"),
                "post": base / "image" / (post_dir or "2019"),
                "label": base / "mask" / (mask_dir or "2018_2019"),
            }
            default_names = HIUCD_CLASSES
        else:
            raise ConfigurationError(f"layout must be 'second' or 'hiucd', got {layout!r}")
        self.class_names = list(class_names) if class_names is not None else list(default_names)
        for key, directory in dirs.items():
            if not directory.is_dir():
                raise DataError(f"{layout} {key} folder {str(directory)!r} is missing")
        indexed = {key: _index_dir(d) for key, d in dirs.items()}
        entries = []
        for name in sorted(indexed["pre"]):
            entry = {}
            for key, files in indexed.items():
                if name not in files:
                    raise DataError(
                        f"{key} file for pre image {str(indexed['pre'][name])!r} is missing: "
                        f"no {dirs[key] / name!s}.*"
                    )
                entry[key] = files[name]
            entries.append(entry)
        extra = sorted(set(indexed["post"]) - set(indexed["pre"]))
        if extra:
            raise DataError(f"post image {str(indexed['post'][extra[0]])!r} has no pre image")
        if not entries:
            raise DataError(f"no image pairs found under {str(base)!r}")
        super().__init__(entries, patch_size=patch_size, stride=stride, transforms=transforms)

    @property
    def num_classes(self) -> int:
        """Number of semantic classes."""
        return len(self.class_names)

    @staticmethod
    def _second_classes(raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.shape[0] == 1:
            return raw[0].astype(np.int64)
        rgb = raw[:3].astype(np.int64)
        codes = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
        out = np.full(codes.shape, -1, dtype=np.int64)
        for colour, value in SECOND_PALETTE.items():
            out[codes == ((colour[0] << 16) | (colour[1] << 8) | colour[2])] = value
        if (out < 0).any():
            raise DataError(f"label {str(path)!r} has colours outside the SECOND palette")
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return sample ``index`` with ``image``, ``mask``, ``mask_pre`` and ``mask_post``."""
        i, row, col = self.patches[index]
        entry = self.entries[i]
        window = self._window(row, col)
        image, valid = self._images(entry, window)
        if self.layout == "second":
            pre = self._second_classes(_read_array(entry["label_pre"], window), entry["label_pre"])
            post = self._second_classes(
                _read_array(entry["label_post"], window), entry["label_post"]
            )
            change = ((pre > 0) | (post > 0)).astype(np.int64)
            mask_pre = np.where(pre > 0, pre - 1, IGNORE_INDEX)
            mask_post = np.where(post > 0, post - 1, IGNORE_INDEX)
        else:
            raw = _read_array(entry["label"], window).astype(np.int64)
            if raw.shape[0] < 3:
                raise DataError(
                    f"Hi-UCD mask {str(entry['label'])!r} needs 3 channels (pre, post, change), "
                    f"has {raw.shape[0]}"
                )
            mask_pre = np.where(raw[0] > 0, raw[0] - 1, IGNORE_INDEX)
            mask_post = np.where(raw[1] > 0, raw[1] - 1, IGNORE_INDEX)
            change = np.where(raw[2] == 255, IGNORE_INDEX, (raw[2] > 0).astype(np.int64))
        k = self.num_classes
        for name, array in (("pre", mask_pre), ("post", mask_post)):
            bad = (array != IGNORE_INDEX) & (array >= k)
            if bad.any():
                raise DataError(
                    f"{name} label of {self.names[i]!r} has class {int(array[bad].max())} but only "
                    f"{k} classes are known ({self.class_names})"
                )
        sample: dict[str, Any] = {"image": image}
        for key, array in (("mask", change), ("mask_pre", mask_pre), ("mask_post", mask_post)):
            padded = self._pad(array.astype(np.int64), IGNORE_INDEX)
            padded[~valid] = IGNORE_INDEX
            sample[key] = torch.from_numpy(padded)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample
