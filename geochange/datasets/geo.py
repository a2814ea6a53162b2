"""TorchGeo :class:`~torchgeo.datasets.GeoDataset` for a pair of co-registered scenes plus labels.

:class:`BiTemporalRasterDataset` is a regular TorchGeo 0.10 GeoDataset (GeoDataFrame index,
GeoSlice queries), so TorchGeo's samplers, ``roi``, ``&``/``|`` and ``stack_samples`` work with
it. Its reads bypass ``rasterio.merge``: each date is read with a plain windowed read from file
handles opened once per process (see :mod:`geochange.datasets._layers`), which is what makes
sampling several times faster than two ``RasterDataset`` objects joined with ``&``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
import torch
from affine import Affine
from geopandas import GeoDataFrame
from pyproj import CRS as PROJ_CRS
from rasterio.crs import CRS
from rasterio.enums import Resampling
from torchgeo.datasets import GeoDataset, IntersectionDataset, RasterDataset
from torchgeo.datasets.utils import GeoSlice

from geochange.classes import IGNORE_INDEX, LSSCD_CLASS_NAMES
from geochange.datasets._direct import (
    BOUNDED_CACHE_MB,
    both_valid,
    can_read_as_float32,
    direct_window,
    read_into,
    scene_cache_mb,
)
from geochange.datasets._labels import (
    LabelOptions,
    box_bounds,
    derive_change,
    open_label,
    read_label,
)
from geochange.datasets._layers import (
    RASTER_EXTENSIONS,
    RasterLayer,
    VectorLayer,
    expand_paths,
    target_grid,
)
from geochange.datasets.batches import BatchSamples, batch_buffer
from geochange.datasets.density import change_density
from geochange.errors import DataError
from geochange.io import ChangeMask
from geochange.keys import MASK, MASK_POST, MASK_PRE, check_mask_layout, to_mask_layout

#: LsSCD classes, the default class names of semantic labels (a list copy of
#: :data:`geochange.classes.LSSCD_CLASS_NAMES`; ``IGNORE_INDEX`` comes from there too).
LSSCD_CLASSES = list(LSSCD_CLASS_NAMES)

PathsOrDataset = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | RasterDataset


#: The label keys of a sample.
LABEL_KEYS = (MASK, MASK_PRE, MASK_POST)
_TORCH_DTYPES = {"float32": torch.float32, "uint8": torch.uint8, "int8": torch.int8,
                 "int16": torch.int16}  # fmt: skip


#: Image dtypes a compact sample keeps (every value exact in float32, so ``widen`` restores
#: the float32 sample exactly).
COMPACT_DTYPES = frozenset({"uint8", "int8", "int16"})


def _fits(out: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype[Any]) -> bool:
    """Whether ``out`` is an array of ``shape`` and ``dtype`` (a slot to read an image into)."""
    return out is not None and out.shape == shape and out.dtype == dtype


class BiTemporalRasterDataset(GeoDataset):
    """A pre/post image pair with optional change and semantic labels, as a TorchGeo GeoDataset.

    Both dates (and every label) are read on one grid: by default the pre image's CRS,
    resolution and pixel origin. A post image (or label) in another CRS or resolution is warped
    on read (bilinear for images, nearest for labels). Windows that extend past either date
    are filled and marked ``ignore_index`` in the masks.

    A sample is a dict with ``image`` float32 ``[2, C, H, W]`` (raw pixel values, 0 where
    invalid), ``mask`` long ``[H, W]`` (0/1 change, 255 where either date is nodata or
    unlabeled) when any label is given, ``mask_pre``/``mask_post`` long ``[H, W]`` when semantic
    labels are given, and TorchGeo's ``bounds`` and ``transform`` metadata. Without a change
    label but with both semantic labels, ``mask`` is derived as ``mask_pre != mask_post``.

    Example:
        >>> from torchgeo.samplers import RandomGeoSampler
        >>> from geochange.datasets import stack_samples
        >>> ds = BiTemporalRasterDataset("pre.tif", "post.tif", change="change.gpkg")
        >>> loader = DataLoader(ds, sampler=RandomGeoSampler(ds, 256, 100),
        ...                     batch_size=8, collate_fn=stack_samples)

    TorchGeo's ``stack_samples`` gives the same batches; geochange's keeps the buffers that
    :meth:`__getitems__` reads a whole batch into, instead of copying every sample again.

    Args:
        pre: pre-date image: a file, a directory, a list of files, or a TorchGeo
            ``RasterDataset`` (its files and bands are used).
        post: post-date image, same forms.
        change: change label: raster(s) (0 no change, 1 change, 255 or nodata = unlabeled;
            checked when opened, see ``mask_values``) or a vector file of change polygons
            (inside = 1, outside = 0).
        semantic_pre: pre-date semantic classes: raster(s) of class ids, or a vector file of
            footprints with ``class_attribute`` (uncovered pixels are ``ignore_index``).
        semantic_post: post-date semantic classes, same forms.
        crs: CRS to read on (default: the pre image's). The grid origin stays the pre image's.
        res: resolution to read on, a number or ``(xres, yres)`` (default: the pre image's).
        bands: bands read from both dates, as 1-based indexes or band descriptions.
        transforms: function applied to each sample.
        class_attribute: attribute of semantic vector labels holding the class (id or name).
        class_names: semantic class names in class-id order (default: LsSCD classes when
            semantic labels are given).
        all_touched: rasterize vector labels on every pixel a polygon touches.
        gdal_cache_mb: GDAL block cache per process, in MB (bounded memory per worker). None:
            the decoded size of the scene's rasters when that fits within GDAL's default
            budget (5 % of the RAM), so each block is decoded once per process, else 256.
        mask_values: how change-label rasters store change (see
            :func:`geochange.io.check_change_mask`): ``"auto"`` (0/1 with 255 ignore; a 0/255
            label is refused with a message), ``"0,1"`` (the same without the 0/255
            detection) or ``"0,255"`` (255 = change, as in LEVIR-CD labels).
        mask_layout: ``"geochange"`` (masks ``[H, W]``, batches ``[B, H, W]``) or
            ``"torchgeo"`` (``[1, H, W]``, batches ``[B, 1, H, W]``, the layout of TorchGeo's
            LEVIRCD / OSCD samples and of its ``ChangeDetection`` task).
        compact: samples as small as their values allow: ``image`` in the files' dtype when
            both dates are uint8, int8 or int16 (float32 otherwise), masks uint8. Batches are
            then a quarter of the bytes (uint8 imagery) to copy and to hand from DataLoader
            workers to the main process; :func:`geochange.datasets.batches.widen` (which
            ``ChangeDataModule`` applies on the device) restores float32 images and long
            masks with the same values.

    Raises:
        DataError: unreadable/corrupt files, different band counts, pre/post or labels with no
            spatial overlap, a vector label without its class attribute, a change label with
            values outside the convention (or a 0/255 one under ``mask_values="auto"``),
            semantic label values outside 0..255.
    """

    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        pre: PathsOrDataset,
        post: PathsOrDataset,
        *,
        change: Any = None,
        semantic_pre: Any = None,
        semantic_post: Any = None,
        crs: CRS | PROJ_CRS | str | None = None,
        res: float | tuple[float, float] | None = None,
        bands: Sequence[int | str] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        class_attribute: str = "class",
        class_names: Sequence[str] | None = None,
        all_touched: bool = False,
        gdal_cache_mb: int | None = None,
        mask_values: str = "auto",
        mask_layout: str = "geochange",
        compact: bool = False,
    ) -> None:
        #: ``"geochange"`` (masks ``[H, W]``) or ``"torchgeo"`` (``[1, H, W]``, as LEVIRCD).
        self.mask_layout = check_mask_layout(mask_layout)
        #: Images in the files' own dtype and uint8 masks (see the ``compact`` argument).
        self.compact = compact
        self.transforms = transforms
        self.gdal_cache_mb = gdal_cache_mb if gdal_cache_mb is not None else BOUNDED_CACHE_MB
        self.mask_values = mask_values
        #: How the change-label raster's values decode to 0/1/255 (None: no raster label).
        self.change_mask: ChangeMask | None = None
        pre_files, pre_bands = self._resolve_images(pre, bands, "pre")
        post_files, post_bands = self._resolve_images(post, bands, "post")
        self.paths = [str(p) for p in pre_files + post_files]

        if isinstance(crs, PROJ_CRS):
            crs = crs.to_wkt()
        grid = target_grid(pre_files[0], crs, res)

        def open_date(
            date: str, files: Sequence[Path], bands: Sequence[int | str] | None
        ) -> RasterLayer:
            layer, _ = RasterLayer.open(
                date,
                files,
                grid=grid,
                bands=bands,
                resampling=Resampling.bilinear,
                gdal_cache_mb=self.gdal_cache_mb,
            )
            return layer

        self.pre = open_date("pre", pre_files, pre_bands)
        self.post = open_date("post", post_files, post_bands)
        if self.pre.count != self.post.count:
            raise DataError(
                f"pre image {str(pre_files[0])!r} has {self.pre.count} bands but post image "
                f"{str(post_files[0])!r} has {self.post.count}"
            )
        self.grid = grid
        self._res = tuple(grid.res)  # type: ignore[assignment]

        pre_union = shapely.union_all(self.pre.footprints())
        post_union = shapely.union_all(self.post.footprints())
        overlap = shapely.intersection(pre_union, post_union)
        if overlap.is_empty or overlap.area <= 0:
            raise DataError(
                f"pre image {str(pre_files[0])!r} and post image {str(post_files[0])!r} do not "
                f"overlap (pre bounds {box_bounds(pre_union)}, post bounds "
                f"{box_bounds(post_union)} in the pre CRS)"
            )
        self.overlap = overlap

        has_semantic = semantic_pre is not None or semantic_post is not None
        self.class_names: list[str] | None = (
            list(class_names)
            if class_names is not None
            else (LSSCD_CLASSES if has_semantic else None)
        )
        options = LabelOptions(grid, overlap, self.class_names, class_attribute, all_touched,
                               self.gdal_cache_mb, mask_values)  # fmt: skip
        self.change, self.change_mask = open_label("change", change, options)
        self.semantic_pre, _ = open_label("semantic_pre", semantic_pre, options)
        self.semantic_post, _ = open_label("semantic_post", semantic_post, options)
        self._size_cache(gdal_cache_mb)

        self.index = self._overlap_index(post_union)
        self._bounds_cache: tuple[Any, tuple[slice, slice, slice]] | None = None

    # -- construction helpers ---------------------------------------------------------------

    def _size_cache(self, gdal_cache_mb: int | None) -> None:
        """Give every raster layer the block cache: ``gdal_cache_mb``, or sized to the scene."""
        layers = (self.pre, self.post, self.change, self.semantic_pre, self.semantic_post)
        if gdal_cache_mb is None:
            self.gdal_cache_mb = scene_cache_mb(layers)
        for layer in layers:
            if isinstance(layer, RasterLayer):
                layer.gdal_cache_mb = self.gdal_cache_mb

    def _overlap_index(self, post_union: Any) -> GeoDataFrame:
        """TorchGeo's index: one row per pre file, its part of the pre/post overlap."""
        geometries, filepaths = [], []
        for info, footprint in zip(self.pre.files, self.pre.footprints(), strict=True):
            part = shapely.intersection(footprint, post_union)
            if not part.is_empty and part.area > 0:
                geometries.append(part)
                filepaths.append(str(info.path))
        interval = pd.IntervalIndex.from_tuples(
            [(pd.Timestamp.min, pd.Timestamp.max)] * len(geometries), closed="both", name="datetime"
        )
        index_crs = PROJ_CRS.from_wkt(self.grid.crs.to_wkt()) if self.grid.crs is not None else None
        return GeoDataFrame(
            {"filepath": filepaths}, index=interval, geometry=geometries, crs=index_crs
        )

    @staticmethod
    def _resolve_images(
        source: PathsOrDataset, bands: Sequence[int | str] | None, what: str
    ) -> tuple[list[Path], Sequence[int | str] | None]:
        if isinstance(source, RasterDataset):
            files = [Path(f) for f in source.index.filepath]
            indexes = getattr(source, "band_indexes", None)
            return files, bands if bands is not None else indexes
        if isinstance(source, GeoDataset):
            raise DataError(f"{what}: only TorchGeo RasterDatasets or paths are supported")
        return expand_paths(source, RASTER_EXTENSIONS, f"{what} image"), bands

    # -- properties -------------------------------------------------------------------------

    @property
    def bounds(self) -> tuple[slice, slice, slice]:
        """Bounding x, y, t slices of the index (cached until the index is replaced)."""
        cache = self._bounds_cache
        if cache is None or cache[0] is not self.index:
            cache = (self.index, super().bounds)
            self._bounds_cache = cache
        return cache[1]

    @property
    def in_channels(self) -> int:
        """Number of bands per date."""
        return self.pre.count

    @property
    def task(self) -> str:
        """``"semantic"`` when semantic labels are given, else ``"binary"``."""
        semantic = self.semantic_pre is not None or self.semantic_post is not None
        return "semantic" if semantic else "binary"

    @property
    def has_labels(self) -> bool:
        """Whether samples carry a ``mask``."""
        return self.change is not None or (
            self.semantic_pre is not None and self.semantic_post is not None
        )

    @property
    def image_dtype(self) -> str:
        """Data type of the pre image's files."""
        return self.pre.dtype

    def sample_dtype(self) -> np.dtype[Any]:
        """The dtype of a sample's ``image``: float32, or the files' own with ``compact``."""
        if self.compact and can_read_as_float32(self.pre) and can_read_as_float32(self.post):
            pre, post = self.pre.files[0].dtype, self.post.files[0].dtype
            if pre == post and pre in COMPACT_DTYPES:
                return np.dtype(pre)
        return np.dtype(np.float32)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_bounds_cache"] = None
        state.pop("_density_cache", None)
        return state

    # -- reading ----------------------------------------------------------------------------

    def _query_bounds(self, index: GeoSlice) -> tuple[tuple[float, float, float, float], Any]:
        if isinstance(index, tuple) and len(index) >= 2:
            x, y = index[0], index[1]
            if (
                x.start is not None
                and x.stop is not None
                and y.start is not None
                and y.stop is not None
            ):
                # Fast path for sampler queries: no need to resolve against the index bounds.
                xres = x.step if x.step is not None else self._res[0]
                yres = y.step if y.step is not None else self._res[1]
                return (float(x.start), float(y.start), float(x.stop), float(y.stop)), (
                    float(xres),
                    float(yres),
                )
        x, y, _ = self._disambiguate_slice(index)
        return (float(x.start), float(y.start), float(x.stop), float(y.stop)), (
            float(x.step),
            float(y.step),
        )

    def read_window(
        self,
        bounds: tuple[float, float, float, float],
        res: tuple[float, float] | None = None,
        *,
        out: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Read both dates and labels in ``(left, bottom, right, top)`` as numpy arrays.

        Args:
            bounds: window in the dataset CRS.
            res: output resolution (default: the dataset's).
            out: ``[2, C, h, w]`` array of :meth:`sample_dtype` to read the image into (used
                as ``image`` when its shape matches the window, else ignored).

        Returns:
            ``image`` ``[2, C, h, w]`` of :meth:`sample_dtype` (float32 unless ``compact``),
            ``valid`` bool ``[h, w]`` and, when labels
            exist, ``mask`` / ``mask_pre`` / ``mask_post`` uint8 ``[h, w]`` (255 = ignore).
        """
        res = res or self._res
        image, valid = self._read_images(bounds, res, out)
        invalid = None if valid is None else ~valid
        if invalid is not None and invalid.any():
            image[:, :, invalid] = 0.0
        else:
            invalid = None  # every pixel valid: nothing to mark in the labels
        arrays: dict[str, np.ndarray] = {
            "image": image,
            "valid": np.ones(image.shape[-2:], dtype=bool) if valid is None else valid,
        }
        sem_pre = self._read_label(self.semantic_pre, bounds, res)
        sem_post = self._read_label(self.semantic_post, bounds, res)
        change = self._read_label(self.change, bounds, res)
        if change is None and sem_pre is not None and sem_post is not None:
            change = derive_change(sem_pre, sem_post)
        for key, label in (("mask_pre", sem_pre), ("mask_post", sem_post), ("mask", change)):
            if label is not None:
                if invalid is not None:
                    label[invalid] = IGNORE_INDEX
                arrays[key] = label
        return arrays

    def _read_images(
        self,
        bounds: tuple[float, float, float, float],
        res: tuple[float, float],
        out: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Both dates ``[2, C, h, w]`` (:meth:`sample_dtype`) and their joint validity.

        The validity is None where every pixel is valid; ``out`` receives the image when its
        shape and dtype are the window's.
        """
        pre_window = direct_window(self.pre, bounds, res)
        post_window = direct_window(self.post, bounds, res)
        exact = can_read_as_float32(self.pre) and can_read_as_float32(self.post)
        dtype = self.sample_dtype()
        if pre_window is not None and post_window is not None and exact:
            # Both dates straight into one buffer (see geochange.datasets._direct).
            shape = (2, self.pre.count, int(pre_window.height), int(pre_window.width))
            image = out if out is not None and _fits(out, shape, dtype) else np.empty(shape, dtype)
            pre_valid = read_into(self.pre, pre_window, image[0])
            return image, both_valid(pre_valid, read_into(self.post, post_window, image[1]))
        pre, pre_valid = self.pre.read(bounds, res, 0.0)
        post, post_valid = self.post.read(bounds, res, 0.0)
        shape = (2, *pre.shape)
        if out is not None and _fits(out, shape, dtype) and post.shape == pre.shape:
            # Exact when compact: the dates are integer files and fills are 0.
            return np.stack([pre, post], out=out, casting="unsafe"), pre_valid & post_valid
        return np.stack([pre, post]).astype(dtype, copy=False), pre_valid & post_valid

    def read_change(
        self, bounds: tuple[float, float, float, float], res: tuple[float, float] | None = None
    ) -> np.ndarray:
        """Read only the change label in a window (no image read), uint8 ``[h, w]``.

        Args:
            bounds: window in the dataset CRS.
            res: output resolution (default: the dataset's).

        Returns:
            0/1 change with 255 where unlabeled.

        Raises:
            DataError: if the dataset has no change label (nor both semantic labels).
        """
        res = res or self._res
        change = self._read_label(self.change, bounds, res)
        if change is not None:
            return change
        sem_pre = self._read_label(self.semantic_pre, bounds, res)
        sem_post = self._read_label(self.semantic_post, bounds, res)
        if sem_pre is None or sem_post is None:
            raise DataError("the dataset has no change label (nor pre and post semantic labels)")
        return derive_change(sem_pre, sem_post)

    def change_density(self, cell_size: int, *, block_cells: int = 16) -> tuple[np.ndarray, Affine]:
        """Count change pixels per ``cell_size`` x ``cell_size`` cell over the pre/post overlap.

        The label is read once, block by block (``block_cells`` cells a side), so memory stays
        bounded whatever the scene size. Results are cached per cell size.

        Args:
            cell_size: cell side in pixels.
            block_cells: cells per block side read at once.

        Returns:
            ``(counts, transform)``: int64 ``[rows, cols]`` change-pixel counts and the affine
            transform of the cell grid (cell (0, 0) starts at the overlap's top-left corner).
        """
        return change_density(self, cell_size, block_cells=block_cells)

    def _read_label(
        self,
        layer: RasterLayer | VectorLayer | None,
        bounds: tuple[float, float, float, float],
        res: tuple[float, float],
    ) -> np.ndarray | None:
        decode = self.change_mask if layer is not None and layer is self.change else None
        return read_label(layer, bounds, res, decode)

    def __getitem__(self, index: GeoSlice) -> dict[str, Any]:
        """Read the sample in a spatial (and ignored temporal) slice.

        Args:
            index: ``[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax:tres]`` coordinates.

        Returns:
            The sample dict (see the class docstring).

        Raises:
            IndexError: if the slice does not intersect the pre/post overlap.
        """
        bounds, res = self._checked_query(index)
        arrays = self.read_window(bounds, res)
        sample: dict[str, Any] = {"image": torch.from_numpy(arrays["image"])}
        label_dtype = np.uint8 if self.compact else np.int64
        for key in LABEL_KEYS:
            if key in arrays:
                sample[key] = torch.from_numpy(arrays[key].astype(label_dtype, copy=False))
        sample["bounds"] = torch.tensor(self._bounds_row(bounds, res), dtype=torch.float64)
        sample["transform"] = torch.tensor(self._transform_row(bounds, res), dtype=torch.float64)
        if self.mask_layout != "geochange":
            sample = to_mask_layout(sample, self.mask_layout, batched=False)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def __getitems__(self, indices: Sequence[GeoSlice]) -> list[dict[str, Any]]:
        """The samples of a batch of queries (what PyTorch's DataLoader calls per batch).

        The same samples as ``[self[i] for i in indices]``. Without ``transforms`` and with
        the geochange mask layout, every window is read straight into one buffer per key
        (in shared memory inside a DataLoader worker), and the samples are views of those
        buffers: :func:`geochange.datasets.batches.stack_samples` then returns the buffers
        without copying them (see :mod:`geochange.datasets.batches`).

        Args:
            indices: the queries of the batch.

        Returns:
            The sample dicts, as a :class:`~geochange.datasets.batches.BatchSamples`.
        """
        if self.transforms is not None or self.mask_layout != "geochange" or len(indices) < 2:
            return [self[index] for index in indices]
        queries = [self._checked_query(index) for index in indices]
        first = self.read_window(*queries[0])
        shape = first["image"].shape
        size = len(queries)
        image = batch_buffer((size, *shape), _TORCH_DTYPES[first["image"].dtype.name])
        label_dtype = torch.uint8 if self.compact else torch.int64
        masks = {key: batch_buffer((size, *first[key].shape), label_dtype)
                 for key in LABEL_KEYS if key in first}  # fmt: skip
        bounds = batch_buffer((size, 9), torch.float64)
        transforms = batch_buffer((size, 9), torch.float64)
        images = image.numpy()
        for slot, (query, res) in enumerate(queries):
            view = images[slot]
            arrays = first if slot == 0 else self.read_window(query, res, out=view)
            if arrays["image"].shape != shape or any(
                arrays[key].shape != masks[key].shape[1:] for key in masks
            ):
                return [self[index] for index in indices]  # windows of different sizes
            if arrays["image"] is not view:
                view[...] = arrays["image"]
            for key, batch in masks.items():
                batch[slot] = torch.from_numpy(arrays[key])  # uint8 -> int64 in the copy
            bounds[slot] = torch.tensor(self._bounds_row(query, res), dtype=torch.float64)
            transforms[slot] = torch.tensor(self._transform_row(query, res), dtype=torch.float64)
        stacked = {"image": image, **masks, "bounds": bounds, "transform": transforms}
        samples = [{key: batch[slot] for key, batch in stacked.items()} for slot in range(size)]
        return BatchSamples(samples, stacked)

    def _checked_query(
        self, index: GeoSlice
    ) -> tuple[tuple[float, float, float, float], tuple[float, float]]:
        """The query's bounds and resolution; IndexError outside the pre/post overlap."""
        bounds, res = self._query_bounds(index)
        left, bottom, right, top = bounds
        cached = self.__dict__.get("_overlap_bounds")
        if cached is None or cached[0] is not self.overlap:
            # shapely's bounds cost more than the rest of the query: once per overlap.
            cached = (self.overlap, tuple(self.overlap.bounds))
            self._overlap_bounds = cached
        ob = cached[1]
        if left >= ob[2] or right <= ob[0] or bottom >= ob[3] or top <= ob[1]:
            raise IndexError(f"index {index} is outside the dataset bounds {self.bounds}")
        return bounds, res

    def _bounds_row(
        self, bounds: tuple[float, float, float, float], res: tuple[float, float]
    ) -> list[float]:
        """TorchGeo's ``bounds`` metadata of a sample (x, y and t slices, flattened)."""
        left, bottom, right, top = bounds
        t = self.bounds[2]
        return [left, right, res[0], bottom, top, res[1], t.start.timestamp(),
                t.stop.timestamp(), 1]  # fmt: skip

    @staticmethod
    def _transform_row(
        bounds: tuple[float, float, float, float], res: tuple[float, float]
    ) -> list[float]:
        """TorchGeo's ``transform`` metadata of a sample (the affine, row-major 3 x 3)."""
        return [res[0], 0.0, bounds[0], 0.0, -res[1], bounds[3], 0.0, 0.0, 1.0]

    def __and__(self, other: GeoDataset) -> IntersectionDataset:
        """Join a TorchGeo layer; its data arrives under its own key (``extra_image``, ...).

        Args:
            other: a TorchGeo dataset, e.g. a ``RasterDataset`` of a DEM or of a label.

        Returns:
            A :class:`~geochange.datasets.join.BiTemporalIntersectionDataset`.
        """
        from geochange.datasets.join import BiTemporalIntersectionDataset

        return BiTemporalIntersectionDataset(self, other)
