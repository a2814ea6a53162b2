"""xarray results of a prediction: lazy (dask) blocks, CF attributes, GeoTIFFs with palettes.

:meth:`~geochange.predict.ChangePredictor.predict_xarray` on dask-backed inputs returns dask
arrays built here: one task per block of tile rows, each reading only the input rows its tiles
cover, blending with the same arithmetic as the in-memory path (so computed values are
bit-identical to it). :func:`describe` gives each output its CF attributes, and
:func:`to_raster` writes one with rioxarray plus the colour table that ``rio.to_raster``
cannot write.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geochange.io import CLASS_NAMES_TAG, TRANSITION_NAMES_TAG, atomic_output
from geochange.predict.outputs import output_specs
from geochange.predict.reader import ArrayPair
from geochange.predict.tiles import _compute_tiles, _rows_from

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

    from geochange.predict.predictor import ChangePredictor
    from geochange.predict.windows import TileGrid

__all__ = ["describe", "is_dask", "lazy_outputs", "palette", "to_raster"]

#: Tile rows per lazy block (rows of a block are written by it alone).
ROWS_PER_BLOCK = 2

_LONG_NAMES = {
    "probability": "change probability",
    "change": "change",
    "semantic_pre": "class at the pre date",
    "semantic_post": "class at the post date",
    "transition": "class transition (from * K + to)",
}


def _block(
    predictor: ChangePredictor,
    pre: np.ndarray,
    post: np.ndarray,
    nodata: tuple[float | None, float | None],
    grid: TileGrid,
    rows: list[int],
    bounds: tuple[int, int, int],
    channels: int,
    classes: int,
) -> dict[str, np.ndarray]:
    """Dask task: the decoded outputs of scene rows ``[y0, y1)`` from the slab at ``ya``."""
    ya, y0, y1 = bounds
    source = ArrayPair(pre, post, pre_nodata=nodata[0], post_nodata=nodata[1])
    decode = predictor._decoder(classes, "float32")
    outputs: dict[str, np.ndarray] = {}

    for stripe in predictor._stripes(grid, channels, classes):
        x0 = stripe.out_x0

        def write(top: int, arrays: dict[str, np.ndarray], col: int, x0: int = x0) -> None:
            for key, values in arrays.items():
                out = outputs.setdefault(key, np.empty((y1 - y0, grid.width), values.dtype))
                r0, r1 = max(top, y0), min(top + values.shape[0], y1)
                if r0 < r1:
                    cols = slice(x0 + col, x0 + col + values.shape[1])
                    out[r0 - y0 : r1 - y0, cols] = values[r0 - top : r1 - top]

        assembler = predictor._assembler(grid, channels, classes, decode, write, stripe, y0)
        assembler.start(rows[0])
        tiles = _compute_tiles(
            predictor._inferencer,
            source,
            grid,
            rows,
            channels,
            cols=stripe.cols,
            origin=(-ya, 0),
            batch_size=predictor.batch_size,
        )
        for tile in tiles:
            assembler.add_tile(tile)
        assembler.finish(y1)
    return outputs


def lazy_outputs(
    predictor: ChangePredictor,
    source: ArrayPair,
    grid: TileGrid,
    channels: int,
    classes: int,
    names: list[str],
) -> dict[str, Any]:
    """The outputs of a dask-backed pair as dask arrays, one task per block of tile rows.

    Returns:
        ``{key: dask array [H, W]}``, nothing computed yet.
    """
    import dask
    import dask.array as da

    starts = list(grid.row_starts)
    shared = dask.delayed(predictor, traverse=False)  # one copy of the model in the graph
    dtypes = {s.key: s.dtype for s in _specs(classes, names)}
    parts: dict[str, list[Any]] = {key: [] for key in dtypes}
    for first in range(0, len(starts), ROWS_PER_BLOCK):
        y0 = 0 if first == 0 else starts[first]
        last = first + ROWS_PER_BLOCK
        y1 = grid.height if last >= len(starts) else starts[last]
        # Every tile row reaching rows [y0, y1): those are then complete.
        rows = [r for r in _rows_from(grid, y0) if starts[r] < y1]
        ya, yb = starts[rows[0]], starts[rows[-1]] + grid.tile_height
        block = dask.delayed(_block, pure=True)(
            shared,
            source.pre[:, ya:yb, :],
            source.post[:, ya:yb, :],
            (source.pre_nodata, source.post_nodata),
            grid,
            rows,
            (ya, y0, y1),
            channels,
            classes,
        )
        for key, dtype in dtypes.items():
            parts[key].append(da.from_delayed(block[key], (y1 - y0, grid.width), dtype))
    return {key: da.concatenate(blocks, axis=0) for key, blocks in parts.items()}


def is_dask(array: Any) -> bool:
    """Whether ``array`` is a dask array (checked without importing dask)."""
    return type(array).__module__.split(".")[0] == "dask"


def _specs(classes: int, names: list[str]) -> list[Any]:
    return output_specs(
        Path("."), classes, names, write_probability=True, probability_dtype="float32"
    )


def _meanings(values: list[str]) -> str:
    """CF ``flag_meanings``: one word per value (blanks and arrows become underscores)."""
    words = [re.sub(r"\W+", "_", v.replace("->", " to ")).strip("_") for v in values]
    return " ".join(words)


def describe(dataset: xr.Dataset, classes: int, names: list[str]) -> None:
    """Give each output of ``dataset`` its CF attributes, in place.

    Class maps get ``flag_values``/``flag_meanings`` (and ``flag_colors``, the colour table as
    ``#rrggbb[aa]``, the attribute :func:`to_raster` writes back as a palette); every output gets
    ``long_name`` and ``_FillValue``, the probability ``units = "1"`` and ``valid_range``.

    Args:
        dataset: The prediction's Dataset.
        classes: Semantic classes ``K`` (0 for binary models).
        names: Their names.
    """
    for spec in _specs(classes, names):
        if spec.key not in dataset:
            continue
        attrs = dataset[spec.key].attrs
        attrs["long_name"] = _LONG_NAMES[spec.key]
        attrs["_FillValue"] = np.array(spec.nodata, dtype=spec.dtype)[()]
        if spec.key == "probability":
            attrs.update(units="1", valid_range=np.array([0.0, 1.0], dtype=np.float32))
            continue
        if spec.key == "transition":
            labels = json.loads(spec.tags[TRANSITION_NAMES_TAG])
            codes = sorted(int(code) for code in labels)
            meanings = [labels[str(code)] for code in codes]
        else:
            meanings = json.loads(spec.tags[CLASS_NAMES_TAG])
            codes = list(range(len(meanings)))
        attrs["flag_values"] = np.array(codes, dtype=spec.dtype)
        attrs["flag_meanings"] = _meanings(meanings)
        if spec.colormap:
            attrs["flag_colors"] = " ".join(_hex(spec.colormap[code]) for code in codes)


def _hex(rgba: tuple[int, ...]) -> str:
    r, g, b, *alpha = rgba
    tail = f"{alpha[0]:02x}" if alpha and alpha[0] != 255 else ""
    return f"#{r:02x}{g:02x}{b:02x}{tail}"


def palette(array: xr.DataArray) -> dict[int, tuple[int, int, int, int]] | None:
    """The colour table of a class map described by :func:`describe` (None without one).

    Args:
        array: A class-map DataArray with ``flag_values`` and ``flag_colors``.

    Returns:
        ``{value: (r, g, b, a)}`` or None.
    """
    colours = str(array.attrs.get("flag_colors", "")).split()
    values = np.atleast_1d(array.attrs.get("flag_values", []))
    if not colours or len(colours) != len(values):
        return None
    table: dict[int, tuple[int, int, int, int]] = {}
    for value, colour in zip(values, colours, strict=True):
        digits = colour.lstrip("#") + "ff"  # no alpha: opaque
        r, g, b, a = (int(digits[i : i + 2], 16) for i in range(0, 8, 2))
        table[int(value)] = (r, g, b, a)
    return table


def to_raster(array: xr.DataArray, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write one output with ``array.rio.to_raster`` and its palette, atomically.

    ``rio.to_raster`` writes the CRS, transform, nodata and attributes (as tags) but no colour
    table; the palette of ``flag_colors`` is written into the same file before it appears.

    Args:
        array: An output of ``predict_xarray`` (e.g. ``dataset["change"]``), computed or lazy.
        path: The GeoTIFF to write (an existing file is replaced only once complete).
        **kwargs: Passed to ``rio.to_raster`` (``tiled=True``, ``compress="deflate"``, ...).

    Returns:
        ``path``.
    """
    import rasterio

    with atomic_output(path) as tmp:
        array.rio.to_raster(tmp, driver="GTiff", **kwargs)
        table = palette(array)
        if table is not None:
            with rasterio.open(tmp, "r+") as ds:
                ds.write_colormap(1, table)
    return Path(path)
