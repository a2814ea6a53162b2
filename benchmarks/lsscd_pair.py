"""Build an LsSCD-scale pre/post pair (48000 x 32500 px) quickly, by tiling a generated scene.

Generating a full LsSCD-scale scene with ``geochange synth`` takes about 48 minutes on two cores
(docs/synthetic.md). Prediction speed depends on the pixel count, the tile decoding and the
model, not on whether the landscape repeats, so this script generates (once) a smaller scene
with :func:`geochange.make_scene` and writes a real tiled, ZSTD-compressed GeoTIFF pair of the
full size whose pixels repeat that scene (each repeat is mirrored so no seam is a hard edge).
It is a benchmark input, not a training scene: it carries no labels.

    python benchmarks/lsscd_pair.py                        # bench_data/lsscd_tiled/{pre,post}.tif
    python benchmarks/lsscd_pair.py --size 32500x48000 --source-size 8192 --out DIR
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]


def parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def source_scene(size: int) -> Path:
    from geochange.synthetic import make_scene

    root = ROOT / "bench_data" / "predict" / f"scene_{size}x{size}"
    if not (root / "scene.json").exists():
        t0 = time.perf_counter()
        make_scene(root, size, size, seed=0, progress=True)
        print(f"generated the {size}x{size} source scene in {time.perf_counter() - t0:.0f} s")
    return root


def mirrored_index(n: int, period: int) -> np.ndarray:
    """Source index of each output row/column: the source repeated, every other copy flipped."""
    i = np.arange(n)
    copy, offset = np.divmod(i, period)
    return np.where(copy % 2 == 0, offset, period - 1 - offset)


def tile_raster(src_path: Path, dst_path: Path, height: int, width: int, block: int = 512) -> None:
    with rasterio.open(src_path) as src:
        data = src.read()  # a few hundred MB at most (the source scene)
        profile = {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "count": src.count,
            "dtype": src.dtypes[0],
            "crs": src.crs,
            "transform": Affine(*src.transform[:6]),
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "compress": "ZSTD",
            "predictor": 2,
            "BIGTIFF": "YES",
            "num_threads": "all_cpus",
        }
    cols = mirrored_index(width, data.shape[2])
    tmp = dst_path.with_name(f".{dst_path.name}.partial")
    with rasterio.open(tmp, "w", **profile) as dst:
        for row in range(0, height, block):
            h = min(block, height - row)
            rows = mirrored_index(row + h, data.shape[1])[row:]
            dst.write(data[:, rows][:, :, cols], window=Window(0, row, width, h))
    tmp.replace(dst_path)  # only a complete file gets the final name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="32500x48000", help="HEIGHTxWIDTH of the output pair")
    parser.add_argument("--source-size", type=int, default=8192)
    parser.add_argument("--out", type=Path, default=ROOT / "bench_data" / "lsscd_tiled")
    args = parser.parse_args()
    height, width = parse_size(args.size)
    scene = source_scene(args.source_size)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("pre", "post"):
        dst = args.out / f"{name}.tif"
        if dst.exists():
            print(f"{dst} exists")
            continue
        t0 = time.perf_counter()
        tile_raster(scene / f"{name}.tif", dst, height, width)
        size_mb = dst.stat().st_size / 2**20
        took = time.perf_counter() - t0
        print(f"wrote {dst} ({height}x{width}, {size_mb:.0f} MB) in {took:.0f} s")


if __name__ == "__main__":
    main()
